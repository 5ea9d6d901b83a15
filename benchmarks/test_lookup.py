"""Warm lookup latency: ``Reader.get`` / ``get_many`` against raw ``np.memmap`` + searchsorted.

Every call looks up a different existing key, cycling through keys drawn up front, and every
key was looked up once before timing (chunks mapped, pages faulted in). pytest-benchmark's
median is then the p50 of one call; ``extra_info`` adds p50/p90/p99/p99.9 from individually
timed calls, and the cost of the timing itself so that it can be subtracted.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from pytest_benchmark.fixture import BenchmarkFixture

import sharedrec
from benchmarks._workload import COLLECTION, Settings, Workload

Lookup = Callable[[Any], Any]


def _mapped(workload: Workload, *, plain: bool) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
    """The baseline's sorted keys, items and scores, memory-mapped by ``np.load``.

    ``plain`` views the maps as ``np.ndarray``: ``np.memmap`` indexing runs Python code
    (``memmap.__getitem__``), a plain view does not, so it is the floor for a mapped lookup.
    """
    arrays = tuple(np.load(workload.npy_file(name), mmap_mode="r") for name in ("keys", "items", "scores"))
    if plain:
        arrays = tuple(np.asarray(array) for array in arrays)
    keys, items, scores = arrays
    return keys, items, scores


def _reader(workload: Workload, stack: ExitStack) -> sharedrec.Reader:
    """A reader with the default settings a service gets, closed when ``stack`` closes."""
    return stack.enter_context(sharedrec.open(workload.store, create=False).reader())


def _single(
    system: str, workload: Workload, stack: ExitStack
) -> tuple[Lookup, Callable[[Any], tuple[Any, Any]]]:
    """A one-key lookup of ``system``, and how to get ``(items, scores)`` out of its result."""
    if system == "sharedrec":
        reader = _reader(workload, stack)

        def get(key: int) -> Any:
            return reader.get(COLLECTION, key)

        return get, lambda found: (found.items, found.scores)

    keys, items, scores = _mapped(workload, plain=system == "ndarray-view")

    def raw(key: int) -> Any:
        i = np.searchsorted(keys, key)
        if keys[i] != key:
            raise KeyError(key)
        return items[i], scores[i]

    return raw, lambda found: found


def _batch(
    system: str, workload: Workload, stack: ExitStack
) -> tuple[Lookup, Callable[[Any], tuple[Any, Any]]]:
    """A many-key lookup of ``system``, and how to get ``(items, scores)`` out of its result."""
    if system == "sharedrec":
        reader = _reader(workload, stack)

        def get_many(keys: NDArray[np.int64]) -> Any:
            return reader.get_many(COLLECTION, keys)

        def unpack(found: Any) -> tuple[Any, Any]:
            assert found[2].all()
            return found[0], found[1]

        return get_many, unpack

    keys, items, scores = _mapped(workload, plain=False)

    def raw(batch: NDArray[np.int64]) -> Any:
        rows = np.searchsorted(keys, batch)
        if not np.array_equal(keys[rows], batch):
            raise KeyError("a key of the batch is missing")
        return items[rows], scores[rows]

    return raw, lambda found: found


def _check(lookup: Lookup, unpack: Callable[[Any], tuple[Any, Any]], workload: Workload, keys: Any) -> None:
    for key in keys:
        items, scores = unpack(lookup(key))
        want_items, want_scores = workload.expected(np.atleast_1d(np.asarray(key)))
        np.testing.assert_array_equal(items, want_items.reshape(np.shape(items)))
        np.testing.assert_array_equal(scores, want_scores.reshape(np.shape(scores)))


def _latencies(lookup: Lookup, keys: list[Any], calls: int) -> dict[str, float]:
    """Percentiles in ns of ``calls`` individually timed calls, and the timer's own cost."""
    clock = time.perf_counter_ns
    spent = np.empty(calls, dtype=np.int64)
    for i, key in zip(range(calls), itertools.cycle(keys)):
        start = clock()
        lookup(key)
        spent[i] = clock() - start
    empty = np.empty(calls, dtype=np.int64)
    for i in range(calls):
        start = clock()
        empty[i] = clock() - start
    p50, p90, p99, p999 = np.percentile(spent, [50, 90, 99, 99.9]).tolist()
    return {
        "p50_ns": p50,
        "p90_ns": p90,
        "p99_ns": p99,
        "p999_ns": p999,
        "timer_overhead_ns": float(np.median(empty)),
        "timed_calls": calls,
    }


@pytest.mark.parametrize("system", ["sharedrec", "np.memmap", "ndarray-view"])
def test_get(benchmark: BenchmarkFixture, workload: Workload, settings: Settings, system: str) -> None:
    benchmark.group = f"get-{workload.n_users}"
    keys = workload.sample_keys(settings.rotation, seed=11).tolist()
    with ExitStack() as stack:
        lookup, unpack = _single(system, workload, stack)
        _check(lookup, unpack, workload, keys[:200])
        for key in keys:  # warm: map every chunk and fault in every page the timed calls touch
            lookup(key)
        benchmark.extra_info.update(_latencies(lookup, keys, settings.latency_calls))
        rotation = itertools.cycle(keys)
        benchmark(lambda: lookup(next(rotation)))
    benchmark.extra_info.update(
        system=system, n_users=workload.n_users, k=workload.k, rotating_keys=len(keys)
    )


@pytest.mark.parametrize("system", ["sharedrec", "np.memmap"])
def test_get_many(benchmark: BenchmarkFixture, workload: Workload, settings: Settings, system: str) -> None:
    benchmark.group = f"get_many{settings.batch}-{workload.n_users}"
    batches = [workload.sample_keys(settings.batch, seed=100 + i) for i in range(settings.batches)]
    with ExitStack() as stack:
        lookup, unpack = _batch(system, workload, stack)
        _check(lookup, unpack, workload, batches[:2])
        for batch in batches:
            lookup(batch)
        rotation = itertools.cycle(batches)
        benchmark(lambda: lookup(next(rotation)))
    benchmark.extra_info.update(system=system, n_users=workload.n_users, k=workload.k, batch=settings.batch)
    if benchmark.stats is not None:
        benchmark.extra_info["per_key_ns"] = benchmark.stats.stats.median / settings.batch * 1e9
