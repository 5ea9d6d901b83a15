"""The readiness probe, run as the kubelet runs an exec probe: a fresh process every period.

Each round starts ``python -m sharedrec ready STORE --reader-id ID`` against a store whose
reader (held by this process) has a fresh lease, waits for it, and checks that it said
ready. The benchmark is the child's wall time; its CPU time (user + system, from
``resource.getrusage(RUSAGE_CHILDREN)`` around each round) goes to ``extra_info`` as
``cpu_ms_median`` and ``cpu_ms_max``, beside ``wall_ms_median``. An exec probe counts
against the pod's CPU request and limit, and the kubelet's default timeout is one second.

Two ways to run it:

- ``sharedrec ready``: the console script as shipped, run as the generated probe runs it
  (``sharedrec ready STORE``), whose entry point answers a plain probe before it loads the
  rest of the command;
- ``python -m sharedrec ready``: the same through ``python -m`` (runpy adds a few ms);
- ``full command``: the same check through the whole command (click, rich, numpy and the
  Kubernetes generator loaded first), which is what every probe cost before.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

import sharedrec
from benchmarks._workload import Settings

READER_ID = "pod-bench"
FULL_COMMAND = "import sys; from sharedrec.cli import main; sys.argv[0] = 'sharedrec'; main()"
# The console script beside the interpreter, as `pip install` writes it.
SCRIPT = os.path.join(os.path.dirname(sys.executable), "sharedrec")
WAYS = {
    "sharedrec ready": [SCRIPT],
    "python -m sharedrec ready": [sys.executable, "-m", "sharedrec"],
    "full command": [sys.executable, "-c", FULL_COMMAND],
}


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A store with one version and a reader of ``READER_ID`` holding a lease on it."""
    store = sharedrec.open(tmp_path_factory.mktemp("ready") / "store", create=True)
    store.publish_vectors("emb", np.arange(1000), np.ones((1000, 8), dtype=np.float32))
    with store.reader(reader_id=READER_ID, refresh_interval=None):
        yield store.location


def _cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.mark.parametrize("way", list(WAYS))
def test_ready_probe(benchmark: BenchmarkFixture, settings: Settings, serving: str, way: str) -> None:
    benchmark.group = "readiness-probe"
    if not os.path.exists(WAYS[way][0]):
        pytest.skip(f"{WAYS[way][0]} is not installed: pip install -e . (make install)")
    command = [*WAYS[way], "ready", serving, "--reader-id", READER_ID]
    env = {k: v for k, v in os.environ.items() if k not in ("SHAREDREC_READER_ID", "SHAREDREC_LEASE_DIR")}
    walls: list[float] = []
    cpus: list[float] = []

    def probe() -> None:
        cpu, start = _cpu_of_children(), time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        walls.append(time.perf_counter() - start)
        cpus.append(_cpu_of_children() - cpu)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"ready: {READER_ID} serves version "), done.stdout

    rounds = max(settings.startup_rounds, 10)
    benchmark.pedantic(probe, rounds=rounds, warmup_rounds=1, iterations=1)
    timed_walls, timed_cpus = walls[1:], cpus[1:]  # the first was the warm-up round
    benchmark.extra_info.update(
        wall_ms_median=round(1000 * statistics.median(timed_walls), 1),
        cpu_ms_median=round(1000 * statistics.median(timed_cpus), 1),
        cpu_ms_max=round(1000 * max(timed_cpus), 1),
    )
    print(
        f"\n{way}: wall {benchmark.extra_info['wall_ms_median']} ms, "
        f"CPU {benchmark.extra_info['cpu_ms_median']} ms (median of {len(timed_cpus)} probes)"
    )
