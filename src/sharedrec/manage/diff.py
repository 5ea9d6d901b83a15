"""What changed between two versions: keys added, removed and changed per collection,
how much the changed lists still overlap, and how far the scores moved. Vectorised: a
million keys take seconds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from sharedrec.errors import InvalidInput
from sharedrec.read.reader import Reader
from sharedrec.read.version import open_version
from sharedrec.write.delta import pad_rows, rows_equal

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from sharedrec.read.root import StoreRoot

__all__ = ["CollectionDiff", "VersionDiff", "compare", "diff"]

_BATCH = 100_000
_SAMPLE = 10


@dataclass(frozen=True)
class CollectionDiff:
    """The changes of one collection present in both versions."""

    name: str
    kind: str
    added: int
    removed: int
    changed: int
    unchanged: int
    overlap_at_k: float | None
    """Mean share of the old top-k items still in the new top k, over the changed lists."""
    top_score_shift: float | None
    """Median change of the first score (ranked) over the keys in both versions."""
    added_sample: list[Any] = field(default_factory=list)
    removed_sample: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class VersionDiff:
    """`RecommendationStore.diff` result: per-collection changes from version ``a`` to version ``b``."""

    a: str
    b: str
    k: int
    collections: dict[str, CollectionDiff]
    only_in_a: list[str]
    only_in_b: list[str]


def diff(root: StoreRoot, a: str, b: str, k: int = 10) -> VersionDiff:
    """Compare version (or ref) ``a`` with ``b`` in the store at ``root``, ``k`` as in overlap@k.

    Both versions are opened pinned, without a lease and without checking their files
    (``verify="lazy"``): chunks are checked as they are mapped.
    """
    if not isinstance(k, int) or k < 1:
        raise InvalidInput(f"k must be a positive int; got {k!r}")
    refs = root.refs()
    va, vb = refs.get(a, a), refs.get(b, b)
    old = Reader(open_version(root, va, "lazy"))
    try:
        new = Reader(open_version(root, vb, "lazy"))
        try:
            return compare(old, new, k)
        finally:
            new.close()
    finally:
        old.close()


def compare(old: Reader, new: Reader, k: int = 10) -> VersionDiff:
    """What changed from the version ``old`` serves to the one ``new`` serves."""
    names_a, names_b = set(old.collections), set(new.collections)
    out = {}
    for name in sorted(names_a & names_b):
        spec_a, spec_b = old.collections[name], new.collections[name]
        if spec_a.kind != spec_b.kind or spec_a.key_type != spec_b.key_type:
            continue
        out[name] = _collection(old, new, name, spec_a.kind, k)
    return VersionDiff(old.version, new.version, k, out, sorted(names_a - names_b), sorted(names_b - names_a))


def _collection(old: Reader, new: Reader, name: str, kind: str, k: int) -> CollectionDiff:
    keys_a, keys_b = old.keys(name), new.keys(name)
    if isinstance(keys_a, list) or isinstance(keys_b, list):
        set_a, set_b = set(keys_a), set(keys_b)
        common: list[Any] | NDArray[Any] = sorted(set_a & set_b)
        added, removed = sorted(set_b - set_a), sorted(set_a - set_b)
    else:
        common = np.intersect1d(keys_a, keys_b, assume_unique=True)
        added = np.setdiff1d(keys_b, keys_a, assume_unique=True).tolist()
        removed = np.setdiff1d(keys_a, keys_b, assume_unique=True).tolist()
    changed = 0
    overlaps: list[NDArray[np.float64]] = []
    shifts: list[NDArray[np.float64]] = []
    for start in range(0, len(common), _BATCH):
        batch = common[start : start + _BATCH]
        if kind == "vectors":
            va, _ = old.vectors(name, batch)
            vb, _ = new.vectors(name, batch)
            changed += int((va != vb).any(axis=1).sum())
            continue
        ia, sa, _ = old.get_many(name, batch)
        ib, sb, _ = new.get_many(name, batch)
        width = max(ia.shape[1], ib.shape[1])
        ia, sa, ib, sb = (pad_rows(x, width) for x in (ia, sa, ib, sb))
        rows = ~(rows_equal(ia, ib) & rows_equal(sa, sb))
        changed += int(rows.sum())
        if rows.any():
            overlaps.append(_overlap(ia[rows, :k], ib[rows, :k]))
        both = ~np.isnan(sa[:, 0]) & ~np.isnan(sb[:, 0])
        shifts.append((sb[both, 0] - sa[both, 0]).astype(np.float64))
    overlap = float(np.mean(np.concatenate(overlaps))) if overlaps else None
    shift_values = np.concatenate(shifts) if shifts else np.empty(0)
    shift = float(np.median(shift_values)) if shift_values.size else None
    return CollectionDiff(
        name=name,
        kind=kind,
        added=len(added),
        removed=len(removed),
        changed=changed,
        unchanged=len(common) - changed,
        overlap_at_k=overlap,
        top_score_shift=shift,
        added_sample=list(added[:_SAMPLE]),
        removed_sample=list(removed[:_SAMPLE]),
    )


def _overlap(old: NDArray[Any], new: NDArray[Any]) -> NDArray[np.float64]:
    """Per row, the share of the old row's items (padding excluded) found in the new row."""
    n = len(old)
    span = int(max(old.max(initial=0), new.max(initial=0))) + 2
    offsets = np.arange(n, dtype=np.int64)[:, None] * span
    flat_new = np.sort(new.astype(np.int64) + 1 + offsets, axis=None)  # +1: padding -1 becomes 0
    queries = old.astype(np.int64) + 1 + offsets
    found = np.searchsorted(flat_new, queries.ravel())
    found = np.minimum(found, len(flat_new) - 1)
    hit = (flat_new[found] == queries.ravel()).reshape(old.shape) & (old >= 0)
    listed = np.maximum((old >= 0).sum(axis=1), 1)
    return np.asarray(hit.sum(axis=1) / listed, dtype=np.float64)
