"""``benchmarks/report.py``: tables and plots from a pytest-benchmark JSON file, run as a script."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "report.py"
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

PAGE = """\
# Benchmarks

Prose that the report leaves alone.

## Latest results

<!-- report:begin -->
stale tables
<!-- report:end -->

Closing prose.
"""


def _bench(group: str, system: str | None, median: float, extra: dict[str, Any]) -> dict[str, Any]:
    """One benchmark entry shaped like pytest-benchmark's, with the statistics around ``median``."""
    size = int(group.rsplit("-", 1)[1])
    params: dict[str, Any] = {"n_users": size}
    if system is not None:
        params["system"] = system
    param = f"n={size}" + (f"-{system}" if system else "")
    stats = {
        "min": median * 0.8,
        "q1": median * 0.9,
        "median": median,
        "q3": median * 1.1,
        "max": median * 3,
        "ld15iqr": median * 0.8,
        "hd15iqr": median * 1.3,
        "mean": median * 1.05,
        "stddev": median * 0.1,
        "iqr": median * 0.2,
        "rounds": 7,
        "iterations": 1,
        "ops": 1 / median,
        "total": median * 7,
        "outliers": "0;0",
        "data": [median] * 7,
    }
    name = f"test_{group.rsplit('-', 1)[0]}[{param}]"
    return {
        "group": group,
        "name": name,
        "fullname": f"benchmarks/test_x.py::{name}",
        "params": params,
        "param": param,
        "extra_info": extra,
        "options": {"timer": "perf_counter"},
        "stats": stats,
    }


def _startup(size: int, system: str, whole: float, imports: float, after: float) -> dict[str, Any]:
    extra = {
        "interpreter_start_s": 0.01,
        "import_s": imports,
        "first_answer_s": after,
        "to_first_answer_s": 0.01 + imports + after,
        "exit_s": 0.03,
        "system": system,
        "n_users": size,
        "k": 100,
        "data_bytes": size * 808,
        "page_cache": "warm: files written earlier in this run, no network transfer",
        "split_statistic": "median over timed rounds",
    }
    return _bench(f"startup-{size}", system, whole, extra)


def _get(size: int, system: str, median: float, p50_ns: float, p99_ns: float) -> dict[str, Any]:
    extra = {
        "p50_ns": p50_ns,
        "p90_ns": p50_ns * 1.1,
        "p99_ns": p99_ns,
        "p999_ns": p99_ns * 4,
        "timer_overhead_ns": 50.0,
        "timed_calls": 20000,
        "system": system,
        "n_users": size,
        "k": 100,
        "rotating_keys": 4096,
    }
    return _bench(f"get-{size}", system, median, extra)


def _results() -> dict[str, Any]:
    """Two sizes, two systems in the start-up and get groups, plus a memory group of a new kind."""
    memory = {
        "uss_mb": 12.5,
        "pss_mb": 40.0,
        "rss_mb": 90.0,
        "uss_minus_idle_mb": 2.5,
        "pss_minus_idle_mb": 30.0,
        "idle_uss_mb": 10.0,
        "idle_pss_mb": 10.0,
        "pss_total_mb": 160.0,
        "uss_per_process_mb": [12.5, 12.5, 12.5, 12.5],
        "shared_dirty_mb": 1.5,  # not a column of the table: shown because its unit is known
        "system": "sharedrec",
        "n_users": 10_000,
        "processes": 4,
        "statistic": "median over the processes; MB = 1e6 bytes",
    }
    baseline = {**memory, "system": "np.load+dict", "uss_mb": 50.0, "uss_minus_idle_mb": 40.0}
    return {
        "machine_info": {
            "node": "bench-host",
            "machine": "x86_64",
            "python_implementation": "CPython",
            "python_version": "3.11.7",
            "system": "Linux",
            "release": "6.1.0",
            "cpu": {"brand_raw": "Test CPU 9000", "count": 2, "hz_advertised_friendly": "2.3000 GHz"},
        },
        "commit_info": {"id": "0123456789abcdef0123", "branch": "main", "dirty": False},
        "datetime": "2026-01-02T03:04:05.000000+00:00",
        "version": "5.3.1",
        "benchmarks": [
            _startup(1_000, "sharedrec", 0.25, 0.19, 0.005),
            _startup(1_000, "np.load+dict", 0.5, 0.07, 0.04),
            _startup(10_000, "sharedrec", 0.25, 0.19, 0.005),
            _startup(10_000, "np.load+dict", 2.0, 0.07, 1.6),
            _get(1_000, "sharedrec", 2e-6, 2000.0, 8000.0),
            _get(1_000, "np.memmap", 4e-6, 4000.0, 10000.0),
            _get(10_000, "sharedrec", 2.5e-6, 2500.0, 9000.0),
            _get(10_000, "np.memmap", 5e-6, 5000.0, 36000.0),
            _bench("memory4-10000", "np.load+dict", 1.0, baseline),
            _bench("memory4-10000", "sharedrec", 1.0, memory),
        ],
    }


Row = list[tuple[str, str]]
"""A table row as ``(header, cell)`` pairs, in column order (several columns are headed ``x``)."""


