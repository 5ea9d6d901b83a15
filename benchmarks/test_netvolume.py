"""A network volume: sharedrec read from a cold node of an EFS-like mount, against the same
baselines on the same mount.

The data of every size is written once into the backing folder of a network-volume bench
(:mod:`sharedrec.testing.netvolume`): the sharedrec store (two versions of the same rows), the
sorted ``.npy`` files and an LMDB environment, each twice for the switch benchmark. The
measured part runs through one node mounted with ``PROFILES["efs"]`` (0.25 ms per read,
lookup, open; 2.7 ms per write or metadata change) and ``attr_timeout = 0``, so that every
attribute check is a round trip: the counts do not depend on timing, and they are an upper
bound for a mount that caches attributes. Every measurement that says *cold* starts from
``node.remount()``: the node's page cache, attribute cache and entry cache are empty, as on a
node that has just mounted the volume (the backing folder stays in the machine's page cache,
as the server's cache would).

Round trips are the requests the node served that wait on the server
(:data:`sharedrec.testing.netvolume.ROUND_TRIP_KINDS`), counted by the node itself.

Groups (``<N>`` is the number of users):

- ``netvolume-startup-<N>``: a fresh Python process on a cold node answers one key; the
  benchmark is the whole child process. The child reads the node's counters between phases,
  so ``extra_info`` holds the round trips to open and to the first answer, and the times
  with and without the imports.
- ``netvolume-cold-get-<N>``: the first lookups (10,000 distinct keys) after an open on a
  cold node, one round; ``extra_info`` has their p50/p99 and round trips per lookup.
- ``netvolume-warm-get-<N>``: the same keys once they were all looked up once: the benchmark
  is one lookup; ``extra_info`` has p50/p99 of individually timed calls.
- ``netvolume-prefetch-<N>``: ``reader.prefetch()`` until the node has read every byte of
  the version, against a plain sequential read (1 MiB ``read`` calls, like ``cat``) of the
  same files, each on a cold node; ``extra_info`` has MB/s.
- ``netvolume-switch-<N>``: a reader serving one version on a cold node; ``CURRENT`` moves to
  another version (written on the server side) and the benchmark is ``reader.refresh()`` plus
  the first answer from the new version. Baselines open the other copy of their data and
  answer one key. The wait for the next poll (``refresh_interval``) comes on top.

Systems: ``sharedrec``; ``lmdb`` (``readonly=True, lock=False, readahead=False``, one read
transaction with ``buffers=True``); ``np.memmap`` (``np.load(mmap_mode="r")`` of the sorted
``.npy`` files, ``np.searchsorted``); ``ndarray-view`` (the same maps viewed as plain
``np.ndarray``: the floor of a memory-mapped lookup in Python); ``download-and-load`` (the
``.npy`` files read fully into memory from the mount with ``np.load``, then
``np.searchsorted``).

Every run also writes ``benchmarks/results/netvolume.json`` (``netvolume-smoke.json`` with
``--smoke``: round trips, MB/s, latency quantiles, by size and system) and prints a summary;
``benchmarks/plot_netvolume.py`` turns it into tables and plots.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from pytest_benchmark.fixture import BenchmarkFixture

import sharedrec
from benchmarks._baselines import build_lmdb, decode_row, encode_key, open_lmdb
from benchmarks._workload import COLLECTION, Workload, build_workload
from sharedrec.testing.netvolume import PROFILES, Node, Volume, missing, read_counts, round_trips

PROFILE = "efs"
ATTR_TIMEOUT = 0.0
"""Seconds the node caches attributes and names: 0 makes every check a round trip."""
CACHED_TIMEOUT = 3.0
"""The second setting of start-up and switch: NFS's default ``acregmin`` (names and attributes
cached for 3 s), closer to what an EFS mount with default options does."""
TIMEOUTS = [pytest.param(ATTR_TIMEOUT, id="attr0"), pytest.param(CACHED_TIMEOUT, id="attr3")]
RESULTS = Path(__file__).parent / "results"
"""Folder of ``netvolume.json`` (``netvolume-smoke.json`` with ``--smoke``)."""
QUANTILES = [*np.linspace(0, 99, 100).tolist(), 99.5, 99.9, 100.0]
"""Percentiles of the cold lookups kept in the results file, for a latency CDF."""
STALL = 1.0
"""Seconds without a byte read after which a prefetch counts as finished (short of the total)."""
READ_BLOCK = 1 << 20
"""Bytes per ``read`` call of the sequential-read baseline."""

Lookup = Callable[[int], tuple[Any, Any]]

STARTUP_SYSTEMS = ["sharedrec", "sharedrec lease=False", "lmdb", "np.memmap", "download-and-load"]
GET_SYSTEMS = ["sharedrec", "lmdb", "np.memmap", "ndarray-view", "download-and-load"]
SWITCH_SYSTEMS = ["sharedrec", "lmdb", "np.memmap", "download-and-load"]
PREFETCH_SYSTEMS = ["sharedrec prefetch()", "sequential read"]


@dataclass(frozen=True)
class NetSettings:
    """How hard this file works; smoke mode keeps it under a minute."""

    startup_rounds: int
    warmup_rounds: int
    cold_lookups: int
    warm_calls: int
    prefetch_rounds: int
    switch_rounds: int


FULL = NetSettings(
    startup_rounds=5,
    warmup_rounds=1,
    cold_lookups=10_000,
    warm_calls=20_000,
    prefetch_rounds=2,
    switch_rounds=3,
)
SMOKE = NetSettings(
    startup_rounds=1, warmup_rounds=0, cold_lookups=500, warm_calls=2_000, prefetch_rounds=1, switch_rounds=1
)


@dataclass(frozen=True)
class NetData:
    """One size of the data, in the backing folder; ``node_path`` gives its path through a node."""

    workload: Workload
    backing: Path
    versions: tuple[str, str]
    """Two sharedrec versions of the same rows; ``versions[0]`` is live between benchmarks."""
    npy: tuple[Path, Path]
    lmdb: tuple[Path, Path] | None

    def node_path(self, node: Node, path: Path) -> str:
        return os.path.join(node.path, os.path.relpath(path, self.backing))

    @property
    def store(self) -> Path:
        return self.workload.store


# --------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def net_settings(pytestconfig: pytest.Config) -> NetSettings:
    return SMOKE if pytestconfig.getoption("smoke") else FULL


@pytest.fixture(scope="module")
def volume(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Volume]:
    reason = missing()
    if reason is not None:
        pytest.skip(f"the network-volume bench cannot run here: {reason}")
    root = tmp_path_factory.mktemp("netvolume")
    with Volume(root) as vol:
        yield vol
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def node(volume: Volume) -> Node:
    """The reader's node: EFS-like latency, no attribute caching; remounted for every cold start."""
    return volume.node("reader", profile=PROFILE, attr_timeout=ATTR_TIMEOUT)


