"""Key types and single-list fallbacks: a key never reaches another key's list.

Every entry point (``get``, ``get_many``, ``vector``, ``vectors`` over whole, delta-chained and
partitioned collections, and publishing) reads a key by its exact integer value: numpy
integers of any width match, values outside int64 never do (and are never wrapped onto a
published key), bools are refused, a str key that is not valid Unicode is a miss or
`InvalidInput`. A fallback collection serves its one list to every key only when it was
published as such (``serve_to_all=True``), never because it happens to hold one key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import sharedrec
from sharedrec.errors import CorruptVersion, InvalidInput, KeyNotFound

from ._support import Tally

INT_KEYS = [
    -(2**63),
    -(2**62),
    -129,
    -1,
    0,
    1,
    5,
    127,
    128,
    255,
    256,
    2**31 - 1,
    2**31,
    2**32,
    2**53,
    2**53 + 1,
    2**60,
    2**60 + 1,
    2**60 + 2,
    2**63 - 2,
    2**63 - 1,
]
"""Neighbours that one float64 cannot tell apart, and every integer dtype's bounds."""

STR_KEYS = ["a", "b", "", "ключ", "😀", "a\u0000b"]
INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
OUTSIDE = [2**64 - 1, 2**63, 2**64, -(2**63) - 1, -(2**64)]
"""Python ints no int64 key can equal; 2**64 - 1 wraps onto the published key -1."""

SURROGATES = ["\ud800", "a\udcffb", "\udfff\ud800"]
FILLER = [10**6 + 3 * i for i in range(300)]
"""More keys after those tested, so that the int64 key array spans several chunks."""
ALL_INT_KEYS = INT_KEYS + FILLER


def _items(row: int, tag: int) -> list[int]:
    return [tag * 1000 + row]


def _publish_full(store: sharedrec.RecommendationStore) -> str:
    n, m = len(ALL_INT_KEYS), len(STR_KEYS)
    with store.publish(guards=[], chunk_bytes=1024, progress=False) as draft:  # several key chunks
        draft.add_ranked("home", ALL_INT_KEYS, [_items(i, 1) for i in range(n)], [[1.0]] * n)
        draft.add_vectors(
            "emb", ALL_INT_KEYS, np.arange(n, dtype=np.float32)[:, None] + np.zeros(2, np.float32)
        )
        draft.add_ranked("words", STR_KEYS, [_items(i, 1) for i in range(m)], [[1.0]] * m)
        draft.add_vectors("wemb", STR_KEYS, np.arange(m, dtype=np.float32)[:, None] + np.zeros(2, np.float32))
    return draft.version_id


def _publish_delta(store: sharedrec.RecommendationStore) -> str:
    """Every other list changes: half the keys live in the delta, half in its base."""
    n, m = len(ALL_INT_KEYS), len(STR_KEYS)
    ints = [_items(i, 2 if i % 2 else 1) for i in range(n)]
    strs = [_items(i, 2 if i % 2 else 1) for i in range(m)]
    with store.publish(guards=[], chunk_bytes=1024, progress=False, delta=True) as draft:
        draft.add_ranked("home", ALL_INT_KEYS, ints, [[1.0]] * n)
        draft.add_vectors(
            "emb", ALL_INT_KEYS, np.arange(n, dtype=np.float32)[:, None] + np.zeros(2, np.float32)
        )
        draft.add_ranked("words", STR_KEYS, strs, [[1.0]] * m)
        draft.add_vectors("wemb", STR_KEYS, np.arange(m, dtype=np.float32)[:, None] + np.zeros(2, np.float32))
    manifest = store.manifest(draft.version_id)
    assert manifest.base is not None and manifest.collections["home"].delta
    return draft.version_id


def _publish_partitioned(store: sharedrec.RecommendationStore) -> str:
    handle = store.begin_publish(partitions=3, chunk_bytes=1024)
    receipts = []
    for name, keys in (("home", ALL_INT_KEYS), ("words", STR_KEYS)):
        owners = handle.partition_of(keys)
        for part in range(3):
            rows = np.flatnonzero(owners == part).tolist()
            sub = [keys[i] for i in rows]
            receipts.append(
                handle.write_ranked(name, part, sub, [_items(i, 3) for i in rows], [[1.0]] * len(rows))
            )
            vectors = np.asarray(rows, dtype=np.float32)[:, None] + np.zeros(2, np.float32)
            receipts.append(handle.write_vectors("emb" if name == "home" else "wemb", part, sub, vectors))
    version = store.commit_publish(handle, receipts, guards=[])
    assert store.manifest(version).collections["home"].partitions is not None
    return version


