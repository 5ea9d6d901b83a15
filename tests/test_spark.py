"""Publishing from a real local Spark session (``local[2]``, two attempts per task)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sharedrec
import sharedrec.integrations.spark
from _distributed_data import assert_same, long_frame, publish_single
from sharedrec.write.distributed import PartitionReceipt

pytest.importorskip("pyspark", reason="pyspark is not installed (pip install 'sharedrec[spark]')")
pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable  # workers import sharedrec from this environment

    session = (
        SparkSession.builder.master("local[2,2]")  # two threads, a failed task is tried twice
        .appName("sharedrec-tests")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )
    yield session
    session.stop()


def test_spark_long_and_list_format_equal_a_single_process_publish(spark: object, tmp_path: Path) -> None:
    from pyspark.sql import functions as F

    store = sharedrec.open(tmp_path / "store", create=True)
    frame = long_frame()
    reference = publish_single(store, frame, "home")
    df = spark.createDataFrame(frame).repartition(3)  # type: ignore[attr-defined]
    version = sharedrec.integrations.spark.publish_ranked(
        store, df, "home", partitions=5, metadata={"engine": "spark"}
    )
    assert store.current() == version
    assert store.manifest(version).collections["home"].partitions is not None
    assert_same(store, reference, version, "home")
    lists = df.groupBy("key").agg(
        F.sort_array(F.collect_list(F.struct(-F.col("score"), F.col("item"), F.col("score")))).alias("l")
    )
    lists = lists.select("key", F.col("l.item").alias("items"), F.col("l.score").alias("scores"))
    listed = sharedrec.integrations.spark.publish_ranked(
        store, lists, "home", partitions=3, items="items", scores="scores"
    )
    assert_same(store, reference, listed, "home")


def test_spark_task_failing_once_is_retried_into_a_correct_version(spark: object, tmp_path: Path) -> None:
    store = sharedrec.open(tmp_path / "store", create=True)
    frame = long_frame(seed=11)
    reference = publish_single(store, frame, "home")
    marker = tmp_path / "failed-once"

    def fail_once(receipt: PartitionReceipt) -> None:
        # After its files are written: the retry must not duplicate or corrupt the partition.
        if receipt.partition == 1 and not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError("injected failure after writing partition 1")

    df = spark.createDataFrame(frame)  # type: ignore[attr-defined]
    version = sharedrec.integrations.spark.publish_ranked(
        store, df, "home", partitions=4, on_partition=fail_once
    )
    assert marker.exists()
    assert_same(store, reference, version, "home")
    folders = [p.name for p in (Path(store.location) / "versions" / version / "home").iterdir()]
    assert sorted(name[:10] for name in folders if name != "zarr.json") == [f"part-0000{p}" for p in range(4)]
    assert store.verify(version).ok


def test_spark_job_that_fails_leaves_the_live_version(spark: Any, tmp_path: Path) -> None:
    store = sharedrec.open(tmp_path / "store", create=True)
    frame = long_frame(seed=12)
    live = sharedrec.integrations.spark.publish_ranked(
        store, spark.createDataFrame(frame), "home", partitions=2
    )

    def always(receipt: PartitionReceipt) -> None:
        raise RuntimeError("the job dies")

    with pytest.raises(Exception, match="the job dies"):
        sharedrec.integrations.spark.publish_ranked(
            store,
            spark.createDataFrame(frame),
            "home",
            partitions=2,
            on_partition=always,
        )
    assert store.current() == live
    assert sorted(p.name for p in (Path(store.location) / "versions").iterdir()) == [live]
    reader = store.reader(lease=False)
    key = int(frame["key"].iloc[0])
    assert len(reader.get("home", key)) >= 1
    assert np.isfinite(reader.get("home", key).scores).all()
