"""Reading batch-job outputs into arrays ready to publish, in bounded memory.

Batch jobs (Spark ALS, implicit, LightFM...) write recommendations in *long* format, one
row per ``(user, item, score[, rank])``, spread over many Parquet, Arrow/Feather or CSV
files, in no particular order. Grouping them by user needs all of a user's rows together,
so the rows are streamed file by file and batch by batch (pyarrow) and spilled to temporary
files by a hash of the user id; each spill bucket is then small enough to sort in memory,
group by user, order by score (or rank; ties by item id) and cut at ``top_k``. Peak memory
is the bucket size plus the output arrays, whatever the input size.

Also read: *list* format (one row per user with list columns of items and scores),
vectors (a list or fixed-size-list column), and NumPy ``.npz``/``.npy`` arrays.

Every file is read with its own schema, so a message can name the file, the column and the
rows at fault. Item and score dtypes follow the input: int32 item ids stay int32 and
float32 scores stay float32 (see `item_dtype_for` and `score_dtype_for`).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sharedrec.errors import InvalidInput, SharedrecError

if TYPE_CHECKING:
    from numpy.typing import DTypeLike, NDArray

    from sharedrec._progress import ProgressMode, Reporter, Task

__all__ = [
    "RankedArrays",
    "group_rows",
    "item_dtype_for",
    "read_lists",
    "read_long",
    "read_npz",
    "read_vectors",
    "score_dtype_for",
]

log = logging.getLogger("sharedrec")

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

_KEYWORD = {
    "user": "user_col=",
    "item": "item_col=",
    "score": "score_col=",
    "rank": "rank_col=",
    "vector": "vector_col=",
}
"""The keyword that names each column, as the messages spell it (the CLI's glossary turns
``user_col=`` into ``--user-col``)."""
_EXAMPLES = 3
"""How many offending rows or pairs a message shows."""


@dataclass(frozen=True)
class RankedArrays:
    """Padded ranked lists ready for `Draft.add_ranked` (with ``lengths=``).

    ``duplicates_dropped`` counts the repeated ``(user, item)`` rows left out when the
    reader was asked to deduplicate (``dedupe=True``); it is 0 otherwise.
    """

    keys: NDArray[Any] | list[str]
    items: NDArray[np.signedinteger[Any]]
    scores: NDArray[np.floating[Any]]
    lengths: NDArray[np.int32]
    rows_read: int
    duplicates_dropped: int = 0


def item_dtype_for(dtype: DTypeLike) -> np.dtype[Any]:
    """The dtype item ids of an input dtype are stored with: the input's, where a store has it.

    int32 (and narrower integers) give int32; int64 and unsigned 32/64-bit give int64.
    """
    source = np.dtype(dtype)
    if (source.kind == "i" and source.itemsize <= 4) or (source.kind == "u" and source.itemsize <= 2):
        return np.dtype(np.int32)
    return np.dtype(np.int64)


def score_dtype_for(dtype: DTypeLike) -> np.dtype[Any]:
    """The dtype scores of an input dtype are stored with: float32 (and float16) give float32,
    anything else float64."""
    source = np.dtype(dtype)
    return np.dtype(np.float32 if source.kind == "f" and source.itemsize <= 4 else np.float64)


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.dataset
    except ImportError:
        raise SharedrecError(
            "reading Parquet, Arrow or CSV needs pyarrow: pip install 'sharedrec[ingest]'"
        ) from None
    return pyarrow


def _reporter(progress: ProgressMode) -> Reporter:
    from sharedrec._progress import reporter

    return reporter(progress)


def _input_filesystem(url: str, storage_options: dict[str, Any] | None) -> tuple[Any, str]:
    """The fsspec filesystem and path of an input URL; on S3 one that gives up on an
    unreachable endpoint within seconds, as the store does."""
    import fsspec

    on_s3 = url.partition("://")[0].lower() in ("s3", "s3a")
    if on_s3:
        from sharedrec.backends.s3 import fail_fast, fail_fast_options

        storage_options = fail_fast_options(storage_options)
    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    if on_s3:
        fail_fast(fs)
    return fs, str(root)


def _unreadable(url: str, storage_options: dict[str, Any] | None, exc: Exception) -> InvalidInput:
    """The error for an input URL that cannot be listed: where, why, and what to check."""
    if isinstance(exc, FileNotFoundError):
        return InvalidInput(f"input {url} does not exist")
    endpoint = (storage_options or {}).get("endpoint_url")
    at = f" at endpoint {endpoint}" if endpoint else ""
    return InvalidInput(
        f"cannot read input {url}{at} ({type(exc).__name__}: {exc}); check the location, the "
        "endpoint (storage_options endpoint_url, --input-endpoint-url or --endpoint-url), the "
        "network and the credentials"
    )


def _dataset(paths: Sequence[str | os.PathLike[str]], storage_options: dict[str, Any] | None) -> Any:
    pa = _pyarrow()
    files: list[str] = []
    filesystem = None
    for raw in paths:
        text = os.fspath(raw)
        if "://" in text:
            fs, root = _input_filesystem(text, storage_options)
            try:
                found = [root] if fs.isfile(root) else sorted(fs.find(root))
            except Exception as exc:
                raise _unreadable(text, storage_options, exc) from None
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


def _check_columns(path: str, names: list[str], wanted: dict[str, str]) -> None:
    """Refuse a file that lacks any wanted column, naming all of them at once."""
    missing = [(role, column) for role, column in wanted.items() if column not in names]
    if not missing:
        return
    what = " and ".join(f"the {role} column {column!r}" for role, column in missing)
    verb = "is" if len(missing) == 1 else "are"
    keywords = ", ".join(_KEYWORD[role] for role, _ in missing)
    raise InvalidInput(
        f"{what} {verb} not in the input {path} (its columns: {names}); "
        f"name the right columns with {keywords}"
    )


def _id_kind(arrow_type: Any) -> str:
    pa = _pyarrow()
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_integer(arrow_type):
        return "integer"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    return str(arrow_type)


@dataclass
class _Batch:
    """One batch of one input file: where it comes from, for messages."""

    file: int
    path: str
    first_row: int
    data: Any
    columns: dict[str, str]

    def column(self, name: str) -> Any:
        column = self.data.column(name)
        return column.combine_chunks() if hasattr(column, "combine_chunks") else column


class _Inputs:
    """The input files, read one after the other with their own schema."""

    def __init__(self, dataset: Any, wanted: dict[str, str]) -> None:
        pa = _pyarrow()
        self.fragments = list(dataset.get_fragments())
        self.paths: list[str] = [fragment.path for fragment in self.fragments]
        self.wanted = wanted
        try:
            infos = dataset.filesystem.get_file_info(self.paths)
            self.sizes = [max(int(info.size or 0), 0) for info in infos]
        except (OSError, pa.ArrowException):
            self.sizes = [0] * len(self.paths)

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes)

    def batches(self, reporter: Reporter) -> Iterator[_Batch]:
        """Every batch of every file, checking each file's columns and its user id type."""
        columns = list(dict.fromkeys(self.wanted.values()))
        user_column = self.wanted["user"]
        first_user: tuple[str, str] | None = None  # (id kind, file)
        noun = "file" if len(self.paths) == 1 else "files"
        with reporter.task(f"read {len(self.paths)} {noun}", self.total_bytes) as task:
            for index, (fragment, path, size) in enumerate(
                zip(self.fragments, self.paths, self.sizes, strict=True)
            ):
                try:
                    schema = fragment.physical_schema
                except Exception as exc:
                    raise InvalidInput(f"cannot read {path}: {exc}") from None
                _check_columns(path, schema.names, self.wanted)
                kind = _id_kind(schema.field(user_column).type)
                if first_user is None:
                    first_user = (kind, path)
                elif kind != first_user[0]:
                    raise InvalidInput(
                        f"the user column {user_column!r} holds {first_user[0]} ids in {first_user[1]} but "
                        f"{kind} ids in {path}: user ids must have one type in every file; cast the column "
                        "to one type (e.g. string) where the files are written"
                    )
                yield from self._file_batches(index, fragment, path, size, columns, task)

    def _file_batches(
        self, index: int, fragment: Any, path: str, size: int, columns: list[str], task: Task
    ) -> Iterator[_Batch]:
        try:
            rows_in_file = int(fragment.metadata.num_rows) if hasattr(fragment, "metadata") else 0
        except Exception:
            rows_in_file = 0
        stream: Iterator[Any] | None = None
        row, reported = 0, 0
        while True:
            try:
                if stream is None:
                    stream = iter(fragment.to_batches(columns=columns, batch_size=1 << 18))
                batch = next(stream)
            except StopIteration:
                break
            except Exception as exc:
                raise InvalidInput(f"cannot read {path}: {exc}") from None
            yield _Batch(index, path, row, batch, self.wanted)
            row += batch.num_rows
            if rows_in_file:  # Parquet: progress per row group, by its share of the file's rows
                share = min(size, size * row // rows_in_file)
                task.advance(share - reported)
                reported = share
        task.advance(size - reported)


def _null_rows(column: Any) -> NDArray[np.intp]:
    return np.flatnonzero(np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool))


