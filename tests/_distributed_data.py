"""Long-format data shared by the Spark and Dask tests, and the checks on the result."""

from __future__ import annotations

import numpy as np
import pandas as pd

import sharedrec


def long_frame(n_keys: int = 600, k: int = 6, seed: int = 7) -> pd.DataFrame:
    """One row per (key, item, score), rows shuffled; int32 items, float32 scores."""
    rng = np.random.default_rng(seed)
    keys = rng.choice(10**9, size=n_keys, replace=False).astype(np.int64)
    lengths = rng.integers(1, k + 1, size=n_keys)
    key_col = np.repeat(keys, lengths)
    items = rng.integers(0, 10_000, size=len(key_col)).astype(np.int32)
    scores = rng.random(len(key_col), dtype=np.float32)
    order = rng.permutation(len(key_col))
    return pd.DataFrame({"key": key_col[order], "item": items[order], "score": scores[order]})


def publish_single(store: sharedrec.RecommendationStore, frame: pd.DataFrame, collection: str) -> str:
    """The same data through the single-process writer."""
    from sharedrec.integrations.ingest import group_rows

    scores = frame["score"].to_numpy()
    keys, items, padded, lengths = group_rows(
        frame["key"].to_numpy(),
        frame["item"].to_numpy(),
        scores,
        -scores.astype(np.float64),
        None,
        "<i4",
        "<f4",
    )
    with store.publish(make_current=False, guards=[]) as draft:
        draft.add_ranked(collection, keys, items, padded, lengths=lengths)
    return draft.version_id


def assert_same(store: sharedrec.RecommendationStore, a: str, b: str, collection: str) -> None:
    """Every key of version ``a`` has the same list in ``b``, and the key sets are equal."""
    ra, rb = store.reader(version=a, lease=False), store.reader(version=b, lease=False)
    try:
        keys_a = np.sort(np.asarray(ra.keys(collection)))
        keys_b = np.sort(np.asarray(rb.keys(collection)))
        assert np.array_equal(keys_a, keys_b)
        items_a, scores_a, found_a = ra.get_many(collection, keys_a)
        items_b, scores_b, found_b = rb.get_many(collection, keys_a)
        assert found_a.all() and found_b.all()
        assert np.array_equal(items_a, items_b)
        assert np.array_equal(scores_a, scores_b, equal_nan=True)
        for key in keys_a[:50].tolist():
            one, two = ra.get(collection, key), rb.get(collection, key)
            assert one.items.tolist() == two.items.tolist() and one.scores.tolist() == two.scores.tolist()
    finally:
        ra.close()
        rb.close()
