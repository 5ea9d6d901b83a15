"""Checking a version's files against its manifest: sizes (cheap) or CRC32 checksums.

The checks live in `sharedrec.read.checks`, beside the version opening that runs them;
`verify` and the writers use them from here.
"""

from __future__ import annotations

from sharedrec.read.checks import VerifyLevel, VerifyReport, check_version, file_crc32, raise_if_bad

__all__ = ["VerifyLevel", "VerifyReport", "check_version", "file_crc32", "raise_if_bad"]
