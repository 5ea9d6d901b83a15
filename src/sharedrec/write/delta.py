"""Delta versions: the base a delta builds on, change detection, tombstones, inheritance.

A delta publish is given the full new data as usual; only the rows that differ from the
base are written, the keys the base has and the new data lacks are written as tombstones
(``removed``), and the base's collections the publish does not mention are inherited as
they are. New rows are stored in the base's dtypes when every value survives the cast
(`fit`), so a delta is not lost to a wider input dtype. When a delta is asked for and
cannot be written, a `FullWrite` says why. Everything here reads the base through the
public `Reader` API. Compaction back to a full version (`sharedrec.write.draft.compact`)
is a draft like any other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from sharedrec.errors import InvalidInput
from sharedrec.format.layout import MAX_CHAIN
from sharedrec.read import index
from sharedrec.write.arrays import write_array

if TYPE_CHECKING:
    from sharedrec._progress import Reporter
    from sharedrec.format.schema import ArraySpec, CollectionSpec, Pointer
    from sharedrec.read.reader import Reader
    from sharedrec.read.root import StoreRoot
    from sharedrec.write import validate as _validate

__all__ = [
    "Changes",
    "FullWrite",
    "changes",
    "delta_base",
    "fit",
    "inherit",
    "pad_rows",
    "rows_equal",
    "stored_dtypes",
    "write_removed",
]

log = logging.getLogger("sharedrec")


@dataclass(frozen=True)
class FullWrite:
    """Why a delta was asked for and a full write happens instead."""

    reason: str
    """What stood in the way, e.g. "items dtype int64 differs from the base's int32 ..."."""
    expected: bool = False
    """True when the full write is the designed outcome (nothing live to build on, a
    collection the base lacks, the chain limit): logged at INFO rather than WARNING."""


@dataclass(frozen=True)
class Changes:
    """What a delta writes of one collection."""

    rows: NDArray[np.bool_]
    """Which input rows are written: keys added, or whose row differs from the base's."""
    added: int
    """How many of those keys the base collection lacks."""
    gone: list[Any]
    """The keys of the base collection that the new data lacks (written as tombstones)."""


def delta_base(
    root: StoreRoot,
    base: str | None,
    delta: bool,
    pointer: Pointer | None,
    max_chain: int,
) -> Reader | FullWrite | None:
    """The version a delta publish builds on, opened pinned; None when no delta was asked
    for, or the `FullWrite` that says why a delta asked for cannot be written.

    Raises:
        InvalidInput: ``max_chain`` is out of range.
    """
    if not isinstance(max_chain, int) or isinstance(max_chain, bool) or not 1 <= max_chain <= MAX_CHAIN:
        raise InvalidInput(
            f"max_chain must be an int from 1 to {MAX_CHAIN} (MAX_CHAIN: readers refuse longer "
            f"chains of deltas); got {max_chain!r}"
        )
    if base is None and not delta:
        return None
    if base is None:
        if pointer is None:
            return FullWrite("no version is live yet: there is nothing to build a delta on", expected=True)
        base = pointer.version
    manifest = root.manifest(base)
    partitioned = sorted(name for name, spec in manifest.collections.items() if spec.partitions is not None)
    if partitioned:
        return FullWrite(
            f"the base version {base} holds partitioned collections ({', '.join(partitioned)}), "
            "which deltas cannot build on"
        )
    if manifest.depth + 1 > max_chain:
        return FullWrite(
            f"a delta over {base} would make a chain of {manifest.depth + 1} deltas (max_chain={max_chain})",
            expected=True,
        )
    # A pinned reader with a lease: garbage collection keeps the base while the delta is
    # written over it (the draft closes the reader when it is done).
    from sharedrec.read.open import open_reader

    return open_reader(root, base, pin=True, refresh_interval=None, verify="lazy")


