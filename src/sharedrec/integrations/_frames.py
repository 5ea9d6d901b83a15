"""What the Spark and Dask integrations share: writing the partitions held by one task.

A task receives Arrow data whose rows carry their partition number (column
``_sharedrec_part``); it groups them per partition, turns long-format rows
(key, item, score) or list-format rows (key, items, scores) into padded lists, writes each
partition with the handle and returns the receipts as JSON.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from sharedrec.errors import InvalidInput, PublishRejected, SharedrecError
from sharedrec.integrations.ingest import group_rows

if TYPE_CHECKING:
    from pydantic import JsonValue

    from sharedrec.store import RecommendationStore
    from sharedrec.write.distributed import PartitionReceipt, PublishHandle
    from sharedrec.write.guards import GuardLike

__all__ = ["PART_COLUMN", "Layout", "publish_with", "write_table"]

log = logging.getLogger("sharedrec")

PART_COLUMN = "_sharedrec_part"


@dataclass(frozen=True)
class Layout:
    """Which columns hold what, and how to write them; shipped to every task."""

    collection: str
    key: str
    item: str | None = None
    score: str | None = None
    items: str | None = None
    scores: str | None = None
    top_k: int | None = None
    sort: bool = False
    item_dtype: str = "<i8"
    score_dtype: str = "<f8"
    on_partition: Callable[[PartitionReceipt], None] | None = None

    @property
    def columns(self) -> list[str]:
        """The input columns used."""
        names = (
            (self.key, self.item, self.score) if self.items is None else (self.key, self.items, self.scores)
        )
        return [name for name in names if name is not None]


def layout(
    collection: str,
    columns: Sequence[str],
    *,
    key: str,
    item: str,
    score: str,
    items: str | None,
    scores: str | None,
    top_k: int | None,
    sort: bool,
    item_dtype: str,
    score_dtype: str,
    on_partition: Callable[[PartitionReceipt], None] | None = None,
) -> Layout:
    """Check the column names against the frame's and pick long or list format."""
    if (items is None) != (scores is None):
        raise InvalidInput("give both items= and scores= (list format), or neither (long format)")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise InvalidInput(f"top_k must be a positive int; got {top_k!r}")
    chosen = Layout(
        collection,
        key,
        item if items is None else None,
        score if items is None else None,
        items,
        scores,
        top_k,
        sort,
        item_dtype,
        score_dtype,
        on_partition,
    )
    missing = [name for name in chosen.columns if name not in columns]
    if missing:
        raise InvalidInput(f"the data frame has no column {missing[0]!r}; its columns are {list(columns)}")
    return chosen


def keys_of(column: Any) -> NDArray[Any]:
    """An Arrow key column as int64 values or an object array of str."""
    import pyarrow as pa

    if column.null_count:
        raise InvalidInput("the key column holds nulls")
    if pa.types.is_integer(column.type):
        return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.int64)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return np.asarray(column.to_pylist(), dtype=object)
    raise InvalidInput(f"keys must be integers or strings; the key column is {column.type}")


def write_table(handle: PublishHandle, spec: Layout, table: Any) -> list[str]:
    """Write every partition whose rows are in ``table``; their receipts as JSON."""
    if table.num_rows == 0:
        return []
    parts = np.asarray(table.column(PART_COLUMN).to_numpy(zero_copy_only=False), dtype=np.intp)
    order = np.argsort(parts, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(parts, minlength=handle.partitions))]
    receipts = []
    for partition in np.flatnonzero(np.diff(bounds)).tolist():
        rows = table.take(order[bounds[partition] : bounds[partition + 1]])
        receipt = _write_partition(handle, spec, partition, rows)
        if spec.on_partition is not None:
            spec.on_partition(receipt)
        receipts.append(receipt.dumps())
    return receipts


