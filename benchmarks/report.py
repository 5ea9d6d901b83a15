"""Turn a pytest-benchmark JSON file into markdown tables and PNG plots.

Usage::

    python benchmarks/report.py benchmarks/results/latest.json --out docs/benchmarks

writes into ``--out``:

- ``results.md``: the machine and commit of the run, then one table per benchmark family
  (start-up, single-key ``get``, ``get_many``, publish, version switch, S3, ingestion, memory),
  with every system's figures at every size and their ratio to the family's baseline;
- ``startup.png``, ``latency.png`` and ``switch.png``, for the families present in the run.

``--update-page docs/benchmarks.md`` also replaces the part of that page between the lines
``<!-- report:begin -->`` and ``<!-- report:end -->`` with the same tables and links to the plots.

The run may hold any subset of the benchmarks, and any systems: rows appear for whatever is
there. Groups that no family below knows get a generic table of their median time and of the
``extra_info`` numbers whose names end in a known unit (``_s``, ``_ns``, ``_mb``, ...).
Only the standard library is needed for the tables; the plots need matplotlib
(``--no-plots`` skips them).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

PLOTS = ("startup.png", "latency.png", "switch.png")
BOX_KEYS = ("whislo", "q1", "med", "q3", "whishi")
"""The statistics of one box of ``Axes.bxp``, bottom to top."""
PAGE_BEGIN = "<!-- report:begin -->"
PAGE_END = "<!-- report:end -->"
MISSING = "\u2013"
"""En dash: a figure the system does not report."""
TIMES = "\u00d7"
"""Multiplication sign, after ratios."""


# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Result:
    """One benchmark of the run: a system measured at one size within one family."""

    family: str
    """The group without its size: ``startup``, ``get``, ``get_many1000``, ``memory``..."""
    size: int | None
    system: str
    stats: dict[str, Any]
    extra: dict[str, Any]

    def stat(self, name: str) -> float | None:
        """A pytest-benchmark statistic (seconds for times), or None."""
        return _number(self.stats.get(name))

    def num(self, name: str) -> float | None:
        """A numeric ``extra_info`` value, or None if absent or not a number."""
        return _number(self.extra.get(name))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value):
        return None
    return float(value)


def _split_group(group: str) -> tuple[str, int | None]:
    """``"get_many1000-1000000"`` -> ``("get_many1000", 1000000)``."""
    match = re.fullmatch(r"(.+?)-(\d+)", group)
    if match:
        return match.group(1), int(match.group(2))
    return group, None


def _system(bench: dict[str, Any]) -> str:
    extra = bench.get("extra_info") or {}
    params = bench.get("params") or {}
    for source in (extra, params):
        if isinstance(source.get("system"), str):
            return str(source["system"])
    others = [str(value) for name, value in params.items() if name != "n_users"]
    # A benchmark without a system parameter (the switch test) measures sharedrec alone.
    return "-".join(others) if others else "sharedrec"


def load_results(data: dict[str, Any]) -> list[Result]:
    """Every benchmark of a pytest-benchmark JSON document, in file order."""
    results = []
    for bench in data.get("benchmarks") or []:
        group = bench.get("group") or str(bench.get("name", "")).split("[")[0]
        family, size = _split_group(group)
        extra = dict(bench.get("extra_info") or {})
        if size is None:
            size_value = _number(extra.get("n_users", (bench.get("params") or {}).get("n_users")))
            size = int(size_value) if size_value is not None else None
        stats = {name: value for name, value in (bench.get("stats") or {}).items() if name != "data"}
        results.append(Result(family, size, _system(bench), stats, extra))
    return results


# --------------------------------------------------------------------------------------------
# Table columns and benchmark families


Getter = Callable[[Result], float | None]


@dataclass(frozen=True)
class Column:
    """One figure of a table; ``ratio`` adds a column with its ratio to the baseline's figure."""

    label: str
    get: Getter
    ratio: bool = False
    is_ratio: bool = False
    """The figure is itself a ratio (formatted like one)."""
    count: bool = False
    """The figure is a whole number, shown in full."""


def _stat(name: str, scale: float = 1.0) -> Getter:
    def get(result: Result) -> float | None:
        value = result.stat(name)
        return None if value is None else value * scale

    return get


def _extra(name: str, scale: float = 1.0) -> Getter:
    def get(result: Result) -> float | None:
        value = result.num(name)
        return None if value is None else value * scale

    return get


def _batch_size(result: Result) -> float | None:
    batch = result.num("batch")
    if batch is None:
        digits = re.search(r"(\d+)$", result.family)
        batch = float(digits.group(1)) if digits else None
    return batch


def _keys_per_second(result: Result) -> float | None:
    if result.num("keys_per_s") is not None:
        return result.num("keys_per_s")
    batch, median = _batch_size(result), result.stat("median")
    return batch / median if batch and median else None


