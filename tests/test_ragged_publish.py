"""Ragged input stored ragged is never padded in memory: checked, sorted and written flat."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import sharedrec
from sharedrec.errors import InvalidInput
from sharedrec.write import validate
from sharedrec.write.arrays import ragged_pays

from conftest import version_folders

SHORT, LONG, N = 10, 100_000, 1_000
"""The issue's skewed case: one 100k-item list among 1,000 ten-item lists (int32/float32)."""


def _skewed(n: int = N, long: int = LONG) -> tuple[Any, list[Any], list[Any]]:
    keys = np.arange(n + 1, dtype=np.int64) * 3
    items = [np.arange(SHORT, dtype=np.int32) + i for i in range(n + 1)]
    items[n // 2] = np.arange(long, dtype=np.int32)  # the long list, in the middle
    scores = [np.linspace(1.0, 0.0, len(row), dtype=np.float32) for row in items]
    return keys, items, scores


@pytest.fixture
def traced() -> Iterator[Callable[[], int]]:
    """The peak of traced allocations (numpy's included) since the fixture started."""
    tracemalloc.start()
    try:
        yield lambda: tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_issues_skewed_case_is_never_padded(
    store: sharedrec.RecommendationStore, traced: Callable[[], int]
) -> None:
    keys, items, scores = _skewed()
    padded = len(items) * LONG * (4 + 4)  # n x width x (item + score itemsize): 800 MB
    tracemalloc.reset_peak()
    with store.publish() as draft:
        draft.add_ranked("skew", keys, items, scores)
    peak = traced()
    assert peak < padded / 10, f"peak {peak:,} bytes for {padded:,} bytes padded"
    spec = store.manifest(draft.version_id).collections["skew"]
    assert spec.layout == "ragged" and spec.width == LONG
    reader = store.reader()
    for key, row, score in zip(keys.tolist(), items, scores, strict=True):
        got = reader.get("skew", key)
        assert np.array_equal(got.items, row) and np.array_equal(got.scores, score)


@pytest.mark.parametrize("kind", ["int", "str"])
def test_a_delta_over_a_ragged_base_is_compared_flat(
    store: sharedrec.RecommendationStore, traced: Callable[[], int], kind: str
) -> None:
    numbers, items, scores = _skewed()
    keys: list[Any] = numbers.tolist() if kind == "int" else [f"u{key}" for key in numbers.tolist()]
    store.publish_ranked("skew", keys, items, scores)
    lists = dict(zip(keys, zip(items, scores, strict=True), strict=True))
    lists.pop(keys[3])  # removed
    lists[keys[500]] = (
        np.arange(LONG - 1, dtype=np.int32) + 3,
        np.linspace(1, 0, LONG - 1, dtype=np.float32),
    )
    lists[keys[1]] = (np.array([7, 8], dtype=np.int32), np.array([2.0, 1.0], dtype=np.float32))
    lists[keys[2]] = (items[2][:-1], scores[2][:-1])  # one item shorter than the base's list
    added = 10**6 if kind == "int" else "new"
    lists[added] = (np.array([1], dtype=np.int32), np.array([0.5], dtype=np.float32))
    padded = len(lists) * LONG * (4 + 4)
    tracemalloc.reset_peak()
    with store.publish(delta=True, guards=[]) as draft:
        draft.add_ranked(
            "skew", list(lists), [row for row, _ in lists.values()], [score for _, score in lists.values()]
        )
    assert traced() < padded / 10
    assert str(draft.written["skew"]) == (
        "written as a delta: 1 added, 3 changed, 1 removed (1,001 keys in all)"
    )
    spec = store.manifest(draft.version_id).collections["skew"]
    assert spec.delta and spec.layout == "ragged" and spec.width == LONG - 1  # the longest list now
    reader = store.reader()
    for key, (row, score) in lists.items():
        got = reader.get("skew", key)
        assert np.array_equal(got.items, row) and np.array_equal(got.scores, score), key
    assert not reader.contains("skew", keys[3])


BAD: dict[str, tuple[Callable[[list[Any], list[Any]], None], str]] = {
    "nan score": (lambda items, scores: scores[7].__setitem__(3, np.nan), "scores must be finite"),
    "inf score": (lambda items, scores: scores[100].__setitem__(-1, np.inf), "scores must be finite"),
    "negative item": (lambda items, scores: items[12].__setitem__(4, -5), "item ids must be >= 0"),
    "unsorted": (lambda items, scores: scores[30].__setitem__(slice(2, 4), [0.1, 0.9]), "descending score"),
    "float items": (lambda items, scores: items.__setitem__(2, items[2].astype(np.float64)), "dtype float64"),
    "str scores": (
        lambda items, scores: scores.__setitem__(4, scores[4].astype(str)),
        "must be real numbers",
    ),
    "uneven list": (lambda items, scores: scores.__setitem__(8, scores[8][:-1]), "list 8 has items"),
    "2-D list": (lambda items, scores: items.__setitem__(6, items[6].reshape(2, 5)), "list 6 has items"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_ragged_input_is_refused_with_the_padded_paths_message(
    store: sharedrec.RecommendationStore, case: str
) -> None:
    keys, items, scores = _skewed(n=200, long=20_000)
    live = store.publish_ranked("skew", keys, items, scores)
    spoil, words = BAD[case]
    spoil(items, scores)
    key_data = validate.normalize_keys("skew", keys)
    options: dict[str, Any] = {"lengths": None, "pad": None, "sort": False, "top_k": None}
    with pytest.raises(InvalidInput) as padded:
        validate.normalize_ranked("skew", key_data, items, scores, **options)
    with pytest.raises(InvalidInput) as flat:
        validate.normalize_ranked("skew", key_data, items, scores, **options, flat=True)
    assert str(flat.value) == str(padded.value)
    assert words in str(flat.value)
    before = version_folders(store)
    with pytest.raises(InvalidInput) as published, store.publish() as draft:
        draft.add_ranked("skew", keys, items, scores)
    assert str(published.value) == str(padded.value)
    assert store.current() == live and version_folders(store) == before


def test_rows_are_named_like_the_padded_path() -> None:
    keys, items, scores = _skewed(n=50, long=300)
    scores[20][1] = np.nan
    scores[33][0] = np.nan
    key_data = validate.normalize_keys("skew", keys)
    with pytest.raises(InvalidInput, match=r"2 lists hold NaN or inf, first at row 20 \(key 60\)"):
        validate.normalize_ranked(
            "skew", key_data, items, scores, lengths=None, pad=None, sort=False, top_k=None, flat=True
        )


@pytest.mark.parametrize("seed", range(6))
def test_flat_lists_equal_the_padded_ones(seed: int) -> None:
    """Sorting (ties by item id), top_k, empty lists and dtypes come out as the padded path's."""
    rng = np.random.default_rng(seed)
    n = 60
    lengths = rng.integers(0, 12, n)
    lengths[rng.integers(n)] = 40
    items: list[Any] = [
        rng.integers(0, 30, size).astype(np.int64 if seed % 2 else np.int16) for size in lengths
    ]
    scores: list[Any] = [
        rng.integers(0, 4, size).astype(np.float64 if seed % 3 else np.float32) for size in lengths
    ]
    items[3], scores[3] = [], []
    key_data = validate.normalize_keys("c", np.arange(n) * 7)
    for top_k in (None, 5, 100):
        options: dict[str, Any] = {"lengths": None, "pad": None, "sort": True, "top_k": top_k}
        want = validate.normalize_ranked("c", key_data, items, scores, **options)
        flat = validate.normalize_ranked("c", key_data, items, scores, **options, flat=True)
        assert flat.offsets is not None
        got = flat.padded()
        assert got.items.dtype == want.items.dtype and got.scores.dtype == want.scores.dtype
        np.testing.assert_array_equal(got.items, want.items)
        np.testing.assert_array_equal(got.scores, want.scores)
        np.testing.assert_array_equal(got.lengths, want.lengths)


def test_guard_stats_equal_the_padded_paths(store: sharedrec.RecommendationStore) -> None:
    keys, items, scores = _skewed(n=300, long=20_000)
    for row in (4, 5, 250):
        items[row], scores[row] = [], []
    with store.publish(guards=[sharedrec.MaxEmptyLists(0.5)]) as draft:
        draft.add_ranked("ragged", keys, items, scores)
        # The same lists given 2-D with their lengths: checked padded in memory.
        lengths = np.array([len(row) for row in items])
        padded_items = np.full((len(items), lengths.max()), -1, dtype=np.int32)
        padded_scores = np.zeros(padded_items.shape, dtype=np.float32)
        for i, (row, score) in enumerate(zip(items, scores, strict=True)):
            padded_items[i, : len(row)], padded_scores[i, : len(row)] = row, score
        draft.add_ranked("padded", keys, padded_items, padded_scores, lengths=lengths)
    manifest = store.manifest(draft.version_id)
    ragged, padded = manifest.collections["ragged"], manifest.collections["padded"]
    for field in ("layout", "count", "width", "min_length", "max_length", "empty_lists"):
        assert getattr(ragged, field) == getattr(padded, field), field
    assert (ragged.min_length, ragged.max_length, ragged.empty_lists) == (0, 20_000, 3)
    ratios = manifest.checks["max_empty_lists"]["empty_ratio"]
    assert ratios["ragged"] == ratios["padded"]
    assert ragged_pays(np.asarray(lengths, np.int32), ragged.width, 8)
