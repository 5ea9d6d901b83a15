"""The collections of an open version, behind one `Collection` protocol.

A collection is stored whole (`Whole`), split into partitions (`Partitioned`, each
partition a `Whole`), or as a delta over the same collection of a base version
(`Chained`: a `Chain` says which level holds each key). Ranked lists and vectors are a
`RowKind`, not separate classes: a kind names the row arrays (items and scores, or
vectors), which are chunked alike, and what a missing key's row is filled with.

Every variant answers the same questions: where a key lives (`locate`), the rows of a
batch of keys (`many`), and which keys it serves (`keys`, `key_at`, `count`,
`contains`). A located key is always a row of a `Whole`, read with `Whole.ranked` or
`Whole.vector`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np

from sharedrec.errors import CorruptVersion, InvalidInput
from sharedrec.format.keys import int_key, int_keys, str_key, str_keys
from sharedrec.read.index import (
    KEY_BLOCK,
    IntIndex,
    PartitionedIndex,
    StrIndex,
    partitions_of,
    rows_in_blocks,
)
from sharedrec.read.mmap import Joint, huge_page_step

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray

    from sharedrec.format.schema import CollectionSpec, PartSpec
    from sharedrec.read.mmap import MappedArray, RowPlan

__all__ = [
    "RANKED",
    "VECTORS",
    "Chain",
    "Chained",
    "Collection",
    "Index",
    "Partitioned",
    "RankedList",
    "RowKind",
    "Whole",
    "check_k",
    "row_kind",
]

ITEM_PAD = -1
"""The item id of a padding column in a batch's output."""


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

    def __reduce__(self) -> tuple[type[RankedList], tuple[NDArray[Any], NDArray[Any], str]]:
        """Pickled and copied as a plain `RankedList` (the short path of `Reader.get` makes
        a bare subclass of it)."""
        return RankedList, (self.items, self.scores, self.source)

    def head(self, k: int | None) -> RankedList:
        """The first ``k`` entries (all when ``k`` is None)."""
        if k is None:
            return self
        n = check_k(k)
        if n >= len(self.items):
            return self
        return RankedList(self.items[:n], self.scores[:n], self.source)


class _Found(RankedList):
    """A `RankedList` made with no call of Python code: `Reader.get`'s short path creates it
    bare (``_Found()``, about 50 ns less than ``RankedList(...)``) and sets its three slots."""

    __slots__ = ()
    __init__ = object.__init__  # object's own, so no frame is run


def check_k(k: int) -> int:
    """``k`` as an int, or `InvalidInput` unless it is a non-negative int."""
    if not isinstance(k, int | np.integer) or type(k) is bool or k < 0:
        raise InvalidInput(f"k must be a non-negative int; got {k!r}")
    return int(k)


@dataclass(frozen=True)
class RowKind:
    """What a collection's rows are: the arrays that hold them and how a missing row is filled."""

    name: str
    """``"ranked"`` or ``"vectors"``, as in the manifest."""
    rows: tuple[str, ...]
    """The arrays holding the rows, chunked alike: a batch fills one output from each."""
    fills: tuple[float, ...]
    """What each output holds where a key has no row."""
    needed: tuple[str, ...]
    """The arrays a stored collection (or partition, or delta level) must have."""


RANKED = RowKind("ranked", ("items", "scores"), (ITEM_PAD, np.nan), ("items", "scores", "lengths"))
VECTORS = RowKind("vectors", ("vectors",), (np.nan,), ("vectors",))


def row_kind(name: str) -> RowKind:
    """The `RowKind` a manifest's ``kind`` names."""
    return RANKED if name == "ranked" else VECTORS


Index = IntIndex | StrIndex
Full = tuple[Callable[[int], Any], "memoryview[int]", int, "NDArray[Any]", "NDArray[Any]"]
"""``(keys.searchsorted, keys as Python ints, key count, items, scores)``: see `Whole.full`."""
Rows = list["NDArray[Any]"]
"""A batch's outputs, one per row array of the kind (items and scores, or vectors)."""


