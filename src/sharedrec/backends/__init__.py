"""Storage backends: one module per kind of location, one protocol for all of them."""

from __future__ import annotations

import os
from urllib.parse import urlparse

from sharedrec.backends.base import Backend
from sharedrec.errors import UnsupportedLocation

__all__ = ["Backend", "backend_for"]


def backend_for(location: str | os.PathLike[str], *, create: bool) -> Backend:
    """Resolve a store location (a path or a URL) to the backend that serves it."""
    text = os.fspath(location)
    scheme = urlparse(text).scheme if "://" in text else ""
    if scheme in ("", "file"):
        from sharedrec.backends.posix import PosixBackend

        path = urlparse(text).path if scheme == "file" else text
        return PosixBackend(path, create=create)
    raise UnsupportedLocation(
        f"cannot open {text!r}: the {scheme}:// protocol is not supported yet; "
        "use a local path or a mounted EFS/NFS path"
    )
