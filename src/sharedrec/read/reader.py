"""The hot path: lookups served from memory-mapped chunk files of one version.

Opening a reader reads ``CURRENT`` and ``manifest.json`` and nothing else; chunk files are
mapped the first time a lookup needs them. A lookup is a binary search over the mapped key
array and a slice of the mapped row: no zarr-python, no copies for single keys.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import types
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from sharedrec.errors import (
    CorruptVersion,
    InvalidInput,
    KeyNotFound,
    SharedrecError,
    UnknownCollection,
    VersionGone,
)
from sharedrec.format.keys import int_key, int_keys, is_bool, str_key, str_keys
from sharedrec.format.schema import CollectionSpec, FileEntry, Manifest, PartSpec
from sharedrec.read.index import KEY_HASHES, IntIndex, PartitionedIndex, StrIndex, decode_keys
from sharedrec.read.mmap import ChunkSource, MappedArray, RowPlan

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray

    from sharedrec._progress import ProgressMode
    from sharedrec.read.leases import LeaseKeeper

__all__ = ["OpenVersion", "RankedList", "Reader", "ReaderStats", "Refresher"]

log = logging.getLogger("sharedrec")

_RANKED_ARRAYS = ("items", "scores", "lengths")
_ITEM_PAD = -1


class RankedList:
    """One key's list: ``items`` and ``scores`` are read-only numpy views, best first.

    ``source`` names the collection whose list was served: the one asked for, a fallback
    collection, or ``"<collection>/default"`` for a default list.
    """

    __slots__ = ("items", "scores", "source")

    def __init__(self, items: NDArray[Any], scores: NDArray[Any], source: str) -> None:
        self.items = items
        self.scores = scores
        self.source = source

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[tuple[int, float]]:
        """Iterate ``(item, score)`` pairs as Python numbers."""
        return zip(self.items.tolist(), self.scores.tolist(), strict=True)

    def __repr__(self) -> str:
        return f"RankedList(items={self.items!r}, scores={self.scores!r}, source={self.source!r})"

    def head(self, k: int | None) -> RankedList:
        """The first ``k`` entries (all when ``k`` is None)."""
        if k is None:
            return self
        n = _check_k(k)
        if n >= len(self.items):
            return self
        return RankedList(self.items[:n], self.scores[:n], self.source)


Index = IntIndex | StrIndex


class _Ranked:
    __slots__ = (
        "chain",
        "default",
        "index",
        "items",
        "lengths",
        "name",
        "rows_per_chunk",
        "scores",
        "single",
        "spec",
        "uniform",
        "width",
    )

    def __init__(
        self,
        name: str,
        spec: CollectionSpec,
        index: Index,
        arrays: dict[str, MappedArray],
        part: PartSpec | None = None,
    ):
        self.name = name
        self.spec = spec
        self.index = index
        self.items = arrays["items"]
        self.scores = arrays["scores"]
        self.lengths = arrays["lengths"]
        self.rows_per_chunk = self.items.rows_per_chunk
        if self.scores.rows_per_chunk != self.rows_per_chunk:
            raise CorruptVersion(
                f"collection {name!r}: items and scores are chunked differently "
                f"({self.rows_per_chunk} and {self.scores.rows_per_chunk} rows per chunk); "
                "sharedrec writes them alike: republish the version with sharedrec"
            )
        # When every list has the same length the lengths array need not be read at all.
        rows = part or spec
        self.width = rows.width
        self.uniform = rows.max_length if rows.min_length == rows.max_length else -1
        self.default: RankedList | None = None
        if spec.default_length is not None and part is None:  # a partition's misses go to its collection
            n = spec.default_length
            self.default = RankedList(
                arrays["default_items"].span(0, n), arrays["default_scores"].span(0, n), f"{name}/default"
            )
        self.single = spec.serve_to_all  # declared at publish, never inferred from the count
        self.chain: _Chain | None = None

    def locate(self, key: object) -> tuple[_Ranked, int]:
        """The collection holding ``key`` and its row there (-1 when absent)."""
        return self, self.index.find(key)

    def row(self, row: int, k: int | None) -> RankedList:
        n = self.uniform if self.uniform >= 0 else int(self.lengths.row(row))
        if k is not None and (type(k) is not int or k < n):
            n = min(n, _check_k(k))
        chunk, offset = divmod(row, self.rows_per_chunk)
        return RankedList(
            self.items.chunk(chunk)[offset, :n], self.scores.chunk(chunk)[offset, :n], self.name
        )


class _Vectors:
    __slots__ = ("chain", "index", "name", "spec", "vectors")

    def __init__(self, name: str, spec: CollectionSpec, index: Index, arrays: dict[str, MappedArray]):
        self.name = name
        self.spec = spec
        self.index = index
        self.vectors = arrays["vectors"]
        self.chain: _Chain | None = None

    def locate(self, key: object) -> tuple[_Vectors, int]:
        """The collection holding ``key`` and its row there (-1 when absent)."""
        return self, self.index.find(key)


_LEVEL_SHIFT = 40
_ROW_MASK = (1 << _LEVEL_SHIFT) - 1
_ROOT = -1
"""In `_Chain.locate_many`: the key is looked up in the full collection at the chain's root."""
_REMOVED = -2
"""In `_Chain.locate_many`: a delta removed the key."""
_UNTOUCHED = -(1 << 62)
"""A code no key of `_Chain.lookup` has: no delta touched the key."""