def _total_requests(result: Result) -> float | None:
    if result.num("requests") is not None:
        return result.num("requests")
    parts = [result.num("open_requests"), result.num("first_lookup_requests")]
    return sum(p for p in parts if p is not None) if any(p is not None for p in parts) else None


def _quotient(numerator: str, denominator: str) -> Getter:
    def get(result: Result) -> float | None:
        top, bottom = result.num(numerator), result.num(denominator)
        return top / bottom if top is not None and bottom else None

    return get


def _huge_pages(system: str) -> Getter:
    """The share (%) of ``system``'s resident maps in 2 MiB pages (`test_hotpath.py`)."""

    def get(result: Result) -> float | None:
        share = result.extra.get("huge_page_share")
        value = share.get(system) if isinstance(share, dict) else None
        return 100.0 * value if isinstance(value, int | float) else None

    return get


def _breakdown(results: Sequence[Result]) -> list[str]:
    """One table per size of the steps of `get`: each one's increment and cumulative p50."""
    rows: list[list[str]] = []
    for result in sorted(results, key=lambda r: r.size or 0):
        steps = result.extra.get("steps")
        previous = 0.0
        for name, cumulative in steps if isinstance(steps, list) else []:
            rows.append(
                [
                    _fmt_size(result.size),
                    str(name),
                    _fmt((cumulative - previous) / 1e3),
                    _fmt(cumulative / 1e3),
                ]
            )
            previous = cumulative
    if not rows:
        return []
    return [*_table(["users", "step", "adds (µs)", "p50 so far (µs)"], rows), ""]


@dataclass(frozen=True)
class Family:
    """How to present the groups of one benchmark: a title, a baseline and columns."""

    key: str
    pattern: str
    """Regular expression matching the group name without its size."""
    title: str
    description: str
    baselines: tuple[str, ...] = ()
    """Systems the ratios divide by: the first one present in the run."""
    columns: tuple[Column, ...] = ()
    generic: bool = False
    """Add a column for every recognised ``extra_info`` number (see ``_unit_column``)."""
    generic_time: bool = False
    """Start a generic table with the median time."""
    generic_skip: tuple[str, ...] = ()
    """``extra_info`` keys that ``generic`` leaves out (shown otherwise, or not worth a column)."""
    size_label: str = "users"
    notes: tuple[tuple[str, str], ...] = ()
    """``(extra_info key, label)`` shown once under the heading, with their distinct values."""
    detail: Callable[[Sequence[Result]], list[str]] | None = None
    """More markdown after the table, made from the results."""


LOOKUP_BASELINES = ("ndarray-view", "np.memmap")
"""Lookups divide by plain ndarray views of the mapped arrays, the floor of a mapped lookup in
Python; by np.memmap objects only in a run without them."""

