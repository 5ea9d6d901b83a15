"""Opening a version: its manifest becomes collections, deltas become chains, files are checked.

`open_version` finds a version in a store (refusing one garbage collection condemned or
one reached through a link out of the store), opens the versions a delta builds on,
checks the files (``verify``) and returns an `OpenVersion`. Nothing here reads a chunk:
chunk files are mapped on first use.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from sharedrec.errors import CorruptVersion, VersionGone, VersionNotFound
from sharedrec.format.layout import GC_MARK, MAX_CHAIN, VERSIONS, validate_version_id
from sharedrec.read.checks import check_version, raise_if_bad
from sharedrec.read.collections import (
    RANKED,
    Chain,
    Chained,
    Collection,
    Index,
    Partitioned,
    RankedList,
    RowKind,
    Whole,
    row_kind,
)
from sharedrec.read.index import KEY_HASHES, IntIndex, StrIndex, decode_keys
from sharedrec.read.mmap import ChunkSource, LocalFolder, MappedArray
from sharedrec.read.ragged import NEEDED, Ragged

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from sharedrec.backends.base import Backend
    from sharedrec.format.schema import CollectionSpec, FileEntry, Manifest
    from sharedrec.read.checks import VerifyLevel
    from sharedrec.read.root import StoreRoot

__all__ = [
    "GROUP_METADATA",
    "SETTLE_SECONDS",
    "OpenVersion",
    "open_version",
    "refuse_outside",
    "version_condemned",
]

GROUP_METADATA = "zarr.json"
"""The root group's metadata: the first file of every version folder, deleted by garbage
collection right after the manifest."""

SETTLE_SECONDS = 30.0
"""How long a reader or a pointer mover waits for a garbage collector that marked a version
to decide on it (it keeps the version when it then sees a lease or pointer naming it)."""


class OpenVersion:
    """One version mapped for reading: the collections of a manifest over a folder.

    ``ranked`` and ``vectors`` hold the collections of each kind by name, each a
    `Collection` (stored whole, partitioned, or a delta over ``base``).
    """

    __slots__ = ("base", "manifest", "ranked", "root", "source", "vectors")

    def __init__(
        self,
        manifest: Manifest,
        source: ChunkSource,
        where: str,
        base: OpenVersion | None = None,
        *,
        mapped: bool = True,
    ) -> None:
        self.manifest = manifest
        self.source = source
        self.root = where
        self.base = base
        self.ranked: dict[str, Collection] = {}
        self.vectors: dict[str, Collection] = {}
        if not mapped:  # what a closed reader holds: the manifest, no collection
            return
        if manifest.base is not None and (base is None or base.id != manifest.base):
            raise CorruptVersion(
                f"version {manifest.id} is a delta over {manifest.base}, which was not opened with it"
            )
        for name, spec in manifest.collections.items():
            kind = row_kind(spec.kind)
            arrays = {
                array: MappedArray(source, f"{name}/{array}", array_spec, _checked(array, manifest))
                for array, array_spec in spec.arrays.items()
            }
            collection: Collection
            if spec.partitions is not None:
                collection = self._open_partitioned(name, spec, kind, arrays)
            elif spec.delta:
                if base is None:
                    raise CorruptVersion(
                        f"collection {name!r} in {where}/manifest.json is a delta, but the "
                        "version names no base: republish the version"
                    )
                collection = self._open_delta(name, spec, kind, arrays, base)
            else:
                index = _open_index(name, spec, spec.arrays, arrays, where)
                collection = _stored(name, spec, kind, index, arrays, where)
            (self.ranked if kind is RANKED else self.vectors)[name] = collection
        for ranked in self.ranked.values():
            for fallback in ranked.spec.fallbacks:
                if fallback not in self.ranked:
                    raise CorruptVersion(
                        f"collection {ranked.name!r} in {where}/manifest.json names fallback "
                        f"{fallback!r}, which is not a ranked collection of the version"
                    )

    def _open_partitioned(
        self, name: str, spec: CollectionSpec, kind: RowKind, arrays: dict[str, MappedArray]
    ) -> Partitioned:
        assert spec.partitions is not None
        where = self.root
        dtypes: dict[str, str] = {}
        parts: list[Whole | None] = []
        for number, part in enumerate(spec.partitions.parts):
            if part.count == 0 or part.path is None:
                parts.append(None)
                continue
            label = f"{name}/{part.path}"
            part_arrays = {
                array: MappedArray(
                    self.source, f"{label}/{array}", array_spec, _checked(array, self.manifest)
                )
                for array, array_spec in part.arrays.items()
            }
            _require(label, part.arrays, kind.needed, where)
            for array in kind.needed:  # a batch lookup fills one output array from every partition
                dtype = dtypes.setdefault(array, part.arrays[array].dtype)
                if part.arrays[array].dtype != dtype:
                    raise CorruptVersion(
                        f"collection {name!r} in {where}/manifest.json: partition {number} stores "
                        f"{array} as {part.arrays[array].dtype}, others as {dtype}; republish the version"
                    )
            index = _open_index(label, spec, part.arrays, part_arrays, where, part.key_fences)
            parts.append(Whole(name, spec, kind, index, part_arrays, part))
        return Partitioned(name, spec, kind, parts, arrays)

    def _open_delta(
        self,
        name: str,
        spec: CollectionSpec,
        kind: RowKind,
        arrays: dict[str, MappedArray],
        base: OpenVersion,
    ) -> Chained:
        """A collection that holds only what changed since the same collection of ``base``."""
        where = self.root
        prior = (base.ranked if kind is RANKED else base.vectors).get(name)
        # (partitioned collections are never bases)
        if not isinstance(prior, Whole | Chained) or prior.spec.key_type != spec.key_type:
            raise CorruptVersion(
                f"collection {name!r} in {where}/manifest.json updates the {spec.kind} collection of "
                f"version {base.id}, which has no such collection with {spec.key_type} keys"
            )
        level: Whole | None = None
        if "keys" in arrays or "key_hash" in arrays:  # rows added or changed
            index = _open_index(name, spec, spec.arrays, arrays, where)
            level = _stored(name, spec, kind, index, arrays, where)
        removed = _removed_keys(name, spec, arrays, where)
        chain = Chain.extend(prior, level, removed)
        if spec.width > chain.width:  # a batch's output is sized by the width
            raise CorruptVersion(
                f"collection {name!r} in {where}/manifest.json is {spec.width} wide, but no version "
                f"of its chain of deltas stores rows wider than {chain.width}; republish the version"
            )
        default = None
        if kind is RANKED and spec.default_length is not None:
            _require(name, spec.arrays, ("default_items", "default_scores"), where)
            n = spec.default_length
            default = RankedList(
                arrays["default_items"].span(0, n), arrays["default_scores"].span(0, n), f"{name}/default"
            )
        return Chained(name, spec, kind, chain, default)

    @property
    def id(self) -> str:
        return self.manifest.id

    def chain(self) -> list[str]:
        """This version's id, then the ids of the versions it is a delta over, newest first."""
        ids = []
        version: OpenVersion | None = self
        while version is not None:
            ids.append(version.id)
            version = version.base
        return ids

    def __repr__(self) -> str:
        base = f", base={self.base.id!r}" if self.base is not None else ""
        return f"OpenVersion({self.id!r}, ranked={list(self.ranked)}, vectors={list(self.vectors)}{base})"

    def emptied(self) -> OpenVersion:
        """The same version with no collection mapped (what a closed reader holds)."""
        return OpenVersion(self.manifest, self.source, self.root, mapped=False)


