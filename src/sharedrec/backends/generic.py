"""Any other fsspec filesystem (``memory://``, ``gcs://``, ``az://``...), through its generic API.

Versions are written through the filesystem's own calls and read through the local chunk
cache, as for S3. What a generic filesystem cannot promise is a compare-and-swap of
``CURRENT``: the swap here is serialised within one process only, so two writers on two
machines must not publish to the same store at once. Use S3 (conditional writes) or a
POSIX mount (``flock``) when they might.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from sharedrec.backends.base import STORE_MARKER, no_store, replace_if_unchanged
from sharedrec.errors import SharedrecError, UnsupportedLocation

__all__ = ["FsspecBackend"]

_READ_ONLY = {"http", "https", "github", "zip", "tar", "libarchive"}
_SWAP_LOCK = threading.Lock()


class FsspecBackend:
    """A store on an fsspec filesystem that has no stronger backend here."""

    def __init__(
        self, url: str, protocol: str, storage_options: dict[str, Any] | None, *, create: bool = True
    ) -> None:
        try:
            import fsspec
            import fsspec.core
        except ImportError:  # pragma: no cover - fsspec is a dependency
            raise SharedrecError("fsspec is missing: pip install fsspec") from None
        if protocol in _READ_ONLY:
            raise UnsupportedLocation(
                f"cannot use {url!r}: {protocol}:// is read-only, and a store needs writes"
            )
        try:
            self.fs = fsspec.filesystem(protocol, **(storage_options or {}))
        except ImportError as exc:
            raise UnsupportedLocation(
                f"cannot open {url!r}: the {protocol}:// filesystem needs a package that is not "
                f"installed ({exc}); install it (e.g. gcsfs for gcs://, adlfs for az://)"
            ) from None
        except ValueError:
            raise UnsupportedLocation(
                f"cannot open {url!r}: fsspec knows no {protocol}:// filesystem; use a local or "
                "mounted path, s3://, or an installed fsspec protocol"
            ) from None
        except Exception as exc:
            raise SharedrecError(
                f"cannot open {url!r} ({type(exc).__name__}: {exc}); check the location and storage_options"
            ) from None
        self._url = url.rstrip("/")
        self._root = fsspec.core.strip_protocol(url).rstrip("/")
        if create:
            self.fs.makedirs(self._root, exist_ok=True)
            # On an object store a prefix exists only while it holds an object.
            try:
                empty = not self.fs.ls(self._root, detail=False, refresh=True)
            except FileNotFoundError:
                empty = True
            if empty:
                self.fs.pipe_file(self._abs(STORE_MARKER), b"")
        elif not self.fs.exists(self._root):
            raise no_store(self._url, "nothing exists there")

    @property
    def location(self) -> str:
        return self._url

    def _abs(self, path: str) -> str:
        return f"{self._root}/{path}".rstrip("/") if path else self._root

    def read_bytes(self, path: str) -> bytes:
        data: bytes = self.fs.cat_file(self._abs(path))
        return data

    def read_if_changed(self, path: str, token: object) -> tuple[bytes, object] | None:
        data = self.read_bytes(path)
        return None if data == token else (data, data)

    def write_atomic(self, path: str, data: bytes, *, durable: bool = True) -> None:
        self.fs.pipe_file(self._abs(path), data)

    def swap_pointer(self, path: str, data: bytes, expected: bytes | None) -> None:
        with _SWAP_LOCK:
            replace_if_unchanged(self, path, data, expected)

    def check_swaps(self, path: str) -> None:
        """Nothing to check: swaps here are serialised within one process, as the module says."""

    def listdir(self, path: str) -> list[str]:
        """Names under ``path``; the store marker is the backend's own, and never listed."""
        try:
            entries = self.fs.ls(self._abs(path), detail=False, refresh=True)
        except FileNotFoundError:
            return []
        names = {str(entry).rstrip("/").rsplit("/", 1)[-1] for entry in entries}
        return sorted(names - {STORE_MARKER} if not path else names)

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(self._abs(path)))

    def remove_tree(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self._abs(path), recursive=True)

    def remove_file(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._abs(path))

    def size(self, path: str) -> int | None:
        try:
            info = self.fs.info(self._abs(path))
        except FileNotFoundError:
            return None
        return int(info["size"]) if info.get("type") != "directory" else None

    def tree_mtime(self, path: str) -> float | None:
        """Unknown on a generic filesystem: garbage collection keeps unfinished folders."""
        return None

    def walk_files(self, path: str) -> Iterator[tuple[str, int]]:
        base = self._abs(path)
        found = self.fs.find(base, detail=True)
        yield from sorted((name[len(base) + 1 :], int(info["size"])) for name, info in found.items())

    def open_read(self, path: str) -> Any:
        return self.fs.open(self._abs(path), "rb")

    def sync_tree(self, path: str) -> None:
        """Nothing to do: the filesystem's writes are final when they return."""

    def zarr_store(self, path: str) -> Any:
        raise SharedrecError("drafts for this filesystem are staged on local disk, then uploaded")

    def local_path(self, path: str) -> str | None:
        return None

    def upload(self, files: list[tuple[str, str]], progress: Any = None) -> None:
        for local, path in files:
            self.fs.put_file(local, self._abs(path))
            if progress is not None:
                progress.advance(self.size(path) or 0)
