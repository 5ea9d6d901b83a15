"""Fresh interpreter to first correct answer: sharedrec against download-and-load.

Each round starts a new Python process that answers one key and exits. The benchmark is
the wall time of the whole child process; the child's own split (imports, then open to
first answer) goes to ``extra_info``. The baseline stands for the old pattern of loading
everything into memory at start-up: ``np.load`` of the full arrays plus a dict key -> row.
Both read local files that this run has just written, so the page cache is warm and the
baseline pays no network transfer: a lower bound for a real download.

Two more systems open their data without loading it: ``lmdb`` (a read-only LMDB environment
holding key -> items and scores bytes) and ``np.memmap`` (the sorted .npy files memory-mapped
by ``np.load(mmap_mode="r")``, answered with ``np.searchsorted``).
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from benchmarks._workload import COLLECTION, Settings, Workload

READER_IMPORTS = """\
import sharedrec
import sharedrec.read.open, sharedrec.store, sharedrec.backends.posix
"""
"""What a reader process imports before it answers: `sharedrec`, then what
``sharedrec.open(path).reader()`` loads on first use (the store facade, the local backend and
the reader's modules, numpy among them). `test_import.py` times these same lines."""

# t0: first statement. t1: everything the answer needs is imported (READER_IMPORTS: sharedrec
# loads these on first use, so a service pays them before its first answer whichever way it
# imports; they count in import_s, never in first_answer_s), so first_answer_s = t2 - t1 is
# the work on the data alone. time.perf_counter() reads CLOCK_MONOTONIC on Linux, which all
# processes share, so the parent can place the child's timestamps on its own clock.
SHAREDREC_CHILD = (
    """\
import time
t0 = time.perf_counter()
import sys
"""
    + READER_IMPORTS
    + """\
t1 = time.perf_counter()
c1 = time.process_time()
reader = sharedrec.open(sys.argv[1], create=False).reader()
opened = time.perf_counter()
found = reader.get(sys.argv[2], int(sys.argv[3]))
answer = [found.items.tolist(), found.scores.tolist()]
c2 = time.process_time()
t2 = time.perf_counter()
import json
print(json.dumps({"t0": t0, "t1": t1, "t2": t2, "opened": opened, "cpu": c2 - c1, "answer": answer}))
"""
)

BASELINE_CHILD = """\
import time
t0 = time.perf_counter()
import sys
import numpy as np
t1 = time.perf_counter()
keys = np.load(sys.argv[1])
items = np.load(sys.argv[2])
scores = np.load(sys.argv[3])
loaded = time.perf_counter()
rows = dict(zip(keys.tolist(), range(len(keys))))
row = rows[int(sys.argv[4])]
answer = [items[row].tolist(), scores[row].tolist()]
t2 = time.perf_counter()
import json
print(json.dumps({"t0": t0, "t1": t1, "t2": t2, "loaded": loaded, "answer": answer}))
"""


# Keys are 8-byte big-endian ids, values k int32 items then k float32 scores (_baselines.py).
# The memoryview of buffers=True points into LMDB's map, valid while the transaction is open.
LMDB_CHILD = """\
import time
t0 = time.perf_counter()
import sys
import lmdb
import numpy as np
t1 = time.perf_counter()
c1 = time.process_time()
env = lmdb.open(sys.argv[1], readonly=True, lock=False, readahead=False, subdir=True)
opened = time.perf_counter()
k = int(sys.argv[2])
with env.begin(buffers=True) as txn:
    value = txn.get(int(sys.argv[3]).to_bytes(8, "big", signed=True))
    items = np.frombuffer(value, "<i4", k)
    scores = np.frombuffer(value, "<f4", k, 4 * k)
    answer = [items.tolist(), scores.tolist()]
c2 = time.process_time()
t2 = time.perf_counter()
import json
print(json.dumps({"t0": t0, "t1": t1, "t2": t2, "opened": opened, "cpu": c2 - c1, "answer": answer}))
"""

MEMMAP_CHILD = """\
import time
t0 = time.perf_counter()
import sys
import numpy as np
t1 = time.perf_counter()
keys = np.load(sys.argv[1], mmap_mode="r")
items = np.load(sys.argv[2], mmap_mode="r")
scores = np.load(sys.argv[3], mmap_mode="r")
opened = time.perf_counter()
key = int(sys.argv[4])
row = int(np.searchsorted(keys, key))
assert keys[row] == key
answer = [items[row].tolist(), scores[row].tolist()]
t2 = time.perf_counter()
import json
print(json.dumps({"t0": t0, "t1": t1, "t2": t2, "opened": opened, "answer": answer}))
"""

SYSTEMS = ["sharedrec", "lmdb", "np.memmap", "np.load+dict"]


def _child_command(system: str, workload: Workload, key: int, lmdb_path: Path | None = None) -> list[str]:
    if system == "sharedrec":
        return [sys.executable, "-c", SHAREDREC_CHILD, str(workload.store), COLLECTION, str(key)]
    if system == "lmdb":
        return [sys.executable, "-c", LMDB_CHILD, str(lmdb_path), str(workload.k), str(key)]
    files = [str(workload.npy_file(name)) for name in ("keys", "items", "scores")]
    child = MEMMAP_CHILD if system == "np.memmap" else BASELINE_CHILD
    return [sys.executable, "-c", child, *files, str(key)]


def _run_child(command: list[str]) -> dict[str, Any]:
    """Run one child to completion; its report, with timings relative to the spawn."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    end = time.perf_counter()
    if done.returncode != 0:
        raise RuntimeError(f"the child process failed ({done.returncode}):\n{done.stderr}")
    report: dict[str, Any] = json.loads(done.stdout)
    report["interpreter_start_s"] = report["t0"] - start
    report["import_s"] = report["t1"] - report["t0"]
    report["first_answer_s"] = report["t2"] - report["t1"]
    report["to_first_answer_s"] = report["t2"] - start
    report["exit_s"] = end - report["t2"]
    if "cpu" in report:  # CPU time of the same span: what the load of other processes adds to
        report["first_answer_cpu_s"] = report["cpu"]  # the wall time, it does not add here
    if "opened" in report:
        report["open_s"] = report["opened"] - report["t1"]
        report["get_s"] = report["t2"] - report["opened"]
    if "loaded" in report:
        report["load_s"] = report["loaded"] - report["t1"]
        report["index_s"] = report["t2"] - report["loaded"]
    return report


DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def _drop_page_cache() -> None:
    """Write back dirty pages and drop the page cache (root, with /proc/sys writable)."""
    os.sync()
    DROP_CACHES.write_text("3\n")


@pytest.fixture(scope="session")
def can_drop_caches() -> None:
    try:
        _drop_page_cache()
    except OSError as exc:
        pytest.skip(
            f"cannot drop the page cache here ({exc.strerror or exc}): needs root and a writable /proc/sys"
        )


@pytest.mark.parametrize("cache", ["warm", "dropped"])
@pytest.mark.parametrize("system", SYSTEMS)
def test_startup(
    benchmark: BenchmarkFixture,
    workload: Workload,
    settings: Settings,
    request: pytest.FixtureRequest,
    system: str,
    cache: str,
) -> None:
    benchmark.group = f"startup-{workload.n_users}" + ("" if cache == "warm" else "-dropped-cache")
    if cache == "dropped":
        request.getfixturevalue("can_drop_caches")
    lmdb_path: Path | None = request.getfixturevalue("lmdb_env") if system == "lmdb" else None
    keys = itertools.cycle(workload.sample_keys(64, seed=7).tolist())
    asked: list[int] = []
    reports: list[dict[str, Any]] = []

    def setup() -> tuple[tuple[list[str]], dict[str, Any]]:
        if cache == "dropped":  # every round starts from disk, as a pod on a fresh node does
            _drop_page_cache()
        key = next(keys)
        asked.append(key)
        return (_child_command(system, workload, key, lmdb_path),), {}

    def run(command: list[str]) -> None:
        reports.append(_run_child(command))

    benchmark.pedantic(run, setup=setup, rounds=settings.startup_rounds, warmup_rounds=1, iterations=1)

    for key, report in zip(asked, reports, strict=True):
        items, scores = workload.expected(np.array([key]))
        assert report["answer"] == [items[0].tolist(), scores[0].tolist()], f"wrong answer for key {key}"
    timed = reports[1:] if len(reports) > 1 else reports  # the first was the warm-up round
    splits = ["interpreter_start_s", "import_s", "first_answer_s", "to_first_answer_s", "exit_s"]
    splits += ["load_s", "index_s"] if system == "np.load+dict" else ["open_s", "get_s"]
    splits += ["first_answer_cpu_s"] if system in ("sharedrec", "lmdb") else []
    benchmark.extra_info.update(
        {name: statistics.median(report[name] for report in timed) for name in splits}
    )
    data = {"sharedrec": workload.store, "lmdb": lmdb_path}.get(system, workload.npy)
    assert data is not None
    benchmark.extra_info.update(
        system=system,
        n_users=workload.n_users,
        k=workload.k,
        data_bytes=sum(path.stat().st_size for path in data.rglob("*") if path.is_file()),
        page_cache="warm: files written earlier in this run, no network transfer"
        if cache == "warm"
        else "dropped before every round (echo 3 > /proc/sys/vm/drop_caches)",
        split_statistic="median over timed rounds",
    )
