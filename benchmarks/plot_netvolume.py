"""Tables and plots of the network-volume benchmark (``benchmarks/test_netvolume.py``).

Usage::

    python benchmarks/plot_netvolume.py benchmarks/results/netvolume.json --out docs/benchmarks

prints markdown tables (round trips, fresh-process start-up, cold and warm lookups with the
ratio of sharedrec to every baseline, prefetch, version switch) and writes into ``--out``:

- ``netvolume-roundtrips.png``: round trips to open and to the first answer of a fresh
  process on a cold node, by system, at every size, against the target (3 + 3);
- ``netvolume-cold-latency.png``: the latency distribution of the first lookups on a cold
  node at the largest size, and p50/p99 cold against warm.

The plots need matplotlib (``--no-plots`` prints the tables only).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TARGET_OPEN = 3
TARGET_FIRST = 3
"""Round trips the design aims at: open <= 3, first answer <= 3 more, whatever the size."""
PLOTS = ("netvolume-roundtrips.png", "netvolume-cold-latency.png")
MISSING = "\u2013"
"""En dash: a figure the system does not report."""
TIMES = "\u00d7"
"""Multiplication sign, after ratios."""


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return MISSING
    if value == 0:
        return "0"
    text = f"{value:.{digits}g}"
    return f"{float(text):,.0f}" if abs(value) >= 1000 else text


def _ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return MISSING
    return f"{value / base:.3g}{TIMES}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], text: Sequence[int] = (1,)) -> list[str]:
    """A markdown table; columns ``text`` (and the size) left-aligned, the numbers right-aligned."""
    align = ["---" if i in text else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _variants(sizes: dict[str, Any], prefix: str) -> list[tuple[str, str, dict[str, Any]]]:
    """``(size, attribute cache, figures by system)`` of the sections ``prefix`` and ``prefix-attrN``.

    ``prefix`` alone ran on the node without attribute caching, ``prefix-attr3`` on the node
    caching attributes and names for 3 s.
    """
    found = []
    for size, sections in sizes.items():
        for name, group in sections.items():
            if name == prefix:
                found.append((size, "0 s", group))
            elif name.startswith(f"{prefix}-attr"):
                found.append((size, f"{name[len(prefix) + 5 :]} s", group))
    return sorted(found, key=lambda row: (float(row[1][:-2]), int(row[0])))


def tables(document: dict[str, Any]) -> str:
    """Markdown tables of every figure, with sharedrec's ratio to each baseline."""
    sizes: dict[str, Any] = document["sizes"]
    latency = ", ".join(f"{kind} {seconds * 1e3:g} ms" for kind, seconds in document["latency_s"].items())
    out = [
        f"Profile `{document['profile']}` ({latency}). *Attribute cache* is the node's attribute and "
        f"entry timeout: {document['attr_timeout_s']:g} s (every check a round trip) unless a row says "
        "otherwise. Every measurement starts on a freshly mounted (cold) node unless it says warm.",
        "",
        "### Round trips, fresh process on a cold node",
        "",
    ]
    rows = []
    for size, cache, startup in _variants(sizes, "startup"):
        for system, f in startup.items():
            rows.append(
                [
                    f"{int(size):,}",
                    cache,
                    system,
                    _fmt(f["open_round_trips"]),
                    _fmt(f["first_answer_round_trips"]),
                    _fmt(f["open_round_trips"] + f["first_answer_round_trips"]),
                    ", ".join(
                        f"{k} {v}" for k, v in f["open_requests"].items() if k not in ("close", "release")
                    ),
                    ", ".join(
                        f"{k} {v}"
                        for k, v in f["first_answer_requests"].items()
                        if k not in ("close", "release")
                    ),
                ]
            )
    out += _table(
        [
            "users",
            "attribute cache",
            "system",
            "open",
            "first answer",
            "total",
            "open: by kind",
            "first answer: by kind",
        ],
        rows,
        text=(2, 6, 7),
    )
    out += ["", "### Fresh process to first answer (median of rounds)", ""]
    rows = []
    for size, cache, startup in _variants(sizes, "startup"):
        base = startup.get("sharedrec", {})
        for system, f in startup.items():
            rows.append(
                [
                    f"{int(size):,}",
                    cache,
                    system,
                    _fmt(f["to_first_answer_s"] * 1e3),
                    _fmt(f["import_s"] * 1e3),
                    _fmt(f["first_answer_s"] * 1e3),
                    _ratio(base.get("to_first_answer_s"), f["to_first_answer_s"]),
                    _ratio(base.get("first_answer_s"), f["first_answer_s"]),
                ]
            )
    out += _table(
        [
            "users",
            "attribute cache",
            "system",
            "spawn to answer (ms)",
            "imports (ms)",
            "after imports (ms)",
            "sharedrec ÷ this, with imports",
            "sharedrec ÷ this, after imports",
        ],
        rows,
        text=(2,),
    )
    for phase, title in (("cold_get", "First lookups on a cold node"), ("warm_get", "Lookups once warm")):
        out += ["", f"### {title}", ""]
        rows = []
        for size, sections in sizes.items():
            group = sections.get(phase, {})
            base = group.get("sharedrec", {})
            for system, f in group.items():
                rows.append(
                    [
                        f"{int(size):,}",
                        system,
                        _fmt(f["p50_ns"] / 1e3),
                        _fmt(f["p99_ns"] / 1e3),
                        _ratio(base.get("p50_ns"), f["p50_ns"]),
                        _ratio(base.get("p99_ns"), f["p99_ns"]),
                        _fmt(f.get("round_trips_per_lookup", f.get("round_trips"))),
                    ]
                )
        last = "round trips per lookup" if phase == "cold_get" else "round trips while timed"
        out += _table(
            [
                "users",
                "system",
                "p50 (µs)",
                "p99 (µs)",
                "sharedrec ÷ this, p50",
                "sharedrec ÷ this, p99",
                last,
            ],
            rows,
        )
    out += ["", "### Warming the whole version", ""]
    rows = []
    for size, sections in sizes.items():
        group = sections.get("prefetch", {})
        for system, f in group.items():
            rows.append(
                [
                    f"{int(size):,}",
                    system,
                    _fmt(f["version_bytes"] / 1e6),
                    _fmt(f["call_s"]),
                    _fmt(f["warm_s"]),
                    f"{f['read_fraction']:.1%}",
                    _fmt(f["read_mb_per_s"]),
                    _fmt(f.get("warm_mb_per_s")),
                    _fmt(f.get("reads_after")),
                ]
            )
    out += _table(
        [
            "users",
            "system",
            "version (MB)",
            "call returned (s)",
            "last byte read (s)",
            "read of version",
            "MB/s read",
            "MB/s, whole version",
            "reads in 1000 lookups after",
        ],
        rows,
    )
    out += ["", "### Version switch: to the first answer from the new version", ""]
    rows = []
    for size, cache, group in _variants(sizes, "switch"):
        base = group.get("sharedrec", {})
        for system, f in group.items():
            rows.append(
                [
                    f"{int(size):,}",
                    cache,
                    system,
                    _fmt(f["switch_s"] * 1e3),
                    _fmt(f["round_trips"]),
                    _fmt(f["read_mb"]),
                    _ratio(base.get("switch_s"), f["switch_s"]),
                ]
            )
    out += _table(
        ["users", "attribute cache", "system", "time (ms)", "round trips", "read (MB)", "sharedrec ÷ this"],
        rows,
        text=(2,),
    )
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# Plots


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "figure.titlesize": 11})
    return plt


