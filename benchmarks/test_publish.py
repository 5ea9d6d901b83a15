"""Publish throughput: ``publish_ranked`` against ``np.save`` of the same arrays.

Each round writes into a fresh folder that is removed afterwards. Both sides end with their
data on stable storage: a publish fsyncs every file before it commits, so the baseline
fsyncs its ``.npy`` files too. MB/s counts the input arrays (keys, items, scores) for both.
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

import sharedrec
from benchmarks._workload import COLLECTION, Settings, Workload, write_npy


def _size_on_disk(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


@pytest.mark.parametrize("system", ["sharedrec", "np.save"])
def test_publish(
    benchmark: BenchmarkFixture, workload: Workload, settings: Settings, system: str, tmp_path: Path
) -> None:
    benchmark.group = f"publish-{workload.n_users}"
    rounds = itertools.count()
    on_disk: list[int] = []
    sample = workload.sample_keys(100, seed=3)

    def setup() -> tuple[tuple[Path], dict[str, object]]:
        return (tmp_path / f"round-{next(rounds)}",), {}

    def publish(folder: Path) -> None:
        sharedrec.open(folder, create=True).publish_ranked(
            COLLECTION, workload.keys, workload.items, workload.scores, progress=False
        )

    def save(folder: Path) -> None:
        write_npy(folder, {"keys": workload.keys, "items": workload.items, "scores": workload.scores})

    def verify_and_remove(folder: Path) -> None:
        if system == "sharedrec":
            store = sharedrec.open(folder, create=False)
            with store.reader(pin=True, lease=False, refresh_interval=None) as reader:
                items, scores, found = reader.get_many(COLLECTION, sample)
            assert found.all()
        else:
            keys = np.load(folder / "keys.npy")
            rows = np.argsort(keys)[np.searchsorted(keys, sample, sorter=np.argsort(keys))]
            items, scores = np.load(folder / "items.npy")[rows], np.load(folder / "scores.npy")[rows]
        want_items, want_scores = workload.expected(sample)
        np.testing.assert_array_equal(items, want_items)
        np.testing.assert_array_equal(scores, want_scores)
        on_disk.append(_size_on_disk(folder))
        shutil.rmtree(folder)

    benchmark.pedantic(
        publish if system == "sharedrec" else save,
        setup=setup,
        teardown=verify_and_remove,
        rounds=settings.publish_rounds,
        iterations=1,
    )
    benchmark.extra_info.update(
        system=system,
        n_users=workload.n_users,
        k=workload.k,
        input_bytes=workload.input_bytes,
        bytes_on_disk=on_disk[-1] if on_disk else None,
        fsync=True,
    )
    if benchmark.stats is not None:
        median = benchmark.stats.stats.median
        benchmark.extra_info["mb_per_s"] = workload.input_bytes / median / 1e6