def _tables(markdown: str) -> dict[str, list[Row]]:
    """Every table under its heading."""
    tables: dict[str, list[Row]] = {}
    heading, header = "", None
    for line in markdown.splitlines():
        if line.startswith("#"):
            heading, header = line.lstrip("#").strip(), None
        elif line.startswith("|"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            if header is None:
                header = cells
            elif not set("".join(cells)) <= set("-:"):
                tables.setdefault(heading, []).append(list(zip(header, cells, strict=True)))
        else:
            header = None
    return tables


def _row(rows: list[Row], size: str, system: str) -> Row:
    matches = [row for row in rows if row[0][1] == size and row[1] == ("system", system)]
    assert len(matches) == 1, (size, system, rows)
    return matches[0]


def _cell(rows: list[Row], size: str, system: str, column: str) -> str:
    return dict(_row(rows, size, system))[column]


def _cell_and_ratio(rows: list[Row], size: str, system: str, column: str) -> tuple[str, str]:
    """The figure in ``column`` and the ratio in the column right after it."""
    row = _row(rows, size, system)
    at = [name for name, _ in row].index(column)
    assert row[at + 1][0] == "\u00d7", row
    return row[at][1], row[at + 1][1]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the script once on the synthetic results; returns its output folder."""
    folder = tmp_path_factory.mktemp("report")
    results = folder / "results.json"
    results.write_text(json.dumps(_results()), encoding="utf-8")
    page = folder / "page.md"
    page.write_text(PAGE, encoding="utf-8")
    out = folder / "out"
    out.mkdir()
    (out / "switch.png").write_bytes(b"from an earlier run")
    command = [sys.executable, str(SCRIPT), str(results), "--out", str(out), "--update-page", str(page)]
    if not HAS_MATPLOTLIB:
        command.append("--no-plots")
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return out


def test_tables_hold_every_system_and_its_ratio_to_the_baseline(report: Path) -> None:
    markdown = (report / "results.md").read_text(encoding="utf-8")
    tables = _tables(markdown)

    startup = tables["Start-up: fresh process to first answer"]
    assert len(startup) == 4
    assert _cell_and_ratio(startup, "1,000", "sharedrec", "whole process (ms)") == ("250", "0.500\u00d7")
    assert _cell_and_ratio(startup, "10,000", "sharedrec", "whole process (ms)") == ("250", "0.125\u00d7")
    assert _cell_and_ratio(startup, "10,000", "np.load+dict", "whole process (ms)") == ("2,000", "1.00\u00d7")
    assert _cell_and_ratio(startup, "10,000", "sharedrec", "after imports (ms)") == ("5.00", "0.00313\u00d7")
    assert _cell(startup, "10,000", "sharedrec", "imports (ms)") == "190"

    get = tables["Single-key get, warm"]
    assert _cell_and_ratio(get, "1,000", "sharedrec", "p50 (\u00b5s)") == ("2.00", "0.500\u00d7")
    assert _cell_and_ratio(get, "10,000", "sharedrec", "p99 (\u00b5s)") == ("9.00", "0.250\u00d7")
    assert _cell_and_ratio(get, "10,000", "sharedrec", "median (\u00b5s)") == ("2.50", "0.500\u00d7")

    memory = tables["Memory of concurrent readers"]
    assert _cell_and_ratio(memory, "10,000", "sharedrec", "USS (MB)") == ("12.5", "0.250\u00d7")
    assert _cell_and_ratio(memory, "10,000", "sharedrec", "PSS (MB)") == ("40.0", "1.00\u00d7")
    assert _cell_and_ratio(memory, "10,000", "sharedrec", "USS over idle (MB)") == ("2.50", "0.0625\u00d7")
    # Any other extra_info number with a known unit gets a column; lists, counts and text do not.
    assert _cell(memory, "10,000", "sharedrec", "shared dirty (MB)") == "1.50"
    assert not {"processes", "uss per process (MB)"} & set(dict(memory[0]))
    assert "- reader processes: 4" in markdown

    machine = markdown.split("## Machine", 1)[1]
    for fact in ("Test CPU 9000", "| **Cores (logical CPUs)** | 2 |", "CPython 3.11.7", "Linux 6.1.0"):
        assert fact in machine
    assert "`0123456789ab`" in machine
    assert "2026-01-02 03:04 UTC" in machine
    # Families missing from the run leave no section behind.
    for title in ("Publish throughput", "Version switch under load", "Batch get_many, warm"):
        assert title not in markdown


def test_page_block_is_replaced_with_the_tables(report: Path) -> None:
    page = (report.parent / "page.md").read_text(encoding="utf-8")
    assert "stale tables" not in page
    assert page.startswith("# Benchmarks\n\nProse that the report leaves alone.")
    assert page.endswith("<!-- report:end -->\n\nClosing prose.\n")
    assert "### Start-up: fresh process to first answer" in page
    assert "| 10,000 | sharedrec | 250 | 0.125\u00d7 |" in page
    if HAS_MATPLOTLIB:
        assert "](out/startup.png)" in page


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="the plots need matplotlib")
def test_plots_are_png_files_for_the_families_present(report: Path) -> None:
    for name in ("startup.png", "latency.png"):
        data = (report / name).read_bytes()
        assert data.startswith(PNG_MAGIC), name
        assert len(data) > 1024, name
    # No switch group in this run: the plot from an earlier run is gone, not left stale.
    assert not (report / "switch.png").exists()
    markdown = (report / "results.md").read_text(encoding="utf-8")
    assert "(startup.png)" in markdown
    assert "(latency.png)" in markdown
    assert "switch.png" not in markdown


def test_a_run_without_known_groups_still_reports(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"benchmarks": []}), encoding="utf-8")
    command = [sys.executable, str(SCRIPT), str(results), "--out", str(tmp_path / "out"), "--no-plots"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    markdown = (tmp_path / "out" / "results.md").read_text(encoding="utf-8")
    assert "no benchmarks" in markdown
    assert "does not describe the machine" in markdown
