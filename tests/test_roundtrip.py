"""Property tests: whatever is published reads back exactly, for any keys, lengths and k."""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sharedrec
from sharedrec.errors import KeyNotFound

int_keys = st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=40, unique=True)
str_keys = st.lists(st.text(max_size=12), min_size=1, max_size=40, unique=True)
finite = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@st.composite
def ranked_input(draw: st.DrawFn) -> dict[str, Any]:
    keys = draw(st.one_of(int_keys, str_keys))
    item_dtype = draw(st.sampled_from([np.int32, np.int64]))
    score_dtype = draw(st.sampled_from([np.float32, np.float64]))
    items, scores = [], []
    for _ in keys:
        length = draw(st.integers(0, 12))
        row_items = draw(st.lists(st.integers(0, 2**31 - 1), min_size=length, max_size=length))
        row_scores = sorted(draw(st.lists(finite, min_size=length, max_size=length)), reverse=True)
        items.append(np.array(row_items, dtype=item_dtype))
        scores.append(np.array(row_scores, dtype=score_dtype))
    return {
        "keys": keys,
        "items": items,
        "scores": scores,
        "k": draw(st.one_of(st.none(), st.integers(0, 14))),
        "chunk_bytes": draw(st.sampled_from([1024, 4 * 1024 * 1024])),
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ranked_input())
def test_ranked_round_trip(case: dict[str, Any]) -> None:
    keys, items, scores, k = case["keys"], case["items"], case["scores"], case["k"]
    with tempfile.TemporaryDirectory() as folder:
        store = sharedrec.open(folder)
        with store.publish(chunk_bytes=case["chunk_bytes"], guards=[]) as draft:
            draft.add_ranked("c", keys, items, scores)
        reader = store.reader()
        for key, row_items, row_scores in zip(keys, items, scores, strict=True):
            recs = reader.get("c", key, k=k)
            np.testing.assert_array_equal(recs.items, row_items[:k])
            np.testing.assert_array_equal(recs.scores, row_scores[:k])
            assert recs.items.dtype == row_items.dtype
        got_items, got_scores, found = reader.get_many("c", keys, k=k)
        assert found.all()
        for row, (row_items, row_scores) in enumerate(zip(items, scores, strict=True)):
            n = len(row_items[:k])
            np.testing.assert_array_equal(got_items[row, :n], row_items[:k])
            np.testing.assert_array_equal(got_scores[row, :n], row_scores[:k])
            assert (got_items[row, n:] == -1).all() and np.isnan(got_scores[row, n:]).all()
        absent = "\x00absent" if isinstance(keys[0], str) else _absent_int(keys)
        if absent is not None:
            try:
                reader.get("c", absent)
            except KeyNotFound:
                pass
            else:
                raise AssertionError(f"absent key {absent!r} returned a list")


def _absent_int(keys: list[int]) -> int | None:
    taken = set(keys)
    return next((c for c in (0, 1, -1, 2**63 - 1, -(2**63)) if c not in taken), None)


@settings(max_examples=30, deadline=None)
@given(
    st.one_of(int_keys, str_keys),
    st.integers(1, 9),
    st.sampled_from([np.float16, np.float32, np.float64]),
)
def test_vectors_round_trip(keys: list[Any], dim: int, dtype: type[np.floating[Any]]) -> None:
    vectors = np.random.default_rng(len(keys)).standard_normal((len(keys), dim)).astype(dtype)
    with tempfile.TemporaryDirectory() as folder:
        store = sharedrec.open(folder)
        with store.publish(chunk_bytes=1024) as draft:
            draft.add_vectors("v", keys, vectors)
        reader = store.reader()
        for row, key in enumerate(keys):
            np.testing.assert_array_equal(reader.vector("v", key), vectors[row])
        out, found = reader.vectors("v", keys)
        assert found.all()
        np.testing.assert_array_equal(out, vectors)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ranked_input())
def test_ranked_round_trip_on_s3(s3_server: str, case: dict[str, Any]) -> None:
    """The same property through S3: staged upload, then reads through the chunk cache."""
    from conftest import make_bucket, s3_options

    keys, items, scores, k = case["keys"], case["items"], case["scores"], case["k"]
    with tempfile.TemporaryDirectory() as cache:
        store = sharedrec.open(
            f"s3://{make_bucket(s3_server)}/r",
            storage_options=s3_options(s3_server),
            cache_dir=cache,
            create=True,
        )
        with store.publish(chunk_bytes=case["chunk_bytes"], guards=[]) as draft:
            draft.add_ranked("c", keys, items, scores)
        reader = store.reader(lease=False, refresh_interval=None)
        for key, row_items, row_scores in zip(keys, items, scores, strict=True):
            recs = reader.get("c", key, k=k)
            np.testing.assert_array_equal(recs.items, row_items[:k])
            np.testing.assert_array_equal(recs.scores, row_scores[:k])
        assert reader.get_many("c", keys, k=k)[2].all()