@pytest.fixture(scope="module")
def readers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[sharedrec.Reader, int]]:
    """A reader of each layout, with the tag of the first list of odd rows."""
    store = sharedrec.open(tmp_path_factory.mktemp("keys") / "store", create=True)
    full = _publish_full(store)
    delta = _publish_delta(store)
    partitioned = _publish_partitioned(store)
    return {
        "whole": (store.reader(version=full, lease=False, refresh_interval=None), 1),
        "delta": (store.reader(version=delta, lease=False, refresh_interval=None), 2),
        "partitioned": (store.reader(version=partitioned, lease=False, refresh_interval=None), 3),
    }


LAYOUTS = ["whole", "delta", "partitioned"]


def _expected(layout: str, odd_tag: int, row: int) -> list[int]:
    tag = 1 if layout == "delta" and row % 2 == 0 else odd_tag
    return _items(row, tag)


def _fits(value: int, dtype: Any) -> bool:
    info = np.iinfo(dtype)
    return int(info.min) <= value <= int(info.max)


# -- point 4: numpy integers, int64 bounds --------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_numpy_integer_keys_match_by_exact_value(
    readers: dict[str, tuple[sharedrec.Reader, int]], layout: str, tally: Tally
) -> None:
    reader, tag = readers[layout]
    tally.scenarios += 1
    for row, key in enumerate(INT_KEYS):
        for dtype in [int, *INT_DTYPES]:
            if dtype is not int and not _fits(key, dtype):
                continue
            typed: Any = dtype(key)
            recs = reader.get("home", typed)
            assert (recs.items.tolist(), recs.source) == (_expected(layout, tag, row), "home"), (dtype, key)
            assert reader.vector("emb", typed).tolist() == [row, row], (dtype, key)
            tally.answers_checked += 2
    for dtype in INT_DTYPES:
        rows = [row for row, key in enumerate(INT_KEYS) if _fits(key, dtype)]
        query = np.array([INT_KEYS[row] for row in rows], dtype=dtype)
        items, _, found = reader.get_many("home", query)
        assert found.all() and items[:, 0].tolist() == [_expected(layout, tag, r)[0] for r in rows], dtype
        vectors, found = reader.vectors("emb", query)
        assert found.all() and vectors[:, 0].tolist() == rows, dtype
        tally.answers_checked += 2 * len(rows)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_keys_outside_int64_never_match(
    readers: dict[str, tuple[sharedrec.Reader, int]], layout: str, tally: Tally
) -> None:
    reader, tag = readers[layout]
    tally.scenarios += 1
    outside: list[Any] = [*OUTSIDE, np.uint64(2**64 - 1), np.uint64(2**63)]
    for key in outside:
        with pytest.raises(KeyNotFound):
            reader.get("home", key)
        with pytest.raises(KeyNotFound):
            reader.vector("emb", key)
        tally.bad_inputs += 2
    # A uint64 array is read exactly: 2**64 - 1 is not the key -1 it would wrap to.
    query = np.array([2**64 - 1, 2**63, 1, 2**63 - 1], dtype=np.uint64)
    items, _, found = reader.get_many("home", query)
    assert found.tolist() == [False, False, True, True]
    assert items[2:, 0].tolist() == [_expected(layout, tag, 5)[0], _expected(layout, tag, 20)[0]]
    assert (items[:2] == -1).all()
    vectors, found = reader.vectors("emb", query)
    assert found.tolist() == [False, False, True, True] and np.isnan(vectors[:2]).all()
    # Python ints outside int64 among ints that fit: misses, in place.
    mixed = [2**64 - 1, -1, -(2**63) - 1, 2**63 - 1, 2**64]
    items, _, found = reader.get_many("home", mixed)
    assert found.tolist() == [False, True, False, True, False]
    assert items[[1, 3], 0].tolist() == [_expected(layout, tag, 3)[0], _expected(layout, tag, 20)[0]]
    assert reader.vectors("emb", mixed)[1].tolist() == [False, True, False, True, False]
    mixed_numpy = np.array([np.uint64(2**64 - 1), np.int64(-1), 2**70], dtype=object)
    assert reader.get_many("home", mixed_numpy)[2].tolist() == [False, True, False]
    tally.answers_checked += 20


