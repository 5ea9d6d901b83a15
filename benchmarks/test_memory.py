"""Memory of concurrent readers: what each of several processes on one machine costs.

``READERS`` processes start together and each prepares its data: ``sharedrec`` opens the store
and looks up a random ``TOUCHED`` share of the keys with ``get_many`` (a different sample per
process), so that most pages of the data are mapped; ``np.load+dict`` loads the three arrays
into memory, builds a dict key -> row and answers the same lookups; ``idle`` only imports
numpy. Each child then prints ``ready`` and waits; once all are ready, the parent asks each
for its USS and PSS (``psutil.Process().memory_full_info()``) while all are still alive, then
lets them exit.

USS (unique set size) is the memory only that process holds: what another reader adds.
PSS (proportional set size) splits every shared page among the processes mapping it, so
their PSS add up to the machine's cost. Mapped pages of the store are page cache shared by
every reader; a page mapped by a single reader counts in its USS.

The benchmark time is the whole measurement (spawn to exit), one round; nothing is asserted
about time or memory.
"""

from __future__ import annotations

import json
import select
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

import numpy as np
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from benchmarks._workload import COLLECTION, Workload

READERS = 4
TOUCHED = 0.2
"""Share of the keys every reader looks up before it is measured."""
BATCH = 10_000
"""Keys per ``get_many`` call."""
TIMEOUT = 300.0
"""Seconds a child may take to get ready or to report."""
SYSTEMS = ["idle", "sharedrec", "np.load+dict"]

# argv: mode, sample .npy, store or keys/items/scores .npy files. The sample (int64 keys,
# TOUCHED of the keys: 1.6 MB at 1M users) is loaded by both data modes alike.
CHILD = """\
import json, sys
import numpy as np
import psutil
mode = sys.argv[1]
check = None
if mode == "sharedrec":
    import sharedrec
    sample = np.load(sys.argv[2])
    reader = sharedrec.open(sys.argv[3], create=False).reader(lease=False, refresh_interval=None)
    batch = int(sys.argv[5])
    for start in range(0, len(sample), batch):
        items, scores, found = reader.get_many(sys.argv[4], sample[start:start + batch])
        assert found.all()
        if check is None:
            check = items[0].tolist()
    del items, scores, found
elif mode == "np.load+dict":
    sample = np.load(sys.argv[2])
    keys, items, scores = (np.load(path) for path in sys.argv[3:6])
    rows = dict(zip(keys.tolist(), range(len(keys))))
    for key in sample.tolist():
        row = rows[key]
        found = items[row], scores[row]
        if check is None:
            check = found[0].tolist()
print(json.dumps({"event": "ready", "check": check}), flush=True)
sys.stdin.readline()  # every reader is ready
info = psutil.Process().memory_full_info()
print(json.dumps({"event": "measured", "uss": info.uss, "pss": info.pss, "rss": info.rss}), flush=True)
sys.stdin.readline()  # every reader is measured: exit
"""


def _read_event(child: subprocess.Popen[str], errors: IO[str], event: str) -> dict[str, Any]:
    """The child's next line, which must be ``event``; at most ``TIMEOUT`` seconds of waiting.

    A child writes one line and then blocks on stdin, so nothing is buffered past that line and
    ``select`` on the pipe sees every line.
    """
    assert child.stdout is not None
    readable, _, _ = select.select([child.stdout], [], [], TIMEOUT)
    line = child.stdout.readline() if readable else ""
    if not line:
        if child.poll() is None:
            child.kill()
        child.wait()
        errors.seek(0)
        raise RuntimeError(
            f"a reader process gave no {event!r} line (exit code {child.returncode}):\n{errors.read()}"
        )
    report: dict[str, Any] = json.loads(line)
    assert report["event"] == event, report
    return report


def _send(child: subprocess.Popen[str], text: str) -> None:
    assert child.stdin is not None
    child.stdin.write(text)
    child.stdin.flush()