class _Chain:
    """Where the keys of a collection of a delta version live.

    ``levels`` are the collections of the deltas that hold rows, oldest first; ``lookup``
    maps every key a delta added, changed or removed to ``level << 40 | row`` (the newest
    delta wins), or to -1 when removed. Any other key is in ``root``, the collection of the
    full version at the bottom of the chain. The dict is built at open from the deltas'
    keys, which are few: a lookup costs one dict probe more than in a full version.
    """

    __slots__ = ("_effective", "_sorted", "levels", "lookup", "root", "str_keys", "widest")

    def __init__(self, root: Any, levels: list[Any], lookup: dict[Any, int]) -> None:
        self.root = root
        self.levels = levels
        self.lookup = lookup
        self.str_keys = root.spec.key_type == "str"
        rows = "items" if root.spec.kind == "ranked" else "vectors"
        self.widest: MappedArray = max((getattr(c, rows) for c in [root, *levels]), key=lambda a: a.n_cols)
        """The rows array with the most columns: a batch's output is at most this wide."""
        self._sorted: tuple[NDArray[np.int64], NDArray[np.int64]] | None = None
        self._effective: NDArray[np.int64] | list[str] | None = None

    @classmethod
    def extend(cls, prior: Any, level: Any, removed: Sequence[Any]) -> _Chain:
        """The chain of ``prior`` (a collection of the base) with one more delta on top."""
        if prior.chain is None:
            root, levels, lookup = prior, [], {}
        else:
            root, levels, lookup = prior.chain.root, list(prior.chain.levels), dict(prior.chain.lookup)
        if level is not None:
            code = len(levels) << _LEVEL_SHIFT
            levels.append(level)
            keys = level.index.all_keys()
            listed = keys.tolist() if isinstance(keys, np.ndarray) else keys
            lookup.update(zip(listed, range(code, code + len(listed)), strict=True))
        lookup.update(dict.fromkeys(removed, -1))
        return cls(root, levels, lookup)

    def locate(self, key: object) -> tuple[Any, int]:
        """The collection holding ``key`` and its row there (-1 when absent)."""
        if self.str_keys:
            if type(key) is not str:
                str_key(key)  # refuses a key of another type
        elif type(key) is not int:
            key = int_key(key)  # the dict holds Python ints: compare by exact value
        code = self.lookup.get(key)
        if code is None:
            return self.root, self.root.index.find(key)
        if code < 0:
            return self.root, -1
        return self.levels[code >> _LEVEL_SHIFT], code & _ROW_MASK

    def locate_many(self, keys: ArrayLike) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        """``(where, rows)`` of many keys: ``where`` is a level, `_ROOT` or `_REMOVED`."""
        if self.str_keys:
            listed, _ = str_keys(keys)
            rows = self.root.index.find_many(listed)
            codes = np.fromiter((self.lookup.get(key, _UNTOUCHED) for key in listed), np.int64, len(rows))
        else:
            query, outside = int_keys(keys)
            rows = self.root.index.find_many(query)
            ordered, ordered_codes = self._sorted_lookup()
            at = np.minimum(np.searchsorted(ordered, query), max(0, len(ordered) - 1))
            hit = ordered[at] == query if len(ordered) else np.zeros(len(query), bool)
            codes = np.where(hit, ordered_codes[at] if len(ordered) else 0, _UNTOUCHED)
            if outside is not None:  # their entries in ``query`` stand for no key
                rows[outside] = -1
                codes[outside] = _UNTOUCHED
        where = np.full(len(rows), _ROOT, dtype=np.intp)
        touched = codes != _UNTOUCHED
        where[touched & (codes < 0)] = _REMOVED
        rows[touched & (codes < 0)] = -1
        moved = touched & (codes >= 0)
        where[moved] = codes[moved] >> _LEVEL_SHIFT
        rows[moved] = codes[moved] & _ROW_MASK
        return where, rows

    def _sorted_lookup(self) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        if self._sorted is None:
            keys = np.fromiter(self.lookup.keys(), np.int64, len(self.lookup))
            codes = np.fromiter(self.lookup.values(), np.int64, len(self.lookup))
            order = np.argsort(keys)
            self._sorted = keys[order], codes[order]
        return self._sorted

    def all_keys(self) -> NDArray[np.int64] | list[str]:
        """Every key the collection serves (int keys sorted); computed once, on demand."""
        if self._effective is None:
            kept = [key for key, code in self.lookup.items() if code >= 0]
            root_keys = self.root.index.all_keys()
            if self.str_keys:
                touched = set(self.lookup)
                self._effective = sorted([k for k in root_keys if k not in touched] + kept)
            else:
                touched_ints = np.fromiter(self.lookup.keys(), np.int64, len(self.lookup))
                untouched = root_keys[~np.isin(root_keys, touched_ints)]
                self._effective = np.sort(np.concatenate([untouched, np.asarray(kept, np.int64)]))
        return self._effective


class _ChainedRanked:
    """A ranked collection of a delta version: its own spec and default over a `_Chain`."""

    __slots__ = ("chain", "default", "name", "single", "spec")

    def __init__(self, name: str, spec: CollectionSpec, chain: _Chain, default: RankedList | None) -> None:
        self.name = name
        self.spec = spec
        self.chain = chain
        self.default = default
        self.single = spec.serve_to_all  # declared at publish, never inferred from the count

    def locate(self, key: object) -> tuple[_Ranked, int]:
        target, row = self.chain.locate(key)
        return target, row

    def row(self, row: int, k: int | None) -> RankedList:
        # Only a single-list fallback asks for a row by number: the chain's only key.
        key = self.chain.all_keys()[row]
        target, found = self.locate(key)
        return target.row(found, k)


class _ChainedVectors:
    """A vectors collection of a delta version, over a `_Chain`."""

    __slots__ = ("chain", "name", "spec")

    def __init__(self, name: str, spec: CollectionSpec, chain: _Chain) -> None:
        self.name = name
        self.spec = spec
        self.chain = chain

    def locate(self, key: object) -> tuple[_Vectors, int]:
        target, row = self.chain.locate(key)
        return target, row


def _widest(arrays: list[MappedArray], name: str) -> MappedArray:
    """The rows array of the widest partition (the collection's width, as the parser checked)."""
    if not arrays:
        raise CorruptVersion(f"collection {name!r}: no partition holds a key; republish the version")
    return max(arrays, key=lambda array: array.n_cols)


def _partitioned_index(spec: CollectionSpec, parts: Sequence[_Ranked | _Vectors | None]) -> PartitionedIndex:
    """The index over the partitions of a collection (None for an empty partition)."""
    assert spec.partitions is not None
    return PartitionedIndex(
        spec.key_type,
        [part.index if part is not None else None for part in parts],
        [part.count for part in spec.partitions.parts],
    )