_KEY_PICKS = st.sampled_from(INT_KEYS).flatmap(lambda k: st.sampled_from([k - 1, k, k + 1]))
_VALUES = _KEY_PICKS | st.integers(-(2**65), 2**65)


@pytest.mark.parametrize("layout", ["whole", "partitioned"])
def test_any_integer_in_any_dtype_finds_exactly_its_key(
    readers: dict[str, tuple[sharedrec.Reader, int]], layout: str, tally: Tally
) -> None:
    reader, tag = readers[layout]
    # Every published key, the filler too: a drawn value may be one of them (10**6 is).
    rows = {key: row for row, key in enumerate(ALL_INT_KEYS)}
    tally.scenarios += 1

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(_VALUES, min_size=1, max_size=6), st.sampled_from([int, *INT_DTYPES]))
    @example([FILLER[0]], int)  # a filler key: found, not KeyNotFound
    def run(values: list[int], dtype: Any) -> None:
        if dtype is not int:
            values = [value for value in values if _fits(value, dtype)]
            if not values:
                return
        want = [rows.get(value, -1) for value in values]
        for value, row in zip(values, want, strict=True):
            key = dtype(value)
            if row < 0:
                with pytest.raises(KeyNotFound):
                    reader.get("home", key)
            else:
                assert reader.get("home", key).items.tolist() == _expected(layout, tag, row)
        query: Any = values if dtype is int else np.array(values, dtype=dtype)
        items, _, found = reader.get_many("home", query)
        assert found.tolist() == [row >= 0 for row in want]
        hits = [(i, row) for i, row in enumerate(want) if row >= 0]
        assert [int(items[i, 0]) for i, _ in hits] == [_expected(layout, tag, row)[0] for _, row in hits]
        tally.answers_checked += 2 * len(values)

    run()


def test_publish_reads_keys_by_exact_value(tmp_path: Path, tally: Tally) -> None:
    store = sharedrec.open(tmp_path / "store", create=True)
    tally.scenarios += 1
    keys: Any
    for keys in (
        [2**63, 1],
        [np.uint64(2**64 - 1), 3],
        np.array([1, 2**63], dtype=np.uint64),
        [-(2**63) - 1, 0],
    ):
        tally.bad_inputs += 1
        with pytest.raises(InvalidInput, match="int64 range"), store.publish(guards=[]) as draft:
            draft.add_ranked("home", keys, [[1], [2]], [[1.0], [1.0]])
    # numpy scalars of mixed signedness, each read by its exact value (never through float64)
    keys = [np.uint64(2**63 - 1), np.int64(-1), np.uint64(2**53 + 1), np.int8(-128), 2**53]
    with store.publish(guards=[]) as draft:
        draft.add_ranked("home", keys, [[i] for i in range(5)], [[1.0]] * 5)
    reader = store.reader(lease=False)
    for i, key in enumerate(keys):
        assert reader.get("home", int(key)).items.tolist() == [i]
    tally.answers_checked += len(keys)


# -- point 4: bools are refused everywhere ---------------------------------------------------

BOOL_KEYS: list[Any] = [True, False, np.True_, np.bool_(False)]
BOOL_BATCHES: list[Any] = [
    [True, 5],
    [5, False],
    [np.True_, 5],
    np.array([True, False]),
    np.array([True, 5], dtype=object),
]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_bool_keys_are_refused_on_lookup(
    readers: dict[str, tuple[sharedrec.Reader, int]], layout: str, tally: Tally
) -> None:
    reader, _ = readers[layout]
    tally.scenarios += 1
    for key in BOOL_KEYS:
        for lookup in (lambda k: reader.get("home", k), lambda k: reader.vector("emb", k)):
            tally.bad_inputs += 1
            with pytest.raises(InvalidInput, match="bool"):
                lookup(key)
    for keys in BOOL_BATCHES:
        for many in (lambda k: reader.get_many("home", k), lambda k: reader.vectors("emb", k)):
            tally.bad_inputs += 1
            with pytest.raises(InvalidInput, match="bool"):
                many(keys)


