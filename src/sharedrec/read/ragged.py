"""Ranked collections stored ragged: ``offsets`` into flat ``items`` and ``scores``.

A writer stores a collection ragged when padding every list to the longest would waste
space (``docs/format.md``, *Ragged collections*). List ``i`` ends at ``offsets[i + 1]``
and starts at ``offsets[i]``, or, when that span crosses the end of a chunk of the flat
arrays, at the start of the chunk it ends in: no list straddles two chunk files, so a
lookup is a slice of one mapped chunk (a view, as for padded collections).

The offsets decide which cells a key is served, so before a ragged collection serves its
first list the reader checks all of them once: non-decreasing, inside the flat arrays,
and no list longer than the manifest's longest. Overlapping or out-of-range offsets are
refused; a reader never serves cells of another key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from sharedrec.errors import CorruptVersion
from sharedrec.format.layout import chunk_path
from sharedrec.read.collections import _ROOT, Chained, RankedList, Whole, check_k

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray

    from sharedrec.format.schema import CollectionSpec
    from sharedrec.read.collections import Index, RowKind, Rows
    from sharedrec.read.mmap import MappedArray

__all__ = ["NEEDED", "Ragged", "batch"]

NEEDED = ("offsets", "items", "scores")
"""The arrays a ragged collection (or delta level) must have."""


class Ragged(Whole):
    """A ranked collection stored ragged; it answers like a padded `Whole`."""

    __slots__ = ("_per", "_valid", "_where", "chunk", "offsets")

    def __init__(
        self,
        name: str,
        spec: CollectionSpec,
        kind: RowKind,
        index: Index,
        arrays: dict[str, MappedArray],
        where: str = "",
    ) -> None:
        self._start(name, spec, kind, index, (arrays["items"], arrays["scores"]), arrays, None)
        self.offsets = arrays["offsets"]
        self._per = self.offsets.rows_per_chunk
        self.rows_per_chunk = self.chunk = self.rows[0].rows_per_chunk
        """Elements per chunk of the flat arrays."""
        if self.rows[1].rows_per_chunk != self.chunk:
            raise CorruptVersion(
                f"collection {name!r} in {where}/manifest.json: its flat items and scores are chunked "
                f"differently ({self.chunk} and {self.rows[1].rows_per_chunk} per chunk); republish it"
            )
        self.uniform = -1
        self.lengths = None
        self._where = where
        self._valid = False

    def __repr__(self) -> str:
        return (
            f"Ragged({self.name!r}, {self.spec.count:,} {self.spec.key_type} keys, longest {self.spec.width})"
        )

    def ranked(self, row: int, k: int | None) -> RankedList:
        """The list at ``row``, at most ``k`` long: views of one chunk of the flat arrays."""
        if not self._valid:
            self._validate()
        offsets = self.offsets
        chunk, at = divmod(row, self._per)
        if at + 1 < self._per:  # both offsets in one chunk (``item`` gives Python ints)
            values = offsets.chunk(chunk)
            start, end = values.item(at), values.item(at + 1)
        else:
            start, end = int(offsets.row(row)), int(offsets.row(row + 1))
        items, scores = self.rows
        if end <= start:
            return RankedList(items.chunk(0)[:0], scores.chunk(0)[:0], self.name)
        chunk = (end - 1) // self.chunk
        base = chunk * self.chunk
        lo = start - base if start > base else 0
        stop = end - base
        if k is not None and (type(k) is not int or k < stop - lo):
            stop = min(stop, lo + check_k(k))
        return RankedList(items.chunk(chunk)[lo:stop], scores.chunk(chunk)[lo:stop], self.name)

    def many(self, keys: ArrayLike, width: int, fit: bool = False) -> tuple[Rows, NDArray[np.bool_]]:
        """The lists of a batch, ``width`` columns wide; with ``fit``, only as wide as the
        longest list found (or the default list, when a key is missing)."""
        rows = self.index.find_many(keys)
        found = rows >= 0
        starts, lengths = self.spans(rows[found])
        if fit:
            longest = int(lengths.max()) if lengths.size else 0
            if self.default is not None and lengths.size < len(rows):
                longest = max(longest, len(self.default))
            width = min(width, longest)
        outs = [
            np.full((len(rows), width), fill, dtype=array.dtype)
            for array, fill in zip(self.rows, self.kind.fills, strict=True)
        ]
        self.fill(starts, np.minimum(lengths, width), np.flatnonzero(found), outs)
        return outs, found

    def gather_into(self, rows: NDArray[np.intp], at: NDArray[np.intp], outs: Rows) -> None:
        """Copy the lists of ``rows`` into ``outs[at]``, cut to the width of ``outs``."""
        starts, lengths = self.spans(rows)
        self.fill(starts, np.minimum(lengths, outs[0].shape[1]), at, outs)

    def spans(self, rows: NDArray[np.intp]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Where the lists of ``rows`` start in the flat arrays, and their lengths."""
        if not self._valid:
            self._validate()
        ends = np.empty(len(rows), np.int64)
        starts = np.empty(len(rows), np.int64)
        if len(rows):
            self.offsets.take(rows + 1, ends)
            self.offsets.take(rows, starts)
        crossed = np.maximum(ends - 1, 0) // self.chunk * self.chunk
        starts = np.where(ends > starts, np.maximum(starts, crossed), ends)
        return starts, ends - starts

    def fill(
        self, starts: NDArray[np.int64], lengths: NDArray[np.int64], at: NDArray[np.intp], outs: Rows
    ) -> None:
        """Copy the first ``lengths`` cells from ``starts`` into the rows ``at`` of ``outs``."""
        total = int(lengths.sum())
        if not total:
            return
        out_rows = np.repeat(at, lengths)
        columns = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        cells = np.repeat(starts, lengths) + columns
        for array, out in zip(self.rows, outs, strict=True):
            gathered = np.empty(total, dtype=array.dtype)
            array.take(cells, gathered)
            out[out_rows, columns] = gathered

    def _validate(self) -> None:
        """Check every offset once (see the module's docstring); raise `CorruptVersion`."""
        offsets = self.offsets
        size, longest, per = self.rows[0].n_rows, self.spec.width, offsets.rows_per_chunk
        previous = 0
        for number in range(offsets.n_chunks):
            values = offsets.chunk(number)[: max(0, min(per, offsets.n_rows - number * per))]
            if not len(values):
                continue
            ends = values.astype(np.int64)
            starts = np.concatenate([[previous], ends[:-1]]).astype(np.int64)
            problem = None
            if number == 0 and ends[0] != 0:
                problem = f"starts at {int(ends[0])}, not 0"
            elif (ends < starts).any():
                at = int(np.argmax(ends < starts))
                problem = f"decreases at offset {number * per + at} ({int(starts[at])}, then {int(ends[at])})"
            elif int(ends[-1]) > size:
                problem = f"points past the end of the {size} items (up to {int(ends[-1])})"
            else:
                crossed = np.maximum(ends - 1, 0) // self.chunk * self.chunk
                lengths = np.where(ends > starts, ends - np.maximum(starts, crossed), 0)
                if (lengths > longest).any():
                    at = int(np.argmax(lengths > longest))
                    problem = (
                        f"gives row {number * per + at - 1} a list of {int(lengths[at])} items; "
                        f"the longest is {longest}"
                    )
            if problem is not None:
                path = chunk_path(f"{self.name}/offsets", number, 1)
                raise CorruptVersion(
                    f"collection {self.name!r}: offsets chunk {self._where}/{path} {problem}: the "
                    "version is damaged; roll back or republish it"
                )
            previous = int(ends[-1])
        self._valid = True