def _measure(commands: list[list[str]]) -> list[dict[str, Any]]:
    """Start every command, wait until all are ready, measure all while all are alive."""
    with ExitStack() as stack:
        children: list[tuple[subprocess.Popen[str], IO[str]]] = []
        for command in commands:
            errors = stack.enter_context(tempfile.TemporaryFile("w+"))
            child = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, text=True
            )
            stack.callback(_reap, child)
            children.append((child, errors))
        ready = [_read_event(child, errors, "ready") for child, errors in children]
        for child, _ in children:
            _send(child, "measure\n")
        reports = [_read_event(child, errors, "measured") for child, errors in children]
        for child, _ in children:
            _send(child, "exit\n")
        for child, _ in children:
            child.wait(timeout=TIMEOUT)
    for report, first in zip(reports, ready, strict=True):
        report["check"] = first["check"]
    return reports


def _reap(child: subprocess.Popen[str]) -> None:
    """Kill a child still running (after a failure) and close its pipes."""
    if child.poll() is None:
        child.kill()
    child.communicate()


def _commands(system: str, workload: Workload, samples: list[Path]) -> list[list[str]]:
    if system == "idle":
        return [[sys.executable, "-c", CHILD, "idle"] for _ in samples]
    if system == "sharedrec":
        data = [str(workload.store), COLLECTION, str(BATCH)]
    else:
        data = [str(workload.npy_file(name)) for name in ("keys", "items", "scores")]
    return [[sys.executable, "-c", CHILD, system, str(sample), *data] for sample in samples]


def _medians_mb(reports: list[dict[str, Any]]) -> dict[str, float]:
    return {f"{name}_mb": statistics.median(r[name] for r in reports) / 1e6 for name in ("uss", "pss", "rss")}


@pytest.fixture(scope="module")
def idle_reports() -> list[dict[str, Any]]:
    """The same number of processes with numpy (and psutil) imported and nothing else."""
    return _measure([[sys.executable, "-c", CHILD, "idle"] for _ in range(READERS)])


@pytest.fixture
def samples(workload: Workload, tmp_path: Path) -> list[Path]:
    """One sample of ``TOUCHED`` of the keys per reader, in random order, as .npy files."""
    count = max(1, int(workload.n_users * TOUCHED))
    paths = []
    for i in range(READERS):
        rng = np.random.default_rng(1000 + i)
        path = tmp_path / f"sample-{i}.npy"
        np.save(path, workload.keys[rng.choice(workload.n_users, size=count, replace=False)])
        paths.append(path)
    return paths


@pytest.mark.parametrize("system", SYSTEMS)
def test_memory(
    benchmark: BenchmarkFixture,
    workload: Workload,
    samples: list[Path],
    idle_reports: list[dict[str, Any]],
    system: str,
) -> None:
    benchmark.group = f"memory{READERS}-{workload.n_users}"
    commands = _commands(system, workload, samples)
    started = time.perf_counter()
    reports: list[dict[str, Any]] = benchmark.pedantic(_measure, args=(commands,), rounds=1, iterations=1)
    elapsed = time.perf_counter() - started

    if system != "idle":
        for sample, report in zip(samples, reports, strict=True):
            first = np.load(sample)[:1]
            assert report["check"] == workload.expected(first)[0][0].tolist(), "wrong answer"
    info: dict[str, Any] = _medians_mb(reports)
    idle = _medians_mb(idle_reports)
    info.update(
        uss_minus_idle_mb=info["uss_mb"] - idle["uss_mb"],
        pss_minus_idle_mb=info["pss_mb"] - idle["pss_mb"],
        idle_uss_mb=idle["uss_mb"],
        idle_pss_mb=idle["pss_mb"],
        pss_total_mb=sum(r["pss"] for r in reports) / 1e6,
        uss_per_process_mb=[r["uss"] / 1e6 for r in reports],
        pss_per_process_mb=[r["pss"] / 1e6 for r in reports],
    )
    benchmark.extra_info.update(
        info,
        system=system,
        n_users=workload.n_users,
        k=workload.k,
        processes=READERS,
        touched_keys_per_process=0 if system == "idle" else max(1, int(workload.n_users * TOUCHED)),
        wall_s=elapsed,
        statistic="median over the processes; MB = 1e6 bytes",
    )
