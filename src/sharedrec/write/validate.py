"""Input checks and normalisation for publishing: user arrays in, plain typed arrays out.

Every check raises `InvalidInput` naming the collection, the
argument and (where there is one) the first offending row or key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sharedrec.errors import InvalidInput
from sharedrec.format.keys import int_keys, str_keys
from sharedrec.format.layout import MAX_WIDTH

__all__ = ["Keys", "Ranked", "check_width", "normalize_keys", "normalize_ranked", "normalize_vectors"]

ITEM_PAD = -1
"""Stored after the end of every list; item ids must be non-negative."""


@dataclass(frozen=True)
class Keys:
    """Validated keys: int64 values, or str keys encoded as UTF-8."""

    kind: Literal["int64", "str"]
    ints: NDArray[np.int64] | None
    encoded: list[bytes] | None

    def __len__(self) -> int:
        return len(self.ints) if self.ints is not None else len(self.encoded or ())

    def describe(self, row: int) -> str:
        """The key of input row ``row``, for messages."""
        if self.ints is not None:
            return f"key {int(self.ints[row])}"
        assert self.encoded is not None
        return f"key {self.encoded[row].decode()!r}"


@dataclass(frozen=True)
class Ranked:
    """Validated ranked lists: padded 2-D arrays plus the length of every list, or (flat
    form, ``offsets`` set) every list one after the other in 1-D ``items``/``scores``, list
    ``i`` at ``offsets[i]:offsets[i + 1]``."""

    items: NDArray[np.signedinteger[Any]]
    scores: NDArray[np.floating[Any]]
    lengths: NDArray[np.int32]
    offsets: NDArray[np.int64] | None = None
    columns: int | None = None
    """Flat form: the width of the padded form when wider than the longest list (rows
    taken out of a wider collection keep its width)."""

    @property
    def width(self) -> int:
        """Columns of the padded form: the longest list (at least one) unless ``columns`` says."""
        if self.offsets is None:
            return int(self.items.shape[1])
        if self.columns is not None:
            return self.columns
        return max(1, int(self.lengths.max(initial=0)))

    def padded(self) -> Ranked:
        """The padded form (itself when it is one): ``ITEM_PAD`` items, NaN scores past each list."""
        if self.offsets is None:
            return self
        n, width = len(self.lengths), self.width
        rows, columns = _cells(self.lengths)
        items = np.full((n, width), ITEM_PAD, dtype=self.items.dtype)
        scores = np.full((n, width), np.nan, dtype=self.scores.dtype)
        items[rows, columns] = self.items
        scores[rows, columns] = self.scores
        return Ranked(items, scores, self.lengths)

    def take(self, rows: NDArray[np.bool_]) -> Ranked:
        """The lists of the rows where ``rows`` is True, in the same form."""
        if self.offsets is None:
            return Ranked(self.items[rows], self.scores[rows], self.lengths[rows])
        cells = np.repeat(rows, self.lengths)
        lengths = self.lengths[rows]
        return Ranked(self.items[cells], self.scores[cells], lengths, _offsets(lengths), self.width)

    def with_arrays(self, items: NDArray[Any], scores: NDArray[Any]) -> Ranked:
        """The same lists with ``items`` and ``scores`` of the same shape (e.g. cast)."""
        return replace(self, items=items, scores=scores)


def _offsets(lengths: NDArray[np.integer[Any]]) -> NDArray[np.int64]:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, dtype=np.int64, out=offsets[1:])
    return offsets


def _cells(lengths: NDArray[np.integer[Any]]) -> tuple[NDArray[np.intp], NDArray[np.int64]]:
    """The (row, column) of every element of lists of ``lengths`` laid one after the other."""
    lengths = lengths.astype(np.int64)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    columns = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(_offsets(lengths)[:-1], lengths)
    return rows, columns


def normalize_keys(collection: str, keys: object, *, unique: bool = True) -> Keys:
    """Check keys: 1-D, non-empty, all int64 or all str, no duplicates (unless not ``unique``).

    Keys are read as lookups read them (`sharedrec.format.keys`): integers of any numpy dtype by
    exact value, never bools; str keys must have a UTF-8 form.
    """
    where = f"collection {collection!r}: keys"
    if isinstance(keys, str | bytes):
        raise InvalidInput(f"{where} must be a sequence of keys, not a single {type(keys).__name__}")
    if isinstance(keys, Sequence) and any(isinstance(key, str) for key in keys):
        # Keep str keys as Python strings: numpy's str dtype drops trailing NULs, and
        # np.asarray([1, "b"]) silently turns the int into a string.
        odd = next((key for key in keys if not isinstance(key, str)), None)
        if odd is not None:
            raise InvalidInput(
                f"{where} must be integers (stored as int64) or str, not a mix; found "
                f"{type(odd).__name__} {odd!r} among str keys"
            )
        return _str_keys(where, keys, unique)
    if not isinstance(keys, Sequence | np.ndarray):
        keys = np.asarray(keys)
    if isinstance(keys, np.ndarray):
        if keys.ndim != 1:
            raise InvalidInput(f"{where} must be 1-D; got shape {keys.shape}")
        if keys.size == 0:
            raise InvalidInput(f"{where} are empty: a collection needs at least one key")
        if keys.dtype.kind == "U" or (
            keys.dtype.kind == "O" and keys.size and all(isinstance(key, str) for key in keys.tolist())
        ):
            return _str_keys(where, keys, unique)
    ints, outside = int_keys(keys, where, "integers (stored as int64) or str")
    if ints.size == 0:
        raise InvalidInput(f"{where} are empty: a collection needs at least one key")
    if outside is not None:
        first = int(np.flatnonzero(outside)[0])
        raise InvalidInput(
            f"{where} exceed the int64 range ({int(outside.sum())} of them, first "
            f"{_at(keys, first)!r} at row {first})"
        )
    if not unique:
        return Keys("int64", ints, None)
    ordered = np.sort(ints)
    dup = np.flatnonzero(ordered[1:] == ordered[:-1])
    if dup.size:
        raise InvalidInput(
            f"{where} contain duplicates ({dup.size} repeated, first {int(ordered[dup[0]])}): "
            "each key may appear once"
        )
    return Keys("int64", ints, None)


def _at(keys: object, row: int) -> int:
    value: Any = keys[row] if isinstance(keys, Sequence | np.ndarray) else None
    return int(value)


def _str_keys(where: str, keys: object, unique: bool = True) -> Keys:
    _, maybe = str_keys(keys, where, "all str")
    if None in maybe:
        row = maybe.index(None)
        raise InvalidInput(
            f"{where}: row {row} is not valid text (it holds a lone surrogate, which has no UTF-8 "
            "form); decode the source with errors='replace' or drop the key"
        )
    encoded: list[bytes] = maybe  # type: ignore[assignment]  # no None left
    if unique and len(set(encoded)) != len(encoded):
        seen: set[bytes] = set()
        first = next(key for key in encoded if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise InvalidInput(f"{where} contain duplicates (first {first.decode()!r}): each key may appear once")
    return Keys("str", None, encoded)


def _as_items(where: str, items: NDArray[Any]) -> NDArray[np.signedinteger[Any]]:
    kind, size = items.dtype.kind, items.dtype.itemsize
    if kind not in "iu" or items.dtype == np.bool_:
        raise InvalidInput(f"{where} must be integer item ids (int32 or int64); got dtype {items.dtype}")
    if (kind == "i" and size <= 4) or (kind == "u" and size <= 2):
        return items.astype("<i4", copy=False)
    if kind == "u" and items.size and int(items.max()) > np.iinfo(np.int64).max:
        raise InvalidInput(f"{where} exceed the int64 range")
    return items.astype("<i8", copy=False)


def _as_scores(where: str, scores: NDArray[Any]) -> NDArray[np.floating[Any]]:
    kind = scores.dtype.kind
    if kind == "f":
        return scores.astype("<f8" if scores.dtype.itemsize == 8 else "<f4", copy=False)
    if kind in "iu" and scores.dtype != np.bool_:
        return scores.astype("<f8")
    raise InvalidInput(f"{where} must be real numbers (float32 or float64); got dtype {scores.dtype}")


def normalize_ranked(
    collection: str,
    keys: Keys,
    items: object,
    scores: object,
    *,
    lengths: ArrayLike | None,
    pad: int | None,
    sort: bool,
    top_k: int | None,
    flat: bool = False,
) -> Ranked:
    """Check ranked lists given padded (2-D) or ragged (one sequence per key).

    With ``flat``, ragged input comes back in the flat form (`Ranked.offsets` set), checked
    and sorted without ever being padded; otherwise the lists come back padded.
    """
    where = f"collection {collection!r}"
    n = len(keys)
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise InvalidInput(f"{where}: top_k must be a positive int; got {top_k!r}")
    items_2d = _maybe_2d(items)
    if items_2d is not None:
        scores_2d = _maybe_2d(scores)
        if scores_2d is None or scores_2d.shape != items_2d.shape:
            shape = getattr(scores_2d, "shape", None) or f"ragged ({type(scores).__name__})"
            raise InvalidInput(
                f"{where}: items have shape {items_2d.shape} but scores have shape {shape}; "
                "give both as (n_keys, k) arrays"
            )
        if items_2d.shape[0] != n:
            raise InvalidInput(f"{where}: {n} keys but {items_2d.shape[0]} rows of items; one row per key")
        item_arr = _as_items(f"{where}: items", items_2d)
        score_arr = _as_scores(f"{where}: scores", scores_2d)
        length_arr = _lengths(where, item_arr, lengths, pad)
    else:
        if lengths is not None or pad is not None:
            raise InvalidInput(f"{where}: lengths= and pad= apply to 2-D items only, not ragged lists")
        if flat:
            return _flat_ranked(where, keys, items, scores, sort, top_k)
        item_arr, score_arr, length_arr = _from_ragged(where, n, items, scores)
    # When every list fills its row (the common top-K case) the checks need no mask and the
    # arrays no copy; otherwise work on copies so the caller's arrays are never modified.
    full = bool((length_arr == item_arr.shape[1]).all())
    valid = None if full else np.arange(item_arr.shape[1]) < length_arr[:, None]
    _check_values(where, keys, item_arr, score_arr, valid)
    if sort:
        item_arr, score_arr = _sort_rows(item_arr, score_arr, valid)
    else:
        _check_sorted(where, keys, score_arr, valid)
    if top_k is not None:
        length_arr = np.minimum(length_arr, top_k).astype(np.int32)
    # Store no wider than the longest list (at least one column, so every row has a width).
    width = max(1, int(length_arr.max()))
    check_width(where, width, "a list length of", "keep fewer items per list (top_k=)")
    if width > item_arr.shape[1]:
        item_arr = np.full((n, width), ITEM_PAD, dtype=item_arr.dtype)
        score_arr = np.full((n, width), np.nan, dtype=score_arr.dtype)
    item_arr, score_arr = item_arr[:, :width], score_arr[:, :width]
    outside = np.arange(width) >= length_arr[:, None]
    if outside.any():
        item_arr, score_arr = item_arr.copy(), score_arr.copy()
        item_arr[outside] = ITEM_PAD
        score_arr[outside] = np.nan
    # Contiguous rows make the key-order gather at write time several times faster.
    return Ranked(np.ascontiguousarray(item_arr), np.ascontiguousarray(score_arr), length_arr)


def _maybe_2d(value: object) -> NDArray[Any] | None:
    if isinstance(value, np.ndarray):
        return value if value.ndim == 2 else None
    if isinstance(value, Sequence) and value and all(isinstance(row, Sequence | np.ndarray) for row in value):
        first = len(value[0])
        if all(len(row) == first for row in value) and first > 0:
            array = np.asarray(value)
            return array if array.ndim == 2 and array.dtype.kind in "iuf" else None
    return None


def _lengths(
    where: str, items: NDArray[Any], lengths: ArrayLike | None, pad: int | None
) -> NDArray[np.int32]:
    n, width = items.shape
    if lengths is not None and pad is not None:
        raise InvalidInput(f"{where}: give lengths= or pad=, not both")
    if lengths is not None:
        arr = np.asarray(lengths)
        if arr.shape != (n,) or arr.dtype.kind not in "iu":
            raise InvalidInput(
                f"{where}: lengths must be {n} integers (one per key); got dtype {arr.dtype} "
                f"with shape {arr.shape}"
            )
        bad = np.flatnonzero((arr < 0) | (arr > width))
        if bad.size:
            raise InvalidInput(
                f"{where}: lengths must lie in 0..{width}; row {int(bad[0])} has {int(arr[bad[0]])}"
            )
        return arr.astype(np.int32)
    if pad is None:
        return np.full(n, width, dtype=np.int32)
    is_pad = items == pad
    first: NDArray[np.int32] = np.where(is_pad.any(axis=1), is_pad.argmax(axis=1), width).astype(np.int32)
    after = np.arange(width) >= first[:, None]
    bad = np.flatnonzero((after & ~is_pad).any(axis=1))
    if bad.size:
        raise InvalidInput(
            f"{where}: row {int(bad[0])} has items after the pad value {pad}; "
            "padding must fill the end of a row"
        )
    return first


def _ragged_rows(
    where: str, n: int, items: object, scores: object
) -> tuple[list[NDArray[Any]], list[NDArray[Any]], NDArray[np.int32], np.dtype[Any], np.dtype[Any]]:
    """Ragged input as one array per list, the lengths, and the item and score dtypes
    (checked, before anything as large as the data is allocated)."""
    if not isinstance(items, Sequence | np.ndarray) or not isinstance(scores, Sequence | np.ndarray):
        raise InvalidInput(
            f"{where}: items and scores must be 2-D arrays or sequences of 1-D lists; got "
            f"{type(items).__name__} and {type(scores).__name__}"
        )
    if len(items) != n or len(scores) != n:
        raise InvalidInput(
            f"{where}: {n} keys but {len(items)} item lists and {len(scores)} score lists; one list per key"
        )
    item_rows = [np.asarray(row) for row in items]
    score_rows = [np.asarray(row) for row in scores]
    for i, (item_row, score_row) in enumerate(zip(item_rows, score_rows, strict=True)):
        if item_row.ndim != 1 or item_row.shape != score_row.shape:
            raise InvalidInput(
                f"{where}: list {i} has items of shape {item_row.shape} and scores of shape "
                f"{score_row.shape}; each list needs one score per item"
            )
    length_arr = np.fromiter((len(row) for row in item_rows), dtype=np.int32, count=n)
    # An empty Python list comes out as float64: let empty rows vote only with an integer dtype.
    item_dtype = np.result_type(
        *[row.dtype for row in item_rows if row.size or row.dtype.kind in "iu"] or [np.dtype(np.int32)]
    )
    score_dtype = np.result_type(
        *[row.dtype for row in score_rows if row.size or row.dtype.kind == "f"] or [np.dtype(np.float32)]
    )
    # Check dtypes before allocating, so str or float ids fail with the dtype in the message.
    _as_items(f"{where}: items", np.empty(0, dtype=item_dtype))
    _as_scores(f"{where}: scores", np.empty(0, dtype=score_dtype))
    return item_rows, score_rows, length_arr, item_dtype, score_dtype


def _from_ragged(
    where: str, n: int, items: object, scores: object
) -> tuple[NDArray[np.signedinteger[Any]], NDArray[np.floating[Any]], NDArray[np.int32]]:
    item_rows, score_rows, length_arr, item_dtype, score_dtype = _ragged_rows(where, n, items, scores)
    width = int(length_arr.max())
    item_arr = np.full((n, width), ITEM_PAD, dtype=item_dtype)
    score_arr = np.zeros((n, width), dtype=score_dtype)
    for i, (item_row, score_row) in enumerate(zip(item_rows, score_rows, strict=True)):
        item_arr[i, : len(item_row)] = item_row
        score_arr[i, : len(score_row)] = score_row
    return (
        _as_items(f"{where}: items", item_arr),
        _as_scores(f"{where}: scores", score_arr),
        length_arr,
    )


def _flat_ranked(
    where: str, keys: Keys, items: object, scores: object, sort: bool, top_k: int | None
) -> Ranked:
    """`normalize_ranked` for ragged input, kept flat: the same checks and messages as the
    padded path, on memory in proportion to the items listed."""
    item_rows, score_rows, length_arr, item_dtype, score_dtype = _ragged_rows(where, len(keys), items, scores)
    # Empty rows may be float64 ([]): they hold no value, so the unsafe cast loses nothing.
    item_arr = _as_items(f"{where}: items", np.concatenate(item_rows, dtype=item_dtype, casting="unsafe"))
    score_arr = _as_scores(
        f"{where}: scores", np.concatenate(score_rows, dtype=score_dtype, casting="unsafe")
    )
    del item_rows, score_rows
    offsets = _offsets(length_arr)
    bad = np.flatnonzero(~np.isfinite(score_arr))
    if bad.size:
        rows = _rows_of(offsets, bad)
        raise InvalidInput(
            f"{where}: scores must be finite; {np.unique(rows).size} lists hold NaN or inf, first at row "
            f"{int(rows[0])} ({keys.describe(int(rows[0]))})"
        )
    bad = np.flatnonzero(item_arr < 0)
    if bad.size:
        row = int(_rows_of(offsets, bad[:1])[0])
        raise InvalidInput(
            f"{where}: item ids must be >= 0 (-1 marks padding); first negative at row "
            f"{row} ({keys.describe(row)}); use pad= or lengths= for padded rows"
        )
    if sort:
        # By row, then descending score, ties by ascending item id: as `_sort_rows`.
        rows, _ = _cells(length_arr)
        order = np.lexsort((item_arr, -score_arr, rows))
        del rows
        item_arr, score_arr = item_arr[order], score_arr[order]
        del order
    elif score_arr.size > 1:
        rising = score_arr[1:] > score_arr[:-1]
        inner = offsets[1:-1]  # pairs (j, j + 1) where j + 1 starts a list span two lists
        rising[inner[(inner > 0) & (inner < score_arr.size)] - 1] = False
        bad = np.flatnonzero(rising)
        if bad.size:
            rows = _rows_of(offsets, bad)
            raise InvalidInput(
                f"{where}: lists must be in descending score order; {np.unique(rows).size} are not, "
                f"first at row {int(rows[0])} ({keys.describe(int(rows[0]))}). Pass sort=True to "
                "sort them, or negate the scores if lower means better"
            )
    if top_k is not None and int(length_arr.max(initial=0)) > top_k:
        _, columns = _cells(length_arr)
        keep = columns < top_k
        del columns
        item_arr, score_arr = item_arr[keep], score_arr[keep]
        length_arr = np.minimum(length_arr, top_k).astype(np.int32)
        offsets = _offsets(length_arr)
    ranked = Ranked(item_arr, score_arr, length_arr, offsets)
    check_width(where, ranked.width, "a list length of", "keep fewer items per list (top_k=)")
    return ranked


def _rows_of(offsets: NDArray[np.int64], positions: NDArray[np.intp]) -> NDArray[np.intp]:
    """The rows (lists) that hold these positions of the flat arrays (empty lists hold none)."""
    return np.searchsorted(offsets, positions, side="right") - 1


def _check_values(
    where: str,
    keys: Keys,
    items: NDArray[Any],
    scores: NDArray[Any],
    valid: NDArray[np.bool_] | None,
) -> None:
    if valid is None:  # whole rows: one fast pass each, the row-wise scan only to report
        if np.isfinite(scores).all() and (items.size == 0 or items.min() >= 0):
            return
        valid = np.ones(items.shape, dtype=bool)
    bad = np.flatnonzero((valid & ~np.isfinite(scores)).any(axis=1))
    if bad.size:
        raise InvalidInput(
            f"{where}: scores must be finite; {bad.size} lists hold NaN or inf, first at row "
            f"{int(bad[0])} ({keys.describe(int(bad[0]))})"
        )
    bad = np.flatnonzero((valid & (items < 0)).any(axis=1))
    if bad.size:
        raise InvalidInput(
            f"{where}: item ids must be >= 0 (-1 marks padding); first negative at row "
            f"{int(bad[0])} ({keys.describe(int(bad[0]))}); use pad= or lengths= for padded rows"
        )


def _check_sorted(where: str, keys: Keys, scores: NDArray[Any], valid: NDArray[np.bool_] | None) -> None:
    if scores.shape[1] < 2:
        return
    rising = scores[:, 1:] > scores[:, :-1]
    if valid is not None:
        rising &= valid[:, 1:]
    bad = np.flatnonzero(rising.any(axis=1))
    if bad.size:
        raise InvalidInput(
            f"{where}: lists must be in descending score order; {bad.size} are not, first at "
            f"row {int(bad[0])} ({keys.describe(int(bad[0]))}). Pass sort=True to sort them, "
            "or negate the scores if lower means better"
        )


def _sort_rows(
    items: NDArray[Any], scores: NDArray[Any], valid: NDArray[np.bool_] | None
) -> tuple[NDArray[Any], NDArray[Any]]:
    """New arrays with every row's valid prefix sorted by descending score, ties by item id.

    Ties are ordered by ascending item id, so the same lists in any input order give the
    same arrays; only rows that hold a tie pay for the second sort.
    """
    key = -scores if valid is None else np.where(valid, -scores, np.inf)
    order = np.argsort(key, axis=1, kind="stable")
    items, scores = np.take_along_axis(items, order, axis=1), np.take_along_axis(scores, order, axis=1)
    key = np.take_along_axis(key, order, axis=1)
    tied = np.flatnonzero(((key[:, 1:] == key[:, :-1]) & np.isfinite(key[:, 1:])).any(axis=1))
    if tied.size:
        by_item = np.lexsort((items[tied], key[tied]), axis=1)
        items[tied] = np.take_along_axis(items[tied], by_item, axis=1)
        scores[tied] = np.take_along_axis(scores[tied], by_item, axis=1)
    return items, scores


def check_width(where: str, width: int, what: str, fix: str) -> None:
    """Refuse rows wider than ``MAX_WIDTH``, which no reader opens."""
    if width > MAX_WIDTH:
        raise InvalidInput(
            f"{where}: {what} {width} exceeds MAX_WIDTH ({MAX_WIDTH}), the widest row a version "
            f"may hold (readers refuse wider ones); {fix}"
        )


def normalize_vectors(collection: str, keys: Keys, vectors: object) -> NDArray[np.floating[Any]]:
    """Check vectors: a (n_keys, dim) array of finite floats."""
    where = f"collection {collection!r}: vectors"
    array = np.asarray(vectors)
    if array.ndim != 2 or array.shape[0] != len(keys) or array.shape[1] == 0:
        raise InvalidInput(f"{where} must have shape ({len(keys)}, dim) (one row per key); got {array.shape}")
    check_width(where, array.shape[1], "a dimension of", "reduce the dimension")
    if array.dtype.kind != "f":
        raise InvalidInput(f"{where} must be floating point (float16/32/64); got dtype {array.dtype}")
    bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if bad.size:
        raise InvalidInput(
            f"{where} must be finite; {bad.size} rows hold NaN or inf, first at row "
            f"{int(bad[0])} ({keys.describe(int(bad[0]))})"
        )
    return np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<"), copy=False))


def normalize_default(
    collection: str, default: tuple[ArrayLike, ArrayLike], width: int, sort: bool
) -> tuple[NDArray[Any], NDArray[Any]]:
    """Check the list served for unknown keys: like one ranked list, at most ``width`` long."""
    where = f"collection {collection!r}: default"
    try:
        items, scores = default
    except (TypeError, ValueError):
        raise InvalidInput(f"{where} must be a pair (items, scores)") from None
    item_arr, score_arr = np.asarray(items), np.asarray(scores)
    if item_arr.ndim != 1 or item_arr.shape != score_arr.shape or item_arr.size == 0:
        raise InvalidInput(
            f"{where} items and scores must be 1-D of the same non-zero length; got "
            f"{item_arr.shape} and {score_arr.shape}"
        )
    fake = Keys("str", None, [b"<default>"])
    ranked = normalize_ranked(
        collection,
        fake,
        item_arr[None, :],
        score_arr[None, :],
        lengths=None,
        pad=None,
        sort=sort,
        top_k=width,
    )
    return ranked.items[0], ranked.scores[0]
