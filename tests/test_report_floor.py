"""``benchmarks/report.py``: lookups are divided by the ``ndarray-view`` floor, and the
breakdown of one ``get`` renders as a table of its steps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

X = "\u00d7"
"""The ratio columns' sign."""
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "report.py"


def _bench(group: str, system: str, median: float, extra: dict[str, Any]) -> dict[str, Any]:
    """One pytest-benchmark entry, reduced to what the report reads."""
    size = int(group.rsplit("-", 1)[1])
    name = f"test_{group.rsplit('-', 1)[0]}[n={size}-{system}]"
    return {
        "group": group,
        "name": name,
        "fullname": f"benchmarks/test_x.py::{name}",
        "params": {"n_users": size, "system": system},
        "param": f"n={size}-{system}",
        "extra_info": {"system": system, "n_users": size, **extra},
        "options": {"timer": "perf_counter"},
        "stats": {"median": median, "q3": median * 1.1, "mean": median, "rounds": 7},
    }


def _lookups(group: str, medians: dict[str, float]) -> list[dict[str, Any]]:
    return [_bench(group, system, median, {"p50_ns": median * 1e9}) for system, median in medians.items()]


def _run(tmp_path: Path, benchmarks: list[dict[str, Any]]) -> str:
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"benchmarks": benchmarks}), encoding="utf-8")
    command = [sys.executable, str(SCRIPT), str(results), "--out", str(tmp_path), "--no-plots"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return (tmp_path / "results.md").read_text(encoding="utf-8")


def _section(markdown: str, title: str) -> str:
    """The text under the heading ``title``, up to the next heading."""
    start = markdown.index(f"## {title}\n")
    end = markdown.find("\n## ", start + 1)
    return markdown[start : end if end >= 0 else None]


def _rows(section: str) -> dict[str, list[str]]:
    """Table rows by their system (second cell)."""
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("| ")]
    return {cells[1].strip(): [cell.strip() for cell in cells] for cells in rows[1:]}


def test_single_and_batch_lookups_are_divided_by_the_ndarray_view_floor(tmp_path: Path) -> None:
    medians = {"sharedrec": 4e-6, "np.memmap": 6e-6, "ndarray-view": 2e-6}
    batch = {"sharedrec": 4e-4, "np.memmap": 5e-4, "ndarray-view": 2e-4}
    markdown = _run(tmp_path, _lookups("get-1000", medians) + _lookups("get_many1000-1000", batch))

    single = _section(markdown, "Single-key get, warm")
    assert "divided by **ndarray-view**'s" in single
    assert "numpy's memmap subclass, whose machinery adds ~2 µs per call" in single
    rows = _rows(single)
    assert rows["ndarray-view"][3] == f"1.00{X}"
    assert rows["sharedrec"][3] == f"2.00{X}"  # 4 µs over the floor's 2 µs, not over np.memmap's 6
    assert rows["np.memmap"][3] == f"3.00{X}"

    many = _section(markdown, "Batch get_many, warm")
    assert "divided by **ndarray-view**'s" in many
    assert _rows(many)["sharedrec"][3] == f"2.00{X}"


def test_lookup_groups_without_a_family_are_divided_by_the_floor_too(tmp_path: Path) -> None:
    medians = {"sharedrec": 5e-6, "lmdb": 3e-6, "ndarray-view": 2.5e-6, "np.memmap": 7.5e-6}
    markdown = _run(tmp_path, _lookups("str-get-1000", medians))
    section = _section(markdown, "Str get")
    assert "divided by **ndarray-view**'s" in section
    assert _rows(section)["sharedrec"][3] == f"2.00{X}"


def test_lookups_without_the_floor_fall_back_to_np_memmap(tmp_path: Path) -> None:
    markdown = _run(tmp_path, _lookups("get-1000", {"sharedrec": 4e-6, "np.memmap": 8e-6}))
    section = _section(markdown, "Single-key get, warm")
    assert "divided by **np.memmap**'s" in section
    assert _rows(section)["sharedrec"][3] == f"0.500{X}"


def test_the_breakdown_of_one_get_renders_its_ratios_and_steps(tmp_path: Path) -> None:
    extra = {
        "floor_p50_ns": 2000.0,
        "lmdb_p50_ns": 2800.0,
        "get_p50_ns": 3500.0,
        "get_over_floor": 1.75,
        "get_over_lmdb": 1.25,
        "statistic": "best p50 of 3 alternating rounds",
        "steps": [["call", 100.0], ["searchsorted and exact match", 1600.0], ["calls; try", 3500.0]],
    }
    markdown = _run(tmp_path, [_bench("get-breakdown-1000", "sharedrec", 3.6e-6, extra)])
    section = _section(markdown, "Where the time of one get goes")
    ratios = _rows(section)["sharedrec"]
    assert ratios[2:] == ["2.00", "2.80", "3.50", f"1.75{X}", f"1.25{X}"]
    steps = {
        cells[1].strip(): [cell.strip() for cell in cells[2:]]
        for cells in (
            line.strip("|").split("|") for line in section.splitlines() if line.startswith("| 1,000")
        )
    }
    assert steps["searchsorted and exact match"] == ["1.50", "1.60"]
    assert steps["calls; try"] == ["1.90", "3.50"]