def _rows_text(rows: NDArray[Any]) -> str:
    shown = ", ".join(str(int(r)) for r in rows[:_EXAMPLES])
    return f"{'row' if len(rows) == 1 else 'rows'} {shown}{', ...' if len(rows) > _EXAMPLES else ''}"


def _refuse_nulls(column: Any, batch: _Batch, role: str, rows_of: NDArray[Any] | None = None) -> None:
    """Refuse missing values, naming the file, the column and the first rows (of lists, when
    ``rows_of`` maps a flattened list column's values to their rows)."""
    if not column.null_count:
        return
    nulls = _null_rows(column)
    rows = np.unique(rows_of[nulls] if rows_of is not None else nulls) + batch.first_row
    values = "value" if len(nulls) == 1 else "values"
    raise InvalidInput(
        f"{batch.path}: the {role} column {batch.columns[role]!r} has {len(nulls)} missing {values} "
        f"({_rows_text(rows)}, counting from 0 in that file); fill or drop them where the file is written"
    )


def _numeric(
    column: Any, batch: _Batch, role: str, kind: str, rows_of: NDArray[Any] | None = None
) -> NDArray[Any]:
    _refuse_nulls(column, batch, role, rows_of)
    if kind == "int" and not _pyarrow().types.is_integer(column.type):
        raise InvalidInput(f"{batch.path}: the {role} column must hold integers; it holds {column.type}")
    array = np.asarray(column.to_numpy(zero_copy_only=False))
    if kind == "float" and array.dtype.kind not in "iuf":
        raise InvalidInput(f"{batch.path}: the {role} column must hold numbers; it holds {column.type}")
    return array