def open_version(
    root: StoreRoot,
    version_id: str,
    verify: VerifyLevel = "sizes",
    *,
    manifest: Manifest | None = None,
    below: tuple[str, ...] = (),
) -> OpenVersion:
    """Map a version of the store at ``root`` for reading after checking it.

    ``verify`` as in `RecommendationStore.reader`. On S3 the files are fetched into the
    local cache on first use, where their size and checksum are checked; ``verify="full"``
    fetches and checks all of them now. ``manifest`` is the version's manifest when the
    caller already has it (the copy in a pointer on object stores); else it is read.
    ``below``: the delta versions being opened over this one (to refuse a loop).
    """
    backend = root.backend
    validate_version_id(version_id)
    directory = f"{VERSIONS}/{version_id}"
    folder = backend.local_path(directory)
    if folder is not None:
        refuse_outside(root, version_id, folder)
    given = manifest is not None and manifest.id == version_id
    # A condemned version is never mapped: the caller's lease may have come after the
    # collector read the leases. Checked before the manifest is read, which the collector
    # deletes first. On object stores a manifest that came with the pointer skips the
    # check (no request added to opening): files there are copied, never mapped in place,
    # and a version deleted meanwhile shows as VersionGone, which a following reader
    # recovers from by re-reading the pointer.
    if (folder is not None or not given) and version_condemned(backend, directory):
        raise VersionGone(
            f"version {version_id} in {root.location} is being deleted by garbage collection "
            f"({directory}/{GC_MARK} marks it); open the live version (store.current()) or another one"
        )
    if manifest is None or not given:
        manifest = root.manifest(version_id)
    base = None
    if manifest.base is not None:  # a delta: open the versions it builds on first
        if manifest.base in below or manifest.base == version_id or len(below) >= MAX_CHAIN:
            raise CorruptVersion(
                f"version {version_id} is a delta over {manifest.base}, which makes the chain "
                f"of deltas {' -> '.join([*below, version_id, manifest.base])} loop or run too "
                "long: republish the data in full"
            )
        try:
            base = open_version(root, manifest.base, verify, below=(*below, version_id))
        except VersionNotFound as exc:
            raise CorruptVersion(
                f"version {version_id} is a delta over version {manifest.base}, which is gone "
                f"({exc}); roll back, or republish the data in full"
            ) from None
    if folder is not None:
        raise_if_bad(check_version(backend, directory, manifest, verify), root.location)
        return OpenVersion(manifest, LocalFolder(folder), folder, base)
    from sharedrec.read.cache import CachedVersion

    source = CachedVersion(root.chunk_cache(), manifest, lambda rel: root.fetch(directory, rel))
    if verify == "full":
        for relpath in manifest.files:
            source.local_file(relpath)
    return OpenVersion(manifest, source, f"{root.location}/{directory}", base)