class _PartitionedRanked:
    """A ranked collection split into partitions: a lookup goes to the key's partition."""

    __slots__ = ("default", "index", "name", "parts", "single", "spec", "widest")

    def __init__(
        self,
        name: str,
        spec: CollectionSpec,
        parts: list[_Ranked | None],
        arrays: dict[str, MappedArray],
    ) -> None:
        assert spec.partitions is not None
        self.name = name
        self.spec = spec
        self.parts = parts
        self.index = _partitioned_index(spec, parts)
        self.widest = _widest([part.items for part in parts if part is not None], name)
        self.default: RankedList | None = None
        if spec.default_length is not None:
            n = spec.default_length
            self.default = RankedList(
                arrays["default_items"].span(0, n), arrays["default_scores"].span(0, n), f"{name}/default"
            )
        self.single = spec.serve_to_all  # declared at publish, never inferred from the count

    def locate(self, key: object) -> tuple[_PartitionedRanked, int]:
        """This collection and the key's row in it (-1 when absent); see `row()`."""
        return self, self.index.find(key)

    def row(self, row: int, k: int | None) -> RankedList:
        part, local = self.index.locate(row)
        ranked = self.parts[part]
        assert ranked is not None, "an empty partition holds no row"
        return ranked.row(local, k)


class _PartitionedVectors:
    __slots__ = ("index", "name", "parts", "spec", "widest")

    def __init__(self, name: str, spec: CollectionSpec, parts: list[_Vectors | None]) -> None:
        assert spec.partitions is not None
        self.name = name
        self.spec = spec
        self.parts = parts
        self.index = _partitioned_index(spec, parts)
        self.widest = _widest([part.vectors for part in parts if part is not None], name)


class OpenVersion:
    """One version mapped for reading: the collections of a manifest over a folder."""

    __slots__ = (
        "_model",
        "base",
        "manifest",
        "partitioned_ranked",
        "partitioned_vectors",
        "ranked",
        "root",
        "source",
        "vectors",
    )

    def __init__(
        self, manifest: Manifest, source: ChunkSource, where: str, base: OpenVersion | None = None
    ) -> None:
        self.manifest = manifest
        self._model: Manifest | None = None
        self.source = source
        self.root = where
        self.base = base
        version_root = where
        # Collections stored whole and partitioned ones apart: a lookup in a whole collection
        # (the common case) pays nothing for partitions.
        self.ranked: dict[str, _Ranked | _ChainedRanked] = {}
        self.vectors: dict[str, _Vectors | _ChainedVectors] = {}
        self.partitioned_ranked: dict[str, _PartitionedRanked] = {}
        self.partitioned_vectors: dict[str, _PartitionedVectors] = {}
        if manifest.base is not None and (base is None or base.id != manifest.base):
            raise CorruptVersion(
                f"version {manifest.id} is a delta over {manifest.base}, which was not opened with it"
            )
        for name, spec in manifest.collections.items():
            arrays = {
                array: MappedArray(source, f"{name}/{array}", array_spec, _checked(array, manifest))
                for array, array_spec in spec.arrays.items()
            }
            if spec.partitions is not None:
                self._open_partitioned(name, spec, arrays, source, version_root)
                continue
            if spec.delta:
                if base is None:
                    raise CorruptVersion(
                        f"collection {name!r} in {version_root}/manifest.json is a delta, but the "
                        "version names no base: republish the version"
                    )
                self._open_delta(name, spec, arrays, base)
                continue
            index = _open_index(name, spec, spec.arrays, arrays, version_root)
            if spec.kind == "ranked":
                _require(name, spec.arrays, _RANKED_ARRAYS, version_root)
                self.ranked[name] = _Ranked(name, spec, index, arrays)
            else:
                _require(name, spec.arrays, ("vectors",), version_root)
                self.vectors[name] = _Vectors(name, spec, index, arrays)
        ranked_names = set(self.ranked) | set(self.partitioned_ranked)
        all_ranked: list[_Ranked | _ChainedRanked | _PartitionedRanked] = [
            *self.ranked.values(),
            *self.partitioned_ranked.values(),
        ]
        for ranked in all_ranked:
            name = ranked.name
            for fallback in ranked.spec.fallbacks:
                if fallback not in ranked_names:
                    raise CorruptVersion(
                        f"collection {name!r} in {version_root}/manifest.json names fallback "
                        f"{fallback!r}, which is not a ranked collection of the version"
                    )

    def _open_partitioned(
        self,
        name: str,
        spec: CollectionSpec,
        arrays: dict[str, MappedArray],
        source: ChunkSource,
        where: str,
    ) -> None:
        assert spec.partitions is not None
        needed = _RANKED_ARRAYS if spec.kind == "ranked" else ("vectors",)
        dtypes: dict[str, str] = {}
        ranked_parts: list[_Ranked | None] = []
        vector_parts: list[_Vectors | None] = []
        for number, part in enumerate(spec.partitions.parts):
            if part.count == 0 or part.path is None:
                ranked_parts.append(None)
                vector_parts.append(None)
                continue
            label = f"{name}/{part.path}"
            part_arrays = {
                array: MappedArray(source, f"{label}/{array}", array_spec, _checked(array, self.manifest))
                for array, array_spec in part.arrays.items()
            }
            _require(label, part.arrays, needed, where)
            for array in needed:  # a batch lookup fills one output array from every partition
                dtype = dtypes.setdefault(array, part.arrays[array].dtype)
                if part.arrays[array].dtype != dtype:
                    raise CorruptVersion(
                        f"collection {name!r} in {where}/manifest.json: partition {number} stores "
                        f"{array} as {part.arrays[array].dtype}, others as {dtype}; republish the version"
                    )
            index = _open_index(label, spec, part.arrays, part_arrays, where, part.key_fences)
            if spec.kind == "ranked":
                ranked_parts.append(_Ranked(name, spec, index, part_arrays, part))
            else:
                vector_parts.append(_Vectors(name, spec, index, part_arrays))
        if spec.kind == "ranked":
            self.partitioned_ranked[name] = _PartitionedRanked(name, spec, ranked_parts, arrays)
        else:
            self.partitioned_vectors[name] = _PartitionedVectors(name, spec, vector_parts)

    def _open_delta(
        self, name: str, spec: CollectionSpec, arrays: dict[str, MappedArray], base: OpenVersion
    ) -> None:
        """A collection that holds only what changed since the same collection of ``base``."""
        where = self.root
        if spec.kind == "ranked":
            prior: Any = base.ranked.get(name)
        else:
            prior = base.vectors.get(name)
        if prior is None or prior.spec.key_type != spec.key_type:  # (partitioned ones are never bases)
            raise CorruptVersion(
                f"collection {name!r} in {where}/manifest.json updates the {spec.kind} collection of "
                f"version {base.id}, which has no such collection with {spec.key_type} keys"
            )
        level: _Ranked | _Vectors | None = None
        if "keys" in arrays or "key_hash" in arrays:  # rows added or changed
            index = _open_index(name, spec, spec.arrays, arrays, where)
            if spec.kind == "ranked":
                _require(name, spec.arrays, _RANKED_ARRAYS, where)
                level = _Ranked(name, spec, index, arrays)
            else:
                _require(name, spec.arrays, ("vectors",), where)
                level = _Vectors(name, spec, index, arrays)
        removed = _removed_keys(name, spec, arrays, where)
        chain = _Chain.extend(prior, level, removed)
        if spec.width > chain.widest.n_cols:  # a batch's output is sized by the width
            raise CorruptVersion(
                f"collection {name!r} in {where}/manifest.json is {spec.width} wide, but no version "
                f"of its chain of deltas stores rows wider than {chain.widest.n_cols}; republish the version"
            )
        if spec.kind == "ranked":
            default = None
            if spec.default_length is not None:
                _require(name, spec.arrays, ("default_items", "default_scores"), where)
                n = spec.default_length
                default = RankedList(
                    arrays["default_items"].span(0, n), arrays["default_scores"].span(0, n), f"{name}/default"
                )
            self.ranked[name] = _ChainedRanked(name, spec, chain, default)
        else:
            self.vectors[name] = _ChainedVectors(name, spec, chain)

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

    def model(self) -> Manifest:
        """The manifest as the pydantic model (parsed on first use: it imports pydantic)."""
        if self._model is None:
            self._model = self.manifest
        return self._model

    def emptied(self) -> OpenVersion:
        """The same version with no collection mapped (what a closed reader holds)."""
        empty = OpenVersion.__new__(OpenVersion)
        empty.manifest, empty.root, empty.source = self.manifest, self.root, self.source
        empty._model = self._model
        empty.base = None
        empty.ranked, empty.vectors = {}, {}
        empty.partitioned_ranked, empty.partitioned_vectors = {}, {}
        return empty