def batch(col: Any, keys: ArrayLike, width: int) -> tuple[Rows, NDArray[np.bool_]]:
    """``col.many(keys, width)``, as wide as the lists asked for when ``col`` is ragged
    (or a delta over one): at most ``width``."""
    if type(col) is Ragged:
        return col.many(keys, width, fit=True)
    if type(col) is Chained and any(type(c) is Ragged for c in (col.chain.root, *col.chain.levels)):
        if not isinstance(keys, list | tuple | np.ndarray):
            keys = list(keys)  # type: ignore[arg-type,assignment]  # read twice
        where, rows = col.chain.locate_many(keys)
        longest = 0
        for level, holder in [(_ROOT, col.chain.root), *enumerate(col.chain.levels)]:
            held = rows[(rows >= 0) & (where == level)]
            if held.size:
                longest = max(longest, _longest(holder, held))
        if col.default is not None and (rows < 0).any():
            longest = max(longest, len(col.default))
        width = min(width, longest)
    return col.many(keys, width)  # type: ignore[no-any-return]


def _longest(holder: Whole, rows: NDArray[np.intp]) -> int:
    """The longest list among ``rows`` of a stored collection."""
    if type(holder) is Ragged:
        return int(holder.spans(rows)[1].max())
    if holder.lengths is None:
        return holder.uniform
    lengths = np.empty(len(rows), holder.lengths.dtype)
    holder.lengths.take(rows, lengths)
    return int(lengths.max())