class Collection(Protocol):
    """A collection of an open version, whichever way it is stored."""

    name: str
    spec: CollectionSpec
    kind: RowKind
    default: RankedList | None
    """The list served to keys without one (ranked collections published with a default)."""
    single: bool
    """Whether the collection serves its one list to every key (``serve_to_all``)."""

    def locate(self, key: object) -> tuple[Whole, int]:
        """The stored collection holding ``key`` and its row there (-1 when absent: then the
        first element means nothing)."""
        ...

    def at(self, position: int) -> tuple[Whole, int]:
        """The stored collection and row of ``keys()[position]``."""
        ...

    def listed(self, key: object, k: int | None) -> RankedList | None:
        """The ranked list of ``key``, at most ``k`` long, or None when it is absent."""
        ...

    def many(self, keys: ArrayLike, width: int) -> tuple[Rows, NDArray[np.bool_]]:
        """The rows of a batch, ``width`` columns wide, and which keys were found.

        Rows of keys not found hold the kind's fill values.
        """
        ...

    def keys(self) -> NDArray[np.int64] | list[str]:
        """Every key the collection serves (int keys as an int64 array)."""
        ...

    def key_at(self, position: int) -> int | str:
        """``keys()[position]``, without building the key list when it can."""
        ...

    def count(self) -> int:
        """How many keys the collection serves."""
        ...

    def contains(self, key: object) -> bool:
        """Whether the collection has a row of its own for ``key``."""
        ...


class _Indexed:
    """What a collection with one key index answers from it: its keys, their count, membership."""

    __slots__ = ()
    index: IntIndex | StrIndex | PartitionedIndex
    spec: CollectionSpec

    def keys(self) -> NDArray[np.int64] | list[str]:
        return self.index.all_keys()

    def key_at(self, position: int) -> int | str:
        return self.index.key_at(position)

    def count(self) -> int:
        return int(self.spec.count)

    def contains(self, key: object) -> bool:
        return bool(self.index.find(key) >= 0)