FAMILIES: tuple[Family, ...] = (
    Family(
        key="startup",
        pattern=r"startup",
        title="Start-up: fresh process to first answer",
        description=(
            "A new `python -c` process answers one key and exits (median over rounds). *Whole process* "
            "is spawn to exit as the parent sees it; *to first answer* is spawn to answer in hand; "
            "*imports* is the import of the modules the answer needs; *after imports* is the part that "
            "depends on the data: open and first lookup for sharedrec, `np.load` of the arrays and "
            "building the dict for the baseline."
        ),
        baselines=("np.load+dict",),
        columns=(
            Column("whole process (ms)", _stat("median", 1e3), ratio=True),
            Column("to first answer (ms)", _extra("to_first_answer_s", 1e3)),
            Column("imports (ms)", _extra("import_s", 1e3)),
            Column("after imports (ms)", _extra("first_answer_s", 1e3), ratio=True),
            Column("data on disk (MB)", _extra("data_bytes", 1e-6)),
        ),
        notes=(("page_cache", "page cache"),),
    ),
    Family(
        key="get",
        pattern=r"get",
        title="Single-key get, warm",
        description=(
            "One key per call, a different key every call, after every key was looked up once. "
            "*Median* is pytest-benchmark's; p50, p99 and p99.9 come from individually timed calls. "
            "*ndarray-view* (the baseline) is plain ndarray views of the same sorted arrays memory-mapped "
            "by `np.load`, searched with `searchsorted`: the floor of a memory-mapped lookup in Python. "
            "*np.memmap* is the same maps as np.memmap objects: numpy's memmap subclass, whose machinery "
            "adds ~2 µs per call."
        ),
        baselines=LOOKUP_BASELINES,
        columns=(
            Column("median (µs)", _stat("median", 1e6), ratio=True),
            Column("p50 (µs)", _extra("p50_ns", 1e-3), ratio=True),
            Column("p99 (µs)", _extra("p99_ns", 1e-3), ratio=True),
            Column("p99.9 (µs)", _extra("p999_ns", 1e-3)),
        ),
        notes=(
            ("timed_calls", "individually timed calls"),
            ("rotating_keys", "distinct keys cycled"),
            ("server", "server"),
        ),
    ),
    Family(
        key="get_many",
        pattern=r"get_many\d*",
        title="Batch get_many, warm",
        description=(
            "Many keys per call (median over calls); keys/s is the batch size over the median. "
            "*ndarray-view* (the baseline) is plain ndarray views of the same sorted arrays memory-mapped "
            "by `np.load`, searched with `searchsorted`: the floor of a memory-mapped lookup in Python. "
            "*np.memmap* is the same maps as np.memmap objects: numpy's memmap subclass, whose machinery "
            "adds ~2 µs per call."
        ),
        baselines=LOOKUP_BASELINES,
        columns=(
            Column("per batch (ms)", _stat("median", 1e3), ratio=True),
            Column("keys/s", _keys_per_second, ratio=True),
            Column("per key (ns)", _extra("per_key_ns")),
        ),
        notes=(("batch", "keys per batch"), ("server", "server")),
    ),
    Family(
        key="get-breakdown",
        pattern=r"get-breakdown",
        title="Where the time of one get goes",
        description=(
            "One warm reader and the floor (*ndarray-view*: plain ndarray views of the mapped sorted "
            "arrays, `searchsorted`, two row views), LMDB (one read transaction, `buffers=True`, two "
            "`np.frombuffer`) and `reader.get`, timed in alternating rounds of one process, best p50 "
            "of each; every answer's last item and score are read. *Floor on maps* is the floor's "
            "code over sharedrec's own views of the same data. The same `get` on the data published "
            "in 4 MiB chunks (not whole 2 MiB pages: a kernel with large folios in its page cache maps "
            "them with 4 KiB pages, where it maps the default 50 MiB chunks and the floor's one file "
            "per array with 2 MiB pages; *in 2 MiB pages* gives each one's share), on a delta over the "
            "data (1% of the lists changed) and on the data in 8 partitions. Each chunk of the default "
            "layout is whole 2 MiB pages. Then sharedrec's path done by hand on the reader's internals, step "
            "by step: each step's p50 includes the steps above it, *adds* is its increment, and the "
            "last row is what `get` adds to the steps done inline."
        ),
        columns=(
            Column("floor p50 (µs)", _extra("floor_p50_ns", 1e-3)),
            Column("floor on maps p50 (µs)", _extra("floor_on_maps_p50_ns", 1e-3)),
            Column("LMDB p50 (µs)", _extra("lmdb_p50_ns", 1e-3)),
            Column("get p50 (µs)", _extra("get_p50_ns", 1e-3)),
            Column("get ÷ floor", _extra("get_over_floor"), is_ratio=True),
            Column("get ÷ floor on maps", _extra("get_over_floor_on_maps"), is_ratio=True),
            Column("get ÷ LMDB", _extra("get_over_lmdb"), is_ratio=True),
            Column("get, 4 MiB chunks ÷ floor", _extra("small_chunks_over_floor"), is_ratio=True),
            Column("delta get ÷ floor", _extra("delta_over_floor"), is_ratio=True),
            Column("8-partition get ÷ floor", _extra("partitioned_over_floor"), is_ratio=True),
            Column("floor in 2 MiB pages (%)", _huge_pages("floor")),
            Column("sharedrec in 2 MiB pages (%)", _huge_pages("sharedrec")),
            Column("4 MiB chunks in 2 MiB pages (%)", _huge_pages("sharedrec_4mib_chunks")),
            Column("delta in 2 MiB pages (%)", _huge_pages("delta")),
            Column("8 partitions in 2 MiB pages (%)", _huge_pages("partitioned")),
        ),
        notes=(("statistic", "statistic"),),
        detail=_breakdown,
    ),
    Family(
        key="publish",
        pattern=r"publish",
        title="Publish throughput",
        description=(
            "Writing the same arrays into a fresh folder, fsynced, median over rounds. MB/s counts the "
            "input arrays (keys, items, scores) for every system."
        ),
        baselines=("np.save",),
        columns=(
            Column("time (s)", _stat("median"), ratio=True),
            Column("MB/s", _extra("mb_per_s"), ratio=True),
            Column("input (MB)", _extra("input_bytes", 1e-6)),
            Column("on disk (MB)", _extra("bytes_on_disk", 1e-6)),
        ),
    ),
    Family(
        key="switch",
        pattern=r"switch",
        title="Version switch under load",
        description=(
            "Reader processes serve `get` in a tight loop while a new version is published. *Switch* is "
            "the time from `CURRENT` moving to the last reader serving the new version, in refresh "
            "intervals (median and worst round). *In switch* are the calls made within 50 ms of a "
            "switch, *steady* all other calls of the same processes. *Round* is publish plus switch."
        ),
        columns=(
            Column("round (s)", _stat("median")),
            Column("switch, median (intervals)", _extra("switch_latency_median_in_intervals")),
            Column("switch, max (intervals)", _extra("switch_latency_max_in_intervals")),
            Column("get p50 steady (µs)", _extra("get_steady_p50_us")),
            Column("get p99 steady (µs)", _extra("get_steady_p99_us")),
            Column("get p50 in switch (µs)", _extra("get_during_switch_p50_us")),
            Column("get p99 in switch (µs)", _extra("get_during_switch_p99_us")),
            Column(
                "p99 in switch ÷ steady",
                _quotient("get_during_switch_p99_us", "get_steady_p99_us"),
                is_ratio=True,
            ),
        ),
        notes=(("refresh_interval_s", "refresh interval (s)"), ("readers", "reader processes")),
    ),
    Family(
        key="s3-startup",
        pattern=r"s3-startup",
        title="S3: fresh process to first answer",
        description=(
            "A new process answers one key from the store on S3: sharedrec opens lazily with an empty "
            "chunk cache; the baseline downloads the arrays, loads them and builds a dict. Requests are "
            "the HTTP requests to the first answer."
        ),
        baselines=("download+np.load+dict",),
        columns=(
            Column("whole process (s)", _stat("median"), ratio=True),
            Column("to first answer (s)", _extra("to_first_answer_s")),
            Column("imports (s)", _extra("import_s")),
            Column("after imports (s)", _extra("first_answer_s"), ratio=True),
            Column("requests", _total_requests, count=True),
        ),
        notes=(("server", "S3 server"),),
    ),
    Family(
        key="s3-get",
        pattern=r"s3-get",
        title="S3: single-key get from the warm local cache",
        description="Lookups served from chunks cached from S3, against the same store on local disk.",
        baselines=("local-disk",),
        columns=(
            Column("median (µs)", _stat("median", 1e6), ratio=True),
            Column("q3 (µs)", _stat("q3", 1e6)),
        ),
    ),
    Family(
        key="ingest",
        pattern=r"ingest",
        title="Ingestion of long-format Parquet",
        description=(
            "`sharedrec publish` of shuffled `(user, item, score)` rows, against reading the same files "
            "into memory with pyarrow. Peak RSS is the process's maximum resident memory."
        ),
        baselines=("pyarrow read only",),
        columns=(
            Column("time (s)", _stat("median"), ratio=True),
            Column("peak RSS (MB)", _extra("peak_rss_mb"), ratio=True),
            Column("input Parquet (MB)", _extra("input_parquet_mb")),
            Column("peak RSS ÷ input", _extra("peak_rss_over_input"), is_ratio=True),
        ),
        size_label="rows",
    ),
    Family(
        key="memory",
        pattern=r"memory\d*",
        title="Memory of concurrent readers",
        description=(
            "Several reader processes on one machine, each holding its data ready to serve (medians over "
            "the processes). USS is the memory only that process holds: what one more reader adds. PSS "
            "splits every shared page among the processes that map it, so the PSS of all processes adds "
            "up to what they cost the machine. *Over idle* subtracts a process that only imports numpy."
        ),
        baselines=("np.load+dict", "np.load", "np.memmap", "raw-memmap"),
        columns=(
            Column("USS (MB)", _extra("uss_mb"), ratio=True),
            Column("PSS (MB)", _extra("pss_mb"), ratio=True),
            Column("USS over idle (MB)", _extra("uss_minus_idle_mb"), ratio=True),
            Column("PSS over idle (MB)", _extra("pss_minus_idle_mb"), ratio=True),
            Column("PSS, all processes (MB)", _extra("pss_total_mb")),
            Column("RSS (MB)", _extra("rss_mb")),
        ),
        generic=True,
        generic_skip=(
            "uss_mb",
            "pss_mb",
            "rss_mb",
            "uss_minus_idle_mb",
            "pss_minus_idle_mb",
            "pss_total_mb",
            "idle_uss_mb",
            "idle_pss_mb",
            "wall_s",
        ),
        notes=(
            ("processes", "reader processes"),
            ("touched_keys_per_process", "keys looked up by every process before it is measured"),
            ("statistic", "statistic"),
        ),
    ),
)

