"""Reading batch-job outputs into arrays ready to publish, in bounded memory.

Batch jobs (Spark ALS, implicit, LightFM...) write recommendations in *long* format, one
row per ``(user, item, score[, rank])``, spread over many Parquet, Arrow/Feather or CSV
files, in no particular order. Grouping them by user needs all of a user's rows together,
so the rows are streamed batch by batch (pyarrow) and spilled to temporary files by a hash
of the user id; each spill bucket is then small enough to sort in memory, group by user,
order by score (or rank) and cut at ``top_k``. Peak memory is the bucket size plus the
output arrays, whatever the input size.

Also read: *list* format (one row per user with list columns of items and scores),
vectors (a list or fixed-size-list column), and NumPy ``.npz``/``.npy`` arrays.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sharedrec.errors import InvalidInput, SharedrecError

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["RankedArrays", "group_rows", "read_lists", "read_long", "read_npz", "read_vectors"]

_FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "arrow",
    ".feather": "arrow",
    ".ipc": "arrow",
    ".csv": "csv",
}
BUCKET_BYTES = 256 * 1024 * 1024
"""Target size of one spill bucket: the memory a bucket needs while it is sorted."""


@dataclass(frozen=True)
class RankedArrays:
    """Padded ranked lists ready for `Draft.add_ranked` (with ``lengths=``)."""

    keys: NDArray[Any] | list[str]
    items: NDArray[np.signedinteger[Any]]
    scores: NDArray[np.floating[Any]]
    lengths: NDArray[np.int32]
    rows_read: int


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.dataset
    except ImportError:
        raise SharedrecError(
            "reading Parquet, Arrow or CSV needs pyarrow: pip install 'sharedrec[ingest]'"
        ) from None
    return pyarrow


def _dataset(paths: Sequence[str | os.PathLike[str]], storage_options: dict[str, Any] | None) -> Any:
    pa = _pyarrow()
    files: list[str] = []
    filesystem = None
    for raw in paths:
        text = os.fspath(raw)
        if "://" in text:
            import fsspec

            fs, root = fsspec.core.url_to_fs(text, **(storage_options or {}))
            found = [root] if fs.isfile(root) else sorted(fs.find(root))
            filesystem = fs
            files.extend(found)
            continue
        path = Path(text)
        if not path.exists():
            raise InvalidInput(f"input {text} does not exist")
        files.extend(sorted(str(p) for p in path.rglob("*") if p.is_file()) if path.is_dir() else [str(path)])
    files = [f for f in files if not Path(f).name.startswith((".", "_"))]  # _SUCCESS, .crc
    kinds = {_FORMATS.get(Path(f).suffix.lower()) for f in files}
    if not files:
        raise InvalidInput(f"no input files in {[os.fspath(p) for p in paths]}")
    if None in kinds or len(kinds) > 1:
        raise InvalidInput(
            f"inputs must all be one of {sorted(set(_FORMATS))} files; got "
            f"{sorted({Path(f).suffix for f in files})}"
        )
    (kind,) = kinds
    try:
        return pa.dataset.dataset(files, format=kind, filesystem=filesystem)
    except Exception as exc:
        raise InvalidInput(f"cannot read the inputs as {kind}: {exc}") from None


def _check_columns(dataset: Any, wanted: dict[str, str]) -> None:
    names = dataset.schema.names
    for role, column in wanted.items():
        if column not in names:
            raise InvalidInput(
                f"the {role} column {column!r} is not in the input (columns: {names}); pass --{role}-col"
            )


def _batches(dataset: Any, columns: list[str]) -> Iterator[Any]:
    try:
        yield from dataset.to_batches(columns=columns, batch_size=1 << 18)
    except Exception as exc:
        raise InvalidInput(f"cannot read the input: {exc}") from None


def _numeric(column: Any, role: str, kind: str) -> NDArray[Any]:
    array = np.asarray(column.to_numpy(zero_copy_only=False))
    if column.null_count:
        raise InvalidInput(f"the {role} column has {column.null_count} missing values")
    if kind == "int" and array.dtype.kind not in "iu":
        raise InvalidInput(f"the {role} column must hold integers; it holds {column.type}")
    if kind == "float" and array.dtype.kind not in "iuf":
        raise InvalidInput(f"the {role} column must hold numbers; it holds {column.type}")
    return array


def _user_keys(column: Any) -> NDArray[Any]:
    if column.null_count:
        raise InvalidInput(f"the user column has {column.null_count} missing values")
    array = np.asarray(column.to_numpy(zero_copy_only=False))
    if array.dtype.kind in "iu":
        return array.astype(np.int64)
    if array.dtype.kind in "OU":
        return array.astype(object)
    raise InvalidInput(f"user ids must be integers or strings; the user column holds {column.type}")


def read_long(
    paths: Sequence[str | os.PathLike[str]],
    *,
    user_col: str = "user",
    item_col: str = "item",
    score_col: str = "score",
    rank_col: str | None = None,
    top_k: int = 100,
    storage_options: dict[str, Any] | None = None,
    bucket_bytes: int = BUCKET_BYTES,
) -> RankedArrays:
    """Group long-format rows by user, best first (by score, or by rank when given), at most ``top_k``."""
    if top_k < 1:
        raise InvalidInput(f"top_k must be positive; got {top_k}")
    dataset = _dataset(paths, storage_options)
    wanted = {"user": user_col, "item": item_col, "score": score_col}
    if rank_col:
        wanted["rank"] = rank_col
    _check_columns(dataset, wanted)
    # Columnar files expand when decoded: allow four times their size per bucket.
    n_buckets = max(1, _input_bytes(dataset) * 4 // bucket_bytes + 1)
    with tempfile.TemporaryDirectory(prefix="sharedrec-ingest-") as spill:
        buckets = _Spill(Path(spill), int(n_buckets))
        rows = 0
        str_keys: bool | None = None
        for batch in _batches(dataset, list(wanted.values())):
            users = _user_keys(batch.column(user_col))
            is_str = users.dtype == object
            if str_keys is None:
                str_keys = bool(is_str)
            elif str_keys != is_str:
                raise InvalidInput("the user column mixes integer and string ids across files")
            items = _numeric(batch.column(item_col), "item", "int").astype(np.int64)
            raw_scores = _numeric(batch.column(score_col), "score", "float")
            buckets.score_dtype = np.result_type(buckets.score_dtype or raw_scores.dtype, raw_scores.dtype)
            scores = raw_scores.astype(np.float64)
            if not np.isfinite(scores).all():
                raise InvalidInput("the score column holds NaN or infinite values")
            sort_key = (
                _numeric(batch.column(rank_col), "rank", "float").astype(np.float64) if rank_col else -scores
            )
            buckets.add(users, items, scores, sort_key)
            rows += len(users)
        if rows == 0:
            raise InvalidInput("the input holds no rows")
        return buckets.collect(top_k, rows, bool(str_keys))


def _input_bytes(dataset: Any) -> int:
    total = 0
    for path in getattr(dataset, "files", []):
        try:
            total += os.path.getsize(path)
        except OSError:
            continue
    return total


class _Spill:
    """Rows spilled to per-bucket files by a hash of the user id."""

    def __init__(self, folder: Path, n: int) -> None:
        self.folder = folder
        self.n = n
        self.str_users: list[list[str]] = [[] for _ in range(n)]
        self.score_dtype: np.dtype[Any] | None = None
        self.max_item = -1
        self.min_item = 0

    def add(
        self, users: NDArray[Any], items: NDArray[Any], scores: NDArray[Any], order: NDArray[Any]
    ) -> None:
        if users.dtype == object:
            hashes = np.fromiter((hash(u) for u in users), dtype=np.int64, count=len(users))
        else:
            hashes = users * np.int64(-7046029254386353131)  # spread consecutive ids
        bucket = ((hashes.view(np.uint64) >> np.uint64(33)) % np.uint64(self.n)).astype(np.int64)
        self.max_item = max(self.max_item, int(items.max()))
        self.min_item = min(self.min_item, int(items.min()))
        # One sort by bucket, then a contiguous slice per bucket.
        order_by_bucket = np.argsort(bucket, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(np.bincount(bucket, minlength=self.n))])
        parts = {"items": items, "scores": scores, "order": order}
        if users.dtype != object:
            parts["users"] = users
        grouped = {name: values[order_by_bucket] for name, values in parts.items()}
        sorted_users = users[order_by_bucket] if users.dtype == object else None
        for b in range(self.n):
            start, stop = int(bounds[b]), int(bounds[b + 1])
            if start == stop:
                continue
            if sorted_users is not None:
                self.str_users[b].extend(sorted_users[start:stop].tolist())
            for name, values in grouped.items():
                with open(self.folder / f"{b}.{name}", "ab") as f:
                    f.write(values[start:stop].tobytes())

    def collect(self, top_k: int, rows: int, str_keys: bool) -> RankedArrays:
        # Final dtypes from the start: int32 items when every id fits (lossless), the
        # input's score precision; no wide intermediate copy of the output.
        item_dtype = np.int32 if self.min_item >= 0 and self.max_item < 2**31 else np.int64
        score_dtype = np.float32 if self.score_dtype == np.float32 else np.float64
        keys: list[Any] = []
        item_parts, score_parts, length_parts = [], [], []
        for b in range(self.n):
            if not (self.folder / f"{b}.items").exists():
                continue
            items = np.fromfile(self.folder / f"{b}.items", dtype=np.int64)
            scores = np.fromfile(self.folder / f"{b}.scores", dtype=np.float64)
            order = np.fromfile(self.folder / f"{b}.order", dtype=np.float64)
            if str_keys:
                users: NDArray[Any] = np.asarray(self.str_users[b], dtype=object)
            else:
                users = np.fromfile(self.folder / f"{b}.users", dtype=np.int64)
            uniques, padded_items, padded_scores, lengths = group_rows(
                users, items, scores, order, top_k, item_dtype, score_dtype
            )
            del order
            keys.extend(uniques.tolist())
            item_parts.append(padded_items)
            score_parts.append(padded_scores)
            length_parts.append(lengths)
        width = max(1, int(max(int(p.max()) for p in length_parts)))
        return RankedArrays(
            keys=keys if str_keys else np.asarray(keys, dtype=np.int64),
            items=_stack(item_parts, width),
            scores=_stack(score_parts, width),
            lengths=np.concatenate(length_parts),
            rows_read=rows,
        )


def group_rows(
    users: NDArray[Any],
    items: NDArray[Any],
    scores: NDArray[Any],
    order: NDArray[Any],
    top_k: int | None,
    item_dtype: Any,
    score_dtype: Any,
) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any], NDArray[np.int32]]:
    """Group long-format rows into one padded list per user, ascending ``order`` first.

    Returns ``(users, items, scores, lengths)``: the distinct users (sorted) and their
    lists, at most ``top_k`` long (default: the longest list), padded with -1 and NaN.
    """
    uniques, inverse = np.unique(users, return_inverse=True)
    sort = np.lexsort((order, inverse))
    inverse, items, scores = inverse[sort], items[sort], scores[sort]
    starts = np.flatnonzero(np.r_[True, inverse[1:] != inverse[:-1]])
    position = np.arange(len(inverse)) - np.repeat(starts, np.diff(np.r_[starts, len(inverse)]))
    counts = np.bincount(inverse, minlength=len(uniques))
    width = top_k if top_k is not None else max(1, int(counts.max()))
    keep = position < width
    group = inverse[keep]
    padded_items = np.full((len(uniques), width), -1, dtype=item_dtype)
    padded_scores = np.full((len(uniques), width), np.nan, dtype=score_dtype)
    padded_items[group, position[keep]] = items[keep]
    padded_scores[group, position[keep]] = scores[keep]
    return uniques, padded_items, padded_scores, np.minimum(counts, width).astype(np.int32)


def _stack(parts: list[NDArray[Any]], width: int) -> NDArray[Any]:
    """Concatenate the buckets' rows into one array, freeing each bucket as it is copied."""
    out = np.empty((sum(len(p) for p in parts), width), dtype=parts[0].dtype)
    start = 0
    while parts:
        part = parts.pop(0)
        out[start : start + len(part)] = part[:, :width]
        start += len(part)
    return out