@pytest.fixture(scope="module")
def cached_node(volume: Volume) -> Node:
    """A second reader node that caches attributes and names for ``CACHED_TIMEOUT`` seconds."""
    return volume.node("cached", profile=PROFILE, attr_timeout=CACHED_TIMEOUT)


def _node(request: pytest.FixtureRequest, attr_timeout: float) -> Node:
    node: Node = request.getfixturevalue("cached_node" if attr_timeout else "node")
    return node


def _variant(name: str, attr_timeout: float) -> str:
    """``name`` for the node without attribute caching, ``name-attr3`` (say) for the other."""
    return name if attr_timeout == ATTR_TIMEOUT else f"{name}-attr{attr_timeout:g}"


@pytest.fixture(scope="module")
def net_data(n_users: int, volume: Volume, pytestconfig: pytest.Config) -> Iterator[NetData]:
    """The data of one size, written straight into the backing folder (not measured)."""
    backing = Path(volume.backing)
    folder = backing / f"n{n_users}"
    folder.mkdir()
    workload = build_workload(n_users, folder)
    store = sharedrec.open(workload.store, create=False)
    first = store.current()
    assert first is not None
    second = store.publish_ranked(COLLECTION, workload.keys, workload.items, workload.scores, progress=False)
    store.set_current(first)
    npy2 = folder / "npy2"
    shutil.copytree(workload.npy, npy2)
    lmdb: tuple[Path, Path] | None = None
    if importlib.util.find_spec("lmdb") is not None:
        env = build_lmdb(workload, folder / "lmdb")
        shutil.copytree(env, folder / "lmdb2")
        lmdb = (env, folder / "lmdb2")
    yield NetData(workload, backing, (first, second), (workload.npy, npy2), lmdb)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def summary(pytestconfig: pytest.Config) -> Iterator[dict[str, Any]]:
    """Figures by size, benchmark and system: written to ``RESULTS`` and printed at the end."""
    data: dict[str, Any] = {}
    yield data
    if not data:
        return
    document = {
        "profile": PROFILE,
        "latency_s": {k: v for k, v in vars(PROFILES[PROFILE]).items() if v},
        "attr_timeout_s": ATTR_TIMEOUT,
        "cached_attr_timeout_s": CACHED_TIMEOUT,
        "smoke": bool(pytestconfig.getoption("smoke")),
        "sizes": data,
    }
    path = RESULTS / ("netvolume-smoke.json" if document["smoke"] else "netvolume.json")
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    # Output is captured at the file-descriptor level during teardown: print around it.
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        reporter.write_line("")
        reporter.write_sep("-", f"network volume ({PROFILE} profile, cold node); figures in {path}")
        for line in _summary_lines(data):
            reporter.write_line(line)


