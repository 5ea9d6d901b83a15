"""`StoreRoot`: the files of one store, read and checked (pointers, manifests, chunks).

The read, write and manage layers all take a `StoreRoot`, never the
`RecommendationStore` facade: it is the one place that knows how a pointer, a ref and a
version's manifest are found and parsed, and what a missing one means.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from sharedrec.errors import CorruptVersion, StoreNotFound, VersionGone, VersionNotFound
from sharedrec.format.layout import MANIFEST, REFS, VERSIONS, ref_path, validate_version_id
from sharedrec.format.schema import Manifest, Pointer

if TYPE_CHECKING:
    from sharedrec.backends.base import Backend
    from sharedrec.read.cache import ChunkCache


class StoreRoot:
    """A store's location: its backend, and the node-local chunk cache for object stores."""

    def __init__(
        self,
        backend: Backend,
        *,
        storage_options: dict[str, Any] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_max_bytes: int | None = 10 * 1024**3,
    ) -> None:
        self.backend = backend
        self.storage_options = storage_options
        self.cache_dir = cache_dir
        self.cache_max_bytes = cache_max_bytes
        self._cache: ChunkCache | None = None

    @property
    def location(self) -> str:
        """Where the store lives."""
        return self.backend.location

    def read_file(self, path: str) -> bytes | None:
        """A file's bytes, or None when the file is missing (a missing store still raises)."""
        try:
            return self.backend.read_bytes(path)
        except StoreNotFound:  # the bucket or mount is missing, not the file
            raise
        except FileNotFoundError:
            return None

    def fetch(self, directory: str, relpath: str) -> bytes:
        """A file of a version being read; its absence means garbage collection took it."""
        data = self.read_file(f"{directory}/{relpath}")
        if data is None:
            raise VersionGone(
                f"{self.location}/{directory}/{relpath} is gone: the version was deleted "
                "(garbage-collected) while this reader used it"
            )
        return data

    def chunk_cache(self) -> ChunkCache:
        """The node-local cache chunk files of an object store are copied into."""
        if self._cache is None:
            from sharedrec.read.cache import ChunkCache, default_cache_dir

            self._cache = ChunkCache(
                self.cache_dir or default_cache_dir(), self.location, self.cache_max_bytes
            )
        return self._cache

    # -- pointers --------------------------------------------------------------------------

    def read_pointer(self, ref: str = "current") -> tuple[Pointer | None, bytes | None]:
        """The pointer ``ref`` (``"current"`` is ``CURRENT``) and its raw bytes, or (None, None).

        Raises:
            CorruptVersion: The pointer cannot be parsed.
            NewerFormat: A newer sharedrec wrote it: no writer of this sharedrec may move it.
        """
        path = ref_path(ref)
        raw = self.read_file(path)
        if raw is None:
            return None, None
        return Pointer.loads(raw, f"{self.location}/{path}"), raw

    def current(self, ref: str = "current") -> str | None:
        """The id of the version ``ref`` names, or None."""
        pointer, _ = self.read_pointer(ref)
        return pointer.version if pointer else None

    def live_id(self, ref: str = "current") -> str:
        """The id of the version ``ref`` names; `VersionNotFound` when it names none."""
        version = self.current(ref)
        if version is None:
            raise self.nothing_live(ref)
        return version

    def nothing_live(self, ref: str) -> VersionNotFound:
        """The error for a pointer that names no version."""
        what = "no version is live" if ref == "current" else f"ref {ref!r} names no version"
        return VersionNotFound(
            f"{what} in {self.location}: publish one first "
            "(or check that the volume is mounted at the right path)"
        )

    def refs(self) -> dict[str, str]:
        """Every pointer and the version it names: ``"current"`` and the named refs."""
        found = {}
        for name in ["current", *self.backend.listdir(REFS)]:
            if name.startswith("."):
                continue
            version = self.current(name)
            if version is not None:
                found[name] = version
        return found

    # -- manifests -------------------------------------------------------------------------

    def manifest(self, version_id: str) -> Manifest:
        """A committed version's manifest, parsed for reading.

        Raises:
            VersionNotFound: No such version, or its publish never finished.
            CorruptVersion: The manifest is truncated, invalid, or describes another version.
            NewerFormat: A newer sharedrec wrote the manifest.
        """
        validate_version_id(version_id)
        path = f"{VERSIONS}/{version_id}/{MANIFEST}"
        data = self.read_file(path)
        if data is None:
            raise VersionNotFound(self.not_found(version_id))
        manifest = Manifest.loads(data, f"{self.location}/{path}")
        if manifest.id != version_id:
            raise CorruptVersion(
                f"{self.location}/{path} describes version {manifest.id!r}, not {version_id!r}; "
                "the folder was renamed or copied by hand: republish it"
            )
        return manifest

    def not_found(self, version_id: str) -> str:
        """Why ``version_id`` has no manifest: an unfinished publish, or no such version."""
        if self.backend.exists(f"{VERSIONS}/{version_id}"):
            return (
                f"version {version_id} in {self.location} has no manifest: its publish never "
                "finished (garbage collection removes it)"
            )
        return f"version {version_id} does not exist in {self.location}"