# Lookup groups that no family names (str keys, network volume, ...) divide by the floor too.
GENERIC_BASELINES = tuple(dict.fromkeys([*LOOKUP_BASELINES, *(b for f in FAMILIES for b in f.baselines)]))

# extra_info name suffix -> (unit shown, scale, ratio column)
_UNITS: tuple[tuple[str, str, float, bool], ...] = (
    ("_per_s", "/s", 1.0, True),
    ("_in_intervals", "intervals", 1.0, False),
    ("_ns", "µs", 1e-3, True),
    ("_us", "µs", 1.0, True),
    ("_ms", "ms", 1.0, True),
    ("_s", "s", 1.0, True),
    ("_mb", "MB", 1.0, True),
    ("_mib", "MiB", 1.0, True),
    ("_bytes", "MB", 1e-6, True),
    ("_pct", "%", 1.0, False),
)
_ACRONYMS = {"uss": "USS", "pss": "PSS", "rss": "RSS", "mb": "MB", "cpu": "CPU", "p50": "p50", "p99": "p99"}
_MEMORY_ORDER = ("uss_mb", "pss_mb", "rss_mb")


def _unit_column(name: str) -> Column | None:
    """A column for an ``extra_info`` number whose name ends in a known unit, else None."""
    for suffix, unit, scale, ratio in _UNITS:
        if name.endswith(suffix) and len(name) > len(suffix):
            words = name[: -len(suffix)].split("_")
            text = " ".join(_ACRONYMS.get(word, word) for word in words)
            label = f"{text} ({unit})" if unit != "/s" else f"{text}/s"
            return Column(label, _extra(name, scale), ratio=ratio)
    return None