def refuse_outside(root: StoreRoot, version_id: str, folder: str) -> None:
    """Raise unless a version folder resolves inside the store root (no link out of it)."""
    base = root.backend.local_path("") or root.location
    if folder == os.path.join(base, VERSIONS, version_id) and _no_link(os.path.join(base, VERSIONS), folder):
        return  # neither versions/ nor the version's folder is a link: it is inside the root
    top = os.path.realpath(base)
    real = os.path.realpath(folder)
    if os.path.commonpath([top, real]) != top:
        raise CorruptVersion(
            f"{folder} (version {version_id}) is a symbolic link to {real}, outside the store "
            f"root {top}: sharedrec never reads or deletes another location's files through a "
            "link; remove the link, and publish the version into this store instead"
        )


def _no_link(*paths: str) -> bool:
    """Whether each path exists and is not a symbolic link (two ``lstat`` calls, where
    ``realpath`` would resolve every component of the path)."""
    try:
        return not any(stat.S_ISLNK(os.lstat(path).st_mode) for path in paths)
    except OSError:
        return False


def version_condemned(backend: Backend, directory: str, wait: float = SETTLE_SECONDS) -> bool:
    """Whether garbage collection is deleting (or deleted) the version in ``directory``.

    A version without the collector's mark is not condemned. A marked one may yet be kept:
    the collector marks a version, then reads pointers and leases again, and removes the
    mark if one names it; so wait up to ``wait`` seconds for the mark to go, then the version
    is condemned if its root group's ``zarr.json`` went with it (a committed version and an
    unfinished one alike have it). The order matters: the collector deletes the manifest and
    that file before the rest of the folder, mark included, so the mark is checked first.
    """
    mark = f"{directory}/{GC_MARK}"
    if backend.size(mark) is None:
        return False
    deadline = time.monotonic() + wait
    delay = 0.002
    while backend.size(mark) is not None:
        if time.monotonic() >= deadline:
            return True
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    return backend.size(f"{directory}/{GROUP_METADATA}") is None