def _record(
    summary: dict[str, Any], n_users: int, section: str, system: str, figures: dict[str, Any]
) -> None:
    summary.setdefault(str(n_users), {}).setdefault(section, {})[system] = figures


# --------------------------------------------------------------------------------------------
# Counting


def _diff(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """Requests (and bytes) between two readings of a node's counters; zeros left out."""
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def _decode(raw: bytes) -> dict[str, int]:
    """A counters reading a child took as raw bytes (decoded by the bench's own reader)."""
    with tempfile.NamedTemporaryFile() as f:
        f.write(raw)
        f.flush()
        return read_counts(f.name)


def _cold(node: Node) -> None:
    """Remount ``node``: empty page, attribute and entry caches.

    Every mapping of the old mount must be gone first (collected here), or the unmount
    is lazy and the old node process lingers until it is killed.
    """
    gc.collect()
    node.remount()


def _keys(data: NetData, count: int, seed: int) -> list[int]:
    """``count`` distinct existing keys in random order (all of them if there are fewer)."""
    rng = np.random.default_rng(seed)
    n = data.workload.n_users
    rows = rng.choice(n, size=min(count, n), replace=False)
    return [int(key) for key in data.workload.keys[rows]]


def _check(data: NetData, keys: list[int], answers: list[tuple[Any, Any]]) -> None:
    items, scores = data.workload.expected(np.asarray(keys, dtype=np.int64))
    for i, (got_items, got_scores) in enumerate(answers):
        np.testing.assert_array_equal(np.asarray(got_items), items[i], err_msg=f"items of key {keys[i]}")
        np.testing.assert_array_equal(np.asarray(got_scores), scores[i], err_msg=f"scores of key {keys[i]}")


def _percentiles_ns(spent: NDArray[np.int64]) -> dict[str, float]:
    p50, p90, p99, p999 = np.percentile(spent, [50, 90, 99, 99.9]).tolist()
    return {"p50_ns": p50, "p90_ns": p90, "p99_ns": p99, "p999_ns": p999, "mean_ns": float(spent.mean())}


# --------------------------------------------------------------------------------------------
# Fresh process to first answer


# The child reads the node's counters file (beside the mount, not through it) at each phase
# boundary, so the parent can split the requests into open and first answer. Timestamps use
# time.perf_counter() (CLOCK_MONOTONIC, shared with the parent).
CHILD_HEAD = """\
import time
t0 = time.perf_counter()
import sys
{imports}
t1 = time.perf_counter()
def snap():
    with open(sys.argv[1], "rb") as f:
        return f.read()
c1 = snap()
o0 = time.perf_counter()
{open}
o1 = time.perf_counter()
c2 = snap()
g0 = time.perf_counter()
{get}
t2 = time.perf_counter()
c3 = snap()
import json
print(json.dumps({{"t0": t0, "t1": t1, "o0": o0, "o1": o1, "g0": g0, "t2": t2, "answer": answer,
                  "counts": [c.hex() for c in (c1, c2, c3)]}}))
"""

SEARCH = """\
key = int(sys.argv[5])
row = int(np.searchsorted(keys, key))
assert keys[row] == key
answer = [items[row].tolist(), scores[row].tolist()]"""

CHILDREN = {
    "sharedrec": {
        "imports": "import sharedrec\nimport sharedrec.read.reader",
        "open": "reader = sharedrec.open(sys.argv[2], create=False).reader(lease=sys.argv[5] == '1')",
        "get": "found = reader.get(sys.argv[3], int(sys.argv[4]))\n"
        "answer = [found.items.tolist(), found.scores.tolist()]",
    },
    "lmdb": {
        "imports": "import lmdb\nimport numpy as np",
        "open": "env = lmdb.open(sys.argv[2], readonly=True, lock=False, readahead=False, subdir=True)",
        "get": "k = int(sys.argv[3])\n"
        "with env.begin(buffers=True) as txn:\n"
        "    value = txn.get(int(sys.argv[4]).to_bytes(8, 'big', signed=True))\n"
        "    items = np.frombuffer(value, '<i4', k)\n"
        "    scores = np.frombuffer(value, '<f4', k, 4 * k)\n"
        "    answer = [items.tolist(), scores.tolist()]",
    },
    "np.memmap": {
        "imports": "import numpy as np",
        "open": "keys, items, scores = (np.load(p, mmap_mode='r') for p in sys.argv[2:5])",
        "get": SEARCH,
    },
    "download-and-load": {
        "imports": "import numpy as np",
        "open": "keys, items, scores = (np.load(p) for p in sys.argv[2:5])",
        "get": SEARCH,
    },
}


def _child_command(system: str, data: NetData, node: Node, key: int) -> list[str]:
    kind = "sharedrec" if system.startswith("sharedrec") else system
    code = CHILD_HEAD.format(**CHILDREN[kind])
    head = [sys.executable, "-c", code, node.counts_path]
    if kind == "sharedrec":
        lease = "0" if system.endswith("lease=False") else "1"
        return [*head, data.node_path(node, data.store), COLLECTION, str(key), lease]
    if kind == "lmdb":
        assert data.lmdb is not None
        return [*head, data.node_path(node, data.lmdb[0]), str(data.workload.k), str(key)]
    files = [data.node_path(node, data.npy[0] / f"{name}.npy") for name in ("keys", "items", "scores")]
    return [*head, *files, str(key)]


def _run_child(command: list[str], node: Node) -> dict[str, Any]:
    """Run one child on the node; its timings (relative to the spawn) and requests by phase."""
    before = node.counts()
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    end = time.perf_counter()
    after = node.counts()
    if done.returncode != 0:
        raise RuntimeError(f"the child process failed ({done.returncode}):\n{done.stderr}")
    report: dict[str, Any] = json.loads(done.stdout)
    c1, c2, c3 = (_decode(bytes.fromhex(raw)) for raw in report.pop("counts"))
    phases = {"before_open": _diff(before, c1), "open": _diff(c1, c2), "first_answer": _diff(c2, c3)}
    phases["after_answer"] = _diff(c3, after)
    report["requests"] = phases
    report["round_trips"] = {phase: round_trips(counts) for phase, counts in phases.items()}
    report["interpreter_start_s"] = report["t0"] - start
    report["import_s"] = report["t1"] - report["t0"]
    report["open_s"] = report["o1"] - report["o0"]
    report["get_s"] = report["t2"] - report["g0"]
    # The counter snapshots between phases (a few µs) are left out.
    report["first_answer_s"] = report["open_s"] + report["get_s"]
    report["to_first_answer_s"] = report["t1"] - start + report["first_answer_s"]
    report["process_s"] = end - start
    return report


@pytest.mark.parametrize("system", STARTUP_SYSTEMS)
@pytest.mark.parametrize("attr_timeout", TIMEOUTS)
def test_startup(
    benchmark: BenchmarkFixture,
    net_data: NetData,
    net_settings: NetSettings,
    summary: dict[str, Any],
    request: pytest.FixtureRequest,
    system: str,
    attr_timeout: float,
) -> None:
    n = net_data.workload.n_users
    node = _node(request, attr_timeout)
    benchmark.group = f"{_variant('netvolume-startup', attr_timeout)}-{n}"
    if system == "lmdb" and net_data.lmdb is None:
        pytest.skip("the LMDB baseline needs py-lmdb (pip install lmdb)")
    keys = itertools.cycle(_keys(net_data, 64, seed=7))
    asked: list[int] = []
    reports: list[dict[str, Any]] = []

    def setup() -> tuple[tuple[list[str]], dict[str, Any]]:
        _cold(node)  # a cold node for every process, as for a pod on a new node
        key = next(keys)
        asked.append(key)
        return (_child_command(system, net_data, node, key),), {}

    def run(command: list[str]) -> None:
        reports.append(_run_child(command, node))

    benchmark.pedantic(
        run,
        setup=setup,
        rounds=net_settings.startup_rounds,
        warmup_rounds=net_settings.warmup_rounds,
        iterations=1,
    )
    _check(net_data, asked, [(r["answer"][0], r["answer"][1]) for r in reports])
    timed = reports[net_settings.warmup_rounds :] or reports
    times = ["interpreter_start_s", "import_s", "open_s", "get_s", "first_answer_s", "to_first_answer_s"]
    figures: dict[str, Any] = {name: statistics.median(r[name] for r in timed) for name in times}
    for phase in ("open", "first_answer"):
        trips = [r["round_trips"][phase] for r in timed]
        figures[f"{phase}_round_trips"] = statistics.median(trips)
        figures[f"{phase}_round_trips_by_round"] = trips
        figures[f"{phase}_requests"] = timed[-1]["requests"][phase]
    figures["before_open_round_trips"] = max(r["round_trips"]["before_open"] for r in timed)
    figures["after_answer_requests"] = timed[-1]["requests"]["after_answer"]
    benchmark.extra_info.update(figures)
    benchmark.extra_info.update(
        system=system,
        n_users=n,
        k=net_data.workload.k,
        node=f"{PROFILE}, attr_timeout {attr_timeout:g} s, cold",
    )
    _record(summary, n, _variant("startup", attr_timeout), system, figures)


# --------------------------------------------------------------------------------------------
# Lookups, cold and warm


def _answering(lookup: Lookup) -> Lookup:
    """``lookup`` that copies the row out, as a service does to answer.

    A lookup that returns views touches only the index: the row's pages would be read from
    the volume later, by whoever uses them. The copy makes every system read its row.
    """

    def answer(key: int) -> tuple[Any, Any]:
        items, scores = lookup(key)
        return np.array(items), np.array(scores)

    return answer


def _open(system: str, data: NetData, node: Node, stack: ExitStack) -> Lookup:
    """Open ``system``'s data through ``node``; a one-key lookup returning ``(items, scores)``."""
    k = data.workload.k
    if system == "sharedrec":
        store = sharedrec.open(data.node_path(node, data.store), create=False)
        reader = stack.enter_context(store.reader(lease=False, refresh_interval=None))

        def get(key: int) -> tuple[Any, Any]:
            found = reader.get(COLLECTION, key)
            return found.items, found.scores

        return get

    if system == "lmdb":
        if data.lmdb is None:
            pytest.skip("the LMDB baseline needs py-lmdb (pip install lmdb)")
        env = stack.enter_context(open_lmdb(Path(data.node_path(node, data.lmdb[0]))))
        txn = stack.enter_context(env.begin(buffers=True))
        fetch = txn.get

        def get_value(key: int) -> tuple[Any, Any]:
            value = fetch(encode_key(key))
            if value is None:
                raise KeyError(key)
            return decode_row(value, k)

        return get_value

    return _searchsorted(
        system, [data.node_path(node, data.npy[0] / f"{n}.npy") for n in ("keys", "items", "scores")]
    )


def _searchsorted(system: str, files: list[str]) -> Lookup:
    """The numpy baselines over the three sorted files: mapped, viewed or loaded into memory."""
    if system == "download-and-load":
        keys, items, scores = (np.load(f) for f in files)
    else:
        keys, items, scores = (np.load(f, mmap_mode="r") for f in files)
        if system == "ndarray-view":
            keys, items, scores = (np.asarray(a) for a in (keys, items, scores))

    def raw(key: int) -> tuple[Any, Any]:
        i = np.searchsorted(keys, key)
        if keys[i] != key:
            raise KeyError(key)
        return items[i], scores[i]

    return raw


@pytest.mark.parametrize("phase", ["cold", "warm"])
@pytest.mark.parametrize("system", GET_SYSTEMS)
def test_get(
    benchmark: BenchmarkFixture,
    net_data: NetData,
    node: Node,
    net_settings: NetSettings,
    summary: dict[str, Any],
    system: str,
    phase: str,
) -> None:
    """Cold: the first lookups after opening on a fresh mount. Warm: the same keys afterwards.

    The warm run follows the cold run of the same system (``phase`` is the innermost
    parameter) and does not remount, so its warm-up pass finds the pages in the node's cache.
    """
    n = net_data.workload.n_users
    benchmark.group = f"netvolume-{phase}-get-{n}"
    keys = _keys(net_data, net_settings.cold_lookups, seed=11)
    clock = time.perf_counter_ns
    figures: dict[str, Any] = {}
    with ExitStack() as stack:
        lookups: list[Lookup] = []

        def open_system() -> tuple[tuple[()], dict[str, Any]]:
            if phase == "cold":
                _cold(node)
            before, start = node.counts(), time.perf_counter()
            lookups.append(_answering(_open(system, net_data, node, stack)))
            figures["open_s"] = time.perf_counter() - start
            figures["open_round_trips"] = round_trips(node.counts(before))
            return (), {}

        if phase == "cold":
            answers: list[tuple[Any, Any]] = []
            spent = np.empty(len(keys), dtype=np.int64)

            def first_lookups() -> None:
                lookup = lookups[-1]
                before = node.counts()
                for i, key in enumerate(keys):
                    start = clock()
                    answers.append(lookup(key))
                    spent[i] = clock() - start
                figures["requests"] = node.counts(before)

            benchmark.pedantic(first_lookups, setup=open_system, rounds=1, iterations=1)
            _check(net_data, keys[:200], answers[:200])
            answers.clear()
            requests = figures.pop("requests")
            trips = round_trips(requests)
            figures.update(_percentiles_ns(spent))
            figures.update(
                lookups=len(keys),
                round_trips=trips,
                round_trips_per_lookup=trips / len(keys),
                reads=requests.get("read", 0),
                read_mb=requests.get("bytes_read", 0) / 1e6,
                total_s=float(spent.sum()) / 1e9,
                quantiles_ns=np.percentile(spent, QUANTILES).tolist(),
            )
        else:
            open_system()
            lookup = lookups[-1]
            before = node.counts()
            _check(net_data, keys[:200], [lookup(key) for key in keys[:200]])
            for key in keys:
                lookup(key)
            figures["warm_up_round_trips"] = round_trips(node.counts(before))
            spent = np.empty(net_settings.warm_calls, dtype=np.int64)
            before = node.counts()
            for i, key in zip(range(len(spent)), itertools.cycle(keys), strict=False):
                start = clock()
                lookup(key)
                spent[i] = clock() - start
            figures.update(_percentiles_ns(spent))
            figures["timed_calls"] = len(spent)
            rotation = itertools.cycle(keys)
            benchmark(lambda: lookup(next(rotation)))
            figures["round_trips"] = round_trips(node.counts(before))
        lookups.clear()  # drop the maps before the mount goes away
    benchmark.extra_info.update({k: v for k, v in figures.items() if k != "quantiles_ns"})
    benchmark.extra_info.update(system=system, n_users=n, k=net_data.workload.k, keys=len(keys))
    _record(summary, n, f"{phase}_get", system, figures)


# --------------------------------------------------------------------------------------------
# Prefetch against a sequential read


def _version_files(data: NetData, node: Node) -> list[tuple[str, int]]:
    """Every file of the live version, by its path through ``node``, with its size."""
    store = sharedrec.open(data.store, create=False)
    version = data.versions[0]
    manifest = store.manifest(version)
    folder = data.store / "versions" / version
    return [(data.node_path(node, folder / path), entry.size) for path, entry in manifest.files.items()]


def _wait_read(node: Node, since: Mapping[str, int], target: int) -> tuple[float, int]:
    """Wait until the node has read ``target`` bytes since ``since`` (or reading stalls).

    Returns the time of the last progress (perf_counter) and the bytes read by then.
    """
    last_bytes, last_time = -1, time.perf_counter()
    while True:
        got = node.counts(since)["bytes_read"]
        now = time.perf_counter()
        if got != last_bytes:
            last_bytes, last_time = got, now
        if got >= target or now - last_time > STALL:
            return last_time, last_bytes
        time.sleep(0.002)


@pytest.mark.parametrize("system", PREFETCH_SYSTEMS)
def test_prefetch(
    benchmark: BenchmarkFixture,
    net_data: NetData,
    node: Node,
    net_settings: NetSettings,
    summary: dict[str, Any],
    system: str,
) -> None:
    n = net_data.workload.n_users
    benchmark.group = f"netvolume-prefetch-{n}"
    files = _version_files(net_data, node)
    total = sum(size for _, size in files)
    rounds: list[dict[str, float]] = []
    state: dict[str, Any] = {}
    after: dict[str, Any] = {}

    def end_round() -> None:
        reader = state.pop("reader", None)
        if reader is None:
            return
        # Is the node warm now? Lookups of random keys should need no read.
        keys = _keys(net_data, 1000, seed=5)
        before = node.counts()
        answers = [
            (np.array(f.items), np.array(f.scores)) for f in (reader.get(COLLECTION, key) for key in keys)
        ]
        requests = node.counts(before)
        _check(net_data, keys[:50], answers[:50])
        after.update(reads_after=requests.get("read", 0), round_trips_after=round_trips(requests))
        del answers
        reader.close()

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        end_round()
        _cold(node)
        state["mounted"] = node.counts()
        if system.startswith("sharedrec"):
            store = sharedrec.open(net_data.node_path(node, net_data.store), create=False)
            state["reader"] = store.reader(lease=False, refresh_interval=None)
        return (), {}

    def warm() -> None:
        since = state["mounted"]
        start = time.perf_counter()
        if system.startswith("sharedrec"):
            state["reader"].prefetch(wait=True, progress=False)
            returned = time.perf_counter() - start
            # prefetch() may return before the kernel has fetched everything it asked for.
            done, got = _wait_read(node, since, total)
        else:
            buffer = bytearray(READ_BLOCK)
            for path, _ in files:
                with open(path, "rb", buffering=0) as f:
                    while f.readinto(buffer):
                        pass
            done = time.perf_counter()
            returned = done - start
            got = node.counts(since)["bytes_read"]
        requests = node.counts(since)
        rounds.append(
            {
                "warm_s": done - start,
                "call_s": returned,
                "read_bytes": got,
                "round_trips": round_trips(requests),
                "reads": requests.get("read", 0),
            }
        )

    try:
        benchmark.pedantic(warm, setup=setup, rounds=net_settings.prefetch_rounds, iterations=1)
    finally:
        end_round()
    warm_s = statistics.median(r["warm_s"] for r in rounds)
    fraction = statistics.median(r["read_bytes"] for r in rounds) / total
    figures: dict[str, Any] = {
        "version_bytes": total,
        "files": len(files),
        "warm_s": warm_s,
        "call_s": statistics.median(r["call_s"] for r in rounds),
        # MB/s of the whole version only when the whole version was read; else what was read.
        "warm_mb_per_s": total / warm_s / 1e6 if fraction >= 0.99 else None,
        "read_mb_per_s": fraction * total / warm_s / 1e6,
        "read_fraction": fraction,
        "round_trips": statistics.median(r["round_trips"] for r in rounds),
        "reads": statistics.median(r["reads"] for r in rounds),
        **({"lookups_after": 1000, **after} if after else {}),
    }
    benchmark.extra_info.update(figures)
    benchmark.extra_info.update(system=system, n_users=n, read_block=READ_BLOCK)
    _record(summary, n, "prefetch", system, figures)


# --------------------------------------------------------------------------------------------
# Version switch


@pytest.mark.parametrize("system", SWITCH_SYSTEMS)
@pytest.mark.parametrize("attr_timeout", TIMEOUTS)
def test_switch(
    benchmark: BenchmarkFixture,
    net_data: NetData,
    net_settings: NetSettings,
    summary: dict[str, Any],
    request: pytest.FixtureRequest,
    system: str,
    attr_timeout: float,
) -> None:
    """A reader serving version A; the data moves to version B: time and requests to an answer from B.

    sharedrec: ``CURRENT`` is moved on the server side (``set_current``: another node
    publishes), then the reader's ``refresh()`` and one ``get``. The baselines open the other
    copy of their files (or load it, for download-and-load) and answer one key.

    On the node that caches attributes, the reader waits out the attribute timeout after
    ``CURRENT`` moved (untimed), as a reader polling every few seconds does: its cached names
    and attributes have expired by its next poll.
    """
    n = net_data.workload.n_users
    node = _node(request, attr_timeout)
    benchmark.group = f"{_variant('netvolume-switch', attr_timeout)}-{n}"
    if system == "lmdb" and net_data.lmdb is None:
        pytest.skip("the LMDB baseline needs py-lmdb (pip install lmdb)")
    server = sharedrec.open(net_data.store, create=False)
    warm_keys = _keys(net_data, 100, seed=21)
    keys = iter(_keys(net_data, 64, seed=22))
    rounds: list[dict[str, Any]] = []
    state: dict[str, Any] = {}

    def end_round() -> None:
        stack = state.pop("stack", None)
        if stack is None:
            return
        last = rounds[-1]
        _check(net_data, [last.pop("key")], [last.pop("answer")])
        state.clear()
        stack.close()

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        end_round()
        turn = len(rounds) % 2
        _cold(node)
        stack = state["stack"] = ExitStack()
        if system == "sharedrec":
            server.set_current(net_data.versions[turn])
            store = sharedrec.open(net_data.node_path(node, net_data.store), create=False)
            reader = stack.enter_context(store.reader(refresh_interval=None))
            assert reader.version == net_data.versions[turn]
            for key in warm_keys:
                reader.get(COLLECTION, key)
            server.set_current(net_data.versions[1 - turn])
            time.sleep(attr_timeout + 0.2 if attr_timeout else 0)
            state.update(reader=reader, target=net_data.versions[1 - turn])
        else:
            old = _open_copy(system, net_data, node, stack, turn)
            for key in warm_keys:
                old(key)
            state["target"] = 1 - turn
        state["key"] = next(keys)
        state["before"] = node.counts()
        return (), {}

    def switch() -> None:
        start = time.perf_counter()
        if system == "sharedrec":
            reader = state["reader"]
            reader.refresh()
            found = reader.get(COLLECTION, state["key"])
            answer = (np.array(found.items), np.array(found.scores))
            served = reader.version
        else:
            lookup = _answering(_open_copy(system, net_data, node, state["stack"], state["target"]))
            answer = lookup(state["key"])
            served = state["target"]
        spent = time.perf_counter() - start
        requests = node.counts(state["before"])
        rounds.append({"switch_s": spent, "requests": requests, "key": state["key"], "answer": answer})
        assert served == state["target"], "the reader still serves the old version"

    try:
        benchmark.pedantic(switch, setup=setup, rounds=net_settings.switch_rounds, iterations=1)
        end_round()
    finally:
        if "stack" in state:
            state["stack"].close()
        server.set_current(net_data.versions[0])
    trips = [round_trips(r["requests"]) for r in rounds]
    figures: dict[str, Any] = {
        "switch_s": statistics.median(r["switch_s"] for r in rounds),
        "round_trips": statistics.median(trips),
        "round_trips_by_round": trips,
        "requests": rounds[-1]["requests"],
        "read_mb": statistics.median(r["requests"].get("bytes_read", 0) for r in rounds) / 1e6,
    }
    benchmark.extra_info.update(figures)
    benchmark.extra_info.update(
        system=system,
        n_users=n,
        measured="refresh() + first get" if system == "sharedrec" else "open + first get",
    )
    _record(summary, n, _variant("switch", attr_timeout), system, figures)


def _open_copy(system: str, data: NetData, node: Node, stack: ExitStack, copy: int) -> Lookup:
    """A baseline opened on copy ``copy`` (0 or 1) of its files."""
    if system == "lmdb":
        assert data.lmdb is not None
        env = stack.enter_context(open_lmdb(Path(data.node_path(node, data.lmdb[copy]))))
        txn = stack.enter_context(env.begin(buffers=True))
        k = data.workload.k

        def get_value(key: int) -> tuple[Any, Any]:
            return decode_row(txn.get(encode_key(key)), k)

        return get_value
    folder = data.npy[copy]
    return _searchsorted(
        system, [data.node_path(node, folder / f"{n}.npy") for n in ("keys", "items", "scores")]
    )


# --------------------------------------------------------------------------------------------
# Summary


def _ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "-"
    return f"{value / base:.3g}x"


def _rows(sections: dict[str, Any], prefix: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """``(section, system, figures)`` of the sections named ``prefix`` or ``prefix-...``."""
    for name, group in sections.items():
        if name == prefix or name.startswith(f"{prefix}-"):
            for system, figures in group.items():
                yield name, system, figures


def _summary_lines(data: dict[str, Any]) -> list[str]:
    lines = []
    for size, sections in data.items():
        lines.append(f"{int(size):,} users")
        for name, system, f in _rows(sections, "startup"):
            lines.append(
                f"  {name:15s} {system:22s} open {f['open_round_trips']:>5g} rt, first answer "
                f"{f['first_answer_round_trips']:>5g} rt; to first answer "
                f"{f['to_first_answer_s'] * 1e3:8.1f} ms (after imports {f['first_answer_s'] * 1e3:8.1f} ms)"
            )
        for phase in ("cold_get", "warm_get"):
            base = sections.get(phase, {}).get("sharedrec", {})
            for system, f in sections.get(phase, {}).items():
                lines.append(
                    f"  {phase:9s} {system:20s} p50 {f['p50_ns'] / 1e3:9.1f} us, "
                    f"p99 {f['p99_ns'] / 1e3:9.1f} us"
                    f" (sharedrec / this: p50 {_ratio(base.get('p50_ns'), f['p50_ns'])}, "
                    f"p99 {_ratio(base.get('p99_ns'), f['p99_ns'])})"
                    + (
                        f"; {f['round_trips_per_lookup']:.2f} rt per lookup"
                        if "round_trips_per_lookup" in f
                        else ""
                    )
                )
        for system, f in sections.get("prefetch", {}).items():
            lines.append(
                f"  prefetch  {system:20s} {f['read_mb_per_s']:8.1f} MB/s read, {f['warm_s']:.2f} s, "
                f"{f['read_fraction']:.0%} of {f['version_bytes'] / 1e6:.1f} MB"
                + (f", {f['reads_after']} reads in 1000 lookups after" if "reads_after" in f else "")
            )
        for name, system, f in _rows(sections, "switch"):
            lines.append(
                f"  {name:15s} {system:20s} {f['switch_s'] * 1e3:8.1f} ms, {f['round_trips']:g} rt, "
                f"{f['read_mb']:.1f} MB read"
            )
    return lines