def _time_column(results: Sequence[Result]) -> Column:
    """The median time, in a unit that suits the figures."""
    medians = [m for r in results if (m := r.stat("median")) is not None]
    typical = statistics.median(medians) if medians else 1.0
    unit, scale = next(
        ((unit, scale) for unit, scale in (("s", 1.0), ("ms", 1e3), ("µs", 1e6)) if typical * scale >= 1),
        ("ns", 1e9),
    )
    return Column(f"median ({unit})", _stat("median", scale), ratio=True)


def _family_of(name: str) -> Family:
    for family in FAMILIES:
        if re.fullmatch(family.pattern, name):
            return family
    title = name.replace("_", " ").replace("-", " ")
    return Family(
        key=name,
        pattern=re.escape(name),
        title=title[:1].upper() + title[1:],
        description="A group that this report does not know: its median time and recognised figures.",
        baselines=GENERIC_BASELINES,
        generic=True,
        generic_time=True,
    )


def _columns(family: Family, results: Sequence[Result]) -> list[Column]:
    columns = list(family.columns)
    if family.generic_time:
        columns.insert(0, _time_column(results))
    if family.generic:
        names = dict.fromkeys(
            name
            for r in results
            for name in r.extra
            if r.num(name) is not None and name not in family.generic_skip
        )
        ordered = [n for n in _MEMORY_ORDER if n in names] + sorted(
            n for n in names if n not in _MEMORY_ORDER
        )
        columns += [column for name in ordered if (column := _unit_column(name)) is not None]
    # Drop columns that no result fills.
    return [c for c in columns if any(c.get(r) is not None for r in results)]


# --------------------------------------------------------------------------------------------
# Markdown


def _fmt(value: float | None) -> str:
    """Three significant digits; thousands separators from 1,000 up."""
    if value is None:
        return MISSING
    value = float(f"{value:.3g}")
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    if magnitude >= 3:
        return f"{value:,.0f}"
    if magnitude < -4:
        return f"{value:.2e}"
    return f"{value:.{max(0, 2 - magnitude)}f}"


def _fmt_ratio(value: float | None) -> str:
    return MISSING if value is None else f"{_fmt(value)}{TIMES}"


def _fmt_size(size: int | None) -> str:
    return MISSING if size is None else f"{size:,}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    numeric = [i >= 2 for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---:" if right else "---" for right in numeric) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


@dataclass
class Section:
    """One family's results, grouped for a table."""

    family: Family
    results: list[Result] = field(default_factory=list)

    @property
    def systems(self) -> list[str]:
        return list(dict.fromkeys(r.system for r in self.results))

    @property
    def baseline(self) -> str | None:
        present = set(self.systems)
        return next((b for b in self.family.baselines if b in present), None)


def sections(results: Iterable[Result]) -> list[Section]:
    """Results grouped by family, known families first in their order, then the others."""
    by_key: dict[str, Section] = {}
    for result in results:
        family = _family_of(result.family)
        by_key.setdefault(family.key, Section(family)).results.append(result)
    known = [f.key for f in FAMILIES]
    return sorted(
        by_key.values(),
        key=lambda s: (known.index(s.family.key) if s.family.key in known else len(known), s.family.key),
    )


