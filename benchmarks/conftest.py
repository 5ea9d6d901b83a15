"""Benchmark options and the per-size workload, built and published once per session."""

from __future__ import annotations

import compileall
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

import sharedrec
from benchmarks._baselines import RedisServer, build_lmdb, load_redis, redis_binary, start_redis
from benchmarks._workload import COLLECTION, N_ITEMS, Settings, Workload, build_workload

FULL_SIZES = (100_000, 1_000_000)
SMOKE_SIZES = (2_000, 20_000)
SMOKE_MAX_TIME = "0.1"
"""Seconds per microbenchmark in smoke mode (pytest-benchmark's default is 1 s)."""
SIZES = pytest.StashKey[list[int]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sharedrec benchmarks")
    group.addoption(
        "--sizes",
        default=None,
        help=f"comma-separated user counts (default {','.join(map(str, FULL_SIZES))}; "
        f"{','.join(map(str, SMOKE_SIZES))} with --smoke)",
    )
    group.addoption(
        "--ingest-rows",
        default="20000000",
        help="rows of the long-format Parquet input of test_ingest.py (60000000 is about 1 GB)",
    )
    group.addoption(
        "--smoke",
        action="store_true",
        help=f"tiny sizes, few rounds and --benchmark-max-time={SMOKE_MAX_TIME} unless given: "
        "checks that every benchmark runs, in seconds",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.stash[SIZES] = _sizes(config)
    # This runs before pytest-benchmark reads its options: its own hook is trylast.
    if config.getoption("smoke") and config.getoption("benchmark_max_time", None) == "1.0":
        config.option.benchmark_max_time = SMOKE_MAX_TIME


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "n_users" in metafunc.fixturenames:
        sizes = metafunc.config.stash[SIZES]
        metafunc.parametrize("n_users", sizes, ids=[f"n={n}" for n in sizes], scope="session")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The smoke run of the network-volume benchmark runs at the largest size only: its
    other sizes are deselected (not skipped: nothing is missing)."""
    if not config.getoption("smoke"):
        return
    sizes: list[int] = config.stash[SIZES]
    largest = max(sizes)
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        size = callspec.params.get("n_users") if callspec is not None else None
        small = item.path.name == "test_netvolume.py" and size is not None and size != largest
        (dropped if small else keep).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def _sizes(config: pytest.Config) -> list[int]:
    text = config.getoption("sizes")
    if text is None:
        return list(SMOKE_SIZES if config.getoption("smoke") else FULL_SIZES)
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise pytest.UsageError(
            f"--sizes takes comma-separated user counts, e.g. 100000,1000000; got {text!r}"
        ) from None
    if not sizes or min(sizes) < 1:
        raise pytest.UsageError(f"--sizes needs at least one positive user count; got {text!r}")
    return sizes


@pytest.fixture(scope="session", autouse=True)
def _bytecode() -> None:
    """Compile sharedrec's modules first, as installing a wheel does.

    An editable install has no ``.pyc`` files, and with ``PYTHONDONTWRITEBYTECODE`` set
    every fresh process would recompile the package: tens of milliseconds that no
    installed copy pays, and that the baselines (installed wheels) never pay either.
    """
    compileall.compile_dir(Path(sharedrec.__file__).parent, quiet=1)


@pytest.fixture(scope="session")
def settings(pytestconfig: pytest.Config) -> Settings:
    if pytestconfig.getoption("smoke"):
        return Settings(
            startup_rounds=3,
            publish_rounds=3,
            rotation=4096,
            latency_calls=20_000,
            batch=1000,
            batches=8,
        )
    return Settings(
        startup_rounds=7,
        publish_rounds=3,
        rotation=1 << 16,
        latency_calls=20_000,
        batch=1000,
        batches=64,
    )


@pytest.fixture(scope="session")
def workload(n_users: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workload]:
    """The data of one size: generated, published to a store and saved as .npy files."""
    folder = tmp_path_factory.mktemp(f"workload-{n_users}")
    yield build_workload(n_users, folder)
    # At 1M users the two copies take 1.6 GB; do not leave them for pytest's retention.
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def partitioned_store(workload: Workload, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The workload's rows as a collection split into 8 partitions, in a store of its own."""
    folder = tmp_path_factory.mktemp(f"partitioned-{workload.n_users}")
    store = sharedrec.open(folder / "store", create=True)
    handle = store.begin_publish(partitions=8)
    owners = handle.partition_of(workload.keys)
    receipts = []
    for part in range(8):
        rows = np.flatnonzero(owners == part)
        receipts.append(
            handle.write_ranked(
                COLLECTION, part, workload.keys[rows], workload.items[rows], workload.scores[rows]
            )
        )
    store.commit_publish(handle, receipts, guards=[])
    yield Path(store.location)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def small_chunk_store(workload: Workload, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The workload published with ``chunk_bytes`` of 4 MiB, the target size: 4,096,000-byte
    row chunks, which are not whole 2 MiB pages (the default on a file system is 50 MiB
    chunks that are)."""
    folder = tmp_path_factory.mktemp(f"small-chunks-{workload.n_users}")
    store = sharedrec.open(folder / "store", create=True)
    store.publish_ranked(
        COLLECTION, workload.keys, workload.items, workload.scores, chunk_bytes=4 << 20, progress=False
    )
    yield Path(store.location)
    shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class DeltaStore:
    """A store whose current version is a delta over the workload's full version."""

    path: Path
    changed: NDArray[np.int64]
    """The keys whose lists the delta changed (1% of them): each item id plus `SHIFT`."""

    SHIFT = 7

    def expected(self, workload: Workload, keys: NDArray[np.int64]) -> NDArray[np.int32]:
        """The items the delta version serves for existing ``keys``."""
        items, _ = workload.expected(keys)
        moved = np.isin(keys, self.changed)
        items[moved] = (items[moved] + self.SHIFT) % N_ITEMS
        return items


@pytest.fixture(scope="session")
def delta_store(workload: Workload, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeltaStore]:
    """The workload as a full version, then a delta over it changing 1% of the lists at random."""
    folder = tmp_path_factory.mktemp(f"delta-over-{workload.n_users}")
    store = sharedrec.open(folder / "store", create=True)
    store.publish_ranked(COLLECTION, workload.keys, workload.items, workload.scores, progress=False)
    rows = np.random.default_rng(5).choice(workload.n_users, max(1, workload.n_users // 100), replace=False)
    items = workload.items.copy()
    items[rows] = (items[rows] + DeltaStore.SHIFT) % N_ITEMS
    store.publish_ranked(
        COLLECTION, workload.keys, items, workload.scores, delta=True, guards=[], progress=False
    )
    del items
    yield DeltaStore(Path(store.location), np.sort(workload.keys[rows]))
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def lmdb_env(workload: Workload, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The workload in an LMDB environment (a folder), built once per size."""
    pytest.importorskip("lmdb", reason="the LMDB baseline needs py-lmdb (pip install lmdb)")
    folder = tmp_path_factory.mktemp(f"lmdb-{workload.n_users}")
    yield build_lmdb(workload, folder / "env")
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server on a free loopback port, without persistence, for the whole session."""
    pytest.importorskip("redis", reason="the Redis baseline needs redis-py (pip install redis)")
    binary = redis_binary()
    if binary is None:
        pytest.skip("redis-server is not on PATH: the Redis baseline needs a real server")
    server = start_redis(binary, tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_db(workload: Workload, redis_server: RedisServer) -> Iterator[Any]:
    """A client of ``redis_server`` holding this size's rows (and nothing else)."""
    client = redis_server.client()
    load_redis(client, workload)
    yield client
    client.flushall()
    client.close()