def _removed_keys(
    name: str, spec: CollectionSpec, arrays: dict[str, MappedArray], where: str
) -> Sequence[Any]:
    """The keys a delta collection removed from its base (its tombstones)."""
    if not spec.removed:
        return []
    if spec.key_type == "int64":
        _require(name, spec.arrays, ("removed",), where)
        array = arrays["removed"]
        return array.span(0, array.n_rows).tolist()  # type: ignore[no-any-return]
    _require(name, spec.arrays, ("removed_spans", "removed_bytes"), where)
    spans = arrays["removed_spans"]
    _spans_within(spans, arrays["removed_bytes"])
    return decode_keys(spans, arrays["removed_bytes"], spans.n_rows)


_KEY_ARRAYS = frozenset(
    ("keys", "key_hash", "key_spans", "key_bytes", "removed", "removed_spans", "removed_bytes", "offsets")
)
"""Arrays that decide which row a key is (or whether a delta removed it): their chunks are
small, and a flipped bit in one would serve another key's data, so each chunk's checksum is
checked when it is first mapped."""


def _checked(array: str, manifest: Manifest) -> Mapping[str, FileEntry] | None:
    """The manifest's file entries for a key array (checksummed when mapped), else None."""
    return manifest.files if array in _KEY_ARRAYS else None


def _spans_within(spans: MappedArray, key_bytes: MappedArray) -> None:
    """Check, as each chunk of a span array is mapped, that its spans lie in the key bytes."""
    size = key_bytes.n_rows

    def check(chunk: NDArray[Any]) -> str | None:
        starts, stops = chunk[:, 0], chunk[:, 1]
        bad = (starts < 0) | (starts > stops) | (stops > size)
        if bad.any():
            row = int(np.argmax(bad))
            return f"has a key span {chunk[row].tolist()} outside the {size} key bytes (row {row})"
        return None

    spans.on_map = check


def _stored(
    name: str, spec: CollectionSpec, kind: RowKind, index: Index, arrays: dict[str, MappedArray], where: str
) -> Whole:
    """A collection (or delta level) stored whole, padded or ragged as its spec says."""
    if spec.layout == "ragged":
        _require(name, spec.arrays, NEEDED, where)
        return Ragged(name, spec, kind, index, arrays, where)
    _require(name, spec.arrays, kind.needed, where)
    return Whole(name, spec, kind, index, arrays)


def _require(name: str, arrays: Mapping[str, object], needed: tuple[str, ...], root: str) -> None:
    missing = [array for array in needed if array not in arrays]
    if missing:
        raise CorruptVersion(
            f"collection {name!r} in {root}/manifest.json lacks arrays {missing}; "
            "republish the version or roll back"
        )


def _open_index(
    name: str,
    spec: CollectionSpec,
    specs: Mapping[str, object],
    arrays: dict[str, MappedArray],
    where: str,
    fences: list[int] | None = None,
) -> Index:
    """The key index of a collection stored whole, or of one partition (its ``fences``)."""
    fences = spec.key_fences if fences is None else fences
    if spec.key_type == "int64":
        _require(name, specs, ("keys",), where)
        return IntIndex(arrays["keys"], fences)
    _require(name, specs, ("key_hash", "key_spans", "key_bytes"), where)
    if spec.key_hash not in KEY_HASHES:
        raise CorruptVersion(
            f"collection {name!r} hashes its keys with {spec.key_hash!r}, which this version of "
            f"sharedrec does not know ({sorted(KEY_HASHES)}); upgrade sharedrec"
        )
    _spans_within(arrays["key_spans"], arrays["key_bytes"])
    return StrIndex(arrays["key_hash"], arrays["key_spans"], arrays["key_bytes"], fences, spec.key_hash)
