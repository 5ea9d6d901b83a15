"""A local disk cache of chunk files, for stores that cannot be memory-mapped in place (S3).

A version never changes once committed, but its id can be used again: after garbage
collection deleted a version, a publish may reuse the id for other data. So a cached file
is keyed by store, path and the exact publish: the folder of a version is named by its id
and a digest of what its manifest says about it (creation time, and every file's size and
CRC32), and a republished id gets a folder of its own. Files arrive through a temporary
name and ``os.replace``, after their size and CRC32 were checked against the manifest, so
a crash never leaves a truncated file that looks valid, and several processes on one node
share the cache safely (two downloads of the same chunk both produce the same bytes). When
the cache grows past its bound the least recently used files are deleted; a process that
still maps one keeps its pages (on a local disk an unlinked file lives until it is
unmapped).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import threading
import zlib
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING

from sharedrec.errors import CorruptVersion
from sharedrec.read.mmap import renew_lock_after_fork

if TYPE_CHECKING:
    from sharedrec.format.schema import Manifest

__all__ = ["CachedVersion", "ChunkCache", "default_cache_dir", "publish_folder"]

log = logging.getLogger("sharedrec")


def default_cache_dir() -> Path:
    """``$SHAREDREC_CACHE_DIR``, else ``$XDG_CACHE_HOME/sharedrec``, else ``~/.cache/sharedrec``."""
    given = os.environ.get("SHAREDREC_CACHE_DIR")
    if given:
        return Path(given)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sharedrec"


def publish_folder(manifest: Manifest) -> str:
    """The cache folder of one publish of a version: ``<id>@<digest>``.

    The digest is computed from parsed fields, not the manifest's bytes, so the manifest
    read from ``manifest.json`` and its copy in an object store's pointer name the same
    folder. Two publishes under one id differ in creation time, and in the CRC32 of every
    file whose bytes differ: a file cached for one is never served for the other.
    """
    created = manifest.created_at
    if created.tzinfo is not None:
        created = created.astimezone(UTC)
    files = sorted((path, entry.size, entry.crc32) for path, entry in manifest.files.items())
    canonical = json.dumps([manifest.id, created.isoformat(), files], separators=(",", ":"))
    return f"{manifest.id}@{hashlib.sha256(canonical.encode()).hexdigest()[:24]}"


class ChunkCache:
    """The cache folder of one store."""

    def __init__(self, root: str | os.PathLike[str], store_location: str, max_bytes: int | None) -> None:
        digest = hashlib.sha256(store_location.encode()).hexdigest()[:16]
        self.root = Path(root).expanduser().absolute() / digest
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        renew_lock_after_fork(self)
        self._size: int | None = None  # measured on the first download, then tracked

    def renew_lock(self) -> None:
        """A new lock, in a forked child (see `renew_lock_after_fork`)."""
        self._lock = threading.Lock()

    def path(self, version: str, relpath: str) -> Path:
        """Where a file of a version lives in the cache (``version``: its `publish_folder`)."""
        return self.root / version / relpath

    def fetch(self, version: str, relpath: str, size: int, crc32: int, download: Callable[[], bytes]) -> str:
        """The cached file, downloaded first if it is not here (or not whole)."""
        target = self.path(version, relpath)
        try:
            if target.stat().st_size == size:
                os.utime(target)  # recently used: last to be evicted
                return str(target)
        except FileNotFoundError:
            pass
        data = download()
        if len(data) != size or zlib.crc32(data) != crc32:
            name = version.partition("@")[0]  # the id, without the digest of the publish
            raise CorruptVersion(
                f"{relpath} of version {name} does not match its manifest ({len(data)} bytes, "
                f"crc32 {zlib.crc32(data):08x}; expected {size} bytes, crc32 {crc32:08x}); "
                "roll back or republish the version"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(3)}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._added(size, target)
        return str(target)

    def _added(self, size: int, keep: Path) -> None:
        if self.max_bytes is None:
            return
        with self._lock:
            if self._size is None:
                self._size = sum(size for _, size, _ in self._files())
            else:
                self._size += size
            if self._size > self.max_bytes:
                self._evict(keep)

    def _files(self) -> list[tuple[float, int, Path]]:
        found = []
        for folder, _dirs, files in os.walk(self.root):
            for name in files:
                path = Path(folder) / name
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                found.append((stat.st_mtime, stat.st_size, path))
        return found

    def _evict(self, keep: Path) -> None:
        """Delete least recently used files until the cache is at 90% of its bound.

        ``keep``, the file just fetched, stays: its reader maps it next.
        """
        assert self.max_bytes is not None
        files = sorted(self._files())
        total = sum(size for _, size, _ in files)
        goal = int(self.max_bytes * 0.9)
        for _, size, path in files:
            if total <= goal:
                break
            if path == keep:
                continue
            path.unlink(missing_ok=True)
            total -= size
        self._size = total
        log.info("chunk cache %s trimmed to %d bytes", self.root, total)


class CachedVersion:
    """A `ChunkSource` that fetches a version's files from a remote store into the cache."""

    def __init__(self, cache: ChunkCache, manifest: Manifest, download: Callable[[str], bytes]) -> None:
        self._cache = cache
        self._manifest = manifest
        self._download = download
        self._folder = publish_folder(manifest)

    def local_file(self, relpath: str) -> str:
        """The cached copy of ``relpath`` (fetched and checked on first use)."""
        entry = self._manifest.files.get(relpath)
        if entry is None:
            raise CorruptVersion(
                f"{relpath} is not listed in the manifest of version {self._manifest.id}; "
                "republish the version"
            )
        return self._cache.fetch(
            self._folder, relpath, entry.size, entry.crc32, lambda: self._download(relpath)
        )
