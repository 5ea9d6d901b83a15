"""Publish a Dask DataFrame: every Dask task writes the partitions it holds.

Install with ``pip install 'sharedrec[dask]'``. dask is imported only when a function
here runs.

Each row is tagged with its partition (``PublishHandle.partition_of``: the key's
``fibonacci64`` or ``blake2b-64``), the frame is shuffled on that tag so that all rows of a partition meet in
one Dask partition, and every Dask partition writes what it holds and returns receipts,
which the driver (the process calling this) commits. A task that Dask retries writes a new
attempt folder; only the result of the attempt that succeeded reaches the driver.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sharedrec.integrations._frames import PART_COLUMN, Layout, layout, publish_with, write_table

if TYPE_CHECKING:
    from pydantic import JsonValue

    from sharedrec.store import RecommendationStore
    from sharedrec.write.distributed import PartitionReceipt, PublishHandle
    from sharedrec.write.guards import GuardLike

__all__ = ["publish_ranked"]


def publish_ranked(
    store: RecommendationStore,
    df: Any,
    collection: str,
    *,
    partitions: int | None = None,
    key: str = "key",
    item: str = "item",
    score: str = "score",
    items: str | None = None,
    scores: str | None = None,
    top_k: int | None = None,
    sort: bool = False,
    on_partition: Callable[[PartitionReceipt], None] | None = None,
    retries: int = 2,
    metadata: dict[str, JsonValue] | None = None,
    guards: Sequence[GuardLike] | None = None,
    force: bool = False,
    ref: str = "current",
    chunk_bytes: int | None = None,
) -> str:
    """Publish a ranked collection from a Dask DataFrame; returns the version id.

    Takes the long or the list format, as `sharedrec.integrations.spark.publish_ranked`. Runs on the
    current Dask scheduler (a ``distributed.Client`` if one is active).

    Args:
        store: The store to publish to; its location must be reachable from every worker.
        df: A ``dask.dataframe.DataFrame``.
        collection: The collection's name.
        partitions: Partitions of the collection (default: the frame's partitions).
        key: Long format: the column of keys.
        item: Long format: the column of items.
        score: Long format: the column of scores.
        items: List format: the column of item lists (columns of lists).
        scores: List format: the column of score lists (columns of lists).
        top_k: Keep at most this many items per key.
        sort: List format: sort each list by descending score.
        on_partition: Called in the task with the receipt of every partition it wrote
            (logging, metrics); an exception fails the task, which the engine retries.
        retries: Times a failed task is retried (distributed scheduler).
        metadata: JSON-serialisable facts to keep in the manifest, as in
            `RecommendationStore.publish()`.
        guards: Checks run before the pointer moves (default: `DEFAULT_GUARDS`), as in
            `RecommendationStore.publish()`.
        force: Publish even if guards fail (the failure is logged and recorded).
        ref: The pointer to move: ``"current"`` or a named ref such as ``"canary"``.
        chunk_bytes: Target size of a chunk file (default: as `RecommendationStore.begin_publish`).

    Raises:
        InvalidInput: Missing columns, or bad values (named in the message).
        PublishRejected: A guard failed; nothing was published.
    """
    import dask

    columns = list(df.columns)
    dtypes = df.dtypes
    item_dtype = "<i8"
    score_dtype = "<f8"
    if items is None and item in columns and str(dtypes[item]) in ("int32", "int16", "int8"):
        item_dtype = "<i4"
    if items is None and score in columns and str(dtypes[score]) == "float32":
        score_dtype = "<f4"
    spec = layout(
        collection,
        columns,
        key=key,
        item=item,
        score=score,
        items=items,
        scores=scores,
        top_k=top_k,
        sort=sort,
        item_dtype=item_dtype,
        score_dtype=score_dtype,
        on_partition=on_partition,
    )
    n = df.npartitions if partitions is None else partitions

    def run(handle: PublishHandle) -> list[str]:
        frame = df[spec.columns]
        tagged = frame.map_partitions(
            _tag, handle, spec, meta={**frame.dtypes.to_dict(), PART_COLUMN: "int64"}
        )
        shuffled = tagged.shuffle(on=PART_COLUMN, npartitions=handle.partitions)
        written = shuffled.map_partitions(_write, handle, spec, meta=("receipt", "object"))
        (series,) = dask.compute(written, retries=retries)
        return [text for text in series.tolist() if text]

    return publish_with(
        store,
        collection,
        n,
        run,
        metadata=metadata,
        guards=guards,
        force=force,
        ref=ref,
        chunk_bytes=chunk_bytes,
    )


def _tag(frame: Any, handle: PublishHandle, spec: Layout) -> Any:
    import pyarrow as pa

    from sharedrec.integrations._frames import keys_of

    keys = keys_of(pa.array(frame[spec.key].to_numpy() if len(frame) else [], from_pandas=True))
    return frame.assign(**{PART_COLUMN: handle.partition_of(keys).astype("int64")})


def _write(frame: Any, handle: PublishHandle, spec: Layout) -> Any:
    import pandas as pd
    import pyarrow as pa

    table = pa.Table.from_pandas(frame, preserve_index=False)
    return pd.Series(write_table(handle, spec, table), dtype=object, name="receipt")
