"""Storage backends: one module per kind of location, one protocol for all of them."""

from __future__ import annotations

import os
from typing import Any

from sharedrec.backends.base import Backend
from sharedrec.errors import UnsupportedLocation

__all__ = ["Backend", "backend_for"]


def backend_for(
    location: str | os.PathLike[str], *, create: bool, storage_options: dict[str, Any] | None = None
) -> Backend:
    """Resolve a store location (a path or a URL) to the backend that serves it."""
    text = os.fspath(location)
    if "://" not in text:
        scheme = ""
    else:
        from urllib.parse import urlparse

        scheme = urlparse(text).scheme
    if scheme in ("", "file"):
        from sharedrec.backends.posix import PosixBackend

        path = urlparse(text).path if scheme == "file" else text
        if storage_options:
            raise UnsupportedLocation(f"storage_options apply to object stores, not to the path {text!r}")
        return PosixBackend(path, create=create)
    if scheme in ("s3", "s3a"):
        from sharedrec.backends.s3 import S3Backend

        return S3Backend(text, storage_options, create=create)
    from sharedrec.backends.generic import FsspecBackend

    return FsspecBackend(text, scheme, storage_options, create=create)
