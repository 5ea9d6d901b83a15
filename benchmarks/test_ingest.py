"""Long-format ingestion: peak memory and time of `sharedrec publish` on a Parquet input.

The input is what an ALS job writes: shuffled ``(user, item, score)`` rows, 100 per user,
in several Parquet files. A child process runs the real command; its peak resident memory
(``ru_maxrss``) is reported beside the input's size on disk, and the benchmark time beside
the time to read the same files into memory with pyarrow (the least any ingestion costs).
``--ingest-rows`` sets the size (default 20M rows, about 0.3 GB of Parquet; 60M rows is about
1 GB); smoke mode uses 200k rows.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

CHILD = """\
import resource, subprocess, sys, json
done = subprocess.run([sys.executable, "-m", "sharedrec", *sys.argv[1:]], capture_output=True, text=True)
peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"code": done.returncode, "stderr": done.stderr[-2000:], "peak_mb": peak_kb / 1024}))
"""

LOAD = """\
import resource, sys, json
import pyarrow.dataset as ds
table = ds.dataset(sys.argv[1], format="parquet").to_table()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rows": table.num_rows, "peak_mb": peak / 1024}))
"""


def _rows(config: pytest.Config) -> int:
    if config.getoption("smoke"):
        return 200_000
    return int(config.getoption("ingest_rows"))


@pytest.fixture(scope="module")
def long_input(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    rows = _rows(pytestconfig)
    folder = tmp_path_factory.mktemp("als-output")
    rng = np.random.default_rng(0)
    per_user, files = 100, 8
    users = rng.permutation(rows // per_user).astype(np.int64) * 7919 + 11
    for part in range(files):
        block = slice(part * len(users) // files, (part + 1) * len(users) // files)
        u = np.repeat(users[block], per_user)
        order = rng.permutation(len(u))
        # Ids below 2M, never twice for one user (a duplicate pair is refused).
        slot = np.tile(np.arange(per_user), len(u) // per_user)
        items = slot * (2_000_000 // per_user) + rng.integers(0, 2_000_000 // per_user, len(u))
        table = pa.table(
            {
                "user": u[order],
                "item": items[order].astype(np.int32),
                "score": rng.random(len(u), dtype=np.float32),
            }
        )
        pq.write_table(table, folder / f"part-{part:05d}.parquet")
    return folder, rows


@pytest.mark.parametrize("system", ["sharedrec publish", "pyarrow read only"])
def test_ingest_long_parquet(
    benchmark: BenchmarkFixture, long_input: tuple[Path, int], tmp_path: Path, system: str
) -> None:
    folder, rows = long_input
    benchmark.group = f"ingest-{rows}"
    input_mb = sum(p.stat().st_size for p in folder.glob("*.parquet")) / 1e6
    reports: list[dict[str, object]] = []
    counter = iter(range(100))

    def run() -> None:
        if system == "pyarrow read only":
            command = [sys.executable, "-c", LOAD, str(folder)]
        else:
            store = tmp_path / f"store-{next(counter)}"
            command = [
                sys.executable,
                "-c",
                CHILD,
                "publish",
                str(store),
                str(folder),
                "-c",
                "home",
                "-q",
                "--create",
            ]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        reports.append(json.loads(done.stdout))

    started = time.perf_counter()
    benchmark.pedantic(run, rounds=1, iterations=1)
    report = reports[-1]
    assert report.get("code", 0) == 0, report
    benchmark.extra_info.update(
        system=system,
        rows=rows,
        input_parquet_mb=round(input_mb, 1),
        peak_rss_mb=round(float(report["peak_mb"]), 1),  # type: ignore[arg-type]
        peak_rss_over_input=round(float(report["peak_mb"]) / input_mb, 2),  # type: ignore[arg-type]
        seconds=round(time.perf_counter() - started, 2),
    )