class Whole(_Indexed):
    """A collection stored whole (or one partition of one, or one level of a delta chain)."""

    index: Index
    __slots__ = (
        "default",
        "filled",
        "full",
        "index",
        "kind",
        "lengths",
        "name",
        "pending",
        "row_width",
        "rows",
        "rows_per_chunk",
        "single",
        "spec",
        "uniform",
        "whole",
    )

    def __init__(
        self,
        name: str,
        spec: CollectionSpec,
        kind: RowKind,
        index: Index,
        arrays: dict[str, MappedArray],
        part: PartSpec | None = None,
    ) -> None:
        self._start(name, spec, kind, index, tuple(arrays[array] for array in kind.rows), arrays, part)
        self.rows_per_chunk = self.rows[0].rows_per_chunk
        self.row_width = self.rows[0].n_cols
        """Entries in a stored row (a partition's or a delta's may be narrower than the collection)."""
        for other, array in zip(kind.rows[1:], self.rows[1:], strict=True):
            if array.rows_per_chunk != self.rows_per_chunk:
                raise CorruptVersion(
                    f"collection {name!r}: {kind.rows[0]} and {other} are chunked differently "
                    f"({self.rows_per_chunk} and {array.rows_per_chunk} rows per chunk); "
                    "sharedrec writes them alike: republish the version with sharedrec"
                )
        shape = part or spec
        # When every list has the same length the lengths array need not be read at all.
        self.uniform = shape.max_length if shape.min_length == shape.max_length else -1
        self.lengths: MappedArray | None = None
        if kind is RANKED and self.uniform < 0:
            self.lengths = arrays["lengths"]
        self.pending = kind is RANKED and all(array.joinable for array in self.rows)
        """Whether `settle` may still set ``whole``, ``filled`` or ``full``: a lookup calls it
        once the scores (mapped after the items) are whole."""

    def _start(
        self,
        name: str,
        spec: CollectionSpec,
        kind: RowKind,
        index: Index,
        rows: tuple[MappedArray, ...],
        arrays: dict[str, MappedArray],
        part: PartSpec | None,
    ) -> None:
        """What every stored collection sets, padded or ragged (a ragged one never settles)."""
        self.name = name
        self.spec = spec
        self.kind = kind
        self.index = index
        self.rows = rows
        """The row arrays of the kind: ``(items, scores)`` or ``(vectors,)`` (flat when ragged)."""
        self.default: RankedList | None = None
        if spec.default_length is not None and part is None:  # a partition's misses go to its collection
            self.default = _default_list(name, arrays, spec.default_length)
        self.single = spec.serve_to_all  # declared at publish, never inferred from the count
        self.whole: tuple[NDArray[Any], NDArray[Any]] | None = None
        """``(items, scores)``, each as one view of every row, once every chunk of both is
        mapped: a lookup indexes them with the global row (see `settle`)."""
        self.filled: tuple[NDArray[Any], NDArray[Any]] | None = None
        """``whole`` when every list fills its stored row: a list without ``k`` is one index."""
        self.full: Full | None = None
        """Everything a lookup of an int key needs, once every key chunk and row is mapped
        and every list fills its row (see `settle`)."""
        self.pending = False

    def settle(self) -> None:
        """Set ``whole`` (and ``filled``) once every chunk of the items and scores is mapped,
        and ``full`` once every key chunk is mapped too (each checked as it was mapped)."""
        if self.whole is None:
            items, scores = self.rows
            if items.whole is None or scores.whole is None:
                return
            self.whole = (items.whole, scores.whole)
            if self.lengths is None and self.uniform == self.row_width:
                self.filled = self.whole
        index = self.index
        if self.filled is None or type(index) is not IntIndex:
            self.pending = False  # lists of varying length, or str keys: no ``full``
            return
        keys = index.complete_keys()
        if keys is not None:
            whole, ints = keys
            self.full = (whole.searchsorted, ints, index.n_rows, *self.filled)
            self.pending = False
        elif not index.may_complete:
            self.pending = False

    @property
    def items(self) -> MappedArray:
        """The items array of a ranked collection."""
        return self.rows[0]

    @property
    def scores(self) -> MappedArray:
        """The scores array of a ranked collection."""
        return self.rows[1]

    @property
    def vectors(self) -> MappedArray:
        """The vectors array of a vectors collection."""
        return self.rows[0]

    def listed(self, key: object, k: int | None) -> RankedList | None:
        """The list of ``key``, at most ``k`` long, or None when the key is absent (the
        path before every chunk is mapped; `Reader.get` then takes its short path inline)."""
        row = self.index.find(key)
        return None if row < 0 else self.ranked(row, k)

    def ranked(self, row: int, k: int | None) -> RankedList:
        """The list at ``row``, at most ``k`` long."""
        if self.pending and self.rows[1].whole is not None:  # the scores are mapped after the items
            self.settle()
        filled = self.filled
        if filled is not None and k is None:  # every row mapped, every list fills its row
            return RankedList(filled[0][row], filled[1][row], self.name)
        lengths = self.lengths
        n = self.uniform if lengths is None else int(lengths.row(row))
        if k is not None and (type(k) is not int or k < n):
            n = min(n, check_k(k))
        whole = self.whole
        if whole is not None:
            if n == self.row_width:  # a whole row: one index, not an index and a slice
                return RankedList(whole[0][row], whole[1][row], self.name)
            return RankedList(whole[0][row, :n], whole[1][row, :n], self.name)
        chunk, offset = divmod(row, self.rows_per_chunk)
        items, scores = self.rows
        return RankedList(items.chunk(chunk)[offset, :n], scores.chunk(chunk)[offset, :n], self.name)

    def vector(self, row: int) -> NDArray[Any]:
        """The vector at ``row``, as a read-only view."""
        return self.rows[0].row(row)

    def __repr__(self) -> str:
        return f"Whole({_describe(self.name, self.spec)}, {self.rows[0].n_cols} wide)"

    def locate(self, key: object) -> tuple[Whole, int]:
        return self, self.index.find(key)

    def at(self, position: int) -> tuple[Whole, int]:
        return self, position

    def many(self, keys: ArrayLike, width: int) -> tuple[Rows, NDArray[np.bool_]]:
        rows = self.index.find_many(keys)
        found = rows >= 0
        hit = np.flatnonzero(found)
        _back(self.rows[0], rows, hit)
        # Stored rows carry their own padding, so only the rows of missing keys need filling.
        outs = [np.empty((len(rows), width), dtype=array.dtype) for array in self.rows]
        if hit.size < len(rows):
            missing = ~found
            for out, fill in zip(outs, self.kind.fills, strict=True):
                out[missing] = fill
        plan = None
        for array, out in zip(self.rows, outs, strict=True):
            plan = _gather(array, rows, hit, out, plan)  # the row arrays are chunked alike
        return outs, found

    def gather_into(self, rows: NDArray[np.intp], at: NDArray[np.intp], outs: Rows) -> None:
        """Copy ``rows`` into ``outs[at]`` over the leading columns (a level of a delta chain)."""
        plan = None
        for array, out in zip(self.rows, outs, strict=True):
            plan = _gather_into(array, rows, at, out, plan)


