"""Delta versions: publishing a 1% change, and lookups through chains of deltas.

``test_delta_publish`` times a full publish of the workload against a delta publish of the
same data with 1% of the lists changed, over the full version (both with their checks and
fsyncs; the delta also compares every list with its base). ``extra_info`` has the bytes
each one wrote.

``test_delta_get`` times ``Reader.get`` on a full version and on the top of chains of 1, 5
and 10 deltas, each delta changing a different 1% of the lists. Half the keys asked were
changed by some delta of the chain (up to 10%), so lookups go both ways: to a delta and to
the full version below.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from pytest_benchmark.fixture import BenchmarkFixture

import sharedrec
from benchmarks._workload import COLLECTION, Settings, Workload
from benchmarks.test_lookup import _latencies

CHANGED = 0.01
"""Share of the lists a delta changes."""
DEPTHS = [0, 1, 5, 10]


def _changed(items: NDArray[np.int32], rows: NDArray[np.intp], step: int) -> NDArray[np.int32]:
    """``items`` with the lists of ``rows`` shifted to other item ids."""
    out = items.copy()
    out[rows] = (out[rows] + 7 * step) % 200_000
    return out


@dataclass(frozen=True)
class Chain:
    """A store holding a full version and 10 deltas over it."""

    store: sharedrec.RecommendationStore
    versions: list[str]
    """``versions[d]`` has ``d`` deltas below it (0: the full version)."""
    step_of_row: NDArray[np.int16]
    """The delta that changed each workload row (0: none); each row changes at most once."""
    changed_rows: NDArray[np.intp]
    """Workload rows changed by some delta."""

    def expected(self, items: NDArray[np.int32], rows: NDArray[np.intp], depth: int) -> NDArray[np.int32]:
        """The items ``versions[depth]`` serves for workload ``rows``."""
        steps = self.step_of_row[rows].astype(np.int64)
        shift = np.where((steps > 0) & (steps <= depth), 7 * steps, 0)
        return ((items[rows] + shift[:, None]) % 200_000).astype(np.int32)


@pytest.fixture(scope="session")
def chain(workload: Workload, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    folder = tmp_path_factory.mktemp(f"delta-{workload.n_users}")
    store = sharedrec.open(folder / "store", create=True)
    rng = np.random.default_rng(5)
    per_delta = max(1, int(workload.n_users * CHANGED))
    order = rng.permutation(workload.n_users)
    step_of_row = np.zeros(workload.n_users, dtype=np.int16)
    items = workload.items.copy()  # one copy, changed in place step by step
    versions = [store.publish_ranked(COLLECTION, workload.keys, items, workload.scores, progress=False)]
    for step in range(1, max(DEPTHS) + 1):
        rows = order[(step - 1) * per_delta : step * per_delta]
        step_of_row[rows] = step
        items[rows] = (items[rows] + 7 * step) % 200_000
        with store.publish(delta=True, max_chain=max(DEPTHS), guards=[], progress=False) as draft:
            draft.add_ranked(COLLECTION, workload.keys, items, workload.scores)
        versions.append(draft.version_id)
    del items
    assert store.manifest(versions[-1]).depth == max(DEPTHS)
    yield Chain(store, versions, step_of_row, order[: max(DEPTHS) * per_delta])
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("kind", ["full", "delta-1%"])
def test_delta_publish(
    benchmark: BenchmarkFixture, workload: Workload, settings: Settings, kind: str, tmp_path: Path
) -> None:
    benchmark.group = f"delta-publish-{workload.n_users}"
    store = sharedrec.open(tmp_path / "store", create=True)
    base = store.publish_ranked(COLLECTION, workload.keys, workload.items, workload.scores, progress=False)
    rows = np.random.default_rng(1).choice(
        workload.n_users, size=int(workload.n_users * CHANGED), replace=False
    )
    items = _changed(workload.items, rows, 1)
    written: list[int] = []

    def publish() -> None:
        with store.publish(delta=kind != "full", make_current=False, guards=[], progress=False) as draft:
            draft.add_ranked(COLLECTION, workload.keys, items, workload.scores)
        written.append(store.manifest(draft.version_id).data_bytes)
        store._backend.remove_tree(f"versions/{draft.version_id}")

    benchmark.pedantic(publish, rounds=settings.publish_rounds, iterations=1)
    full_bytes = store.manifest(base).data_bytes
    benchmark.extra_info.update(
        kind=kind,
        n_users=workload.n_users,
        changed_share=CHANGED,
        bytes_written=written[-1],
        bytes_of_a_full_version=full_bytes,
        bytes_ratio=written[-1] / full_bytes,
    )


@pytest.mark.parametrize("depth", DEPTHS)
def test_delta_get(
    benchmark: BenchmarkFixture, workload: Workload, settings: Settings, chain: Chain, depth: int
) -> None:
    benchmark.group = f"delta-get-{workload.n_users}"
    rng = np.random.default_rng(11)
    half = settings.rotation // 2
    rows = np.concatenate(
        [rng.choice(chain.changed_rows, size=half), rng.integers(0, workload.n_users, size=half)]
    )
    rng.shuffle(rows)
    keys = workload.keys[rows].tolist()
    with ExitStack() as stack:
        reader = stack.enter_context(chain.store.reader(version=chain.versions[depth], lease=False))
        expected = chain.expected(workload.items, rows[:200], depth)
        for key, want in zip(keys[:200], expected, strict=True):
            np.testing.assert_array_equal(reader.get(COLLECTION, key).items, want)
        for key in keys:  # warm
            reader.get(COLLECTION, key)
        benchmark.extra_info.update(
            _latencies(lambda key: reader.get(COLLECTION, key), keys, settings.latency_calls)
        )
        benchmark.extra_info.update(depth=depth, n_users=workload.n_users, system="sharedrec")
        cycle = itertools.cycle(keys)
        benchmark(lambda: reader.get(COLLECTION, next(cycle)))
