"""Publishing from a real dask.distributed cluster with two worker processes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from _distributed_data import assert_same, long_frame, publish_single
from sharedrec.write.distributed import PartitionReceipt

pytest.importorskip("distributed", reason="dask is not installed (pip install 'sharedrec[dask]')")
pytestmark = pytest.mark.dask


@pytest.fixture(scope="module")
def client() -> Iterator[object]:
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as session,
    ):
        yield session


def test_dask_publish_equals_a_single_process_publish(client: object, tmp_path: Path) -> None:
    import dask.dataframe as dd

    import sharedrec.integrations.dask

    store = sharedrec.open(tmp_path / "store", create=True)
    frame = long_frame(seed=21)
    reference = publish_single(store, frame, "home")
    version = sharedrec.integrations.dask.publish_ranked(
        store, dd.from_pandas(frame, npartitions=3), "home", partitions=5
    )
    assert store.current() == version
    assert_same(store, reference, version, "home")


def test_dask_task_failing_once_is_retried_into_a_correct_version(client: object, tmp_path: Path) -> None:
    import dask.dataframe as dd

    import sharedrec.integrations.dask

    store = sharedrec.open(tmp_path / "store", create=True)
    frame = long_frame(seed=22)
    reference = publish_single(store, frame, "home")
    marker = str(tmp_path / "failed-once")

    def fail_once(receipt: PartitionReceipt) -> None:
        if receipt.partition == 2 and not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError("injected failure after writing partition 2")

    df = dd.from_pandas(frame, npartitions=2)
    version = sharedrec.integrations.dask.publish_ranked(
        store, df, "home", partitions=4, on_partition=fail_once
    )
    assert os.path.exists(marker)
    assert_same(store, reference, version, "home")
    assert store.verify(version).ok


def test_dask_job_that_fails_leaves_the_live_version(client: object, tmp_path: Path) -> None:
    import dask.dataframe as dd

    import sharedrec.integrations.dask

    store = sharedrec.open(tmp_path / "store", create=True)
    frame = long_frame(seed=23)
    live = sharedrec.integrations.dask.publish_ranked(
        store, dd.from_pandas(frame, npartitions=2), "home", partitions=2
    )

    def always(receipt: PartitionReceipt) -> None:
        raise RuntimeError("the job dies")

    with pytest.raises(RuntimeError, match="the job dies"):
        sharedrec.integrations.dask.publish_ranked(
            store, dd.from_pandas(frame, npartitions=2), "home", partitions=2, on_partition=always, retries=0
        )
    assert store.current() == live
    assert sorted(p.name for p in (Path(store.location) / "versions").iterdir()) == [live]
