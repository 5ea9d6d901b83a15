"""Delta versions: the base a delta builds on, change detection, tombstones, inheritance.

A delta publish is given the full new data as usual; only the rows that differ from the
base are written, the keys the base has and the new data lacks are written as tombstones
(``removed``), and the base's collections the publish does not mention are inherited as
they are. Everything here reads the base through the public `Reader` API. Compaction
back to a full version (`sharedrec.write.draft.compact`) is a draft like any other.
"""

from __future__ import annotations

import logging
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

__all__ = ["changes", "delta_base", "inherit", "pad_rows", "rows_equal", "write_removed"]

log = logging.getLogger("sharedrec")


def delta_base(
    root: StoreRoot,
    base: str | None,
    delta: bool,
    pointer: Pointer | None,
    max_chain: int,
) -> Reader | None:
    """The version a delta publish builds on, opened pinned; None for a full version.

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
            log.info("no version is live yet: writing a full version instead of a delta")
            return None
        base = pointer.version
    manifest = root.manifest(base)
    if any(spec.partitions is not None for spec in manifest.collections.values()):
        log.info("version %s holds partitioned collections: writing a full version, not a delta", base)
        return None
    if manifest.depth + 1 > max_chain:
        log.info(
            "a delta over %s would make a chain of %d deltas (max_chain=%d): writing a full version",
            base,
            manifest.depth + 1,
            max_chain,
        )
        return None
    # A pinned reader with a lease: garbage collection keeps the base while the delta is
    # written over it (the draft closes the reader when it is done).
    from sharedrec.read.open import open_reader

    return open_reader(root, base, pin=True, refresh_interval=None, verify="lazy")


def changes(
    base: Reader,
    name: str,
    kind: str,
    keys: _validate.Keys,
    rows: NDArray[Any],
    scores: NDArray[Any] | None,
    reporter: Reporter,
) -> tuple[NDArray[np.bool_], list[Any]] | None:
    """Which input rows differ from the base, and the keys of the base removed.

    None when the collection is written in full: the base has no collection of that name,
    kind and key type (or vectors of another dimension, or rows of other dtypes).
    """
    spec = base.collections.get(name)
    if spec is None or spec.kind != kind or spec.key_type != keys.kind:
        return None
    if kind == "vectors" and spec.width != rows.shape[1]:
        return None
    query: Any = keys.ints if keys.ints is not None else [key.decode() for key in keys.encoded or ()]
    # Every level of a chain stores rows alike, and a batch comes back in the stored dtypes:
    # one key's answer tells them.
    if scores is None:
        stored = [base.vectors(name, query[:1])[0].dtype]
    else:
        probe_items, probe_scores, _ = base.get_many(name, query[:1])
        stored = [probe_items.dtype, probe_scores.dtype]
    given = [rows.dtype] if scores is None else [rows.dtype, scores.dtype]
    if [np.dtype(d).newbyteorder("<") for d in given] != [np.dtype(d).newbyteorder("<") for d in stored]:
        log.info("collection %r changes dtypes: written in full, not as a delta", name)
        return None
    with reporter.task(f"{name}: compare with {base.version}", len(keys)) as task:
        if scores is None:
            old_rows, found = base.vectors(name, query)
            same = found & rows_equal(old_rows, rows)
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
    return ~same, gone


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