def render_section(section: Section, level: int) -> list[str]:
    """The heading, description, notes and table of one family."""
    family, baseline = section.family, section.baseline
    columns = _columns(family, section.results)
    lines = [f"{'#' * level} {family.title}", "", family.description, ""]
    if baseline is not None and any(c.ratio for c in columns):
        lines += [
            f"{TIMES} is the system's figure divided by **{baseline}**'s in the same column, "
            "at the same size.",
            "",
        ]
    notes = []
    for key, label in family.notes:
        values = list(dict.fromkeys(_note_value(r.extra.get(key)) for r in section.results if key in r.extra))
        if values:
            notes.append(f"- {label}: {'; '.join(values)}")
    if notes:
        lines += [*notes, ""]
    if not columns:
        lines += ["No figures that this report recognises.", ""]
        return lines
    header = [family.size_label, "system"]
    for column in columns:
        header.append(column.label)
        if column.ratio and baseline is not None:
            header.append(TIMES)
    rows = []
    order = section.systems
    ordered = sorted(section.results, key=lambda r: (r.size is None, r.size or 0, order.index(r.system)))
    for result in ordered:
        base = next((r for r in section.results if r.system == baseline and r.size == result.size), None)
        row = [_fmt_size(result.size), result.system]
        for column in columns:
            value = column.get(result)
            if column.count and value is not None:
                row.append(f"{round(value):,}")
            else:
                row.append(_fmt_ratio(value) if column.is_ratio else _fmt(value))
            if column.ratio and baseline is not None:
                reference = column.get(base) if base is not None else None
                row.append(_fmt_ratio(value / reference if value is not None and reference else None))
        rows.append(row)
    lines += [*_table(header, rows), ""]
    if family.detail is not None:
        lines += family.detail(section.results)
    return lines


def _note_value(value: Any) -> str:
    number = _number(value)
    if number is not None:
        return f"{int(number):,}" if number.is_integer() else f"{number:g}"
    return str(value)


def _date(text: str) -> str:
    """``2026-11-29T04:09:36.5+00:00`` -> ``2026-11-29 04:09 UTC``; other text unchanged."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    if moment.utcoffset() is not None:
        return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return moment.strftime("%Y-%m-%d %H:%M")


def render_machine(data: dict[str, Any], level: int) -> list[str]:
    """The machine, Python, commit and date of the run, from pytest-benchmark's metadata."""
    machine = data.get("machine_info") or {}
    cpu = machine.get("cpu") or {}
    commit = data.get("commit_info") or {}
    facts: list[tuple[str, str]] = []
    brand = cpu.get("brand_raw") or machine.get("processor") or machine.get("machine")
    if brand:
        frequency = cpu.get("hz_advertised_friendly")
        facts.append(("CPU", f"{brand}" + (f", {frequency}" if frequency else "")))
    if cpu.get("count"):
        facts.append(("Cores (logical CPUs)", str(cpu["count"])))
    if machine.get("python_version"):
        implementation = machine.get("python_implementation", "Python")
        compiler = machine.get("python_compiler")
        facts.append(
            (
                "Python",
                f"{implementation} {machine['python_version']}" + (f" ({compiler})" if compiler else ""),
            )
        )
    os_name = " ".join(str(machine[k]) for k in ("system", "release", "machine") if machine.get(k))
    if os_name:
        facts.append(("OS", os_name))
    if commit.get("id"):
        text = f"`{str(commit['id'])[:12]}`"
        if commit.get("branch"):
            text += f" on `{commit['branch']}`"
        if commit.get("dirty"):
            text += ", with uncommitted changes"
        if commit.get("time"):
            text += f", committed {_date(str(commit['time']))}"
        facts.append(("Commit", text))
    if data.get("datetime"):
        facts.append(("Date of the run", _date(str(data["datetime"]))))
    if data.get("version"):
        facts.append(("pytest-benchmark", str(data["version"])))
    lines = [f"{'#' * level} Machine", ""]
    if not facts:
        return [*lines, "The results file does not describe the machine.", ""]
    return [*lines, *_table(["", ""], [[f"**{name}**", value] for name, value in facts]), ""]


def render(data: dict[str, Any], plots: Sequence[str], *, level: int, image_prefix: str = "") -> str:
    """The machine section, one table per family and the plots, with headings at ``level``."""
    results = load_results(data)
    lines = render_machine(data, level)
    lines += [
        "Times are medians over rounds or calls. A dash marks a figure the system does not report.",
        "",
    ]
    if not results:
        lines += ["The results file holds no benchmarks.", ""]
    for section in sections(results):
        lines += render_section(section, level)
    if plots:
        lines += [f"{'#' * level} Plots", ""]
        for name in plots:
            alt = {
                "startup.png": "Start-up time against data size",
                "latency.png": "Single-key get latency by system",
                "switch.png": "Version switch latency and get latency during switches",
            }.get(name, name)
            lines += [f"![{alt}]({image_prefix}{name})", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def update_page(page: Path, block: str) -> None:
    """Replace the text between the report markers of ``page`` with ``block``."""
    text = page.read_text(encoding="utf-8")
    begin, end = text.find(PAGE_BEGIN), text.find(PAGE_END)
    if begin < 0 or end < begin:
        raise SystemExit(f"{page} has no {PAGE_BEGIN} ... {PAGE_END} block to replace")
    head, tail = text[: begin + len(PAGE_BEGIN)], text[end:]
    page.write_text(f"{head}\n\n{block}\n{tail}", encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Plots


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "figure.titlesize": 11})
    return plt


