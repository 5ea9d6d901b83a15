"""Operating a store with many versions: ``store.versions()`` and ``store.gc()`` at 10,000.

One small version, in chunks small enough that its manifest lists as many files as a
version of a million users does (about 250), is published, then cloned on local disk into
``VERSIONS`` committed versions with new ids and their own manifests (each clone holds the
root group's metadata and a manifest naming it; the data files are left out, as neither
listing nor garbage collection reads them). The clones are dated two days back, so a garbage
collection with no grace period may delete any of them that it does not keep.

``test_versions_list`` times ``store.versions()`` after a first call (whose time is in
``extra_info``: the clones were written as by an older sharedrec, so it reads every
manifest); ``test_versions_gc_dry`` a dry run of
``store.gc(keep=3, grace=0)`` (which decides on every version); ``test_versions_gc`` one
real collection keeping all but the oldest ``DELETED``. ``extra_info`` has the time of one
listing of ``versions/`` in the same run: the floor any of these pays.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

import sharedrec

VERSIONS = 10_000
SMOKE_VERSIONS = 200
DELETED = 5


def _clone(store_path: Path, count: int) -> list[str]:
    """Publish one version, then ``count - 1`` clones of it (oldest first); their ids."""
    store = sharedrec.open(str(store_path), create=True)
    # Small chunks give the manifest as many files as a version of a million users lists.
    keys = np.arange(20_000)
    items = np.arange(200_000, dtype=np.int32).reshape(20_000, 10)
    scores = np.ones((20_000, 10), dtype=np.float32)
    first = store.publish_ranked("home", keys, items, scores, chunk_bytes=8192)
    source = store_path / "versions" / first
    manifest = json.loads((source / "manifest.json").read_text())
    group = (source / "zarr.json").read_bytes()
    start = datetime.now(UTC) - timedelta(days=2)
    ids = []
    for i in range(count - 1):
        created = start + timedelta(seconds=i)
        version = created.strftime("%Y%m%dT%H%M%S%fZ") + f"-{i:06x}"
        folder = store_path / "versions" / version
        folder.mkdir()
        (folder / "zarr.json").write_bytes(group)
        clone = {**manifest, "id": version, "created_at": created.isoformat().replace("+00:00", "Z")}
        (folder / "manifest.json").write_text(json.dumps(clone, indent=1))
        ids.append(version)
    return [*ids, first]


def _listing(store_path: Path) -> float:
    started = time.perf_counter()
    os.listdir(store_path / "versions")
    return time.perf_counter() - started


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> tuple[Path, list[str]]:
    count = SMOKE_VERSIONS if pytestconfig.getoption("smoke") else VERSIONS
    path = tmp_path_factory.mktemp("many") / "store"
    return path, _clone(path, count)


def test_versions_list(benchmark: BenchmarkFixture, many: tuple[Path, list[str]]) -> None:
    path, ids = many
    store = sharedrec.open(str(path), create=False)
    # The clones were written without the catalog, as by an older sharedrec: the first
    # listing reads every manifest once (and writes the catalog, where there is one).
    started = time.perf_counter()
    store.versions()
    first = time.perf_counter() - started
    listed = benchmark.pedantic(store.versions, rounds=3, iterations=1)
    assert [info.id for info in listed] == ids
    benchmark.extra_info.update(versions=len(ids), listing_s=_listing(path), first_call_s=first)


def test_versions_gc_dry(benchmark: BenchmarkFixture, many: tuple[Path, list[str]]) -> None:
    path, ids = many
    store = sharedrec.open(str(path), create=False)
    report = benchmark.pedantic(lambda: store.gc(keep=3, grace=0, dry_run=True), rounds=3, iterations=1)
    assert sorted(report.deleted) == sorted(ids[:-3])
    benchmark.extra_info.update(versions=len(ids), listing_s=_listing(path))


def test_versions_gc(benchmark: BenchmarkFixture, many: tuple[Path, list[str]], tmp_path: Path) -> None:
    source, ids = many
    path = tmp_path / "store"
    shutil.copytree(source, path)  # the other benchmarks keep theirs whole
    store = sharedrec.open(str(path), create=False)
    keep = len(ids) - DELETED
    report = benchmark.pedantic(lambda: store.gc(keep=keep, grace=0), rounds=1, iterations=1)
    assert sorted(report.deleted) == sorted(ids[:DELETED])
    assert [info.id for info in store.versions()] == ids[DELETED:]
    benchmark.extra_info.update(versions=len(ids), listing_s=_listing(path))