def _write_partition(handle: PublishHandle, spec: Layout, partition: int, rows: Any) -> Any:
    keys = keys_of(rows.column(spec.key).combine_chunks())
    if spec.items is None:
        assert spec.item is not None
        assert spec.score is not None
        items = _values(rows.column(spec.item), "item", spec.item_dtype)
        scores = _values(rows.column(spec.score), "score", spec.score_dtype)
        users, padded_items, padded_scores, lengths = group_rows(
            keys, items, scores, -scores.astype(np.float64), spec.top_k, spec.item_dtype, spec.score_dtype
        )
    else:
        assert spec.scores is not None
        users = keys
        padded_items, item_lengths = _padded(rows.column(spec.items), "items", spec.item_dtype, -1)
        padded_scores, score_lengths = _padded(rows.column(spec.scores), "scores", spec.score_dtype, np.nan)
        if not np.array_equal(item_lengths, score_lengths):
            row = int(np.flatnonzero(item_lengths != score_lengths)[0])
            raise InvalidInput(
                f"key {users[row]!r}: {item_lengths[row]} items but {score_lengths[row]} scores"
            )
        width = max(padded_items.shape[1], padded_scores.shape[1])
        padded_items = _widen(padded_items, width, -1)
        padded_scores = _widen(padded_scores, width, np.nan)
        lengths = item_lengths
    key_list: Any = users.tolist() if users.dtype == object else users
    return handle.write_ranked(
        spec.collection,
        partition,
        key_list,
        padded_items,
        padded_scores,
        lengths=lengths,
        sort=spec.sort,
        top_k=spec.top_k,
    )


def _values(column: Any, role: str, dtype: str) -> NDArray[Any]:
    if column.null_count:
        raise InvalidInput(f"the {role} column holds nulls")
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.dtype(dtype))


def _padded(column: Any, role: str, dtype: str, fill: Any) -> tuple[NDArray[Any], NDArray[np.int32]]:
    """A list column as a 2-D array padded with ``fill``, and the length of every list."""
    import pyarrow as pa

    array = column.combine_chunks()
    if not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)):
        raise InvalidInput(f"list format needs an array column for {role}; it is {array.type}")
    if array.null_count or array.values.null_count:
        raise InvalidInput(f"the {role} column holds nulls")
    offsets = np.asarray(array.offsets.to_numpy(), dtype=np.int64)
    offsets = offsets - offsets[0]
    values = np.asarray(array.flatten().to_numpy(zero_copy_only=False), dtype=np.dtype(dtype))
    lengths = np.diff(offsets).astype(np.int32)
    width = max(1, int(lengths.max())) if len(lengths) else 1
    out = np.full((len(lengths), width), fill, dtype=np.dtype(dtype))
    row = np.repeat(np.arange(len(lengths)), lengths)
    out[row, np.arange(len(values)) - np.repeat(offsets[:-1], lengths)] = values
    return out, lengths


def _widen(array: NDArray[Any], width: int, fill: Any) -> NDArray[Any]:
    if array.shape[1] == width:
        return array
    out = np.full((array.shape[0], width), fill, dtype=array.dtype)
    out[:, : array.shape[1]] = array
    return out


def publish_with(
    store: RecommendationStore,
    collection: str,
    partitions: int,
    run: Callable[[PublishHandle], list[str]],
    *,
    metadata: dict[str, JsonValue] | None,
    guards: Sequence[GuardLike] | None,
    force: bool,
    ref: str,
    chunk_bytes: int | None,
) -> str:
    """Begin a publish, let ``run`` write it on the engine, commit; remove it if anything fails.

    The engine's job returns every task's receipts once (a failed task's attempts are
    retried by the engine and only the successful one reports), so a partition no task
    reported holds no row: it is written here, empty.
    """
    from sharedrec.write.distributed import PartitionReceipt

    handle = store.begin_publish(partitions=partitions, metadata=metadata, ref=ref, chunk_bytes=chunk_bytes)
    try:
        receipts = [PartitionReceipt.loads(text) for text in run(handle)]
        seen = {receipt.partition for receipt in receipts}
        receipts += [
            handle.write_ranked(collection, p, [], [], []) for p in range(partitions) if p not in seen
        ]
        return store.commit_publish(handle, receipts, guards=guards, force=force)
    except BaseException:
        try:
            store.abort_publish(handle)
        except PublishRejected:
            pass  # committed: it stays, even if the pointer could not move
        except SharedrecError as exc:
            log.warning("could not remove the unfinished version %s: %s", handle.version_id, exc)
        raise