def _short(size: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if size >= scale:
            return f"{size / scale:g}{suffix}"
    return f"{size:g}"


def _save(fig: Any, path: Path) -> None:
    # No "Software" tag: the files stay the same across matplotlib versions.
    fig.savefig(path, dpi=110, metadata={"Software": None})


def _minor_label(ax: Any, value: float, _position: int) -> str:
    """Label a few minor ticks of a log axis (2, 3, 5 or only 2, 5 when it spans decades)."""
    low, high = ax.get_ylim()
    digits = {2, 3, 5} if high / low < 10**1.5 else {2, 5}
    leading = round(value / 10 ** math.floor(math.log10(value) + 1e-9))
    return f"{value:g}" if leading in digits else ""


def plot_startup(results: Sequence[Result], path: Path) -> bool:
    """Whole-process and after-imports time against data size, one line per system."""
    rows = [r for r in results if _family_of(r.family).key == "startup" and r.size is not None]
    if not rows:
        return False
    plt = _pyplot()
    sizes = sorted({r.size for r in rows if r.size is not None})
    loglog = len(sizes) > 1 and sizes[-1] >= 10 * sizes[0]
    panels: list[tuple[str, Getter]] = [
        ("Whole process: spawn to exit", lambda r: r.stat("median")),
        ("After imports: open and first answer", lambda r: r.num("first_answer_s")),
    ]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.8), layout="constrained")
    for ax, (title, get) in zip(axes, panels, strict=True):
        for system in dict.fromkeys(r.system for r in rows):
            points = sorted(
                (r.size, value) for r in rows if r.system == system and (value := get(r)) is not None
            )
            if not points:
                continue
            xs, ys = zip(*points, strict=True)
            (line,) = ax.plot(xs, ys, marker="o", label=system)
            imports = sorted((r.size, v) for r in rows if r.system == system and (v := r.num("import_s")))
            if ax is axes[0] and imports:
                xs, ys = zip(*imports, strict=True)
                ax.plot(xs, ys, linestyle=":", marker=".", color=line.get_color(), label=f"{system}: imports")
        if loglog:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xticks(sizes, labels=[_short(s) for s in sizes])
        ax.xaxis.set_minor_locator(plt.NullLocator())
        ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
        if loglog:
            ax.yaxis.set_minor_formatter(plt.FuncFormatter(partial(_minor_label, ax)))
        ax.set_title(title)
        ax.set_xlabel("data size (users)")
        ax.set_ylabel("time (s), median of rounds")
        ax.grid(True, which="both", alpha=0.3)
    # One legend for both panels, below them: the left panel has every line (and the imports).
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(handles)), frameon=False)
    scale = " (log-log)" if loglog else ""
    fig.suptitle(f"Start-up: fresh process to first correct answer{scale}")
    _save(fig, path)
    plt.close(fig)
    return True


def plot_latency(results: Sequence[Result], path: Path) -> bool:
    """Single-key get latency per system at the largest size: p50/p99 bars, or box plots."""
    rows = [r for r in results if _family_of(r.family).key == "get"]
    if not rows:
        return False
    sized = [r.size for r in rows if r.size is not None]
    largest = max(sized) if sized else None
    rows = [r for r in rows if r.size == largest]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.2), constrained_layout=True)
    systems = [r.system for r in rows]
    where = f" at {largest:,} users" if largest is not None else ""
    shown: list[float] = []
    if all(r.num("p50_ns") is not None and r.num("p99_ns") is not None for r in rows):
        width = 0.38
        for offset, (name, key) in zip(
            (-width / 2, width / 2), (("p50", "p50_ns"), ("p99", "p99_ns")), strict=True
        ):
            values = [(r.num(key) or 0) / 1e3 for r in rows]
            shown += values
            bars = ax.bar([i + offset for i in range(len(rows))], values, width, label=name)
            ax.bar_label(bars, labels=[_fmt(v) for v in values], padding=2, fontsize=8)
        calls = rows[0].num("timed_calls")
        detail = f"{int(calls):,} individually timed calls" if calls else "individually timed calls"
        ax.set_title(f"Single-key get latency{where}: p50 and p99 of {detail}")
        ax.legend()
        ax.margins(y=0.12)
    else:
        boxes: list[dict[str, Any]] = []
        for r in rows:
            bottom = r.stat("ld15iqr") if r.stat("ld15iqr") is not None else r.stat("min")
            top = r.stat("hd15iqr") if r.stat("hd15iqr") is not None else r.stat("max")
            quartiles = [bottom, r.stat("q1"), r.stat("median"), r.stat("q3"), top]
            known = [v * 1e6 for v in quartiles if v is not None]
            if len(known) < len(quartiles):
                continue
            boxes.append({"label": r.system, **dict(zip(BOX_KEYS, known, strict=True))})
            shown += [known[0], known[-1]]
        if not boxes:
            plt.close(fig)
            return False
        systems = [str(box["label"]) for box in boxes]
        ax.bxp(boxes, showfliers=False, positions=list(range(len(boxes))))
        ax.set_title(f"Single-key get latency{where}: quartiles, whiskers at 1.5 IQR")
    low, high = min(shown, default=0.0), max(shown, default=0.0)
    if low > 0 and high / low > 30:  # a network round trip next to in-process lookups
        ax.set_yscale("log")
    ax.set_xticks(range(len(systems)), labels=systems)
    ax.set_xlabel("system")
    ax.set_ylabel("latency per call (µs)" + (", log scale" if ax.get_yscale() == "log" else ""))
    ax.grid(True, axis="y", alpha=0.3)
    _save(fig, path)
    plt.close(fig)
    return True