class Partitioned(_Indexed):
    """A collection split into partitions: a lookup goes to the key's partition."""

    index: PartitionedIndex

    __slots__ = (
        "default",
        "first",
        "index",
        "joints",
        "key_blocks",
        "key_joint",
        "key_limits",
        "key_starts",
        "key_to_row",
        "keys_sampled",
        "kind",
        "limits",
        "name",
        "parts",
        "single",
        "spec",
        "starts",
        "widest",
    )

    def __init__(
        self,
        name: str,
        spec: CollectionSpec,
        kind: RowKind,
        parts: list[Whole | None],
        arrays: dict[str, MappedArray],
    ) -> None:
        assert spec.partitions is not None
        self.name = name
        self.spec = spec
        self.kind = kind
        self.parts = parts
        """The partitions, None for one that holds no key."""
        self.index = PartitionedIndex(
            spec.key_type,
            [part.index if part is not None else None for part in parts],
            [part.count for part in spec.partitions.parts],
            spec.partitions.hash,
        )
        held = [part for part in parts if part is not None]
        if not held:
            raise CorruptVersion(f"collection {name!r}: no partition holds a key; republish the version")
        self.first = held[0]
        """A partition that holds keys: its dtypes are every partition's (as checked at open)."""
        self.widest = max((part.rows[0] for part in held), key=lambda array: array.n_cols)
        """The rows array of the widest partition (the collection's width, as the parser checked)."""
        self.default: RankedList | None = None
        if spec.default_length is not None:
            self.default = _default_list(name, arrays, spec.default_length)
        self.single = spec.serve_to_all  # declared at publish, never inferred from the count
        # Each row array of every partition mapped into one span: a batch of int keys is then
        # one fancy index per array, straight into its output, whichever partitions it spans.
        # Each partition starts on a 2 MiB boundary in the spans (rows of every array alike).
        step = huge_page_step([array.row_nbytes for array in self.first.rows])
        joints = [Joint.join([part.rows[i] for part in held], step) for i in range(len(kind.rows))]
        self.joints: list[Joint] | None = None
        if spec.key_type == "int64" and all(joint is not None for joint in joints):
            self.joints = [joint for joint in joints if joint is not None]
        starts = iter(self.joints[0].starts if self.joints else itertools.repeat(0))
        self.starts = np.array([next(starts) if part is not None else 0 for part in parts] + [0])
        """Every partition's first row in the spans of ``joints`` (then 0, for keys in none)."""
        # The key arrays too, when they can be: a batch then reads every key block at once.
        self.key_joint: Joint | None = None
        if self.joints is not None:
            self.key_joint = Joint.join([cast(IntIndex, part.index).array for part in held])
        key_starts = iter(self.key_joint.starts if self.key_joint else itertools.repeat(0))
        self.key_starts = np.array([next(key_starts) if part is not None else 0 for part in parts] + [0])
        """Every partition's first key in the span of ``key_joint`` (then 0, for keys in none)."""
        self.keys_sampled = False
        """Whether every partition's keys are sampled, so every key chunk is mapped."""
        counts = [
            stored.count if part is not None else 0
            for part, stored in zip(parts, spec.partitions.parts, strict=True)
        ]
        self.limits = np.array([*counts, 0])
        """Every partition's rows (then none, for keys that can never be stored)."""
        self.key_blocks = self.key_starts // KEY_BLOCK
        """Every partition's first block of keys in the span of ``key_joint``."""
        self.key_limits = np.where(self.limits > 0, self.key_starts + self.limits, 0)
        """Where every partition's keys end in the span of ``key_joint`` (0: it holds none)."""
        self.key_to_row = self.starts - self.key_starts
        """What turns a row of the span of ``key_joint`` into one of the spans of ``joints``."""

    def __repr__(self) -> str:
        held = sum(part is not None for part in self.parts)
        described = _describe(self.name, self.spec)
        return f"Partitioned({described}, {len(self.parts)} partitions, {held} holding keys)"

    def locate(self, key: object) -> tuple[Whole, int]:
        part = self.parts[self.index.partition(key)]
        if part is None:
            return self.first, -1
        return part, part.index.find(key)

    def listed(self, key: object, k: int | None) -> RankedList | None:
        """The list of ``key`` from its partition (None when absent): see `Whole.listed`."""
        part = self.parts[self.index.partition(key)]  # refuses a key of the wrong type
        return None if part is None else part.listed(key, k)

    def at(self, position: int) -> tuple[Whole, int]:
        number, local = self.index.locate(position)
        part = self.parts[number]
        assert part is not None, "an empty partition holds no row"
        return part, local

    def many(self, keys: ArrayLike, width: int) -> tuple[Rows, NDArray[np.bool_]]:
        if self.joints is None:
            return self._many_grouped(keys, width)
        query, outside = int_keys(keys)
        n = len(query)
        count = len(self.parts)
        owners = partitions_of(query, count, self.index.hash)
        if outside is not None:
            owners[outside] = count  # one more group, after the last partition, never served
        # The batch grouped by partition, keys ascending within each: each partition searches
        # its slice of the keys, in order (its key sample is read front to back).
        order = np.argsort(query)
        order = order[np.argsort(owners[order].astype(np.uint16), kind="stable")]
        grouped = query[order]
        sizes = np.bincount(owners, minlength=count + 1)
        bounds = [0, *np.cumsum(sizes).tolist()]
        rows = None
        if self.key_joint is not None:
            rows = self._search_span(grouped, bounds, sizes.tolist())
            offsets = self.key_to_row  # from the span of key arrays to the span of rows
        if rows is None:
            rows = self._search_parts(grouped, bounds, sizes)
            offsets = self.starts
            if rows is None:
                return self._many_grouped(keys, width)
        found = rows >= 0
        taken = np.empty(n, dtype=np.intp)
        taken[order] = np.where(found, rows + np.repeat(offsets, sizes), 0)
        answered = np.empty(n, dtype=bool)
        answered[order] = found
        self.widest.back()
        outs = []
        missing = None if found.all() else ~answered
        for joint, fill in zip(self.joints, self.kind.fills, strict=True):
            out = np.empty((n, width), dtype=joint.arrays[0].dtype)
            joint.take(taken, out)  # keys not found take row 0, then the fill values
            if missing is not None:
                out[missing] = fill
            outs.append(out)
        return outs, answered

    def _search_span(
        self, grouped: NDArray[np.int64], bounds: list[int], sizes: list[int]
    ) -> NDArray[np.intp] | None:
        """Rows in the span of all key arrays of keys grouped by partition (-1 where absent);
        None until every partition's keys are sampled (then `_search_parts`)."""
        joint = self.key_joint
        assert joint is not None
        if not self.keys_sampled:  # blocks of every partition may be read (those of keys in none)
            held = [cast(IntIndex, part.index) for part in self.parts if part is not None]
            if not all(index.sampled for index in held):
                return None
            self.keys_sampled = True
        block = np.zeros(len(grouped), dtype=np.intp)
        for number, part in enumerate(self.parts):
            start, stop = bounds[number], bounds[number + 1]
            if stop > start and part is not None:
                found = cast(IntIndex, part.index).sampled_blocks(grouped[start:stop])
                assert found is not None  # every partition is sampled
                block[start:stop] = found
        block += np.repeat(self.key_blocks, sizes)
        _, whole = joint.region()
        stored = whole.reshape(-1, KEY_BLOCK).take(block, axis=0)
        return rows_in_blocks(stored, block, grouped, np.repeat(self.key_limits, sizes))

    def _search_parts(
        self, grouped: NDArray[np.int64], bounds: list[int], sizes: NDArray[np.intp]
    ) -> NDArray[np.intp] | None:
        """Rows within each partition of keys grouped by partition, partition by partition;
        None when a partition's key chunks are not mapped back to back (then `_many_grouped`)."""
        n = len(grouped)
        stored = np.zeros((n, KEY_BLOCK), dtype=np.int64)
        block = np.zeros(n, dtype=np.intp)
        for number, part in enumerate(self.parts):
            start, stop = bounds[number], bounds[number + 1]
            if stop > start and part is not None:
                searched = cast(IntIndex, part.index).blocks_of(grouped[start:stop])
                if searched is None:
                    return None
                blocks, at = searched
                np.take(blocks, at, axis=0, out=stored[start:stop])
                block[start:stop] = at
        return rows_in_blocks(stored, block, grouped, np.repeat(self.limits, sizes))

    def _many_grouped(self, keys: ArrayLike, width: int) -> tuple[Rows, NDArray[np.bool_]]:
        """`many` for str keys, or partitions that cannot be mapped into one span: the batch
        split by partition, each part looked up and copied on its own."""
        n, groups = self.index.groups(keys)
        self.widest.back()
        outs = [
            np.full((n, width), fill, dtype=array.dtype)
            for array, fill in zip(self.first.rows, self.kind.fills, strict=True)
        ]
        found = np.zeros(n, dtype=bool)
        for number, where, sub in groups:
            part = self.parts[number]
            assert part is not None  # groups() skips empty partitions
            rows = part.index.find_many(sub)
            hit = np.flatnonzero(rows >= 0)
            if not hit.size:
                continue
            # Partitions are written apart: each may be narrower than the collection.
            target = where[hit]
            plan = None
            for array, out in zip(part.rows, outs, strict=True):
                plan = _gather_into(array, rows[hit], target, out, plan)
            found[target] = True
        return outs, found


