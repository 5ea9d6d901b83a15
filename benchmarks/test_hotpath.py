"""Where the time of one warm ``Reader.get`` goes: a per-step breakdown against the floor.

One reader on the workload (int64 keys, whole collection, default settings), one process,
the same keys for everything, timed in alternating rounds (best p50 of each):

- ``floor``: plain ndarray views of the sorted ``.npy`` arrays memory-mapped by ``np.load``,
  ``searchsorted`` and two row views: the floor of a memory-mapped lookup in Python (the
  ``ndarray-view`` of ``test_lookup.py``);
- ``lmdb``: a read-only LMDB environment, one read transaction with ``buffers=True``, two
  ``np.frombuffer`` (when py-lmdb is installed);
- ``floor on sharedrec's maps``: the floor's code over the reader's own views of the same
  data (its keys and whole-row views, once every chunk is mapped);
- ``get``: ``reader.get(collection, key)``;
- ``get, 4 MiB chunks``: the same on the data published with ``chunk_bytes`` of 4 MiB. By
  default a store on a file system writes these rows (400 bytes) in 50 MiB chunks, whole
  2 MiB pages, which a kernel with large folios in its page cache (ext4 from Linux 6.16,
  for one) maps with 2 MiB pages, as it does the floor's one file per array; 4,096,000-byte
  chunks it maps with 4 KiB pages, and each row read costs a TLB miss more.
  ``huge_page_share`` in ``extra_info`` says what share of each one's resident maps was in
  2 MiB pages (``FilePmdMapped`` over ``Rss`` in /proc/self/smaps);
- ``get, delta chain``: the same on a version that is a delta over the workload's full
  version, changing 1% of the lists (so about 1% of the keys are served by the delta);
- ``get, 8 partitions``: the same on the workload split into 8 partitions;
- ``steps``: sharedrec's path for a whole collection done by hand on the same reader's
  internals, step after step, each function doing every step before it too, so that the
  increments split the gap between the floor and ``get``. What is left between the last
  step and ``get`` is the cost of the calls themselves (on the short path, ``get``; before
  every chunk is mapped, ``get``, ``Whole.listed``, ``Index.find``, ``_Sorted.find`` and
  ``Whole.ranked``) and of the ``try``.

Every answer reads ``items[-1]`` and ``scores[-1]`` (so do the steps from the row views on),
and every timed function is called with the key alone. The steps mirror ``Reader.get`` as it
is; when the internals change, update ``_steps`` (a missing attribute skips the steps, not
the rest). Timings are reported, never asserted.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import re
from bisect import bisect_right
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from pytest_benchmark.fixture import BenchmarkFixture

import sharedrec
from benchmarks._baselines import encode_key, open_lmdb
from benchmarks._workload import COLLECTION, Settings, Workload
from benchmarks.conftest import DeltaStore
from benchmarks.test_lookup import _latencies, _mapped
from sharedrec.format.keys import INT64_MAX, INT64_MIN, int_key
from sharedrec.read.collections import RankedList, Whole, _Found

Timed = Callable[[int], Any]
ANSWERS = (
    "floor",
    "floor on sharedrec's maps",
    "lmdb",
    "get",
    "get, 4 MiB chunks",
    "get, 8 partitions",
    "step: two row views (answer read)",
    "step: RankedList",
)
"""The timed functions that return the answer (the others stop short of it)."""
MAPPING = re.compile(r"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(?P<path>.*)$")
"""The first line of a mapping in /proc/self/smaps (its file's path last)."""
ROUNDS = 7
CALLS_AND_TRY = "calls of get, Whole.listed, Index.find, _Sorted.find, Whole.ranked; try"
SHORT_CALL_AND_TRY = "the call of get; try"
"""The last row of the breakdown: ``get`` itself, less the steps done inline."""


def _floor(workload: Workload) -> Timed:
    keys, items, scores = _mapped(workload, plain=True)
    return _floor_of(keys, items, scores)


def _floor_of(keys: NDArray[Any], items: NDArray[Any], scores: NDArray[Any]) -> Timed:
    search, n = keys.searchsorted, len(keys)

    def floor(key: int) -> Any:
        i = int(search(key))
        if i == n or keys[i] != key:
            raise KeyError(key)
        found_items, found_scores = items[i], scores[i]
        found_items[-1], found_scores[-1]  # read the answer, as a caller does
        return found_items, found_scores

    return floor


def _floor_on_maps(reader: sharedrec.Reader) -> Timed | None:
    """The floor's code over the reader's own keys and whole-row views (None until every
    chunk is mapped, or when the collection has no such views)."""
    col = reader._v.ranked.get(COLLECTION)
    keys = getattr(getattr(col, "index", None), "_whole", None)
    whole = getattr(col, "whole", None)
    if keys is None or whole is None:
        return None
    items, scores = whole
    return _floor_of(keys, items, scores)


def _huge_page_share(*folders: Path) -> dict[str, float] | None:
    """For each folder, the share of the resident bytes of this process's maps of its files
    that the kernel maps with 2 MiB pages (None where /proc/self/smaps is not there)."""
    try:
        lines = Path("/proc/self/smaps").read_text().splitlines()
    except OSError:
        return None
    names = [str(folder) + "/" for folder in folders]
    resident = dict.fromkeys(names, 0)
    huge = dict.fromkeys(names, 0)
    owner: str | None = None
    for line in lines:
        header = MAPPING.match(line)
        if header is not None:  # a mapping starts: whose file is it?
            owner = next((name for name in names if header["path"].startswith(name)), None)
        elif owner is not None and line.startswith(("Rss:", "FilePmdMapped:")):
            (resident if line.startswith("Rss:") else huge)[owner] += int(line.split()[1])
    return {
        str(folder): huge[name] / resident[name] if resident[name] else 0.0
        for folder, name in zip(folders, names, strict=True)
    }


def _lmdb(workload: Workload, request: pytest.FixtureRequest, stack: ExitStack) -> Timed | None:
    if importlib.util.find_spec("lmdb") is None:
        return None
    env = stack.enter_context(open_lmdb(request.getfixturevalue("lmdb_env")))
    fetch = stack.enter_context(env.begin(buffers=True)).get
    k, frombuffer = workload.k, np.frombuffer

    def lmdb(key: int) -> Any:
        value = fetch(encode_key(key))
        if value is None:
            raise KeyError(key)
        found_items, found_scores = frombuffer(value, "<i4", k), frombuffer(value, "<f4", k, 4 * k)
        found_items[-1], found_scores[-1]
        return found_items, found_scores

    return lmdb


def _get(reader: sharedrec.Reader) -> Timed:
    get = reader.get

    def sharedrec_get(key: int) -> Any:
        found = get(COLLECTION, key)
        found.items[-1], found.scores[-1]
        return found

    return sharedrec_get


def _steps(reader: sharedrec.Reader) -> dict[str, Timed]:
    """``Reader.get``'s path for a whole collection, cumulatively, step by step.

    Each function does its step and every one before it, inline; the names say what each
    adds. They read the reader's private attributes: an ``AttributeError`` here means the
    path changed (see the module docstring).
    """
    col = reader._v.ranked.get(COLLECTION)
    if type(col) is not Whole:
        raise AttributeError(f"{COLLECTION!r} is not a whole collection")
    sorted_ = col.index._sorted
    for owner, attribute in ((sorted_, "_fences"), (sorted_, "_rpc"), (sorted_, "_valid"), (col, "lengths")):
        getattr(owner, attribute)  # the attributes the steps read: missing ones raise here
    name = COLLECTION

    def call(key: int) -> Any:
        return key

    def version(key: int) -> Any:
        v = reader._v
        reader._lookups += 1
        col = v.ranked.get(name)
        return type(col) is Whole

    def key_check(key: int) -> Any:
        v = reader._v
        reader._lookups += 1
        col = v.ranked.get(name)
        if type(col) is Whole:
            if type(key) is not int:
                key = int_key(key)
            return INT64_MIN <= key <= INT64_MAX
        return None

    def key_chunk(key: int) -> Any:
        v = reader._v
        reader._lookups += 1
        col = v.ranked.get(name)
        if type(col) is Whole:
            if type(key) is not int:
                key = int_key(key)
            if INT64_MIN <= key <= INT64_MAX:
                s = col.index._sorted
                fences = s._fences
                chunk = 0 if fences is None else bisect_right(fences, key) - 1
                return s._valid(chunk)
        return None

    def exact(key: int) -> Any:
        v = reader._v
        reader._lookups += 1
        col = v.ranked.get(name)
        if type(col) is Whole:
            if type(key) is not int:
                key = int_key(key)
            if INT64_MIN <= key <= INT64_MAX:
                s = col.index._sorted
                fences = s._fences
                chunk = 0 if fences is None else bisect_right(fences, key) - 1
                view = s._valid(chunk)
                position = int(view.searchsorted(key))
                if position < len(view) and view[position] == key:
                    return chunk * s._rpc + position
        raise KeyError(key)

    def locate(key: int) -> Any:
        v = reader._v
        reader._lookups += 1
        col = v.ranked.get(name)
        if type(col) is Whole:
            if type(key) is not int:
                key = int_key(key)
            if INT64_MIN <= key <= INT64_MAX:
                s = col.index._sorted
                fences = s._fences
                chunk = 0 if fences is None else bisect_right(fences, key) - 1
                view = s._valid(chunk)
                position = int(view.searchsorted(key))
                if position < len(view) and view[position] == key:
                    row = chunk * s._rpc + position
                    lengths = col.lengths
                    n = col.uniform if lengths is None else int(lengths.row(row))
                    return n, divmod(row, col.rows_per_chunk)
        raise KeyError(key)

    def views(key: int) -> Any:
        v = reader._v
        reader._lookups += 1
        col = v.ranked.get(name)
        if type(col) is Whole:
            if type(key) is not int:
                key = int_key(key)
            if INT64_MIN <= key <= INT64_MAX:
                s = col.index._sorted
                fences = s._fences
                chunk = 0 if fences is None else bisect_right(fences, key) - 1
                view = s._valid(chunk)
                position = int(view.searchsorted(key))
                if position < len(view) and view[position] == key:
                    row = chunk * s._rpc + position
                    lengths = col.lengths
                    n = col.uniform if lengths is None else int(lengths.row(row))
                    chunk, offset = divmod(row, col.rows_per_chunk)
                    items, scores = col.rows
                    if n == col.spec.width:
                        found_items, found_scores = items.chunk(chunk)[offset], scores.chunk(chunk)[offset]
                    else:
                        found_items = items.chunk(chunk)[offset, :n]
                        found_scores = scores.chunk(chunk)[offset, :n]
                    found_items[-1], found_scores[-1]
                    return found_items, found_scores
        raise KeyError(key)

    def ranked_list(key: int) -> Any:
        v = reader._v
        reader._lookups += 1
        col = v.ranked.get(name)
        if type(col) is Whole:
            if type(key) is not int:
                key = int_key(key)
            if INT64_MIN <= key <= INT64_MAX:
                s = col.index._sorted
                fences = s._fences
                chunk = 0 if fences is None else bisect_right(fences, key) - 1
                view = s._valid(chunk)
                position = int(view.searchsorted(key))
                if position < len(view) and view[position] == key:
                    row = chunk * s._rpc + position
                    lengths = col.lengths
                    n = col.uniform if lengths is None else int(lengths.row(row))
                    chunk, offset = divmod(row, col.rows_per_chunk)
                    items, scores = col.rows
                    if n == col.spec.width:
                        found = RankedList(items.chunk(chunk)[offset], scores.chunk(chunk)[offset], name)
                    else:
                        found = RankedList(
                            items.chunk(chunk)[offset, :n], scores.chunk(chunk)[offset, :n], name
                        )
                    found.items[-1], found.scores[-1]
                    return found
        raise KeyError(key)

    return {
        "call": call,
        "version and collection (reader._v, ranked.get, counter)": version,
        "key type and int64 range check": key_check,
        "key chunk (fences bisect, chunk view)": key_chunk,
        "searchsorted and exact match": exact,
        "list length, row to chunk and offset": locate,
        "two row views (answer read)": views,
        "RankedList": ranked_list,
    }


def _full_steps(reader: sharedrec.Reader) -> dict[str, Timed]:
    """``Reader.get``'s short path (every key and row of the collection mapped, so
    ``Whole.full`` is set), cumulatively, step by step, as `_steps` does for the long one."""
    col = reader._v.ranked.get(COLLECTION)
    if type(col) is not Whole or col.full is None:
        raise AttributeError(f"{COLLECTION!r} is not a whole collection on the short path")
    name = COLLECTION

    def call(key: int) -> Any:
        return key

    def version(key: int) -> Any:
        v = reader._v
        reader._lookups += 1
        col = v.ranked.get(name)
        stored = col
        if type(col) is not Whole:  # get's branch for partitions and deltas
            return None
        return type(stored) is Whole

    def checks(key: int) -> Any:
        v = reader._v
        reader._lookups += 1
        col = v.ranked.get(name)
        stored = col
        if type(col) is not Whole:  # get's branch for partitions and deltas
            raise KeyError(key)
        if type(stored) is Whole:
            full = stored.full
            if full is not None and type(key) is int:
                _search, _ints, _count, _items, _scores = full
                return INT64_MIN <= key <= INT64_MAX
        return None

    def search(key: int) -> Any:
        v = reader._v
        reader._lookups += 1
        col = v.ranked.get(name)
        stored = col
        if type(col) is not Whole:  # get's branch for partitions and deltas
            raise KeyError(key)
        if type(stored) is Whole:
            full = stored.full
            if full is not None and type(key) is int:
                search, _ints, _count, _items, _scores = full
                if INT64_MIN <= key <= INT64_MAX:
                    return int(search(key))
        return None

    def exact(key: int) -> Any:
        v = reader._v
        reader._lookups += 1
        col = v.ranked.get(name)
        stored = col
        if type(col) is not Whole:  # get's branch for partitions and deltas
            raise KeyError(key)
        if type(stored) is Whole:
            full = stored.full
            if full is not None and type(key) is int:
                search, ints, count, _items, _scores = full
                if INT64_MIN <= key <= INT64_MAX:
                    at = int(search(key))
                    if at < count and ints[at] == key:
                        return at
        raise KeyError(key)

    def views(key: int) -> Any:
        v = reader._v
        reader._lookups += 1
        col = v.ranked.get(name)
        stored = col
        if type(col) is not Whole:  # get's branch for partitions and deltas
            raise KeyError(key)
        if type(stored) is Whole:
            full = stored.full
            if full is not None and type(key) is int:
                search, ints, count, items, scores = full
                if INT64_MIN <= key <= INT64_MAX:
                    at = int(search(key))
                    if at < count and ints[at] == key:
                        found_items, found_scores = items[at], scores[at]
                        found_items[-1], found_scores[-1]
                        return found_items, found_scores
        raise KeyError(key)

    def ranked_list(key: int) -> Any:
        v = reader._v
        reader._lookups += 1
        col = v.ranked.get(name)
        stored = col
        if type(col) is not Whole:  # get's branch for partitions and deltas
            raise KeyError(key)
        if type(stored) is Whole:
            full = stored.full
            if full is not None and type(key) is int:
                search, ints, count, items, scores = full
                if INT64_MIN <= key <= INT64_MAX:
                    at = int(search(key))
                    if at < count and ints[at] == key:
                        found: RankedList = _Found()
                        found.items, found.scores = items[at], scores[at]
                        found.source = name
                        found.items[-1], found.scores[-1]
                        return found
        raise KeyError(key)

    return {
        "call": call,
        "version and collection (reader._v, ranked.get, counter)": version,
        "short-path views, key type and int64 range check": checks,
        "searchsorted over every key": search,
        "searchsorted and exact match": exact,
        "two row views (answer read)": views,
        "RankedList": ranked_list,
    }


def test_get_breakdown(
    benchmark: BenchmarkFixture,
    workload: Workload,
    settings: Settings,
    request: pytest.FixtureRequest,
    delta_store: DeltaStore,
    partitioned_store: Path,
    small_chunk_store: Path,
) -> None:
    """Best p50 of each function over alternating rounds; ratios and the steps (``[name,
    cumulative p50 in ns]``, the last one ``get`` itself) in extra_info."""
    benchmark.group = f"get-breakdown-{workload.n_users}"
    keys = workload.sample_keys(settings.rotation, seed=11).tolist()
    calls = settings.latency_calls
    with ExitStack() as stack:
        reader = stack.enter_context(sharedrec.open(workload.store, create=False).reader())
        floor = _floor(workload)
        timed: dict[str, Timed] = {"floor": floor}
        lmdb = _lmdb(workload, request, stack)
        if lmdb is not None:
            timed["lmdb"] = lmdb
        timed["get"] = _get(reader)
        small = stack.enter_context(sharedrec.open(small_chunk_store, create=False).reader())
        timed["get, 4 MiB chunks"] = _get(small)
        over_delta = stack.enter_context(sharedrec.open(delta_store.path, create=False).reader())
        timed["get, delta chain"] = _get(over_delta)
        partitioned = stack.enter_context(sharedrec.open(partitioned_store, create=False).reader())
        timed["get, 8 partitions"] = _get(partitioned)
        for key in keys:  # every key chunk and row mapped: get takes its short path
            for each in (reader, small, over_delta, partitioned):
                each.get(COLLECTION, key)
        sample = np.asarray(keys[:200])
        want = delta_store.expected(workload, sample)
        for key, items in zip(sample.tolist(), want, strict=True):
            np.testing.assert_array_equal(over_delta.get(COLLECTION, key).items, items)
        on_maps = _floor_on_maps(reader)
        if on_maps is not None:
            timed["floor on sharedrec's maps"] = on_maps
        short = False
        try:
            col = reader._v.ranked.get(COLLECTION)
            short = type(col) is Whole and col.full is not None
            steps = _full_steps(reader) if short else _steps(reader)
            benchmark.extra_info["path"] = "short (every chunk mapped)" if short else "chunk by chunk"
        except AttributeError as error:
            steps = {}
            benchmark.extra_info["steps_skipped"] = f"the path changed: {error}"
        timed.update({f"step: {name}": fn for name, fn in steps.items()})

        # Every function gives the floor's answer (the call and partial steps give none).
        for key in keys[:200]:
            want_items, want_scores = workload.expected(np.asarray([key]))
            for name, fn in timed.items():
                if name in ANSWERS:
                    got = fn(key)
                    got_items, got_scores = (got.items, got.scores) if isinstance(got, RankedList) else got
                    np.testing.assert_array_equal(got_items, want_items[0], err_msg=name)
                    np.testing.assert_array_equal(got_scores, want_scores[0], err_msg=name)
        exact = steps.get("searchsorted and exact match")
        if exact is not None:
            whole = reader._v.ranked.get(COLLECTION)
            assert isinstance(whole, Whole)
            np.testing.assert_array_equal(
                [exact(key) for key in keys[:200]], [whole.index.find(key) for key in keys[:200]]
            )
        for fn in timed.values():  # warm: every chunk mapped, every page touched
            for key in keys:
                fn(key)
        # The stores were just written: their dirty pages would be written back during the
        # rounds, at moments that favour no one.
        os.sync()

        best: dict[str, float] = {}
        for _ in range(ROUNDS):
            for name, fn in timed.items():
                p50 = _latencies(fn, keys, calls)["p50_ns"]
                best[name] = min(best.get(name, p50), p50)

        share = _huge_page_share(
            workload.npy, workload.store, small_chunk_store, delta_store.path, partitioned_store
        )
        rotation = itertools.cycle(keys)
        get = timed["get"]
        benchmark(lambda: get(next(rotation)))

    info: dict[str, Any] = {
        "n_users": workload.n_users,
        "k": workload.k,
        "statistic": f"best p50 of {ROUNDS} alternating rounds of {calls} individually timed calls",
        "floor_p50_ns": best["floor"],
        "get_p50_ns": best["get"],
        "get_over_floor": best["get"] / best["floor"],
    }
    lines = [f"get breakdown, {workload.n_users} users ({info['statistic']}):"]
    lines.append(f"  floor (ndarray views + searchsorted)   {best['floor'] / 1e3:6.2f} µs")
    if "lmdb" in best:
        info.update(lmdb_p50_ns=best["lmdb"], get_over_lmdb=best["get"] / best["lmdb"])
        lines.append(f"  LMDB (buffers=True, np.frombuffer)     {best['lmdb'] / 1e3:6.2f} µs")
    if "floor on sharedrec's maps" in best:
        info["floor_on_maps_p50_ns"] = best["floor on sharedrec's maps"]
        info["get_over_floor_on_maps"] = best["get"] / best["floor on sharedrec's maps"]
        lines.append(f"  floor on sharedrec's maps              {info['floor_on_maps_p50_ns'] / 1e3:6.2f} µs")
    if share is not None:
        info["huge_page_share"] = {
            "floor": share[str(workload.npy)],
            "sharedrec": share[str(workload.store)],
            "sharedrec_4mib_chunks": share[str(small_chunk_store)],
            "delta": share[str(delta_store.path)],
            "partitioned": share[str(partitioned_store)],
        }
        lines.append(
            "  resident maps in 2 MiB pages: floor {floor:.0%}, sharedrec {sharedrec:.0%}, "
            "sharedrec with 4 MiB chunks {sharedrec_4mib_chunks:.0%}, delta {delta:.0%}, "
            "8 partitions {partitioned:.0%}".format(**info["huge_page_share"])
        )
    lines.append(f"  sharedrec get                          {best['get'] / 1e3:6.2f} µs")
    for name, label in (
        ("get, 4 MiB chunks", "small_chunks"),
        ("get, delta chain", "delta"),
        ("get, 8 partitions", "partitioned"),
    ):
        info[f"{label}_p50_ns"] = best[name]
        info[f"{label}_over_floor"] = best[name] / best["floor"]
        lines.append(
            f"  sharedrec {name:<28} {best[name] / 1e3:6.2f} µs (÷ floor {best[name] / best['floor']:.2f})"
        )
    previous = 0.0
    rows: list[list[Any]] = []
    for name in steps:
        cumulative = best[f"step: {name}"]
        rows.append([name, cumulative])
        lines.append(
            f"  + {name:<52} {(cumulative - previous) / 1e3:+6.2f} µs (cumulative {cumulative / 1e3:.2f})"
        )
        previous = cumulative
    if steps:
        rest = SHORT_CALL_AND_TRY if short else CALLS_AND_TRY
        rows.append([rest, best["get"]])
        info["steps"] = rows
        lines.append(f"  + {rest:<52} {(best['get'] - previous) / 1e3:+6.2f} µs")
    lines.append(f"  get / floor = {info['get_over_floor']:.2f}")
    if "get_over_floor_on_maps" in info:
        lines.append(f"  get / floor on sharedrec's maps = {info['get_over_floor_on_maps']:.2f}")
    if "lmdb" in best:
        lines.append(f"  get / LMDB  = {info['get_over_lmdb']:.2f}")
    benchmark.extra_info.update(info)
    print("\n" + "\n".join(lines))
