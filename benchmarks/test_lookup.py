"""Warm lookup latency: ``Reader.get`` / ``get_many`` against plain ndarray views of
memory-mapped sorted arrays + searchsorted (``ndarray-view``, the floor of a mapped lookup
in Python and the baseline of the tables), the same maps as ``np.memmap`` objects (whose
``__getitem__`` and ``__array_finalize__`` run Python code on every call), an LMDB
environment and a Redis server on loopback.

Every call looks up a different existing key, cycling through keys drawn up front, and every
key was looked up once before timing (chunks mapped, pages faulted in). pytest-benchmark's
median is then the p50 of one call; ``extra_info`` adds p50/p90/p99/p99.9 from individually
timed calls, and the cost of the timing itself so that it can be subtracted.

LMDB and Redis hold the same rows as key -> items and scores bytes (see ``_baselines.py``);
their answers are decoded into numpy views with ``np.frombuffer``. Redis pays a loopback
round trip per call; it is here as the usual shared key-value service, not as a peer of
in-process lookups.
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
from benchmarks._baselines import decode_row, decode_rows, encode_key, encode_keys, open_lmdb
from benchmarks._workload import COLLECTION, Settings, Workload

Lookup = Callable[[Any], Any]
SYSTEMS = ["sharedrec", "lmdb", "redis", "np.memmap", "ndarray-view"]


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


def _lmdb_txn(request: pytest.FixtureRequest, stack: ExitStack) -> Any:
    """A read transaction on the LMDB baseline, kept open for the whole benchmark.

    ``buffers=True``: values are memoryviews into LMDB's map (zero copy), valid while the
    transaction is open.
    """
    env = stack.enter_context(open_lmdb(request.getfixturevalue("lmdb_env")))
    return stack.enter_context(env.begin(buffers=True))


def _single(
    system: str, workload: Workload, stack: ExitStack, request: pytest.FixtureRequest
) -> tuple[Lookup, Callable[[Any], tuple[Any, Any]]]:
    """A one-key lookup of ``system``, and how to get ``(items, scores)`` out of its result."""
    k = workload.k
    if system == "sharedrec":
        reader = _reader(workload, stack)

        def get(key: int) -> Any:
            return reader.get(COLLECTION, key)

        return get, lambda found: (found.items, found.scores)

    if system in ("lmdb", "redis"):
        fetch = _lmdb_txn(request, stack).get if system == "lmdb" else request.getfixturevalue("redis_db").get

        def get_value(key: int) -> Any:
            value = fetch(encode_key(key))
            if value is None:
                raise KeyError(key)
            return decode_row(value, k)

        return get_value, lambda found: found

    keys, items, scores = _mapped(workload, plain=system == "ndarray-view")
    search, n = keys.searchsorted, len(keys)

    # The fastest plain-numpy lookup found: the bound method (``np.searchsorted`` adds a
    # dispatch), the row as a Python int (indexing with a numpy scalar is slower) and the
    # same bounds and equality checks as sharedrec's index.
    def raw(key: int) -> Any:
        i = int(search(key))
        if i == n or keys[i] != key:
            raise KeyError(key)
        return items[i], scores[i]

    return raw, lambda found: found


def _batch(
    system: str, workload: Workload, stack: ExitStack, request: pytest.FixtureRequest
) -> tuple[Lookup, Callable[[Any], tuple[Any, Any]]]:
    """A many-key lookup of ``system``, and how to get ``(items, scores)`` out of its result."""
    k = workload.k
    if system == "sharedrec":
        reader = _reader(workload, stack)

        def get_many(keys: NDArray[np.int64]) -> Any:
            return reader.get_many(COLLECTION, keys)

        def unpack(found: Any) -> tuple[Any, Any]:
            assert found[2].all()
            return found[0], found[1]

        return get_many, unpack

    if system == "lmdb":
        cursor = _lmdb_txn(request, stack).cursor()

        def getmulti(batch: NDArray[np.int64]) -> Any:
            found = cursor.getmulti(encode_keys(batch))  # absent keys are left out
            if len(found) != len(batch):
                raise KeyError("a key of the batch is missing")
            return decode_rows([value for _, value in found], k)

        return getmulti, lambda found: found

    if system == "redis":
        client = request.getfixturevalue("redis_db")

        def mget(batch: NDArray[np.int64]) -> Any:
            values = client.mget(encode_keys(batch))
            if None in values:
                raise KeyError("a key of the batch is missing")
            return decode_rows(values, k)

        return mget, lambda found: found

    keys, items, scores = _mapped(workload, plain=system == "ndarray-view")

    if system == "ndarray-view":
        # The fastest plain-numpy batch found: the batch searched in sorted order (numpy's
        # searchsorted starts each search where the previous one ended) and the rows copied
        # with np.take, which skips the general fancy-indexing machinery.
        def fastest(batch: NDArray[np.int64]) -> Any:
            order = np.argsort(batch)
            rows = np.empty(len(batch), dtype=np.intp)
            rows[order] = np.searchsorted(keys, batch[order])
            if not np.array_equal(keys.take(rows, mode="clip"), batch):
                raise KeyError("a key of the batch is missing")
            return np.take(items, rows, axis=0), np.take(scores, rows, axis=0)

        return fastest, lambda found: found

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


def _interleaved(lookups: dict[str, Lookup], batches: list[Any], baseline: str) -> dict[str, float]:
    """Medians in µs of the lookups timed in alternating rounds over the same batches, and
    each one's time over ``baseline``'s: ratios that a busy machine's load, which changes
    between one benchmark and the next, affects alike."""
    rounds = 7
    spent: dict[str, list[int]] = {name: [] for name in lookups}
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for name, lookup in lookups.items():
            for batch in batches:
                start = clock()
                lookup(batch)
                spent[name].append(clock() - start)
    medians = {name: float(np.median(times)) / 1e3 for name, times in spent.items()}
    out = {f"interleaved_{name}_us": median for name, median in medians.items()}
    for name, median in medians.items():
        if name != baseline:
            out[f"interleaved_{name}_over_{baseline}"] = median / medians[baseline]
    return out


def _redis_info(request: pytest.FixtureRequest) -> dict[str, Any]:
    memory = request.getfixturevalue("redis_db").info("memory")
    return {"redis_used_memory_mb": memory["used_memory"] / 1e6, "server": "redis-server on loopback"}


@pytest.mark.parametrize("system", SYSTEMS)
def test_get(
    benchmark: BenchmarkFixture,
    workload: Workload,
    settings: Settings,
    request: pytest.FixtureRequest,
    system: str,
) -> None:
    benchmark.group = f"get-{workload.n_users}"
    keys = workload.sample_keys(settings.rotation, seed=11).tolist()
    with ExitStack() as stack:
        lookup, unpack = _single(system, workload, stack, request)
        _check(lookup, unpack, workload, keys[:200])
        for key in keys:  # warm: map every chunk and fault in every page the timed calls touch
            lookup(key)
        benchmark.extra_info.update(_latencies(lookup, keys, settings.latency_calls))
        rotation = itertools.cycle(keys)
        benchmark(lambda: lookup(next(rotation)))
    benchmark.extra_info.update(
        system=system, n_users=workload.n_users, k=workload.k, rotating_keys=len(keys)
    )
    if system == "redis":
        benchmark.extra_info.update(_redis_info(request))


@pytest.mark.parametrize("system", SYSTEMS)
def test_get_many(
    benchmark: BenchmarkFixture,
    workload: Workload,
    settings: Settings,
    request: pytest.FixtureRequest,
    system: str,
) -> None:
    benchmark.group = f"get_many{settings.batch}-{workload.n_users}"
    batches = [workload.sample_keys(settings.batch, seed=100 + i) for i in range(settings.batches)]
    with ExitStack() as stack:
        lookup, unpack = _batch(system, workload, stack, request)
        _check(lookup, unpack, workload, batches[:2])
        for batch in batches:
            lookup(batch)
        rotation = itertools.cycle(batches)
        benchmark(lambda: lookup(next(rotation)))
        if system == "sharedrec":
            lookups = {system: lookup}
            for baseline in ("np.memmap", "ndarray-view"):
                lookups[baseline] = _batch(baseline, workload, stack, request)[0]
                for batch in batches:
                    lookups[baseline](batch)
            benchmark.extra_info.update(_interleaved(lookups, batches, "ndarray-view"))
    benchmark.extra_info.update(system=system, n_users=workload.n_users, k=workload.k, batch=settings.batch)
    if system == "redis":
        benchmark.extra_info.update(_redis_info(request))
    if benchmark.stats is not None:
        median = benchmark.stats.stats.median
        benchmark.extra_info["per_key_ns"] = median / settings.batch * 1e9
        benchmark.extra_info["keys_per_s"] = settings.batch / median


@pytest.mark.parametrize("partitions", [1, 8])
def test_get_partitioned(
    benchmark: BenchmarkFixture,
    workload: Workload,
    settings: Settings,
    request: pytest.FixtureRequest,
    partitions: int,
) -> None:
    """``get`` on the same rows stored whole (P=1, the usual layout) and in 8 partitions."""
    benchmark.group = f"get-partitions-{workload.n_users}"
    root = workload.store if partitions == 1 else request.getfixturevalue("partitioned_store")
    keys = workload.sample_keys(settings.rotation, seed=11).tolist()
    with sharedrec.open(root, create=False).reader(lease=False) as reader:
        for key in keys[:200]:
            got = reader.get(COLLECTION, key)
            want_items, _ = workload.expected(np.asarray([key]))
            assert got.items.tolist() == want_items[0].tolist()
        for key in keys:
            reader.get(COLLECTION, key)
        rotation = itertools.cycle(keys)
        benchmark(lambda: reader.get(COLLECTION, next(rotation)))
    benchmark.extra_info.update(partitions=partitions, n_users=workload.n_users, k=workload.k)


@pytest.mark.parametrize("partitions", [1, 8])
def test_get_many_partitioned(
    benchmark: BenchmarkFixture,
    workload: Workload,
    settings: Settings,
    request: pytest.FixtureRequest,
    partitions: int,
) -> None:
    """``get_many`` on the same rows stored whole and in 8 partitions (keys grouped by partition)."""
    benchmark.group = f"get_many{settings.batch}-partitions-{workload.n_users}"
    root = workload.store if partitions == 1 else request.getfixturevalue("partitioned_store")
    batches = [workload.sample_keys(settings.batch, seed=100 + i) for i in range(settings.batches)]
    with sharedrec.open(root, create=False).reader(lease=False) as reader:
        items, _, found = reader.get_many(COLLECTION, batches[0])
        want_items, _ = workload.expected(batches[0])
        assert found.all() and np.array_equal(items, want_items)
        for batch in batches:
            reader.get_many(COLLECTION, batch)
        rotation = itertools.cycle(batches)
        benchmark(lambda: reader.get_many(COLLECTION, next(rotation)))
        if partitions > 1:
            with sharedrec.open(workload.store, create=False).reader(lease=False) as whole:
                lookups = {
                    "partitioned": lambda batch: reader.get_many(COLLECTION, batch),
                    "whole": lambda batch: whole.get_many(COLLECTION, batch),
                }
                benchmark.extra_info.update(_interleaved(lookups, batches, "whole"))
    benchmark.extra_info.update(partitions=partitions, n_users=workload.n_users, batch=settings.batch)
