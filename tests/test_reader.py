"""Lookups: single keys, batches, defaults, string keys, chunk boundaries."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pytest
from numpy.typing import NDArray

import sharedrec
from sharedrec.errors import InvalidInput, KeyNotFound, UnknownCollection
from sharedrec.read import index

from conftest import RankedData, make_ranked


@pytest.fixture
def store(any_store: sharedrec.RecommendationStore) -> sharedrec.RecommendationStore:
    """Every test here runs on a local folder and on S3."""
    return any_store


@pytest.fixture
def reader(store: sharedrec.RecommendationStore, ranked: RankedData) -> sharedrec.Reader:
    store.publish_ranked(
        "home", ranked.keys, ranked.items, ranked.scores, default=([7, 8, 9], [0.3, 0.2, 0.1])
    )
    return store.reader()


def test_get_k(reader: sharedrec.Reader, ranked: RankedData) -> None:
    key = int(ranked.keys[42])
    assert len(reader.get("home", key, k=5)) == 5
    np.testing.assert_array_equal(reader.get("home", key, k=5).items, ranked.items[42, :5])
    assert len(reader.get("home", key, k=0)) == 0
    assert len(reader.get("home", key, k=1000)) == 20
    assert list(reader.get("home", key, k=2)) == list(
        zip(ranked.items[42, :2].tolist(), ranked.scores[42, :2].tolist(), strict=True)
    )
    with pytest.raises(InvalidInput, match="non-negative"):
        reader.get("home", key, k=-1)


def test_numpy_integer_keys(reader: sharedrec.Reader, ranked: RankedData) -> None:
    key = ranked.keys[9]
    assert isinstance(key, np.int64)
    np.testing.assert_array_equal(reader.get("home", cast(Any, key)).items, ranked.items[9])
    np.testing.assert_array_equal(reader.get("home", cast(Any, np.int32(7))).items, [7, 8, 9])  # default


def test_unknown_key_gets_default(reader: sharedrec.Reader) -> None:
    recs = reader.get("home", -5)
    np.testing.assert_array_equal(recs.items, [7, 8, 9])
    np.testing.assert_allclose(recs.scores, [0.3, 0.2, 0.1])
    np.testing.assert_array_equal(reader.get("home", 2**70, k=2).items, [7, 8])


def test_unknown_key_without_default(store: sharedrec.RecommendationStore, ranked: RankedData) -> None:
    store.publish_ranked("home", ranked.keys, ranked.items, ranked.scores)
    reader = store.reader()
    absent = int(cast(NDArray[np.int64], ranked.keys).max()) + 1
    with pytest.raises(KeyError) as caught:
        reader.get("home", absent)
    assert isinstance(caught.value, KeyNotFound)
    assert str(absent) in str(caught.value) and "'home'" in str(caught.value)
    with pytest.raises(KeyNotFound):
        reader.get("home", int(cast(NDArray[np.int64], ranked.keys).min()) - 1)


def test_get_many(reader: sharedrec.Reader, ranked: RankedData) -> None:
    query = [int(ranked.keys[3]), -1, int(ranked.keys[250]), int(ranked.keys[3])]
    items, scores, found = reader.get_many("home", query, k=4)
    assert items.shape == scores.shape == (4, 4)
    np.testing.assert_array_equal(found, [True, False, True, True])
    np.testing.assert_array_equal(items[0], ranked.items[3, :4])
    np.testing.assert_array_equal(items[2], ranked.items[250, :4])
    np.testing.assert_array_equal(items[3], items[0])
    np.testing.assert_array_equal(items[1], [7, 8, 9, -1])  # default, padded
    assert np.isnan(scores[1, 3])
    items, _, found = reader.get_many("home", np.asarray(ranked.keys))
    assert found.all()
    np.testing.assert_array_equal(items, ranked.items)
    items, scores, found = reader.get_many("home", np.array([], dtype=np.int64))
    assert items.shape == (0, 20) and found.shape == (0,)


def test_wrong_key_type(reader: sharedrec.Reader) -> None:
    with pytest.raises(InvalidInput, match="int64 keys; got str"):
        reader.get("home", "42")
    with pytest.raises(InvalidInput, match="integers"):
        reader.get_many("home", ["a", "b"])


def test_unknown_collection(reader: sharedrec.Reader) -> None:
    with pytest.raises(UnknownCollection, match=r"no ranked collection 'nope'.*\['home'\]"):
        reader.get("nope", 1)
    with pytest.raises(UnknownCollection, match="holds ranked, not vectors"):
        reader.vector("home", 1)


def test_closed_reader(reader: sharedrec.Reader, ranked: RankedData) -> None:
    recs = reader.get("home", int(ranked.keys[0]))
    with reader:
        pass
    with pytest.raises(UnknownCollection, match="closed"):
        reader.get("home", int(ranked.keys[0]))
    np.testing.assert_array_equal(recs.items, ranked.items[0])  # earlier views stay valid


def test_ragged_lists_and_lengths(store: sharedrec.RecommendationStore) -> None:
    items = [[5, 4, 3], [9], [], [1, 2]]
    scores = [[3.0, 2.0, 1.0], [0.5], [], [2.0, 2.0]]
    vid = store.publish_ranked("r", [10, 20, 30, 40], items, scores)
    spec = store.manifest(vid).collections["r"]
    assert (spec.width, spec.min_length, spec.max_length) == (3, 0, 3)
    reader = store.reader()
    for key, expected in zip([10, 20, 30, 40], items, strict=True):
        np.testing.assert_array_equal(reader.get("r", key).items, expected)
    got, sc, found = reader.get_many("r", [20, 30])
    np.testing.assert_array_equal(got, [[9, -1, -1], [-1, -1, -1]])
    assert found.all() and np.isnan(sc[1]).all()


def test_padded_with_pad_value_and_lengths(store: sharedrec.RecommendationStore) -> None:
    items = np.array([[1, 2, -1], [3, -1, -1], [4, 5, 6]])
    scores = np.array([[2.0, 1.0, 0.0], [1.0, 0.0, 0.0], [3.0, 2.0, 1.0]])
    with store.publish() as draft:
        draft.add_ranked("by_pad", [1, 2, 3], items, scores, pad=-1)
        draft.add_ranked("by_len", [1, 2, 3], items, scores, lengths=[1, 1, 3])
    reader = store.reader()
    np.testing.assert_array_equal(reader.get("by_pad", 1).items, [1, 2])
    np.testing.assert_array_equal(reader.get("by_pad", 2).items, [3])
    np.testing.assert_array_equal(reader.get("by_len", 1).items, [1])
    np.testing.assert_array_equal(reader.get("by_len", 3).scores, [3.0, 2.0, 1.0])


def test_sort_and_top_k(store: sharedrec.RecommendationStore) -> None:
    items = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    scores = np.array([[0.1, 0.9, 0.5, 0.7], [4.0, 3.0, 2.0, 1.0]], dtype=np.float32)
    store.publish_ranked("s", [1, 2], items, scores, sort=True, top_k=3)
    reader = store.reader()
    np.testing.assert_array_equal(reader.get("s", 1).items, [2, 4, 3])
    np.testing.assert_array_equal(reader.get("s", 2).items, [5, 6, 7])


def test_item_and_score_dtypes_kept(store: sharedrec.RecommendationStore) -> None:
    items = np.array([[2**40, 1]], dtype=np.int64)
    scores = np.array([[2.0, 1.0]], dtype=np.float64)
    vid = store.publish_ranked("w", [1], items, scores)
    arrays = store.manifest(vid).collections["w"].arrays
    assert (arrays["items"].dtype, arrays["scores"].dtype) == ("<i8", "<f8")
    recs = store.reader().get("w", 1)
    assert recs.items.dtype == np.int64 and recs.items[0] == 2**40


@pytest.mark.parametrize("str_keys", [False, True])
def test_many_chunks(store: sharedrec.RecommendationStore, str_keys: bool) -> None:
    data = make_ranked(3001, 7, str_keys=str_keys, seed=3)
    with store.publish(chunk_bytes=1024) as draft:  # ~36 rows per chunk, 128 keys per key chunk
        draft.add_ranked("home", data.keys, data.items, data.scores)
    spec = store.manifest(draft.version_id).collections["home"]
    assert spec.arrays["items"].n_chunks > 50
    assert len(spec.key_fences) > 10
    reader = store.reader()
    rng = np.random.default_rng(0)
    for row in rng.choice(3001, size=300, replace=False).tolist():
        recs = reader.get("home", data.keys[row])
        np.testing.assert_array_equal(recs.items, data.items[row])
        np.testing.assert_array_equal(recs.scores, data.scores[row])
    items, scores, found = reader.get_many("home", data.keys)
    assert found.all()
    np.testing.assert_array_equal(items, data.items)
    np.testing.assert_array_equal(scores, data.scores)
    missing = "nobody" if str_keys else -1
    assert not reader.get_many("home", [missing])[2].any()


def test_string_key_collisions_never_return_another_key(
    store: sharedrec.RecommendationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A hash with four values: almost every key collides with many others.
    monkeypatch.setitem(index.KEY_HASHES, "tiny-test", lambda data: len(data) % 4)
    monkeypatch.setattr(index, "DEFAULT_KEY_HASH", "tiny-test")
    keys = [f"u{i}" for i in range(400)] + ["", "x" * 300]
    data = make_ranked(len(keys), 4, seed=5)
    with store.publish(chunk_bytes=1024) as draft:
        draft.add_ranked("home", keys, data.items, data.scores)
        draft.add_vectors("emb", keys, data.scores.astype(np.float64))
    assert store.manifest(draft.version_id).collections["home"].key_hash == "tiny-test"
    reader = store.reader()
    for row, key in enumerate(keys):
        np.testing.assert_array_equal(reader.get("home", key).items, data.items[row])
        np.testing.assert_array_equal(reader.vector("emb", key), data.scores[row])
    for absent in ("u400", "u-1", "zz", "x" * 299):  # same hashes as stored keys, other bytes
        with pytest.raises(KeyNotFound):
            reader.get("home", absent)
    items, _, found = reader.get_many("home", ["u3", "nope", "x" * 300])
    np.testing.assert_array_equal(found, [True, False, True])
    np.testing.assert_array_equal(items[2], data.items[-1])


def test_unicode_keys(store: sharedrec.RecommendationStore) -> None:
    keys = ["zoë", "日本", "🙂", "a\x00b", "a"]
    items = np.arange(10).reshape(5, 2)
    scores = np.ones((5, 2))
    store.publish_ranked("u", keys, items, scores)
    reader = store.reader()
    for row, key in enumerate(keys):
        np.testing.assert_array_equal(reader.get("u", key).items, items[row])
    with pytest.raises(KeyNotFound):
        reader.get("u", "a\x00")


def test_vectors_batch(store: sharedrec.RecommendationStore) -> None:
    emb = np.random.default_rng(2).standard_normal((300, 8)).astype(np.float16)
    keys = np.arange(300) * 7
    with store.publish(chunk_bytes=1024) as draft:
        draft.add_vectors("emb", keys, emb)
    reader = store.reader()
    out, found = reader.vectors("emb", [7 * 299, 3, 0])
    np.testing.assert_array_equal(found, [True, False, True])
    np.testing.assert_array_equal(out[0], emb[299])
    assert np.isnan(out[1]).all()
    assert out.dtype == np.float16
    with pytest.raises(KeyNotFound):
        reader.vector("emb", 3)


def test_default_list_longer_than_a_chunk(store: sharedrec.RecommendationStore) -> None:
    default_items = np.arange(400)
    default_scores = np.linspace(1, 0, 400)
    with store.publish(chunk_bytes=1024) as draft:
        draft.add_ranked(
            "d",
            [1],
            np.arange(400)[None, :],
            default_scores[None, :],
            default=(default_items, default_scores),
        )
    reader = store.reader()
    recs = reader.get("d", 2)
    assert recs.source == "d/default"
    np.testing.assert_array_equal(recs.items, default_items)
    items, _, found = reader.get_many("d", [2])
    assert not found[0]
    np.testing.assert_array_equal(items[0], default_items)
