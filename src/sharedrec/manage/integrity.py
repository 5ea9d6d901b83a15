"""`verify`: recompute the checksum of every file of a version.

The checks themselves live in `sharedrec.read.checks`, beside the version opening that runs
the cheap ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sharedrec.errors import NewerFormat
from sharedrec.format.layout import VERSIONS
from sharedrec.read.checks import VerifyReport, check_version, raise_if_bad

if TYPE_CHECKING:
    from sharedrec._progress import ProgressMode
    from sharedrec.read.root import StoreRoot

__all__ = ["verify"]


def verify(root: StoreRoot, version: str | None = None, progress: ProgressMode = None) -> VerifyReport:
    """Recompute the checksum of every file of a version (default: the live one).

    Raises:
        CorruptVersion: Some file is missing or does not match the manifest; the message
            lists the problems.
        NewerFormat: A newer sharedrec wrote the version (or ``CURRENT``): it is not checked.
    """
    from sharedrec._progress import reporter

    version_id = version if version is not None else root.live_id()
    try:
        manifest = root.manifest(version_id)
    except NewerFormat as exc:
        raise NewerFormat(f"version {version_id}: newer format, not checked: {exc}") from None
    report = check_version(root.backend, f"{VERSIONS}/{version_id}", manifest, "full", reporter(progress))
    raise_if_bad(report, root.location)
    return report
