"""The small protocol every storage backend implements.

Paths are relative to the store root and use ``/``. Everything above this protocol
(publishing, reading, version management) is backend-agnostic.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any, Protocol

from sharedrec.errors import StoreNotFound

__all__ = ["STORE_MARKER", "Backend", "PointerMoved", "file_crc32", "no_store", "replace_if_unchanged"]

_BLOCK = 4 * 1024 * 1024

# The object ``create=True`` writes at the root of an object-store location that holds
# nothing yet, so that the location exists: a prefix without any object is not a store.
# Its content is empty and nothing reads it; stores written without it open as well.
STORE_MARKER = ".sharedrec-store"


def no_store(location: str, why: str) -> StoreNotFound:
    """The error for a location that holds no store: what is missing, and the two ways out."""
    return StoreNotFound(
        f"no store at {location}: {why}; check the path, or create the store there with create=True"
    )


class PointerMoved(Exception):
    """Raised by `swap_pointer()` when the pointer is not what the writer read.

    The store turns it into `ConcurrentPublishError`.
    """

    def __init__(self, current: bytes | None) -> None:
        super().__init__("the pointer was moved by another writer")
        self.current = current


class Backend(Protocol):
    """Storage under one store root."""

    @property
    def location(self) -> str:
        """The root as the user gave it, for messages."""
        ...

    def read_bytes(self, path: str) -> bytes:
        """Read a whole file; raise ``FileNotFoundError`` when it does not exist."""
        ...

    def read_if_changed(self, path: str, token: object) -> tuple[bytes, object] | None:
        """Read a small file unless it is unchanged since the read that returned ``token``.

        Returns ``(data, token)``, or None when unchanged; ``token=None`` always reads.
        Raises ``FileNotFoundError`` when the file does not exist.
        """
        ...

    def upload(self, files: list[tuple[str, str]], progress: Any = None) -> None:
        """Copy local files (``(local path, store path)``) into the store."""
        ...

    def write_atomic(self, path: str, data: bytes, *, durable: bool = True) -> None:
        """Write a file so that readers see either nothing or all of ``data``.

        ``durable`` also makes it survive a crash of this machine (fsync); ephemeral files
        such as leases skip that.
        """
        ...

    def swap_pointer(self, path: str, data: bytes, expected: bytes | None) -> None:
        """Replace the pointer file atomically, if its content still equals ``expected``.

        ``expected=None`` means the file must not exist yet. Raise `PointerMoved`, carrying
        what the pointer holds now, when another writer moved it; of two racing writers
        with the same ``expected``, exactly one succeeds.
        """
        ...

    def check_swaps(self, path: str) -> None:
        """Raise `PublishRejected` now if `swap_pointer()` on ``path`` would be refused.

        Called when a publish that will move ``path`` begins, before it writes anything, so
        that a store whose swaps cannot be trusted (an S3 server that ignores conditional
        writes, without a single-writer promise) refuses a publish before its upload, not
        after. `swap_pointer()` checks again.
        """
        ...

    def listdir(self, path: str) -> list[str]:
        """Names directly under ``path``; empty when ``path`` does not exist."""
        ...

    def exists(self, path: str) -> bool:
        """Whether a file or folder exists at ``path``."""
        ...

    def remove_tree(self, path: str) -> None:
        """Delete ``path`` and everything under it; no error when it is already gone."""
        ...

    def remove_file(self, path: str) -> None:
        """Delete the file ``path`` (one request on an object store); no error when it is gone."""
        ...

    def size(self, path: str) -> int | None:
        """The size of a file, or None when it does not exist."""
        ...

    def tree_mtime(self, path: str) -> float | None:
        """The newest modification time (POSIX seconds) of ``path`` and everything under
        it, or None if it is missing."""
        ...

    def walk_files(self, path: str) -> Iterator[tuple[str, int]]:
        """Yield ``(path relative to path, size)`` of every file under ``path``, sorted."""
        ...

    def open_read(self, path: str) -> Any:
        """Open a file for streaming binary reads (a context manager with ``read(n)``)."""
        ...

    def sync_tree(self, path: str) -> None:
        """Make every file and folder under ``path`` durable before the manifest is written."""
        ...

    def zarr_store(self, path: str) -> Any:
        """A zarr v3 store rooted at ``path``, for writing a version."""
        ...

    def local_path(self, path: str) -> str | None:
        """The POSIX path of ``path`` if it can be memory-mapped directly, else ``None``."""
        ...


def replace_if_unchanged(backend: Backend, path: str, data: bytes, expected: bytes | None) -> None:
    """Read ``path``, and write ``data`` there if it still holds ``expected``.

    Atomic only under a lock the caller holds (flock on POSIX); object stores use a
    conditional PUT instead.
    """
    try:
        current: bytes | None = backend.read_bytes(path)
    except FileNotFoundError:
        current = None
    if current != expected:
        raise PointerMoved(current)
    backend.write_atomic(path, data)


def file_crc32(backend: Backend, path: str, progress: Any = None) -> int:
    """CRC32 of a whole file, streamed in blocks (``progress.advance(n)`` per block read)."""
    crc = 0
    with backend.open_read(path) as f:
        while block := f.read(_BLOCK):
            crc = zlib.crc32(block, crc)
            if progress is not None:
                progress.advance(len(block))
    return crc