def read_lists(
    paths: Sequence[str | os.PathLike[str]],
    *,
    user_col: str = "user",
    item_col: str = "items",
    score_col: str = "scores",
    top_k: int | None = None,
    storage_options: dict[str, Any] | None = None,
) -> RankedArrays:
    """Read one row per user with list columns of items and scores (already best first)."""
    pa = _pyarrow()
    dataset = _dataset(paths, storage_options)
    _check_columns(dataset, {"user": user_col, "item": item_col, "score": score_col})
    table = dataset.to_table(columns=[user_col, item_col, score_col])
    keys = _user_keys(table.column(user_col).combine_chunks())
    items_col = table.column(item_col).combine_chunks()
    scores_col = table.column(score_col).combine_chunks()
    for role, col in (("item", items_col), ("score", scores_col)):
        if not pa.types.is_list(col.type) and not pa.types.is_large_list(col.type):
            raise InvalidInput(f"the {role} column must be a list column; it holds {col.type}")
    lengths = np.asarray(items_col.value_lengths().fill_null(0), dtype=np.int32)
    if not np.array_equal(lengths, np.asarray(scores_col.value_lengths().fill_null(0))):
        raise InvalidInput("every user needs as many scores as items")
    width = int(lengths.max()) if len(lengths) else 0
    if top_k is not None:
        width = min(width, top_k)
    width = max(width, 1)
    flat_items = _numeric(items_col.flatten(), "item", "int").astype(np.int64)
    flat_scores = _numeric(scores_col.flatten(), "score", "float").astype(np.float64)
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    position = np.arange(len(flat_items)) - np.repeat(starts, lengths)
    row = np.repeat(np.arange(len(lengths)), lengths)
    keep = position < width
    items = np.full((len(lengths), width), -1, dtype=np.int64)
    scores = np.full((len(lengths), width), np.nan, dtype=np.float64)
    items[row[keep], position[keep]] = flat_items[keep]
    scores[row[keep], position[keep]] = flat_scores[keep]
    return RankedArrays(
        keys=keys.tolist() if keys.dtype == object else keys,
        items=items,
        scores=scores,
        lengths=np.minimum(lengths, width).astype(np.int32),
        rows_read=len(lengths),
    )