_LEVEL_SHIFT = 40
_ROW_MASK = (1 << _LEVEL_SHIFT) - 1
_ROOT = -1
"""In `Chain.locate_many`: the key is looked up in the full collection at the chain's root."""
_REMOVED = -2
"""In `Chain.locate_many`: a delta removed the key."""
_UNTOUCHED = -(1 << 62)
"""A code no key of `Chain.lookup` has: no delta touched the key."""


class Chain:
    """Where the keys of a collection of a delta version live.

    ``levels`` are the collections of the deltas that hold rows, oldest first; ``lookup``
    maps every key a delta added, changed or removed to ``level << 40 | row`` (the newest
    delta wins), or to -1 when removed. Any other key is in ``root``, the collection of the
    full version at the bottom of the chain. The dict is built at open from the deltas'
    keys, which are few: a lookup costs one dict probe more than in a full version.
    """

    __slots__ = ("_effective", "_sorted", "levels", "lookup", "root", "str_keys", "widest", "width")

    def __init__(self, root: Whole, levels: list[Whole], lookup: dict[Any, int]) -> None:
        self.root = root
        self.levels = levels
        self.lookup = lookup
        self.str_keys = root.spec.key_type == "str"
        padded = [c.rows[0] for c in [root, *levels] if type(c) is Whole]  # not ragged
        self.widest: MappedArray | None = max(padded, key=lambda a: a.n_cols) if padded else None
        """The padded rows array with the most columns (None when every level is ragged)."""
        self.width = max(c.rows[0].n_cols if type(c) is Whole else c.spec.width for c in [root, *levels])
        """The longest row any level stores: a batch's output is at most this wide."""
        self._sorted: tuple[NDArray[np.int64], NDArray[np.int64]] | None = None
        self._effective: NDArray[np.int64] | list[str] | None = None

    @classmethod
    def extend(cls, prior: Whole | Chained, level: Whole | None, removed: Sequence[Any]) -> Chain:
        """The chain of ``prior`` (a collection of the base) with one more delta on top."""
        if isinstance(prior, Whole):
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

    def locate(self, key: object) -> tuple[Whole, int]:
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


