"""Version switches under load: how long until every reader serves a new version, and what a
switch costs the lookups in flight.

Three reader processes follow ``CURRENT`` with ``refresh_interval=REFRESH`` while they serve
``get`` in a tight loop and time every call. Each round publishes a new version of the same
data; the round ends when all readers report the new version. The benchmark time is the
whole round (publish + switch); ``extra_info`` holds the switch latency (CURRENT flipped ->
last reader switched) as a multiple of the refresh interval, and the ``get`` latency of
calls made within 50 ms of a switch against the calls made in steady state, in the same
processes.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from queue import Empty, Queue
from typing import Any

import numpy as np
from pytest_benchmark.fixture import BenchmarkFixture

import sharedrec
from benchmarks._workload import COLLECTION, Settings, Workload

REFRESH = 0.1
READERS = 3
WINDOW = 0.05

# time.monotonic() is CLOCK_MONOTONIC on Linux: one clock for the parent and the children.
READER_CHILD = """\
import json, sys, time
import numpy as np
import sharedrec
store_path, collection, keys_path, refresh = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
keys = np.load(keys_path).tolist()
reader = sharedrec.open(store_path, create=False).reader(refresh_interval=refresh, lease=False)
version = reader.version
print(json.dumps({"event": "ready", "version": version}), flush=True)
stamps, latencies, i = [], [], 0
switches = []
deadline = None
while True:
    key = keys[i % len(keys)]
    i += 1
    t = time.monotonic()
    reader.get(collection, key)
    done = time.monotonic()
    stamps.append(t)
    latencies.append(done - t)
    if reader.version != version:
        version = reader.version
        switches.append(done)
        print(json.dumps({"event": "switch", "version": version, "t": done}), flush=True)
    if i % 4096 == 0 and sys.stdin in __import__("select").select([sys.stdin], [], [], 0)[0]:
        break
stamps, latencies = np.array(stamps), np.array(latencies)
near = np.zeros(len(stamps), dtype=bool)
for s in switches:
    near |= np.abs(stamps - s) < float(sys.argv[5])
def pct(a, q):
    return float(np.percentile(a, q)) if len(a) else None
print(json.dumps({"event": "done", "calls": len(latencies), "near": int(near.sum()),
    "steady_p50": pct(latencies[~near], 50), "steady_p99": pct(latencies[~near], 99),
    "switch_p50": pct(latencies[near], 50), "switch_p99": pct(latencies[near], 99)}), flush=True)
"""


def _pump(proc: subprocess.Popen[str], queue: Queue[dict[str, Any]]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        queue.put(json.loads(line))


def test_switch_latency(
    benchmark: BenchmarkFixture, workload: Workload, settings: Settings, tmp_path: Path
) -> None:
    benchmark.group = f"switch-{workload.n_users}"
    store = sharedrec.open(tmp_path / "store", create=True)
    store.publish_ranked(COLLECTION, workload.keys, workload.items, workload.scores, progress=False)
    np.save(tmp_path / "keys.npy", workload.sample_keys(settings.rotation, seed=3))
    procs, queues = [], []
    for _ in range(READERS):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                READER_CHILD,
                str(tmp_path / "store"),
                COLLECTION,
                str(tmp_path / "keys.npy"),
                str(REFRESH),
                str(WINDOW),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        queue: Queue[dict[str, Any]] = Queue()
        threading.Thread(target=_pump, args=(proc, queue), daemon=True).start()
        procs.append(proc)
        queues.append(queue)
    latencies: list[float] = []
    try:
        for queue in queues:
            assert queue.get(timeout=60)["event"] == "ready"

        def one_switch() -> None:
            version = store.publish_ranked(
                COLLECTION, workload.keys, workload.items, workload.scores, progress=False
            )
            flipped = time.monotonic()
            last = flipped
            for queue in queues:
                while True:
                    try:
                        event = queue.get(timeout=30)
                    except Empty:
                        raise AssertionError("a reader did not switch within 30 s") from None
                    if event["event"] == "switch" and event["version"] == version:
                        last = max(last, event["t"])
                        break
            latencies.append(last - flipped)

        benchmark.pedantic(one_switch, rounds=settings.publish_rounds, iterations=1)
    finally:
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("stop\n")
            proc.stdin.close()
    summaries = []
    for proc, queue in zip(procs, queues, strict=True):
        proc.wait(timeout=60)
        while (event := queue.get(timeout=30))["event"] != "done":
            pass
        summaries.append(event)
    assert all(proc.returncode == 0 for proc in procs)

    def median(name: str) -> float | None:
        values = [s[name] for s in summaries if s[name] is not None]
        return statistics.median(values) if values else None

    benchmark.extra_info.update(
        refresh_interval_s=REFRESH,
        readers=READERS,
        switch_latency_s=latencies,
        switch_latency_max_in_intervals=max(latencies) / REFRESH,
        switch_latency_median_in_intervals=statistics.median(latencies) / REFRESH,
        get_steady_p50_us=(median("steady_p50") or 0) * 1e6,
        get_steady_p99_us=(median("steady_p99") or 0) * 1e6,
        get_during_switch_p50_us=(median("switch_p50") or 0) * 1e6,
        get_during_switch_p99_us=(median("switch_p99") or 0) * 1e6,
        calls_near_switches=sum(s["near"] for s in summaries),
        calls=sum(s["calls"] for s in summaries),
    )
    assert sum(s["near"] for s in summaries) > 0, "no call was timed near a switch"