def _user_keys(column: Any, batch: _Batch) -> NDArray[Any]:
    _refuse_nulls(column, batch, "user")
    if _pyarrow().types.is_dictionary(column.type):
        column = column.dictionary_decode()
    array = np.asarray(column.to_numpy(zero_copy_only=False))
    if array.dtype.kind in "iu":
        return array.astype(np.int64)
    if array.dtype.kind in "OU":
        return array.astype(object)
    raise InvalidInput(
        f"{batch.path}: user ids must be integers or strings; the user column holds {column.type}"
    )


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
    dedupe: bool = False,
    progress: ProgressMode = False,
) -> RankedArrays:
    """Group long-format rows by user, best first, at most ``top_k`` per user.

    Rows are ordered by descending score (or ascending ``rank_col`` when given); rows that
    tie are ordered by item id, ascending, so the same rows in any file order give the same
    lists.

    Args:
        paths: Files or folders (searched recursively), local or fsspec URLs.
        user_col: The user id column: integers or strings, one type in every file.
        item_col: The item id column: integers.
        score_col: The score column: numbers, higher is better.
        rank_col: An optional rank column, lower is better.
        top_k: The longest list kept per user.
        storage_options: fsspec options for URL inputs.
        bucket_bytes: The decoded size of one spill bucket (the memory grouping needs).
        dedupe: Keep each repeated ``(user, item)`` pair's best-ranked row instead of
            refusing the input.
        progress: Progress of reading and grouping (see `ProgressMode`); off by default.

    Returns:
        The lists, with item and score dtypes following the input's (`item_dtype_for`).

    Raises:
        InvalidInput: A file lacks a column, holds missing values, a wrong type, user ids
            of another type than the other files, or (without ``dedupe``) a ``(user, item)``
            pair more than once; the message names the file, the column and rows.
    """
    if top_k < 1:
        raise InvalidInput(f"top_k must be positive; got {top_k}")
    reporter = _reporter(progress)
    dataset = _dataset(paths, storage_options)
    wanted = {"user": user_col, "item": item_col, "score": score_col}
    if rank_col:
        wanted["rank"] = rank_col
    inputs = _Inputs(dataset, wanted)
    # Columnar files expand when decoded: allow four times their size per bucket.
    n_buckets = max(1, inputs.total_bytes * 4 // bucket_bytes + 1)
    with tempfile.TemporaryDirectory(prefix="sharedrec-ingest-") as spill:
        buckets = _Spill(Path(spill), int(n_buckets))
        rows = 0
        str_keys: bool | None = None
        for batch in inputs.batches(reporter):
            users = _user_keys(batch.column(user_col), batch)
            str_keys = users.dtype == object
            raw_items = _numeric(batch.column(item_col), batch, "item", "int")
            raw_scores = _numeric(batch.column(score_col), batch, "score", "float")
            buckets.item_dtype = np.result_type(buckets.item_dtype, item_dtype_for(raw_items.dtype))
            buckets.score_dtype = np.result_type(
                buckets.score_dtype or score_dtype_for(raw_scores.dtype), score_dtype_for(raw_scores.dtype)
            )
            scores = raw_scores.astype(np.float64)
            if not np.isfinite(scores).all():
                bad = np.flatnonzero(~np.isfinite(scores)) + batch.first_row
                raise InvalidInput(
                    f"{batch.path}: the score column holds NaN or infinite values ({_rows_text(bad)}, "
                    "counting from 0 in that file)"
                )
            sort_key = -scores
            if rank_col:
                sort_key = _numeric(batch.column(rank_col), batch, "rank", "float").astype(np.float64)
                if not np.isfinite(sort_key).all():
                    bad = np.flatnonzero(~np.isfinite(sort_key)) + batch.first_row
                    raise InvalidInput(
                        f"{batch.path}: the rank column holds NaN or infinite values ({_rows_text(bad)}, "
                        "counting from 0 in that file)"
                    )
            buckets.add(users, raw_items.astype(np.int64), scores, sort_key, batch.file)
            rows += len(users)
        if rows == 0:
            raise InvalidInput("the input holds no rows")
        return buckets.collect(top_k, rows, bool(str_keys), dedupe, inputs.paths, reporter)


class _Spill:
    """Rows spilled to per-bucket files by a hash of the user id."""

    def __init__(self, folder: Path, n: int) -> None:
        self.folder = folder
        self.n = n
        self.str_users: list[list[str]] = [[] for _ in range(n)]
        self.item_dtype: np.dtype[Any] = np.dtype(np.int32)
        self.score_dtype: np.dtype[Any] | None = None

    def add(
        self, users: NDArray[Any], items: NDArray[Any], scores: NDArray[Any], order: NDArray[Any], source: int
    ) -> None:
        if users.dtype == object:
            hashes = np.fromiter((hash(u) for u in users), dtype=np.int64, count=len(users))
        else:
            hashes = users * np.int64(-7046029254386353131)  # spread consecutive ids
        bucket = ((hashes.view(np.uint64) >> np.uint64(33)) % np.uint64(self.n)).astype(np.int64)
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
            with open(self.folder / f"{b}.source", "ab") as f:
                f.write(np.full(stop - start, source, dtype=np.int32).tobytes())

    def _bucket_bytes(self, b: int) -> int:
        return sum(os.path.getsize(path) for path in self.folder.glob(f"{b}.*"))

    def collect(
        self, top_k: int, rows: int, str_keys: bool, dedupe: bool, files: list[str], reporter: Reporter
    ) -> RankedArrays:
        # Final dtypes from the start (the input's, see item_dtype_for): no wide
        # intermediate copy of the output.
        item_dtype = self.item_dtype
        score_dtype = self.score_dtype or np.dtype(np.float64)
        keys: list[Any] = []
        item_parts, score_parts, length_parts = [], [], []
        duplicates = _Duplicates(files)
        present = [b for b in range(self.n) if (self.folder / f"{b}.items").exists()]
        sizes = {b: self._bucket_bytes(b) for b in present}
        with reporter.task("group rows by user", sum(sizes.values())) as task:
            for b in present:
                items = np.fromfile(self.folder / f"{b}.items", dtype=np.int64)
                scores = np.fromfile(self.folder / f"{b}.scores", dtype=np.float64)
                order = np.fromfile(self.folder / f"{b}.order", dtype=np.float64)
                source = np.fromfile(self.folder / f"{b}.source", dtype=np.int32)
                if str_keys:
                    users: NDArray[Any] = np.asarray(self.str_users[b], dtype=object)
                else:
                    users = np.fromfile(self.folder / f"{b}.users", dtype=np.int64)
                uniques, inverse = np.unique(users, return_inverse=True)
                keep = duplicates.find(uniques, inverse, items, scores, order, source)
                if keep is not None and dedupe:
                    inverse, items, scores, order = inverse[keep], items[keep], scores[keep], order[keep]
                if duplicates.count and not dedupe:
                    task.advance(sizes[b])
                    continue  # the input is refused: only count the rest
                padded_items, padded_scores, lengths = _pad_groups(
                    len(uniques), inverse, items, scores, order, top_k, item_dtype, score_dtype
                )
                del order
                keys.extend(uniques.tolist())
                item_parts.append(padded_items)
                score_parts.append(padded_scores)
                length_parts.append(lengths)
                task.advance(sizes[b])
        if duplicates.count and not dedupe:
            raise InvalidInput(duplicates.message())
        if duplicates.count:
            log.info(
                "dropped %d duplicate (user, item) rows, keeping each pair's best-ranked row",
                duplicates.count,
            )
        width = max(1, int(max(int(p.max()) for p in length_parts)))
        return RankedArrays(
            keys=keys if str_keys else np.asarray(keys, dtype=np.int64),
            items=_stack(item_parts, width),
            scores=_stack(score_parts, width),
            lengths=np.concatenate(length_parts),
            rows_read=rows,
            duplicates_dropped=duplicates.count,
        )


class _Duplicates:
    """Repeated ``(user, item)`` pairs: how many, and a few examples with their files."""

    def __init__(self, files: list[str]) -> None:
        self.files = files
        self.count = 0
        self.examples: list[str] = []

    def find(
        self,
        uniques: NDArray[Any],
        group: NDArray[Any],
        items: NDArray[Any],
        scores: NDArray[Any],
        order: NDArray[Any],
        source: NDArray[Any] | None,
    ) -> NDArray[np.bool_] | None:
        """The rows to keep (each pair's best-ranked), or None when no pair repeats."""
        if not _any_repeated(group, items):
            return None
        # Each pair's rows together, best first (then the higher score, for a tied rank).
        sort = _sort_pairs(group, items)
        repeat = np.zeros(len(sort), dtype=bool)
        repeat[1:] = (group[sort][1:] == group[sort][:-1]) & (items[sort][1:] == items[sort][:-1])
        sort = _refine(sort, repeat[1:], (-scores, order))
        dropped = sort[repeat]
        self.count += len(dropped)
        run_start = np.maximum.accumulate(np.where(repeat, 0, np.arange(len(sort))))
        for position in np.flatnonzero(repeat)[: max(0, _EXAMPLES - len(self.examples))].tolist():
            kept, extra = int(sort[run_start[position]]), int(sort[position])
            where = ""
            if source is not None:
                first, second = self.files[int(source[kept])], self.files[int(source[extra])]
                where = f" (twice in {first})" if first == second else f" (in {first} and {second})"
            user = uniques[group[extra]]
            user = user.item() if isinstance(user, np.generic) else user
            self.examples.append(f"user {user!r} item {int(items[extra])}{where}")
        keep = np.ones(len(sort), dtype=bool)
        keep[dropped] = False
        return keep

    def message(self, lists: bool = False) -> str:
        """The refusal: how many, which, and how to ask for deduplication."""
        if lists:
            what = "list entries, an item more than once in one user's list"
            keep = "each item's first (best-ranked) entry"
        else:
            what = "rows, the same item more than once for one user (often a join that multiplied rows)"
            keep = "each pair's best-ranked row"
        return (
            f"the input holds {self.count:,} duplicate (user, item) {what}, e.g. {'; '.join(self.examples)}: "
            f"fix the input, or pass dedupe=True to keep {keep}"
        )


def _any_repeated(group: NDArray[Any], items: NDArray[Any]) -> bool:
    """Whether some (group, item) pair occurs twice."""
    if len(items) < 2:
        return False
    key = _pair_key(group, items)
    if key is not None:
        key.sort()
        return bool((key[1:] == key[:-1]).any())
    sort = np.lexsort((items, group))
    return bool(((group[sort][1:] == group[sort][:-1]) & (items[sort][1:] == items[sort][:-1])).any())


def _pair_key(group: NDArray[Any], values: NDArray[Any]) -> NDArray[np.int64] | None:
    """One int64 per row that sorts as ``(group, value)`` does; None if it would overflow.

    One sort of such a key is several times faster than `numpy.lexsort` of the two.
    """
    if len(values) == 0:
        return np.empty(0, dtype=np.int64)
    n_groups = int(group.max()) + 1
    if values.dtype.kind in "iu":
        low = int(values.min())
        span = int(values.max()) - low + 1
        if n_groups * span < 2**62:
            return group.astype(np.int64) * span + (values - low).astype(np.int64)
    by_value = np.argsort(values)
    ordered = values[by_value]
    new = np.ones(len(values), dtype=bool)
    new[1:] = ordered[1:] != ordered[:-1]
    rank = np.empty(len(values), dtype=np.int64)
    rank[by_value] = np.cumsum(new) - 1
    n_ranks = int(rank.max()) + 1
    if n_groups * n_ranks < 2**62:
        return group.astype(np.int64) * n_ranks + rank
    return None


def _sort_pairs(group: NDArray[Any], values: NDArray[Any]) -> NDArray[np.intp]:
    """Row indices ordered by group, then value; rows equal in both in any order."""
    key = _pair_key(group, values)
    return np.argsort(key) if key is not None else np.lexsort((values, group))


def _refine(
    sort: NDArray[np.intp], tie: NDArray[np.bool_], keys: tuple[NDArray[Any], ...]
) -> NDArray[np.intp]:
    """Reorder each run of tied rows of ``sort`` by ``keys`` (last most significant, as in
    `numpy.lexsort`); ``tie[i]`` says whether sorted row ``i + 1`` ties with row ``i``.

    Only the tied rows are sorted again, usually few of them.
    """
    if not tie.any():
        return sort
    run = np.cumsum(np.r_[True, ~tie])
    tied = np.zeros(len(sort), dtype=bool)
    tied[1:] |= tie
    tied[:-1] |= tie
    at = np.flatnonzero(tied)
    rows = sort[at]
    sort[at] = rows[np.lexsort((*(key[rows] for key in keys), run[at]))]
    return sort


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

    Rows of one user with the same ``order`` are ordered by item id, ascending, so the
    result does not depend on the order of the rows. Returns ``(users, items, scores,
    lengths)``: the distinct users (sorted) and their lists, at most ``top_k`` long
    (default: the longest list), padded with -1 and NaN.
    """
    uniques, inverse = np.unique(users, return_inverse=True)
    padded_items, padded_scores, lengths = _pad_groups(
        len(uniques), inverse, items, scores, order, top_k, item_dtype, score_dtype
    )
    return uniques, padded_items, padded_scores, lengths


def _pad_groups(
    n_groups: int,
    inverse: NDArray[Any],
    items: NDArray[Any],
    scores: NDArray[Any],
    order: NDArray[Any],
    top_k: int | None,
    item_dtype: Any,
    score_dtype: Any,
) -> tuple[NDArray[Any], NDArray[Any], NDArray[np.int32]]:
    # By user, then order, then item id for rows that tie.
    sort = _sort_pairs(inverse, order)
    tie = (inverse[sort][1:] == inverse[sort][:-1]) & (order[sort][1:] == order[sort][:-1])
    sort = _refine(sort, tie, (items,))
    inverse, items, scores = inverse[sort], items[sort], scores[sort]
    starts = np.flatnonzero(np.r_[True, inverse[1:] != inverse[:-1]])
    position = np.arange(len(inverse)) - np.repeat(starts, np.diff(np.r_[starts, len(inverse)]))
    counts = np.bincount(inverse, minlength=n_groups)
    width = top_k if top_k is not None else max(1, int(counts.max(initial=0)))
    keep = position < width
    group = inverse[keep]
    padded_items = np.full((n_groups, width), -1, dtype=item_dtype)
    padded_scores = np.full((n_groups, width), np.nan, dtype=score_dtype)
    padded_items[group, position[keep]] = items[keep]
    padded_scores[group, position[keep]] = scores[keep]
    return padded_items, padded_scores, np.minimum(counts, width).astype(np.int32)


def _stack(parts: list[NDArray[Any]], width: int) -> NDArray[Any]:
    """Concatenate the buckets' rows into one array, freeing each bucket as it is copied."""
    out = np.empty((sum(len(p) for p in parts), width), dtype=parts[0].dtype)
    start = 0
    while parts:
        part = parts.pop(0)
        out[start : start + len(part)] = part[:, :width]
        start += len(part)
    return out


def _list_column(batch: _Batch, role: str, fixed: bool = False) -> tuple[Any, NDArray[np.int64]]:
    """A list column of one batch and the length of every list (a missing list is empty)."""
    pa = _pyarrow()
    column = batch.column(batch.columns[role])
    kinds = [pa.types.is_list, pa.types.is_large_list] + ([pa.types.is_fixed_size_list] if fixed else [])
    if not any(kind(column.type) for kind in kinds):
        raise InvalidInput(
            f"{batch.path}: the {role} column {batch.columns[role]!r} must be a list column; "
            f"it holds {column.type}"
        )
    lengths = np.asarray(column.value_lengths().fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
    return column, lengths


def read_lists(
    paths: Sequence[str | os.PathLike[str]],
    *,
    user_col: str = "user",
    item_col: str = "items",
    score_col: str = "scores",
    top_k: int | None = None,
    storage_options: dict[str, Any] | None = None,
    dedupe: bool = False,
    progress: ProgressMode = False,
) -> RankedArrays:
    """Read one row per user with list columns of items and scores, each list best first.

    Items of equal score next to each other in a list are ordered by item id, ascending,
    so lists that differ only in the order of their ties give the same arrays; a list that
    is not in descending score order is left as it is (`Draft.add_ranked` refuses it).

    Args:
        paths: Files or folders (searched recursively), local or fsspec URLs.
        user_col: The user id column: integers or strings, one type in every file.
        item_col: A list column of integer item ids.
        score_col: A list column of scores, as long as the items' list.
        top_k: The longest list kept per user (default: the longest in the input).
        storage_options: fsspec options for URL inputs.
        dedupe: Keep each repeated item's first (best-ranked) entry in a list instead of
            refusing the input.
        progress: Progress of reading (see `ProgressMode`); off by default.

    Returns:
        The lists, with item and score dtypes following the input's (`item_dtype_for`).

    Raises:
        InvalidInput: A file lacks a column, holds missing values or a wrong type, a list
            of items and its list of scores differ in length, or (without ``dedupe``) an
            item repeats within a list; the message names the file, the column and rows.
    """
    if top_k is not None and top_k < 1:
        raise InvalidInput(f"top_k must be positive; got {top_k}")
    reporter = _reporter(progress)
    inputs = _Inputs(
        _dataset(paths, storage_options), {"user": user_col, "item": item_col, "score": score_col}
    )
    key_parts: list[NDArray[Any]] = []
    item_parts: list[NDArray[np.int64]] = []
    score_parts: list[NDArray[np.float64]] = []
    length_parts: list[NDArray[np.int64]] = []
    source_parts: list[NDArray[np.int32]] = []
    item_dtype: np.dtype[Any] = np.dtype(np.int32)
    score_dtype: np.dtype[Any] | None = None
    for batch in inputs.batches(reporter):
        key_parts.append(_user_keys(batch.column(user_col), batch))
        items_col, lengths = _list_column(batch, "item")
        scores_col, score_lengths = _list_column(batch, "score")
        if not np.array_equal(lengths, score_lengths):
            rows = np.flatnonzero(lengths != score_lengths) + batch.first_row
            raise InvalidInput(
                f"{batch.path}: every list of items needs one score per item; {len(rows)} lists do not "
                f"({_rows_text(rows)}, counting from 0 in that file)"
            )
        rows_of = np.repeat(np.arange(len(lengths)), lengths)
        flat_items = _numeric(items_col.flatten(), batch, "item", "int", rows_of)
        flat_scores = _numeric(scores_col.flatten(), batch, "score", "float", rows_of)
        item_dtype = np.result_type(item_dtype, item_dtype_for(flat_items.dtype))
        score_dtype = np.result_type(
            score_dtype or score_dtype_for(flat_scores.dtype), score_dtype_for(flat_scores.dtype)
        )
        item_parts.append(flat_items.astype(np.int64))
        score_parts.append(flat_scores.astype(np.float64))
        length_parts.append(lengths)
        source_parts.append(np.full(len(lengths), batch.file, dtype=np.int32))
    keys = np.concatenate(key_parts) if key_parts else np.empty(0, dtype=np.int64)
    lengths = np.concatenate(length_parts) if length_parts else np.empty(0, dtype=np.int64)
    items = np.concatenate(item_parts) if item_parts else np.empty(0, dtype=np.int64)
    scores = np.concatenate(score_parts) if score_parts else np.empty(0, dtype=np.float64)
    row = np.repeat(np.arange(len(lengths)), lengths)
    position = _positions(lengths)
    duplicates = _Duplicates(inputs.paths)
    keep = duplicates.find(
        keys,
        row,
        items,
        scores,
        position.astype(np.float64),
        np.repeat(np.concatenate(source_parts), lengths),
    )
    if keep is not None:
        if not dedupe:
            raise InvalidInput(duplicates.message(lists=True))
        log.info("dropped %d repeated items within lists, keeping each one's first entry", duplicates.count)
        items, scores, row = items[keep], scores[keep], row[keep]
        lengths = np.bincount(row, minlength=len(lengths)).astype(np.int64)
        position = _positions(lengths)
    # Runs of equal scores within a list are ordered by item id: ties follow no file order.
    tie = (position[1:] != 0) & (scores[1:] == scores[:-1])
    tie_order = _refine(np.arange(len(items)), tie, (items,))
    items, scores = items[tie_order], scores[tie_order]
    width = int(lengths.max()) if len(lengths) else 0
    if top_k is not None:
        width = min(width, top_k)
    width = max(width, 1)
    cut = position < width
    padded_items = np.full((len(lengths), width), -1, dtype=item_dtype)
    padded_scores = np.full((len(lengths), width), np.nan, dtype=score_dtype or np.float64)
    padded_items[row[cut], position[cut]] = items[cut]
    padded_scores[row[cut], position[cut]] = scores[cut]
    return RankedArrays(
        keys=keys.tolist() if keys.dtype == object else keys,
        items=padded_items,
        scores=padded_scores,
        lengths=np.minimum(lengths, width).astype(np.int32),
        rows_read=len(lengths),
        duplicates_dropped=duplicates.count,
    )


def _positions(lengths: NDArray[np.int64]) -> NDArray[np.int64]:
    """The position of every value of concatenated lists within its list."""
    starts = np.cumsum(lengths) - lengths
    positions: NDArray[np.int64] = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(starts, lengths)
    return positions


def read_vectors(
    paths: Sequence[str | os.PathLike[str]],
    *,
    user_col: str = "user",
    vector_col: str = "vector",
    storage_options: dict[str, Any] | None = None,
    progress: ProgressMode = False,
) -> tuple[NDArray[Any] | list[str], NDArray[np.floating[Any]]]:
    """Read one row per key with a (fixed-size) list column of floats, all of one length.

    The vectors keep the input's float dtype (float16, float32 or float64); integer
    vectors become float32. ``progress`` shows the reading (see `ProgressMode`).

    Raises:
        InvalidInput: A file lacks a column, holds missing values, or vectors of another
            length; the message names the file, the column and rows.
    """
    reporter = _reporter(progress)
    inputs = _Inputs(_dataset(paths, storage_options), {"user": user_col, "vector": vector_col})
    key_parts: list[NDArray[Any]] = []
    vector_parts: list[NDArray[Any]] = []
    dim: tuple[int, str] | None = None  # (length, file)
    for batch in inputs.batches(reporter):
        key_parts.append(_user_keys(batch.column(user_col), batch))
        column, lengths = _list_column(batch, "vector", fixed=True)
        if dim is None and len(lengths):
            dim = (int(lengths[0]), batch.path)
        if dim is not None:
            bad = np.flatnonzero((lengths != dim[0]) | (lengths == 0))
            if bad.size or dim[0] == 0:
                rows = (bad if bad.size else np.arange(len(lengths))) + batch.first_row
                raise InvalidInput(
                    f"{batch.path}: every vector must have the same non-zero length ({dim[0]}, as the first "
                    f"one in {dim[1]}); {len(rows)} do not ({_rows_text(rows)}, counting from 0 in that file)"
                )
        flat = _numeric(
            column.flatten(), batch, "vector", "float", np.repeat(np.arange(len(lengths)), lengths)
        )
        vector_parts.append(flat.reshape(len(lengths), dim[0] if dim is not None else 0))
    if dim is None:
        raise InvalidInput("the input holds no vectors")
    keys = np.concatenate(key_parts)
    dtype = np.result_type(*[p.dtype for p in vector_parts])
    vectors = np.concatenate(vector_parts).astype(dtype if dtype.kind == "f" else np.float32, copy=False)
    return (keys.tolist() if keys.dtype == object else keys), vectors


def read_npz(path: str | os.PathLike[str], names: Sequence[str]) -> list[NDArray[Any]]:
    """The named arrays of an ``.npz`` file (or a folder of ``<name>.npy`` files), as stored."""
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