class Chained:
    """A collection of a delta version: its own spec and default over a `Chain`."""

    __slots__ = ("chain", "default", "kind", "name", "single", "spec")

    def __init__(
        self, name: str, spec: CollectionSpec, kind: RowKind, chain: Chain, default: RankedList | None
    ) -> None:
        self.name = name
        self.spec = spec
        self.kind = kind
        self.chain = chain
        self.default = default
        self.single = spec.serve_to_all  # declared at publish, never inferred from the count

    def __repr__(self) -> str:
        touched = len(self.chain.lookup)
        return f"Chained({_describe(self.name, self.spec)}; deltas added, changed or removed {touched:,})"

    def locate(self, key: object) -> tuple[Whole, int]:
        return self.chain.locate(key)

    def listed(self, key: object, k: int | None) -> RankedList | None:
        """The list of ``key`` from the delta that last wrote it, else from the full version
        at the root (None when absent or removed): see `Whole.listed`."""
        target, row = self.chain.locate(key)
        return target.ranked(row, k) if row >= 0 else None

    def at(self, position: int) -> tuple[Whole, int]:
        return self.chain.locate(self.chain.all_keys()[position])

    def many(self, keys: ArrayLike, width: int) -> tuple[Rows, NDArray[np.bool_]]:
        chain = self.chain
        where, rows = chain.locate_many(keys)
        levels = [chain.root, *chain.levels]
        if chain.widest is not None:
            chain.widest.back()
        outs = [
            np.full((len(rows), width), fill, dtype=np.result_type(*(c.rows[i].dtype for c in levels)))
            for i, fill in enumerate(self.kind.fills)
        ]
        found = rows >= 0
        for level, holder in [(_ROOT, chain.root), *enumerate(chain.levels)]:
            at = np.flatnonzero(found & (where == level))
            if at.size:
                holder.gather_into(rows[at], at, outs)
        return outs, found

    def keys(self) -> NDArray[np.int64] | list[str]:
        return self.chain.all_keys()

    def key_at(self, position: int) -> int | str:
        key: int | str = self.chain.all_keys()[position]
        return int(key) if isinstance(key, np.integer) else key

    def count(self) -> int:
        return len(self.chain.all_keys())

    def contains(self, key: object) -> bool:
        return bool(self.chain.locate(key)[1] >= 0)


def _describe(name: str, spec: CollectionSpec) -> str:
    """What every collection's repr starts with: name, kind, keys and extras."""
    extras = "".join(
        [
            f", default of {spec.default_length}" if spec.default_length is not None else "",
            f", fallbacks={spec.fallbacks}" if spec.fallbacks else "",
            ", serve_to_all" if spec.serve_to_all else "",
        ]
    )
    return f"{name!r}, {spec.kind}, {spec.count:,} {spec.key_type} keys{extras}"


def _default_list(name: str, arrays: dict[str, MappedArray], n: int) -> RankedList:
    return RankedList(
        arrays["default_items"].span(0, n), arrays["default_scores"].span(0, n), f"{name}/default"
    )


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