def plot_switch(results: Sequence[Result], path: Path) -> bool:
    """Switch latency of every round in refresh intervals, and get latency steady / in switch."""
    rows = sorted(
        (r for r in results if _family_of(r.family).key == "switch"),
        key=lambda r: (r.size is None, r.size or 0),
    )
    if not rows:
        return False
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2), constrained_layout=True)
    labels = [f"{_short(r.size)} users" if r.size is not None else r.system for r in rows]
    for i, r in enumerate(rows):
        interval = r.num("refresh_interval_s")
        rounds = r.extra.get("switch_latency_s")
        if interval and isinstance(rounds, list):
            values = [v / interval for v in rounds if _number(v) is not None]
        else:
            values = [v for v in (r.num("switch_latency_median_in_intervals"),) if v is not None]
        left.scatter([i] * len(values), values, color="C0", zorder=3, label="one round" if i == 0 else None)
        median = r.num("switch_latency_median_in_intervals")
        if median is not None:
            left.hlines(median, i - 0.25, i + 0.25, color="C1", label="median" if i == 0 else None)
    left.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="one refresh interval")
    left.set_xticks(range(len(rows)), labels=labels)
    left.set_xlim(-0.6, len(rows) - 0.4)
    left.set_ylim(bottom=0)
    left.set_title("CURRENT moved → last reader switched")
    left.set_xlabel("data size")
    left.set_ylabel("switch latency (refresh intervals)")
    left.grid(True, axis="y", alpha=0.3)
    left.legend()
    series = (
        ("p50 steady", "get_steady_p50_us"),
        ("p50 in switch", "get_during_switch_p50_us"),
        ("p99 steady", "get_steady_p99_us"),
        ("p99 in switch", "get_during_switch_p99_us"),
    )
    width = 0.8 / len(series)
    for j, (name, key) in enumerate(series):
        xs = [i - 0.4 + width * (j + 0.5) for i in range(len(rows))]
        right.bar(xs, [r.num(key) or 0 for r in rows], width, label=name)
    right.set_xticks(range(len(rows)), labels=labels)
    right.set_title("get latency, steady vs within 50 ms of a switch")
    right.set_xlabel("data size")
    right.set_ylabel("latency per call (µs)")
    right.grid(True, axis="y", alpha=0.3)
    right.legend()
    fig.suptitle("Version switch under load")
    _save(fig, path)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------------------------
# Command line


def main(argv: Sequence[str] | None = None) -> int:
    """Read the JSON file, write ``results.md`` and the plots; returns the exit status."""
    parser = argparse.ArgumentParser(
        description="Markdown tables and PNG plots from a pytest-benchmark JSON file."
    )
    parser.add_argument("results", type=Path, help="the file written by pytest --benchmark-json")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"), help="output folder")
    parser.add_argument("--no-plots", action="store_true", help="write results.md only")
    parser.add_argument(
        "--update-page",
        type=Path,
        metavar="PAGE",
        help=f"also replace the {PAGE_BEGIN} ... {PAGE_END} block of this markdown page",
    )
    args = parser.parse_args(argv)
    try:
        data = json.loads(args.results.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        parser.error(f"cannot read {args.results}: {exc}")
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks", []), list):
        parser.error(f"{args.results} is not a pytest-benchmark JSON file")
    args.out.mkdir(parents=True, exist_ok=True)
    results = load_results(data)

    plots: list[str] = []
    if not args.no_plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            parser.error("the plots need matplotlib: install it, or pass --no-plots")
        makers = {"startup.png": plot_startup, "latency.png": plot_latency, "switch.png": plot_switch}
        for name in PLOTS:
            target = args.out / name
            if makers[name](results, target):
                plots.append(name)
            elif target.exists():
                target.unlink()  # from an earlier run: this one has no data for it
                print(f"removed {target} (no data for it in this run)")

    (args.out / "results.md").write_text(
        "# Benchmark results\n\n" + render(data, plots, level=2), encoding="utf-8"
    )
    print(f"wrote {args.out / 'results.md'}" + "".join(f", {name}" for name in plots))
    if args.update_page is not None:
        prefix = Path(os.path.relpath(args.out.resolve(), args.update_page.resolve().parent)).as_posix()
        update_page(args.update_page, render(data, plots, level=3, image_prefix=f"{prefix}/"))
        print(f"updated {args.update_page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