def read_vectors(
    paths: Sequence[str | os.PathLike[str]],
    *,
    user_col: str = "user",
    vector_col: str = "vector",
    storage_options: dict[str, Any] | None = None,
) -> tuple[NDArray[Any] | list[str], NDArray[np.floating[Any]]]:
    """Read one row per key with a (fixed-size) list column of floats."""
    dataset = _dataset(paths, storage_options)
    _check_columns(dataset, {"user": user_col, "vector": vector_col})
    table = dataset.to_table(columns=[user_col, vector_col])
    keys = _user_keys(table.column(user_col).combine_chunks())
    column = table.column(vector_col).combine_chunks()
    lengths = np.asarray(column.value_lengths().fill_null(0))
    if len(lengths) == 0 or lengths.min() != lengths.max() or lengths.min() == 0:
        raise InvalidInput("every vector must have the same non-zero length")
    flat = _numeric(column.flatten(), "vector", "float")
    vectors = flat.reshape(len(lengths), int(lengths[0]))
    if vectors.dtype.kind != "f":
        vectors = vectors.astype(np.float32)
    return (keys.tolist() if keys.dtype == object else keys), vectors


def read_npz(path: str | os.PathLike[str], names: Sequence[str]) -> list[NDArray[Any]]:
    """The named arrays of an ``.npz`` file (or a folder of ``<name>.npy`` files)."""
    source = Path(path)
    if not source.exists():
        raise InvalidInput(f"input {source} does not exist")
    if source.is_dir():
        out = []
        for name in names:
            file = source / f"{name}.npy"
            if not file.exists():
                raise InvalidInput(
                    f"{source} has no {name}.npy (it has {sorted(p.name for p in source.glob('*.npy'))})"
                )
            try:
                out.append(np.load(file, allow_pickle=False))
            except Exception as exc:
                raise InvalidInput(f"cannot read {file} as .npy: {exc}") from None
        return out
    try:
        archive = np.load(source, allow_pickle=False)
    except Exception as exc:
        raise InvalidInput(f"cannot read {source} as .npz: {exc}") from None
    missing = [name for name in names if name not in archive.files]
    if missing:
        raise InvalidInput(f"{source} lacks arrays {missing} (it has {archive.files})")
    try:
        return [archive[name] for name in names]
    except Exception as exc:
        raise InvalidInput(f"cannot read {source} as .npz: {exc}") from None