def test_bool_keys_are_refused_at_publish(tmp_path: Path, tally: Tally) -> None:
    store = sharedrec.open(tmp_path / "store", create=True)
    tally.scenarios += 1
    for keys in BOOL_BATCHES:
        tally.bad_inputs += 3
        with pytest.raises(InvalidInput, match="bool"), store.publish(guards=[]) as draft:
            draft.add_ranked("home", keys, [[1], [2]], [[1.0], [1.0]])
        with pytest.raises(InvalidInput, match="bool"), store.publish(guards=[]) as draft:
            draft.add_vectors("emb", keys, np.ones((2, 2), np.float32))
        with pytest.raises(InvalidInput, match="bool"):
            sharedrec.partition_of(keys, 4)
    handle = store.begin_publish(partitions=1)
    with pytest.raises(InvalidInput, match="bool"):
        handle.write_ranked("home", 0, [True, 7], [[1], [2]], [[1.0], [1.0]])
    with pytest.raises(InvalidInput, match="bool"):
        handle.write_vectors("emb", 0, cast(Any, [7, np.True_]), np.ones((2, 2), np.float32))
    assert store.current() is None  # nothing went live


# -- point 4: str keys that are not valid Unicode ----------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_lone_surrogates_are_misses_on_lookup(
    readers: dict[str, tuple[sharedrec.Reader, int]], layout: str, tally: Tally
) -> None:
    reader, tag = readers[layout]
    tally.scenarios += 1
    for key in SURROGATES:
        with pytest.raises(KeyNotFound):
            reader.get("words", key)
        with pytest.raises(KeyNotFound):
            reader.vector("wemb", key)
        tally.bad_inputs += 2
    query = [SURROGATES[0], "a", SURROGATES[1], "😀"]
    items, _, found = reader.get_many("words", query)
    assert found.tolist() == [False, True, False, True]
    assert items[[1, 3], 0].tolist() == [_expected(layout, tag, 0)[0], _expected(layout, tag, 4)[0]]
    vectors, found = reader.vectors("wemb", query)
    assert found.tolist() == [False, True, False, True] and vectors[[1, 3], 0].tolist() == [0, 4]
    tally.answers_checked += 8


def test_lone_surrogates_are_refused_at_publish(tmp_path: Path, tally: Tally) -> None:
    store = sharedrec.open(tmp_path / "store", create=True)
    tally.scenarios += 1
    for key in SURROGATES:
        tally.bad_inputs += 3
        with pytest.raises(InvalidInput, match="UTF-8"), store.publish(guards=[]) as draft:
            draft.add_ranked("words", ["ok", key], [[1], [2]], [[1.0], [1.0]])
        with pytest.raises(InvalidInput, match="UTF-8"), store.publish(guards=[]) as draft:
            draft.add_vectors("wemb", np.array([key, "ok"]), np.ones((2, 2), np.float32))
        with pytest.raises(InvalidInput, match="UTF-8"):
            sharedrec.partition_of([key], 4)
    handle = store.begin_publish(partitions=1)
    with pytest.raises(InvalidInput, match="UTF-8"):
        handle.write_ranked("words", 0, ["\ud800"], [[1]], [[1.0]])
    assert store.current() is None


# -- point 4: floats stay refused --------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_float_keys_are_refused(
    readers: dict[str, tuple[sharedrec.Reader, int]], layout: str, tally: Tally
) -> None:
    reader, _ = readers[layout]
    tally.scenarios += 1
    for key in (1.0, np.float64(5.0), np.float32(1.0)):
        tally.bad_inputs += 2
        with pytest.raises(InvalidInput, match="int64 keys"):
            reader.get("home", key)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="int64 keys"):
            reader.vector("emb", key)  # type: ignore[arg-type]
    for keys in ([1.0, 5.0], [1, 5.5], np.array([1.0]), np.array([1, 2.5], dtype=object)):
        tally.bad_inputs += 2
        with pytest.raises(InvalidInput, match="keys must be"):
            reader.get_many("home", keys)
        with pytest.raises(InvalidInput, match="keys must be"):
            reader.vectors("emb", keys)


# -- point 14: a single-list fallback is declared, never inferred -------------------------------