@dataclass(frozen=True)
class ReaderStats:
    """Counters of one reader (approximate under heavy multi-threading)."""

    version: str
    """The version served."""
    version_age_seconds: float
    """How long ago the served version was published: how stale its data is."""
    lookups: int
    """Keys looked up (``get`` calls plus keys of ``get_many``, ``vector``, ``vectors``)."""
    misses: int
    """Keys not found in the collection asked for."""
    fallbacks_served: int
    """Misses answered by a fallback collection or a default list."""
    switches: int
    """Times the reader moved to another version."""
    refresh_failures: int
    """Checks of ``CURRENT`` that failed, or versions refused because they did not verify."""
    last_error: str | None
    """The last refresh failure, if any."""


class Reader:
    """Serves lookups from the live version of a store, switching when ``CURRENT`` moves.

    Create one with `reader()`; it is safe to share between threads.
    A switch is atomic: each call runs entirely on one version, calls in flight finish on
    the version they started on, and new calls use the new one. Returned arrays of
    single-key lookups are read-only views into the mapped files.
    """

    def __init__(
        self,
        opened: OpenVersion,
        *,
        refresher: Refresher | None = None,
        lease: LeaseKeeper | None = None,
    ) -> None:
        self._v = opened
        self._closed = False
        self._lookups = 0
        self._misses = 0
        self._fallbacks = 0
        self._switches = 0
        self._failures = 0
        self._last_error: str | None = None
        self._refresher = refresher
        self._lease = lease
        self._lock = threading.Lock()
        self._retired: list[tuple[str, float]] = []  # versions left, leased until the deadline
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._swept = False
        self._warming = 0  # prefetch threads running
        if lease is not None and lease.version != opened.id:  # store.reader() leased it already
            lease.write(opened.id, [])
        self._start_thread()
        self._finalizer = weakref.finalize(self, _shutdown, self._stop, lease)
        _LIVE.add(self)

    def _start_thread(self, first: float | None = None) -> None:
        """Start the background thread if there is anything to poll or renew.

        ``first``: seconds before its first round (default: one period).
        """
        refresher, lease = self._refresher, self._lease
        interval = refresher.interval if refresher else None
        if interval or lease is not None:
            beat = lease.ttl / 3 if lease is not None else None
            period = min(p for p in (interval, beat) if p)
            self._thread = threading.Thread(
                target=_background,
                args=(weakref.ref(self), self._stop, period, period if first is None else first),
                name=f"sharedrec-reader-{self._v.id}",
                daemon=True,
            )
            self._thread.start()

    def _after_fork(self) -> None:
        """In a forked child: own locks, a lease file of its own, a live background thread.

        Threads do not survive ``fork()``, and a lock a parent's thread held stays held in
        the child: without this, the child's reader would never move off its version and
        never renew a lease, and its ``close()`` would remove the parent's lease.
        """
        self._lock = threading.Lock()
        self._warming = 0  # the parent's prefetch threads did not come along
        if self._closed:
            return
        self._finalizer.detach()  # it would stop the parent's thread and remove its lease
        self._stop = threading.Event()
        self._thread = None
        if self._lease is not None:
            self._lease.after_fork()
        self._finalizer = weakref.finalize(self, _shutdown, self._stop, self._lease)
        # The first round at once: it writes the child's own lease (no I/O in the fork hook).
        self._start_thread(first=0.0)

    # -- what is open ----------------------------------------------------------------------

    @property
    def version(self) -> str:
        """The id of the version this reader serves now."""
        return self._v.manifest.id

    @property
    def manifest(self) -> Manifest:
        """The manifest of the version this reader serves now."""
        return self._v.model()

    @property
    def metadata(self) -> Mapping[str, Any]:
        """The metadata given at publish time."""
        return self._v.manifest.metadata

    @property
    def collections(self) -> Mapping[str, CollectionSpec]:
        """The collections of the version, by name."""
        return self._v.model().collections

    @property
    def ready(self) -> bool:
        """True while a verified version is open, the reader is not closed, and no
        `prefetch()` is still warming the cache (a readiness probe's answer)."""
        return not self._closed and self._warming == 0

    @property
    def pinned(self) -> bool:
        """True when this reader never moves to another version."""
        return self._refresher is None

    def stats(self) -> ReaderStats:
        """A snapshot of the reader's counters."""
        manifest = self._v.manifest
        return ReaderStats(
            version=manifest.id,
            version_age_seconds=(datetime.now(UTC) - manifest.created_at).total_seconds(),
            lookups=self._lookups,
            misses=self._misses,
            fallbacks_served=self._fallbacks,
            switches=self._switches,
            refresh_failures=self._failures,
            last_error=self._last_error,
        )

    # -- ranked lists ----------------------------------------------------------------------

    def get(
        self,
        collection: str,
        key: int | str,
        k: int | None = None,
        *,
        fallback_keys: Mapping[str, int | str] | None = None,
    ) -> RankedList:
        """The ranked list of ``key``, best first, at most ``k`` long.

        When the key is absent, the collection's fallbacks are tried in order (each looked
        up with ``fallback_keys[name]`` if given, else with ``key``; a fallback published
        with ``serve_to_all=True`` serves its one list to every key), then its default list.

        Args:
            collection: A ranked collection of the version.
            key: An int (int64 collections) or str (str collections).
            k: Return at most this many items (default: the whole list).
            fallback_keys: Keys for fallback collections, e.g. ``{"by_country": "DE"}``.

        Returns:
            A `RankedList` whose ``items`` and ``scores`` are views of mapped memory
            and whose ``source`` says which collection served it.

        Raises:
            KeyNotFound: A ``KeyError``: the key is absent and nothing could stand in.
            UnknownCollection: The version has no ranked collection of that name.
            CorruptVersion: A chunk file is missing or has the wrong size.
        """
        try:
            v = self._v
            self._lookups += 1
            col = v.ranked.get(collection)
            if col is None:
                return self._get_partitioned(v, collection, key, k, fallback_keys)
            if col.chain is not None:  # a delta version: the key may live in any of its deltas
                target, row = col.locate(key)
                if row < 0:
                    return self._missing(v, col, key, k, fallback_keys)
                return target.row(row, k)
            row = col.index.find(key)
            if row < 0:
                return self._missing(v, col, key, k, fallback_keys)
            n = col.uniform if col.uniform >= 0 else int(col.lengths.row(row))
            if k is not None and (type(k) is not int or k < n):  # any other type is checked
                n = min(n, _check_k(k))
            chunk, offset = divmod(row, col.rows_per_chunk)
            return RankedList(
                col.items.chunk(chunk)[offset, :n], col.scores.chunk(chunk)[offset, :n], collection
            )
        except VersionGone:
            if not self._recover():
                raise
            return self.get(collection, key, k, fallback_keys=fallback_keys)

    def _get_partitioned(
        self,
        v: OpenVersion,
        collection: str,
        key: int | str,
        k: int | None,
        fallback_keys: Mapping[str, int | str] | None,
    ) -> RankedList:
        col = v.partitioned_ranked.get(collection)
        if col is None:
            raise self._unknown(v, collection, "ranked")
        part = col.parts[col.index.partition(key)]
        row = part.index.find(key) if part is not None else -1
        if part is None or row < 0:
            return self._missing(v, col, key, k, fallback_keys)
        return part.row(row, k)

    def get_many(
        self, collection: str, keys: ArrayLike, k: int | None = None
    ) -> tuple[NDArray[Any], NDArray[Any], NDArray[np.bool_]]:
        """The lists of many keys at once, as padded 2-D arrays.

        Args:
            collection: A ranked collection of the version.
            keys: A 1-D sequence of keys.
            k: At most this many columns (default, and at most: the collection's longest list).

        Returns:
            ``(items, scores, found)``: ``items`` and ``scores`` have one row per key, padded
            with -1 and NaN past each list's end; ``found[i]`` is False for a key that is not
            in the collection, whose row holds the default list if there is one, else padding.
        """
        try:
            v = self._v
            col = v.ranked.get(collection)
            if col is None:
                return self._get_many_partitioned(v, collection, keys, k)
            width = col.spec.width if k is None else min(_check_k(k), col.spec.width)
            if col.chain is not None:
                items, scores, found = _chained_ranked(col.chain, keys, width)
                return self._count_batch(col, items, scores, found)
            rows = col.index.find_many(keys)
            found = rows >= 0
            hit = np.flatnonzero(found)
            _back(col.items, rows, hit)
            # Stored rows carry their own padding, so only the rows of missing keys need filling.
            items = np.empty((len(rows), width), dtype=col.items.dtype)
            scores = np.empty((len(rows), width), dtype=col.scores.dtype)
            if hit.size < len(rows):
                items[~found] = _ITEM_PAD
                scores[~found] = np.nan
            plan = _gather(col.items, rows, hit, items, None)
            _gather(col.scores, rows, hit, scores, plan)  # items and scores are chunked alike
            return self._count_batch(col, items, scores, found)
        except VersionGone:
            if not self._recover():
                raise
            return self.get_many(collection, keys, k)

    def _get_many_partitioned(
        self, v: OpenVersion, collection: str, keys: ArrayLike, k: int | None
    ) -> tuple[NDArray[Any], NDArray[Any], NDArray[np.bool_]]:
        col = v.partitioned_ranked.get(collection)
        if col is None:
            raise self._unknown(v, collection, "ranked")
        width = col.spec.width if k is None else min(_check_k(k), col.spec.width)
        n, groups = col.index.groups(keys)
        first = next((part for part in col.parts if part is not None), None)
        assert first is not None, "a collection holds at least one key"
        col.widest.back()
        items = np.full((n, width), _ITEM_PAD, dtype=first.items.dtype)
        scores = np.full((n, width), np.nan, dtype=first.scores.dtype)
        found = np.zeros(n, dtype=bool)
        for number, where, sub in groups:
            part = col.parts[number]
            assert part is not None  # groups() skips empty partitions
            rows = part.index.find_many(sub)
            hit = np.flatnonzero(rows >= 0)
            if not hit.size:
                continue
            # Partitions are written apart: each may be narrower than the collection.
            target = where[hit]
            plan = _gather_into(part.items, rows[hit], target, items)
            _gather_into(part.scores, rows[hit], target, scores, plan)
            found[target] = True
        return self._count_batch(col, items, scores, found)

    def _count_batch(
        self,
        col: _Ranked | _ChainedRanked | _PartitionedRanked,
        items: NDArray[Any],
        scores: NDArray[Any],
        found: NDArray[np.bool_],
    ) -> tuple[NDArray[Any], NDArray[Any], NDArray[np.bool_]]:
        """Count a batch and put the default list in the rows of missing keys."""
        missing = len(found) - int(np.count_nonzero(found))
        self._lookups += len(found)
        self._misses += missing
        if col.default is not None and missing:
            miss = ~found
            n = min(items.shape[1], len(col.default))
            items[miss, :n] = col.default.items[:n]
            scores[miss, :n] = col.default.scores[:n]
            self._fallbacks += missing
        return items, scores, found

    # -- vectors ---------------------------------------------------------------------------

    def vector(self, collection: str, key: int | str) -> NDArray[Any]:
        """The vector of ``key`` as a read-only view.

        Raises:
            KeyNotFound: A ``KeyError``: the key is absent.
            UnknownCollection: The version has no vectors collection of that name.
        """
        try:
            v = self._v
            self._lookups += 1
            col = v.vectors.get(collection)
            if col is None:
                return self._vector_partitioned(v, collection, key)
            target, row = col.locate(key)
            if row < 0:
                self._misses += 1
                raise KeyNotFound(f"key {key!r} is not in collection {collection!r} of version {v.id}")
            return target.vectors.row(row)
        except VersionGone:
            if not self._recover():
                raise
            return self.vector(collection, key)

    def _vector_partitioned(self, v: OpenVersion, collection: str, key: int | str) -> NDArray[Any]:
        col = v.partitioned_vectors.get(collection)
        if col is None:
            raise self._unknown(v, collection, "vectors")
        part = col.parts[col.index.partition(key)]
        row = part.index.find(key) if part is not None else -1
        if part is None or row < 0:
            self._misses += 1
            raise KeyNotFound(f"key {key!r} is not in collection {collection!r} of version {v.id}")
        return part.vectors.row(row)

    def vectors(self, collection: str, keys: ArrayLike) -> tuple[NDArray[Any], NDArray[np.bool_]]:
        """The vectors of many keys: ``(array of shape (len(keys), dim), found)``.

        Rows of keys that are not in the collection are NaN.
        """
        try:
            v = self._v
            col = v.vectors.get(collection)
            if col is None:
                return self._vectors_partitioned(v, collection, keys)
            if col.chain is not None:
                out, found = _chained_vectors(col.chain, keys, col.spec.width)
                self._lookups += len(found)
                self._misses += len(found) - int(np.count_nonzero(found))
                return out, found
            rows = col.index.find_many(keys)
            found = rows >= 0
            hit = np.flatnonzero(found)
            _back(col.vectors, rows, hit)
            out = np.full((len(rows), col.spec.width), np.nan, dtype=col.vectors.dtype)
            _gather(col.vectors, rows, hit, out, None)
            self._lookups += len(rows)
            self._misses += len(rows) - hit.size
            return out, found
        except VersionGone:
            if not self._recover():
                raise
            return self.vectors(collection, keys)

    def _vectors_partitioned(
        self, v: OpenVersion, collection: str, keys: ArrayLike
    ) -> tuple[NDArray[Any], NDArray[np.bool_]]:
        col = v.partitioned_vectors.get(collection)
        if col is None:
            raise self._unknown(v, collection, "vectors")
        n, groups = col.index.groups(keys)
        first = next((part for part in col.parts if part is not None), None)
        assert first is not None, "a collection holds at least one key"
        col.widest.back()
        out = np.full((n, col.spec.width), np.nan, dtype=first.vectors.dtype)
        found = np.zeros(n, dtype=bool)
        for number, where, sub in groups:
            part = col.parts[number]
            assert part is not None  # groups() skips empty partitions
            rows = part.index.find_many(sub)
            hit = np.flatnonzero(rows >= 0)
            if hit.size:
                _gather_into(part.vectors, rows[hit], where[hit], out)
                found[where[hit]] = True
        self._lookups += n
        self._misses += n - int(np.count_nonzero(found))
        return out, found

    def prefetch(
        self, collections: Sequence[str] | None = None, *, wait: bool = False, progress: ProgressMode = None
    ) -> threading.Thread:
        """Warm the cache (S3) or the page cache (local disk, EFS/NFS) with whole collections.

        Runs in a background thread (joined first when ``wait``); lookups are served
        meanwhile. Progress bars show when ``progress`` (default: stderr is a terminal).
        While it runs, the reader's lease says it is warming: ``sharedrec ready`` reports
        the pod not ready until every byte has been read.
        """
        from sharedrec._progress import reporter

        v = self._v
        names = list(v.manifest.collections) if collections is None else list(collections)
        for name in names:
            if name not in v.manifest.collections:
                raise UnknownCollection(
                    f"version {v.id} has no collection {name!r}; it has {sorted(v.manifest.collections)}"
                )
        files = []
        version: OpenVersion | None = v
        while version is not None:  # a delta version reads the versions below it too
            source = version.source
            files += [
                (source, path, entry.size)
                for path, entry in version.manifest.files.items()
                if path.split("/", 1)[0] in names
            ]
            version = version.base
        bars = reporter(progress)

        def warm() -> None:
            # Read every byte rather than posix_fadvise(WILLNEED): the kernel caps that hint at
            # the readahead window (128 KiB on NFS since Linux 5.4 and on FUSE, a few MiB on
            # local disk) and does not wait for it, so a 4 MiB chunk on EFS stayed mostly cold
            # after a prefetch that had "finished".
            block = bytearray(1 << 20)
            with bars.task(f"prefetch {', '.join(names)}", sum(size for _, _, size in files)) as task:
                for source, path, size in files:
                    local = source.local_file(path)
                    fd = os.open(local, os.O_RDONLY)
                    try:
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
                        while os.readv(fd, [block]):
                            pass
                    finally:
                        os.close(fd)
                    task.advance(size)

        def run() -> None:
            try:
                warm()
            except Exception:
                log.exception("prefetch of %s failed", names)
            finally:
                self._set_warming(-1)

        self._set_warming(+1)
        thread = threading.Thread(target=run, name="sharedrec-prefetch", daemon=True)
        thread.start()
        if wait:
            thread.join()
        return thread

    def _set_warming(self, change: int) -> None:
        """Count a prefetch in or out, and say in the lease whether one still runs."""
        with self._lock:
            self._warming += change
            lease = self._lease
            if lease is None or self._closed or lease.warming == (self._warming > 0):
                return
            lease.warming = self._warming > 0
            try:
                lease.write(self._v.id, self._held())
            except SharedrecError as exc:
                log.warning("%s", exc)

    def _recover(self) -> bool:
        """After `VersionGone`: move to the live version if this reader follows it."""
        if self._refresher is None:
            return False
        gone = self._v.id
        late = self._lease.expired_for() if self._lease is not None else None
        try:
            switched = self._refresh(force=True)
        except SharedrecError:
            return False
        if switched or self._v.id != gone:  # another thread may have switched meanwhile
            if late is not None:
                why = f"while this reader was paused (lease expired {late:.0f} s ago)"
            elif self._lease is None:
                why = "while this reader used it (it holds no lease)"
            else:
                why = "while this reader used it (its lease had not expired: deleted by hand?)"
            log.warning("version %s was garbage-collected %s: switched to %s", gone, why, self._v.id)
            return True
        return False

    # -- keys: what a collection serves ---------------------------------------------------

    def keys(self, collection: str) -> NDArray[np.int64] | list[str]:
        """Every key ``collection`` serves in this version: int ids as an int64 array,
        string ids as a list (``default`` and ``serve_to_all`` answers are not keys).

        Raises:
            UnknownCollection: The version has no such collection.
        """
        col = self._collection(collection)
        chain = getattr(col, "chain", None)
        if chain is not None:
            return chain.all_keys()  # type: ignore[no-any-return]
        return col.index.all_keys()  # type: ignore[no-any-return]

    def key_at(self, collection: str, position: int) -> int | str:
        """``keys(collection)[position]``, without building the whole key list when it can."""
        col = self._collection(collection)
        chain = getattr(col, "chain", None)
        if chain is not None:
            key: int | str = chain.all_keys()[position]
            return int(key) if isinstance(key, np.integer) else key
        return col.index.key_at(position)  # type: ignore[no-any-return]

    def count(self, collection: str) -> int:
        """How many keys ``collection`` serves (``len(keys(collection))``)."""
        col = self._collection(collection)
        if getattr(col, "chain", None) is not None:
            return len(col.chain.all_keys())
        return int(col.spec.count)

    def contains(self, collection: str, key: int | str) -> bool:
        """Whether ``collection`` has a row of its own for ``key`` (no fallback counted).

        Raises:
            InvalidInput: ``key`` is not of the collection's key type.
        """
        col = self._collection(collection)
        if getattr(col, "chain", None) is not None:
            return bool(col.locate(key)[1] >= 0)
        return bool(col.index.find(key) >= 0)

    def default(self, collection: str) -> RankedList | None:
        """The list served to keys ``collection`` has no row for, or None."""
        return getattr(self._collection(collection), "default", None)

    def _collection(self, collection: str) -> Any:
        v = self._v
        for collections in (v.ranked, v.vectors, v.partitioned_ranked, v.partitioned_vectors):
            col = collections.get(collection)
            if col is not None:
                return col
        raise self._unknown(v, collection, "ranked or vectors")

    # -- switching versions ----------------------------------------------------------------

    def refresh(self) -> bool:
        """Check ``CURRENT`` now and switch if it moved; returns whether the reader switched.

        A pinned reader never switches. When the new version cannot be opened or does not
        verify, the reader keeps serving the old one, counts the failure, calls the
        ``on_refresh_error`` callback, and this method raises the error.

        Raises:
            CorruptVersion: The new version (or ``CURRENT``) is damaged.
            VersionNotFound: ``CURRENT`` names a version that does not exist.
        """
        return self._refresh(force=True)

    def _refresh(self, force: bool) -> bool:
        refresher = self._refresher
        if refresher is None or self._closed:
            return False
        with self._lock:
            try:
                target = refresher.poll(force, self._v.id)
                if target is None or target == self._v.id:
                    return False
                if self._lease is not None:  # lease the new version before mapping it
                    self._lease.write(self._v.id, [target, *self._held()])
                opened = refresher.open(target)
            except Exception as exc:
                self._failures += 1
                self._last_error = str(exc)
                refresher.failed(exc)
                if force:
                    raise
                return False
            old, self._v = self._v, opened
            self._switches += 1
            if self._lease is not None:
                self._retired.append((old.id, time.monotonic() + self._lease.ttl))
                self._lease.write(opened.id, self._held())
            log.info("reader switched from version %s to %s", old.id, opened.id)
            return True

    def _held(self) -> list[str]:
        now = time.monotonic()
        self._retired = [(vid, until) for vid, until in self._retired if until > now]
        return [vid for vid, _ in self._retired]

    def _tick(self) -> None:
        """One round of the background thread: poll ``CURRENT``, then renew the lease."""
        if self._refresher is not None and self._refresher.due():
            self._refresh(force=False)
        if self._lease is not None and not self._closed:
            try:
                with self._lock:
                    held = self._held()
                    if self._lease.due(self._v.id, held):
                        self._lease.write(self._v.id, held)
            except SharedrecError as exc:
                log.warning("%s", exc)
            if not self._swept:  # once, off the open path: files of killed processes of this id
                self._swept = True
                self._lease.sweep()

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop refreshing, remove the lease, and drop this reader's mappings.

        Views already returned stay valid on local disks; on a network file system they
        are safe until the version is garbage-collected.
        """
        if self._closed:
            return
        self._closed = True
        _LIVE.discard(self)
        self._v = self._v.emptied()
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._finalizer()

    def __enter__(self) -> Reader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("pinned" if self.pinned else "following CURRENT")
        collections = sorted(self._v.manifest.collections)
        return f"Reader(version={self.version!r}, {state}, collections={collections})"

    # -- misses and errors -----------------------------------------------------------------

    def _missing(
        self,
        v: OpenVersion,
        col: _Ranked | _ChainedRanked | _PartitionedRanked,
        key: object,
        k: int | None,
        fallback_keys: Mapping[str, int | str] | None,
    ) -> RankedList:
        self._misses += 1
        for name in col.spec.fallbacks:
            fallback: _Ranked | _ChainedRanked | _PartitionedRanked = (
                v.ranked.get(name) or v.partitioned_ranked[name]
            )
            fallback_key = fallback_keys.get(name, key) if fallback_keys else key
            holder: Any = fallback
            try:
                holder, row = fallback.locate(fallback_key)
            except InvalidInput:  # a key of the other type: only its default or list for all
                if is_bool(fallback_key):  # a key for no collection at all
                    raise
                row = -1
            if row < 0 and fallback.single:
                holder, row = fallback, 0
            if row >= 0:
                self._fallbacks += 1
                return holder.row(row, k)  # type: ignore[no-any-return]
            if fallback.default is not None:
                self._fallbacks += 1
                return fallback.default.head(k)
        if col.default is not None:
            self._fallbacks += 1
            return col.default.head(k)
        raise KeyNotFound(
            f"key {key!r} is not in collection {col.name!r} of version {v.id} (publish it with "
            "default=(items, scores) or fallbacks=[...] to serve a list for unknown keys)"
        )

    def _unknown(self, v: OpenVersion, collection: str, kind: str) -> UnknownCollection:
        if self._closed:
            return UnknownCollection("this reader is closed")
        collections = v.manifest.collections
        have = sorted(name for name, spec in collections.items() if spec.kind == kind)
        other = collections.get(collection)
        if other is not None:
            return UnknownCollection(
                f"collection {collection!r} of version {v.id} holds {other.kind}, "
                f"not {kind}; {kind} collections: {have}"
            )
        return UnknownCollection(f"version {v.id} has no {kind} collection {collection!r}; it has {have}")


class Refresher(Protocol):
    """What a following reader needs from its store (implemented by `RecommendationStore`)."""

    interval: float | None

    def due(self) -> bool:
        """Whether the background thread should poll now."""
        ...

    def poll(self, force: bool, current: str) -> str | None:
        """The version ``CURRENT`` names if it is not ``current``, else None.

        Unless ``force``, a pointer that already failed to open is not tried again.
        """
        ...

    def open(self, version_id: str) -> OpenVersion:
        """Open and verify a version."""
        ...

    def failed(self, exc: Exception) -> None:
        """Report a failed refresh (log, callback)."""
        ...


def _background(
    ref: weakref.ReferenceType[Reader], stop: threading.Event, period: float, first: float
) -> None:
    wait = first
    while not stop.wait(wait):
        wait = period
        reader = ref()
        if reader is None:
            return
        try:
            reader._tick()
        except Exception:  # never let the thread die: the next tick tries again
            log.exception("sharedrec reader background refresh failed")
        del reader


_LIVE: weakref.WeakSet[Reader] = weakref.WeakSet()
"""Readers not closed yet: a forked child gives each its own lease and thread."""


def _after_fork_in_child() -> None:
    for reader in list(_LIVE):
        try:
            reader._after_fork()
        except Exception:  # never fail the fork: the reader then only serves its version
            log.exception("sharedrec reader could not resume after fork()")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _shutdown(stop: threading.Event, lease: LeaseKeeper | None) -> None:
    stop.set()
    if lease is None:
        return
    if threading.current_thread().name != "fsspecIO":
        lease.remove()
    else:
        # Garbage collection ran this inside fsspec's event-loop thread, where the blocking
        # S3 calls of the removal would deadlock: remove the lease from another thread.
        threading.Thread(target=lease.remove, name="sharedrec-lease-removal", daemon=True).start()


def _back(array: MappedArray, rows: NDArray[np.intp], hit: NDArray[np.intp]) -> None:
    """Before a batch's output is sized by the collection's width: check that a chunk file
    holds rows that wide (a damaged manifest's width must not size an allocation)."""
    if not array.backed:
        array.back(int(rows[hit[0]]) if hit.size else 0)


def _gather(
    array: MappedArray,
    rows: NDArray[np.intp],
    hit: NDArray[np.intp],
    out: NDArray[Any],
    plan: RowPlan | None,
) -> RowPlan | None:
    """Copy the rows of the keys that were found (``hit``) into their places in ``out``.

    Returns the chunk plan used, for the next array chunked alike.
    """
    if hit.size == len(out):
        return array.take(rows, out, plan)
    if hit.size:
        gathered = np.empty((hit.size, *out.shape[1:]), dtype=out.dtype)
        plan = array.take(rows[hit], gathered, plan)
        out[hit] = gathered
    return plan


def _gather_into(
    array: MappedArray,
    rows: NDArray[np.intp],
    at: NDArray[np.intp],
    out: NDArray[Any],
    plan: RowPlan | None = None,
) -> RowPlan | None:
    """Copy ``rows`` of ``array`` into ``out[at]``, over as many leading columns as both have.

    For the levels of a delta chain and the partitions of a collection, which may be
    narrower than the output. Returns the chunk plan, for the next array chunked alike.
    """
    width = min(out.shape[1], array.n_cols)
    part = np.empty((len(rows), width), dtype=out.dtype)
    plan = array.take(rows, part, plan)
    out[at, :width] = part
    return plan


def _chained_ranked(
    chain: _Chain, keys: ArrayLike, width: int
) -> tuple[NDArray[Any], NDArray[Any], NDArray[np.bool_]]:
    """`Reader.get_many` over a chain of deltas: each key's row from the delta holding it."""
    where, rows = chain.locate_many(keys)
    root = chain.root
    levels = [root, *chain.levels]
    chain.widest.back()
    items = np.full((len(rows), width), _ITEM_PAD, dtype=np.result_type(*(c.items.dtype for c in levels)))
    scores = np.full((len(rows), width), np.nan, dtype=np.result_type(*(c.scores.dtype for c in levels)))
    found = rows >= 0
    for level, holder in [(_ROOT, root), *enumerate(chain.levels)]:
        at = np.flatnonzero(found & (where == level))
        if at.size:
            plan = _gather_into(holder.items, rows[at], at, items)
            _gather_into(holder.scores, rows[at], at, scores, plan)
    return items, scores, found


def _chained_vectors(chain: _Chain, keys: ArrayLike, dim: int) -> tuple[NDArray[Any], NDArray[np.bool_]]:
    """`Reader.vectors` over a chain of deltas."""
    where, rows = chain.locate_many(keys)
    root = chain.root
    dtype = np.result_type(*(c.vectors.dtype for c in [root, *chain.levels]))
    chain.widest.back()
    out = np.full((len(rows), dim), np.nan, dtype=dtype)
    found = rows >= 0
    for level, holder in [(_ROOT, root), *enumerate(chain.levels)]:
        at = np.flatnonzero(found & (where == level))
        if at.size:
            _gather_into(holder.vectors, rows[at], at, out)
    return out, found


def _check_k(k: int) -> int:
    if not isinstance(k, int | np.integer) or type(k) is bool or k < 0:
        raise InvalidInput(f"k must be a non-negative int; got {k!r}")
    return int(k)


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
    ("keys", "key_hash", "key_spans", "key_bytes", "removed", "removed_spans", "removed_bytes")
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
