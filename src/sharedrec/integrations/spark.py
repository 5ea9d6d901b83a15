"""Publish a Spark DataFrame: every Spark task writes the partitions it holds.

Install with ``pip install 'sharedrec[spark]'``. pyspark is imported only when a function
here runs.

The DataFrame is tagged with each row's partition (``PublishHandle.partition_of``: the
key's ``fibonacci64`` or ``blake2b-64``, computed with Arrow batches in ``mapInArrow``), repartitioned by
that tag so all rows of a partition meet in one task, and written by ``mapInArrow``
tasks that return receipts; the driver commits them. A task that Spark retries writes a
new attempt folder, and only the receipts of successful attempts reach the driver.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from sharedrec.errors import InvalidInput
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
    metadata: dict[str, JsonValue] | None = None,
    guards: Sequence[GuardLike] | None = None,
    force: bool = False,
    ref: str = "current",
    chunk_bytes: int | None = None,
) -> str:
    """Publish a ranked collection from a Spark DataFrame; returns the version id.

    Two input formats:

    - long: one row per ``(key, item, score)``; each key's rows become its list, best
      score first (``top_k`` keeps the best ones);
    - list: one row per key with array columns ``items=`` and ``scores=`` (best first,
      or pass ``sort=True``).

    Args:
        store: The store to publish to; its location must be reachable from every executor.
        df: A ``pyspark.sql.DataFrame``.
        collection: The collection's name.
        partitions: Partitions of the collection (default: the DataFrame's partitions).
        key: Long format: the column of keys.
        item: Long format: the column of items.
        score: Long format: the column of scores.
        items: List format: the column of item lists (array columns).
        scores: List format: the column of score lists (array columns).
        top_k: Keep at most this many items per key.
        sort: List format: sort each list by descending score.
        on_partition: Called in the task with the receipt of every partition it wrote
            (logging, metrics); an exception fails the task, which the engine retries.
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
    from pyspark.sql import types as T

    fields = {field.name: field.dataType for field in df.schema.fields}
    item_type = fields.get(items if items is not None else item)
    score_type = fields.get(scores if scores is not None else score)
    if isinstance(item_type, T.ArrayType):
        item_type = item_type.elementType
    if isinstance(score_type, T.ArrayType):
        score_type = score_type.elementType
    spec = layout(
        collection,
        list(fields),
        key=key,
        item=item,
        score=score,
        items=items,
        scores=scores,
        top_k=top_k,
        sort=sort,
        item_dtype="<i4" if isinstance(item_type, T.IntegerType | T.ShortType | T.ByteType) else "<i8",
        score_dtype="<f4" if isinstance(score_type, T.FloatType) else "<f8",
        on_partition=on_partition,
    )
    n = df.rdd.getNumPartitions() if partitions is None else partitions

    def run(handle: PublishHandle) -> list[str]:
        return _run(df.select(*spec.columns), handle, spec)

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


def _run(df: Any, handle: PublishHandle, spec: Layout) -> list[str]:
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    tagged_schema = T.StructType([*df.schema.fields, T.StructField(PART_COLUMN, T.IntegerType(), False)])

    def tag(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa

        from sharedrec.integrations._frames import keys_of

        for batch in batches:
            parts = handle.partition_of(keys_of(batch.column(spec.key))).astype(np.int32)
            yield pa.RecordBatch.from_arrays([*batch.columns, pa.array(parts)], schema=tagged_schema_arrow)

    tagged_schema_arrow = _arrow_schema(tagged_schema)

    def write(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa

        table = pa.Table.from_batches(list(batches), schema=tagged_schema_arrow)
        receipts = write_table(handle, spec, table)
        yield pa.RecordBatch.from_pydict({"receipt": receipts}, schema=pa.schema([("receipt", pa.string())]))

    tagged = df.mapInArrow(tag, tagged_schema)
    out = tagged.repartition(handle.partitions, F.col(PART_COLUMN)).mapInArrow(write, "receipt string")
    return [row.receipt for row in out.collect()]


def _arrow_schema(schema: Any) -> Any:
    """The Arrow schema Spark uses for a Spark schema."""
    try:
        from pyspark.sql.pandas.types import to_arrow_schema
    except ImportError as exc:  # pragma: no cover - pyspark always has it
        raise InvalidInput("pyspark with Arrow support is needed: pip install 'sharedrec[spark]'") from exc
    return to_arrow_schema(schema)
