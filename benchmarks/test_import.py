"""What sharedrec adds to a reader process's imports, over numpy's.

Each round starts fresh Python processes, alternating: one imports numpy, one runs
`READER_IMPORTS` (what a reader imports before its first answer, numpy among them: the
import step of `test_startup.py`), one runs ``import sharedrec`` alone. Each child times its
own imports (wall and CPU time); the interpreter's start is not counted. The figure
is the best (minimum) of the rounds of each, since on a shared machine the noise only ever
adds time: ``reader_over_numpy_s`` = best reader imports - best numpy import; and the median
of each round's difference (``reader_over_numpy_paired_s``), steadier on a busy machine.

A test (tests/test_spec.py) keeps what a reader process imports: no pydantic, zarr, s3fs,
pyarrow, writer or manager modules.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

from pytest_benchmark.fixture import BenchmarkFixture

from benchmarks._workload import Settings
from benchmarks.test_startup import READER_IMPORTS

_TIMED = """\
import time
c0 = time.process_time()
t0 = time.perf_counter()
{imports}
t1 = time.perf_counter()
c1 = time.process_time()
import sys
print(t1 - t0, c1 - c0, file=sys.stderr)
"""

CHILDREN = {
    "numpy": _TIMED.format(imports="import numpy"),
    "reader": _TIMED.format(imports=READER_IMPORTS.strip()),
    "sharedrec": _TIMED.format(imports="import sharedrec"),
}


def _seconds(code: str) -> tuple[float, float]:
    """Wall and CPU seconds of the child's imports."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the child process failed ({done.returncode}):\n{done.stderr}")
    wall, cpu = done.stderr.strip().splitlines()[-1].split()
    return float(wall), float(cpu)


def test_import_over_numpy(benchmark: BenchmarkFixture, settings: Settings) -> None:
    """Timed: one fresh process running the reader's imports; the split goes to extra_info."""
    benchmark.group = "import"
    rounds = 3 * settings.startup_rounds  # 21 fresh processes of each (9 in smoke mode)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in CHILDREN}

    def run() -> None:
        for name, code in CHILDREN.items():  # alternating, so that each sees the same load
            times[name].append(_seconds(code))

    start = time.perf_counter()
    benchmark.pedantic(run, rounds=rounds, warmup_rounds=1, iterations=1)
    # The first round was the warm-up. Wall time is what a service waits; CPU time is the
    # same work without the waits that other processes' load adds, steadier on a busy machine.
    best = {name: min(wall for wall, _ in values[1:]) for name, values in times.items()}
    cpu = {name: min(cpu for _, cpu in values[1:]) for name, values in times.items()}
    benchmark.extra_info.update(
        {
            "numpy_s": best["numpy"],
            "reader_imports_s": best["reader"],
            "sharedrec_alone_s": best["sharedrec"],
            "reader_over_numpy_s": best["reader"] - best["numpy"],
            "numpy_cpu_s": cpu["numpy"],
            "reader_imports_cpu_s": cpu["reader"],
            "sharedrec_alone_cpu_s": cpu["sharedrec"],
            "reader_over_numpy_cpu_s": cpu["reader"] - cpu["numpy"],
            # Each round's own difference (processes side by side), the median over rounds:
            # steadier than the difference of the bests when the machine is busy.
            "reader_over_numpy_paired_s": statistics.median(
                r[0] - n[0] for r, n in zip(times["reader"][1:], times["numpy"][1:], strict=True)
            ),
            "reader_over_numpy_paired_cpu_s": statistics.median(
                r[1] - n[1] for r, n in zip(times["reader"][1:], times["numpy"][1:], strict=True)
            ),
            "rounds": rounds,
            "statistic": "best of the rounds, each a fresh process; interpreter start not counted",
            "wall_s": time.perf_counter() - start,
        }
    )
    assert json.dumps(benchmark.extra_info)  # JSON-safe for the report