def _save(fig: Any, path: Path) -> None:
    # No "Software" tag: the files stay the same across matplotlib versions (as report.py).
    fig.savefig(path, dpi=110, metadata={"Software": None})


def _label(system: str) -> str:
    """A system's name over two lines, for the ticks under a bar."""
    if " " in system:
        return system.replace(" ", "\n", 1)
    return system.replace("-", "-\n", 1) if len(system) > 12 else system


def plot_round_trips(document: dict[str, Any], path: Path) -> bool:
    """Stacked bars: round trips to open and to the first answer; a panel per size and node.

    Download-and-load's reads grow with the data: its bar is cut at the top of the others
    and labelled with its count.
    """
    panels = _variants(document["sizes"], "startup")
    if not panels:
        return False
    caches = list(dict.fromkeys(cache for _, cache, _ in panels))
    sizes = list(dict.fromkeys(size for size, _, _ in panels))
    totals = [
        f["open_round_trips"] + f["first_answer_round_trips"]
        for _, _, startup in panels
        for system, f in startup.items()
        if system != "download-and-load"
    ]
    top = 1.25 * max(totals, default=1)
    plt = _pyplot()
    fig, grid = plt.subplots(
        len(caches),
        len(sizes),
        figsize=(5 * len(sizes), 3.9 * len(caches)),
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    for size, cache, startup in panels:
        ax = grid[caches.index(cache)][sizes.index(size)]
        systems = list(startup)
        opens = [startup[s]["open_round_trips"] for s in systems]
        firsts = [startup[s]["first_answer_round_trips"] for s in systems]
        xs = list(range(len(systems)))
        ax.bar(xs, [min(o, top) for o in opens], label="open", color="C0")
        ax.bar(
            xs,
            [max(0, min(o + f, top) - o) for o, f in zip(opens, firsts, strict=True)],
            bottom=opens,
            label="first answer",
            color="C1",
        )
        for x, o, f in zip(xs, opens, firsts, strict=True):
            cut = o + f > top
            ax.text(
                x,
                top * 0.98 if cut else o + f,
                f"{o:,g}\n+ {f:g}\n(cut)" if cut else f"{o:g} + {f:g}",
                ha="center",
                va="top" if cut else "bottom",
                fontsize=8,
                color="white" if cut else "black",
            )
        ax.axhline(
            TARGET_OPEN, color="C0", linestyle="--", linewidth=1, label=f"target: open \u2264 {TARGET_OPEN}"
        )
        ax.axhline(
            TARGET_OPEN + TARGET_FIRST,
            color="C1",
            linestyle="--",
            linewidth=1,
            label=f"target: first answer \u2264 {TARGET_FIRST} more",
        )
        ax.set_ylim(0, top)
        ax.set_xticks(xs, labels=[_label(s) for s in systems])
        ax.set_title(f"{int(size):,} users, attributes cached {cache}")
        ax.grid(True, axis="y", alpha=0.3)
    for row in grid:
        row[0].set_ylabel("round trips")
    handles, labels = grid[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(handles), frameon=False)
    fig.suptitle(f"Fresh process on a cold node ({document['profile']} profile): round trips by phase")
    _save(fig, path)
    plt.close(fig)
    return True


def plot_cold_latency(document: dict[str, Any], path: Path) -> bool:
    """The CDF of the first lookups on a cold node, and p50/p99 cold against warm (largest size)."""
    sized = [(int(size), s) for size, s in document["sizes"].items() if s.get("cold_get")]
    if not sized:
        return False
    size, sections = max(sized, key=lambda pair: pair[0])
    cold, warm = sections["cold_get"], sections.get("warm_get", {})
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4), layout="constrained")
    for system, f in cold.items():
        quantiles = f.get("quantiles_ns")
        if not quantiles:
            continue
        levels = [*range(100), 99.5, 99.9, 100.0][: len(quantiles)]
        opened = f"open {f['open_s']:.2g} s" if "open_s" in f else ""
        left.plot([q / 1e3 for q in quantiles], levels, label=f"{system} ({opened})" if opened else system)
    left.set_xscale("log")
    left.set_xlabel("latency per lookup (µs, log scale)")
    left.set_ylabel("percent of lookups at most this long")
    lookups = next(iter(cold.values())).get("lookups")
    left.set_title(f"First {lookups:,} lookups after opening on a cold node" if lookups else "Cold lookups")
    left.grid(True, which="both", alpha=0.3)
    left.legend()
    systems = list(cold)
    width = 0.2
    series = [
        ("cold p50", cold, "p50_ns"),
        ("cold p99", cold, "p99_ns"),
        ("warm p50", warm, "p50_ns"),
        ("warm p99", warm, "p99_ns"),
    ]
    for j, (label, group, key) in enumerate(series):
        xs = [i - 0.3 + width * j for i in range(len(systems))]
        right.bar(xs, [group.get(s, {}).get(key, 0) / 1e3 for s in systems], width, label=label)
    right.set_yscale("log")
    right.set_xticks(range(len(systems)), labels=[_label(s) for s in systems])
    right.set_ylabel("latency per lookup (µs, log scale)")
    right.set_title("p50 and p99, cold against warm")
    right.grid(True, axis="y", which="both", alpha=0.3)
    right.legend()
    fig.suptitle(f"Lookups through a network volume ({document['profile']} profile), {size:,} users")
    _save(fig, path)
    plt.close(fig)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Print the tables and write the plots; returns the exit status."""
    parser = argparse.ArgumentParser(description="Tables and plots of benchmarks/test_netvolume.py.")
    parser.add_argument(
        "results", type=Path, help="benchmarks/results/netvolume.json, written by the benchmark"
    )
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"), help="folder of the plots")
    parser.add_argument("--no-plots", action="store_true", help="print the tables only")
    args = parser.parse_args(argv)
    try:
        document = json.loads(args.results.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        parser.error(f"cannot read {args.results}: {exc}")
    if not isinstance(document, dict) or not isinstance(document.get("sizes"), dict):
        parser.error(f"{args.results} is not a results file of benchmarks/test_netvolume.py")
    print(tables(document))
    if not args.no_plots:
        args.out.mkdir(parents=True, exist_ok=True)
        makers = {
            "netvolume-roundtrips.png": plot_round_trips,
            "netvolume-cold-latency.png": plot_cold_latency,
        }
        for name in PLOTS:
            if makers[name](document, args.out / name):
                print(f"wrote {args.out / name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