def stored_dtypes(
    base: Reader, name: str, kind: str, keys: _validate.Keys, width: int
) -> list[np.dtype[Any]] | FullWrite:
    """The dtypes the base stores the rows of ``name`` in (items and scores, or vectors), or
    why the collection is written in full: the base has no collection of that name, or one
    of another kind, key type or vector dimension."""
    spec = base.collections.get(name)
    if spec is None:
        return FullWrite(f"the base version {base.version} has no collection {name!r}", expected=True)
    if spec.kind != kind:
        return FullWrite(f"it holds {kind}; the base's {name!r} holds {spec.kind}")
    if spec.key_type != keys.kind:
        return FullWrite(f"its keys are {keys.kind}; the base's are {spec.key_type}")
    if kind == "vectors" and spec.width != width:
        return FullWrite(f"its vectors have {width} dimensions; the base's have {spec.width}")
    # Every level of a chain stores rows alike, and a batch comes back in the stored dtypes:
    # one key's answer tells them.
    query: Any = (
        keys.ints[:1] if keys.ints is not None else [key.decode() for key in (keys.encoded or [])[:1]]
    )
    if kind == "vectors":
        return [base.vectors(name, query)[0].dtype]
    items, scores, _ = base.get_many(name, query)
    return [items.dtype, scores.dtype]


def fit(array: NDArray[Any], dtype: np.dtype[Any]) -> tuple[NDArray[Any] | None, Any]:
    """``(array as dtype, None)`` when every value survives the cast unchanged (NaN padding
    survives as NaN); otherwise ``(None, the first value that does not)``."""
    target = np.dtype(dtype).newbyteorder("<")
    if array.dtype.newbyteorder("<") == target:
        return array, None
    if array.dtype.kind != target.kind:
        return None, array.flat[0] if array.size else None
    if np.can_cast(array.dtype, target, "safe"):
        return array.astype(target), None
    if target.kind in "iu":
        info = np.iinfo(target)
        outside = (array < info.min) | (array > info.max)
        if outside.any():
            return None, array[outside][0].item()
        return array.astype(target), None
    with np.errstate(over="ignore", invalid="ignore"):
        cast = array.astype(target)
        kept = (cast.astype(array.dtype) == array) | (np.isnan(cast) & np.isnan(array))
    if not kept.all():
        return None, array[~kept][0].item()
    return cast, None


def changes(
    base: Reader,
    name: str,
    keys: _validate.Keys,
    rows: NDArray[Any],
    scores: NDArray[Any] | None,
    reporter: Reporter,
    offsets: NDArray[np.int64] | None = None,
) -> Changes:
    """Which input rows differ from the base, how many are new, and the keys of the base
    removed. ``rows`` (and ``scores``) are in the base's dtypes (`stored_dtypes`, `fit`);
    with ``offsets`` they are lists in the flat form (`sharedrec.write.validate.Ranked`)."""
    query: Any = keys.ints if keys.ints is not None else [key.decode() for key in keys.encoded or ()]
    with reporter.task(f"{name}: compare with {base.version}", len(keys)) as task:
        if scores is None:
            old_rows, found = base.vectors(name, query)
            same = found & rows_equal(old_rows, rows)
        elif offsets is not None:
            same, found = _same_lists(base, name, query, rows, scores, offsets)
        else:
            old_items, old_scores, found = base.get_many(name, query)
            same = found & rows_equal(old_items, rows) & rows_equal(old_scores, scores)
        task.advance(len(keys))
    old_keys = base.keys(name)
    if keys.ints is not None:
        assert isinstance(old_keys, np.ndarray)
        gone: list[Any] = old_keys[~np.isin(old_keys, keys.ints)].tolist()
    else:
        present = set(query)
        gone = [key for key in old_keys if key not in present]
    return Changes(~same, len(found) - int(np.count_nonzero(found)), gone)


_COMPARE_CELLS = 1 << 20
"""Padded cells per batch when flat lists are compared with the base's."""


