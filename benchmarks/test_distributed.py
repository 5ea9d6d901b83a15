"""Publish throughput of the two-phase publish with 1 and 2 worker processes, against the
single-process writer (``publish_ranked``) on the same rows.

Workers are forked processes that already hold the rows (as engine tasks hold theirs);
each writes whole partitions of an 8-way split and returns receipts; the timed part is
``begin_publish`` + every partition written + ``commit_publish``. Guards are off on both
sides: this measures writing. MB/s counts the input arrays (keys, items, scores).
"""

from __future__ import annotations

import itertools
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

import sharedrec
from benchmarks._workload import COLLECTION, Workload

PARTITIONS = 8
_ROWS: dict[str, Any] = {}  # the rows, inherited by forked workers


def _write(handle: sharedrec.PublishHandle, part: int) -> str:
    rows = np.flatnonzero(_ROWS["owners"] == part)
    keys, items, scores = (_ROWS[name][rows] for name in ("keys", "items", "scores"))
    return handle.write_ranked(COLLECTION, part, keys, items, scores).dumps()


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_distributed_publish(
    benchmark: BenchmarkFixture, workload: Workload, workers: int, tmp_path: Path
) -> None:
    """``workers=0`` is the single-process writer."""
    benchmark.group = f"publish-distributed-{workload.n_users}"
    rounds = itertools.count()
    _ROWS.update(
        keys=workload.keys,
        items=workload.items,
        scores=workload.scores,
        owners=sharedrec.partition_of(workload.keys, PARTITIONS),
    )
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max(1, workers), mp_context=context) if workers else _NoPool() as pool:

        def publish() -> None:
            store = sharedrec.open(tmp_path / f"round-{next(rounds)}", create=True)
            if not workers:
                store.publish_ranked(COLLECTION, workload.keys, workload.items, workload.scores, guards=[])
                return
            handle = store.begin_publish(partitions=PARTITIONS)
            receipts = list(pool.map(_write, itertools.repeat(handle), range(PARTITIONS)))
            store.commit_publish(handle, receipts, guards=[])

        benchmark.pedantic(publish, rounds=3 if workload.n_users <= 100_000 else 2, warmup_rounds=1)
    check = sharedrec.open(tmp_path / "round-0").reader(lease=False)
    key = int(workload.keys[7])
    assert check.get(COLLECTION, key).items.tolist() == workload.items[7].tolist()
    check.close()
    benchmark.extra_info.update(workers=workers, partitions=PARTITIONS if workers else 1)
    if benchmark.stats is not None:
        benchmark.extra_info["mb_per_s"] = workload.input_bytes / benchmark.stats.stats.median / 1e6


class _NoPool:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