def _publish_fallbacks(store: sharedrec.RecommendationStore, *, declared: bool, delta: bool = False) -> str:
    options: dict[str, Any] = {"serve_to_all": True} if declared else {}
    with store.publish(guards=[], delta=delta, progress=False) as draft:
        draft.add_ranked("home", [1, 2], [[10], [20]], [[1.0], [1.0]], fallbacks=["by_country", "popular"])
        draft.add_ranked("by_country", ["DE"], [[40, 41]], [[1.0, 0.5]])
        draft.add_ranked("popular", [3], [[30, 31, 32]], [[3.0, 2.0, 1.0]], **options)
    return draft.version_id


def test_one_key_fallback_serves_only_its_key(tmp_path: Path, tally: Tally) -> None:
    store = sharedrec.open(tmp_path / "store", create=True)
    tally.scenarios += 1
    first = _publish_fallbacks(store, declared=False)
    with store.publish(guards=[], delta=True, progress=False) as draft:  # inherits every collection
        draft.add_ranked(
            "home", [1, 2, 4], [[10], [20], [40]], [[1.0]] * 3, fallbacks=["by_country", "popular"]
        )
    for version in (first, draft.version_id):
        reader = store.reader(version=version, lease=False)
        for unknown in (77, 0, -(2**63), 2**63 - 1):
            with pytest.raises(KeyNotFound):
                reader.get("home", unknown)  # neither popular's key 3 nor DE's list
            tally.answers_checked += 1
        assert reader.get("home", 3).items.tolist() == [30, 31, 32]  # popular holds key 3
        recs = reader.get("home", 77, fallback_keys={"by_country": "DE"})
        assert (recs.source, recs.items.tolist()) == ("by_country", [40, 41])
        with pytest.raises(KeyNotFound):
            reader.get("home", 77, fallback_keys={"by_country": "FR"})
        with pytest.raises(InvalidInput, match="bool"):
            reader.get("home", 77, fallback_keys={"by_country": True})
        assert store.manifest(version).collections["popular"].serve_to_all is False
        reader.close()


def test_declared_single_list_serves_everyone(tmp_path: Path, tally: Tally) -> None:
    store = sharedrec.open(tmp_path / "store", create=True)
    tally.scenarios += 1
    first = _publish_fallbacks(store, declared=True)
    raw = json.loads((Path(store.location) / "versions" / first / "manifest.json").read_bytes())
    assert raw["collections"]["popular"]["serve_to_all"] is True
    assert "serve_to_all" not in raw["collections"]["home"]  # undeclared: not written at all
    with store.publish(guards=[], delta=True, progress=False) as draft:
        draft.add_ranked(
            "home", [1, 2, 4], [[10], [20], [40]], [[1.0]] * 3, fallbacks=["by_country", "popular"]
        )
    compacted = store.compact()
    for version in (first, draft.version_id, compacted):
        assert store.manifest(version).collections["popular"].serve_to_all is True
        reader = store.reader(version=version, lease=False)
        for unknown in (77, 0, 2**63 - 1):
            recs = reader.get("home", unknown, k=2)
            assert (recs.source, recs.items.tolist()) == ("popular", [30, 31])
            tally.answers_checked += 1
        assert reader.get("home", 77, fallback_keys={"by_country": "DE"}).source == "by_country"
        with pytest.raises(KeyNotFound):
            reader.get("popular", 77)  # asked directly, it is a collection like any other
        reader.close()


def test_serve_to_all_needs_exactly_one_key(tmp_path: Path) -> None:
    store = sharedrec.open(tmp_path / "store", create=True)
    with pytest.raises(InvalidInput, match="serve_to_all"), store.publish(guards=[]) as draft:
        draft.add_ranked("popular", [1, 2], [[1], [2]], [[1.0], [1.0]], serve_to_all=True)
    version = _publish_fallbacks(store, declared=True)
    path = Path(store.location) / "versions" / version / "manifest.json"
    manifest = json.loads(path.read_bytes())
    manifest["collections"]["home"]["serve_to_all"] = True  # two keys: not a single list
    path.write_text(json.dumps(manifest, indent=1))
    with pytest.raises(CorruptVersion, match="serve_to_all"):
        store.reader(version=version, lease=False, verify="lazy")