def _same_lists(
    base: Reader,
    name: str,
    query: Any,
    items: NDArray[Any],
    scores: NDArray[Any],
    offsets: NDArray[np.int64],
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """``(same, found)`` for lists in the flat form, in batches of keys of similar length
    padded to at most `_COMPARE_CELLS` cells: a list of length L is compared with the first
    L + 1 items of the base's (one more tells a longer base list)."""
    lengths = np.diff(offsets)
    n = len(lengths)
    order = np.argsort(lengths, kind="stable")
    # A batch ending at sorted position i may hold cap[i] rows; i + 1 - cap[i] rises with i,
    # so the longest batch from ``start`` ends at the last i where it is <= start.
    cap = _COMPARE_CELLS // (lengths[order] + 1)
    reach = np.arange(1, n + 1) - cap
    same = np.zeros(n, dtype=bool)
    found = np.zeros(n, dtype=bool)
    start = 0
    while start < n:
        stop = max(start + 1, int(np.searchsorted(reach, start, side="right")))
        rows = order[start:stop]
        k = int(lengths[rows[-1]]) + 1
        asked = query[rows] if isinstance(query, np.ndarray) else [query[row] for row in rows.tolist()]
        old_items, old_scores, hit = base.get_many(name, asked, k=k)
        new_items = np.full((len(rows), k), -1, dtype=items.dtype)
        new_scores = np.full((len(rows), k), np.nan, dtype=scores.dtype)
        counts = lengths[rows]
        cells = np.repeat(np.arange(len(rows)), counts)
        columns = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        source = np.repeat(offsets[rows], counts) + columns
        new_items[cells, columns] = items[source]
        new_scores[cells, columns] = scores[source]
        same[rows] = hit & rows_equal(old_items, new_items) & rows_equal(old_scores, new_scores)
        found[rows] = hit
        start = stop
    return same, found


def write_removed(group: Any, gone: list[Any], chunk_bytes: int) -> dict[str, ArraySpec]:
    """The tombstones of a delta collection: the keys of the base it removes."""
    if not gone:
        return {}
    if isinstance(gone[0], str):
        spans, blob = index.encode_keys([key.encode() for key in gone])
        return {
            "removed_spans": write_array(group, "removed_spans", spans, None, None, None, chunk_bytes),
            "removed_bytes": write_array(group, "removed_bytes", blob, None, None, None, chunk_bytes),
        }
    removed = np.sort(np.asarray(gone, dtype=np.int64))
    return {"removed": write_array(group, "removed", removed, None, None, None, chunk_bytes)}


def inherit(base: Reader, group: Any, collections: dict[str, CollectionSpec], chunk_bytes: int) -> None:
    """Add to ``collections`` the base's collections this delta does not mention, as they are."""
    for name, spec in base.collections.items():
        if name in collections:
            continue
        child = group.create_group(name, attributes={"sharedrec_kind": spec.kind})
        arrays: dict[str, ArraySpec] = {}
        default = base.default(name) if spec.kind == "ranked" and spec.default_length is not None else None
        if default is not None:
            arrays["default_items"] = write_array(
                child, "default_items", default.items, None, None, None, chunk_bytes
            )
            arrays["default_scores"] = write_array(
                child, "default_scores", default.scores, None, None, None, chunk_bytes
            )
        collections[name] = spec.replace(delta=True, removed=0, key_fences=[], arrays=arrays)


def rows_equal(old: NDArray[Any], new: NDArray[Any]) -> NDArray[np.bool_]:
    """Row by row, whether two padded arrays hold the same values (NaN equals NaN).

    The narrower array is padded to the wider one's width first (-1 items, NaN scores),
    so lists of different stored widths compare by their content.
    """
    width = max(old.shape[1], new.shape[1])
    old, new = pad_rows(old, width), pad_rows(new, width)
    equal = old == new
    if old.dtype.kind == "f":
        equal |= np.isnan(old) & np.isnan(new)
    return equal.all(axis=1)  # type: ignore[no-any-return]


def pad_rows(array: NDArray[Any], width: int) -> NDArray[Any]:
    """``array`` widened to ``width`` columns: -1 for items, NaN for scores and vectors."""
    if array.shape[1] == width:
        return array
    fill = np.nan if array.dtype.kind == "f" else -1
    out = np.full((array.shape[0], width), fill, dtype=array.dtype)
    out[:, : array.shape[1]] = array
    return out
