"""Every bad input gets a specific error naming the problem, and nothing is published."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import sharedrec
from sharedrec.errors import InvalidInput

from conftest import RankedData, version_folders

K = np.array([1, 2, 3])
ITEMS = np.array([[3, 2], [1, 0], [5, 4]], dtype=np.int32)
SCORES = np.array([[2.0, 1.0], [2.0, 1.0], [2.0, 1.0]], dtype=np.float32)


@pytest.fixture
def store(any_store: sharedrec.RecommendationStore) -> sharedrec.RecommendationStore:
    """Every test here runs on a local folder and on S3."""
    return any_store


def _with(**changes: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"keys": K, "items": ITEMS, "scores": SCORES}
    args.update(changes)
    return args


def _nan_scores() -> np.ndarray:
    scores = SCORES.copy()
    scores[2, 1] = np.nan
    return scores


CASES: dict[str, tuple[dict[str, Any], str]] = {
    "duplicate int keys": (_with(keys=np.array([1, 2, 1])), r"duplicates .*first 1"),
    "duplicate str keys": (_with(keys=["a", "b", "a"]), r"duplicates \(first 'a'\)"),
    "float keys": (_with(keys=np.array([1.0, 2.0, 3.0])), "must be integers .* or str; got dtype float64"),
    "mixed keys": (_with(keys=[1, "b", 3]), "must be integers"),
    "2-D keys": (_with(keys=np.ones((3, 1), dtype=int)), r"1-D; got shape \(3, 1\)"),
    "empty keys": (_with(keys=[], items=np.zeros((0, 2), int), scores=np.zeros((0, 2))), "empty"),
    "single str key": (_with(keys="abc"), "sequence of keys"),
    "uint64 too big": (_with(keys=np.array([1, 2, 2**64 - 1], dtype=np.uint64)), "int64 range"),
    "row count": (_with(items=ITEMS[:2], scores=SCORES[:2]), "3 keys but 2 rows"),
    "shape mismatch": (_with(scores=SCORES[:, :1]), r"items have shape \(3, 2\) but scores have shape"),
    "float items": (_with(items=ITEMS.astype(float)), "integer item ids .* got dtype float64"),
    "str items": (_with(items=np.array([["a", "b"]] * 3)), "integer item ids"),
    "bool scores": (_with(scores=np.ones((3, 2), dtype=bool)), "real numbers"),
    "NaN score": (_with(scores=_nan_scores()), r"finite; 1 lists .* row 2 \(key 3\)"),
    "inf score": (_with(scores=np.where(SCORES == 1.0, np.inf, SCORES)), "finite"),
    "negative item": (_with(items=np.array([[3, 2], [1, -4], [5, 4]])), "must be >= 0"),
    "ascending scores": (
        _with(scores=np.array([[1.0, 2.0], [2.0, 1.0], [2.0, 1.0]])),
        r"descending score order; 1 are not, first at row 0 \(key 1\)\. Pass sort=True",
    ),
    "lengths and pad": (_with(lengths=[1, 1, 1], pad=-1), "not both"),
    "lengths shape": (_with(lengths=[1, 1]), "lengths must be 3 integers"),
    "lengths range": (_with(lengths=[1, 3, 1]), r"lengths must lie in 0..2; row 1 has 3"),
    "pad in middle": (
        _with(items=np.array([[3, -1], [-1, 0], [5, 4]]), pad=-1),
        "row 1 has items after the pad value -1",
    ),
    "ragged mismatch": (
        _with(items=[[1, 2], [3]], scores=[[2.0, 1.0], [1.0]], keys=[1, 2, 3]),
        "3 keys but 2 item lists",
    ),
    "ragged row shapes": (
        _with(items=[[1, 2], [3], [4]], scores=[[2.0, 1.0], [1.0, 0.5], [1.0]]),
        r"list 1 has items of shape \(1,\) and scores of shape \(2,\)",
    ),
    "lengths with ragged": (
        _with(items=[[1, 2], [3], [4]], scores=[[2.0, 1.0], [1.0], [1.0]], lengths=[1, 1, 1]),
        "2-D items only",
    ),
    "scalar items": (_with(items=5), "2-D arrays or sequences"),
    "bad top_k": (_with(top_k=0), "top_k must be a positive int"),
    "default not a pair": (_with(default=[1, 2, 3]), r"default must be a pair"),
    "default unsorted": (_with(default=([1, 2], [0.1, 0.2])), "descending score order"),
    "default empty": (_with(default=([], [])), "non-zero length"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_ranked_input_errors(store: sharedrec.RecommendationStore, ranked: RankedData, case: str) -> None:
    live = store.publish_ranked("home", ranked.keys, ranked.items, ranked.scores)
    template, message = CASES[case]
    args = dict(template)
    keys, items, scores = args.pop("keys"), args.pop("items"), args.pop("scores")
    with pytest.raises(InvalidInput, match=message), store.publish() as draft:
        draft.add_ranked("home", keys, items, scores, **args)
    assert store.current() == live
    assert draft.version_id not in version_folders(store)


@pytest.mark.parametrize(
    ("vectors", "message"),
    [
        (np.ones((3, 2), dtype=np.int64), "floating point"),
        (np.ones((2, 2)), r"shape \(3, dim\)"),
        (np.ones(3), r"shape \(3, dim\)"),
        (np.ones((3, 0)), r"shape \(3, dim\)"),
        (np.array([[1.0, np.nan], [0, 0], [0, 0]]), r"finite; 1 rows .* row 0 \(key 1\)"),
    ],
)
def test_vector_input_errors(store: sharedrec.RecommendationStore, vectors: np.ndarray, message: str) -> None:
    with pytest.raises(InvalidInput, match=message), store.publish() as draft:
        draft.add_vectors("emb", K, vectors)
    assert store.current() is None


@pytest.mark.parametrize(
    "name", ["", "../x", "a/b", ".hidden", "a..b", "x" * 129, 5, "sp ace", "zarr.json", "manifest.json"]
)
def test_invalid_collection_names(store: sharedrec.RecommendationStore, name: Any) -> None:
    with pytest.raises(InvalidInput, match="invalid collection name"), store.publish() as draft:
        draft.add_ranked(name, K, ITEMS, SCORES)
    assert store.current() is None


def test_chunk_bytes_range(store: sharedrec.RecommendationStore) -> None:
    with pytest.raises(InvalidInput, match="chunk_bytes"):
        store.publish(chunk_bytes=10)


def test_caller_arrays_untouched(store: sharedrec.RecommendationStore) -> None:
    items = np.array([[3, 2, -1], [1, -1, -1]])
    scores = np.array([[2.0, 1.0, 9.0], [0.4, 9.0, 9.0]])
    before = (items.copy(), scores.copy())
    store.publish_ranked("p", [1, 2], items, scores, pad=-1)
    np.testing.assert_array_equal(items, before[0])
    np.testing.assert_array_equal(scores, before[1])


@pytest.mark.parametrize(
    ("metadata", "where"),
    [({"loss": np.float32(0.5)}, "loss is float32"), ({"a": {"b": [1, object()]}}, "a.b.1 is object")],
)
def test_metadata_must_be_json(
    store: sharedrec.RecommendationStore, metadata: dict[str, Any], where: str
) -> None:
    with pytest.raises(InvalidInput, match=rf"metadata must be JSON.*{where}"):
        store.publish(metadata=metadata)
