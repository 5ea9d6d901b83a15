"""Publish guards refuse broken batch output before readers see it."""

from __future__ import annotations

import logging
from typing import cast

import numpy as np
import pytest
from numpy.typing import NDArray

import sharedrec
from sharedrec.errors import InvalidInput, PublishRejected
from sharedrec.write.guards import ListSimilarity, MaxEmptyLists, MaxShrink, MinKeys, as_guard

from conftest import RankedData, make_ranked, version_folders


@pytest.fixture
def store(any_store: sharedrec.RecommendationStore) -> sharedrec.RecommendationStore:
    """Every test here runs on a local folder and on S3."""
    return any_store


@pytest.fixture
def live(store: sharedrec.RecommendationStore, ranked: RankedData) -> str:
    return store.publish_ranked("home", ranked.keys, ranked.items, ranked.scores)


def assert_refused(store: sharedrec.RecommendationStore, live: str, draft_id: str) -> None:
    assert store.current() == live
    assert [v.id for v in store.versions()] == [live]
    assert draft_id not in version_folders(store)


def test_shrunken_output_is_refused(
    store: sharedrec.RecommendationStore, ranked: RankedData, live: str
) -> None:
    with pytest.raises(PublishRejected) as caught, store.publish() as draft:  # 10% of the users
        draft.add_ranked("home", ranked.keys[:50], ranked.items[:50], ranked.scores[:50])
    message = str(caught.value)
    assert "max_shrink: 'home' would go from 500 to 50 keys (-90%)" in message
    assert live in message and "force=True" in message and "Nothing was published" in message
    assert_refused(store, live, draft.version_id)


def test_missing_collection_is_refused(store: sharedrec.RecommendationStore, live: str) -> None:
    with pytest.raises(PublishRejected, match=r"'home' \(500 keys\) is missing"), store.publish() as draft:
        draft.add_vectors("emb", [1, 2], np.ones((2, 2)))
    assert_refused(store, live, draft.version_id)


def test_force_publishes_and_records(
    store: sharedrec.RecommendationStore, ranked: RankedData, live: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="sharedrec"):
        vid = store.publish_ranked(
            "home", ranked.keys[:50], ranked.items[:50], ranked.scores[:50], force=True
        )
    assert store.current() == vid
    assert "despite failed guards (force=True)" in caplog.text
    checks = store.manifest(vid).checks
    assert checks["forced"] is True
    assert checks["max_shrink"]["passed"] is False


def test_results_recorded_in_manifest(
    store: sharedrec.RecommendationStore, ranked: RankedData, live: str
) -> None:
    vid = store.publish_ranked("home", ranked.keys, ranked.items, ranked.scores)
    checks = store.manifest(vid).checks
    assert set(checks) == {"max_shrink", "max_empty_lists", "list_similarity"}
    similarity = checks["list_similarity"]["collections"]["home"]
    assert similarity["coverage"] == 1.0 and similarity["overlap"] == 1.0 and similarity["score_shift"] == 0.0
    assert checks["max_shrink"]["drop"] == {"home": 0.0}


def test_scrambled_ids_are_refused_by_coverage(
    store: sharedrec.RecommendationStore, ranked: RankedData, live: str
) -> None:
    # same count, wrong users: counts alone would not notice
    shifted = cast(NDArray[np.int64], ranked.keys) + 1
    with pytest.raises(PublishRejected, match=r"list_similarity: 'home' coverage 0\.000 \(minimum 0\.5\)"):
        store.publish_ranked("home", shifted, ranked.items, ranked.scores)
    assert store.current() == live


def test_overlap_and_score_shift_thresholds(
    store: sharedrec.RecommendationStore, ranked: RankedData, live: str
) -> None:
    other = make_ranked(500, 20, seed=99)
    strict = [ListSimilarity(min_overlap=0.5, max_score_shift=0.5)]
    with pytest.raises(PublishRejected, match=r"overlap@k 0\.\d+ \(minimum 0\.5\)"):
        store.publish_ranked("home", ranked.keys, other.items, other.scores, guards=strict)
    with pytest.raises(PublishRejected, match=r"score shift [\d.]+ \(maximum 0\.5\)"):
        store.publish_ranked("home", ranked.keys, ranked.items, ranked.scores * 10, guards=strict)
    store.publish_ranked("home", ranked.keys, ranked.items, ranked.scores, guards=strict)


def test_empty_lists_and_min_keys(store: sharedrec.RecommendationStore) -> None:
    items = [[1, 2], [], [], [3]]
    scores = [[2.0, 1.0], [], [], [1.0]]
    with pytest.raises(PublishRejected, match=r"'r' has 2 empty lists of 4 \(50%\)"):
        store.publish_ranked("r", [1, 2, 3, 4], items, scores, guards=[MaxEmptyLists(0.25)])
    store.publish_ranked("r", [1, 2, 3, 4], items, scores)  # the default allows half
    with pytest.raises(PublishRejected, match="'r' has 4"):
        store.publish_ranked("r", [1, 2, 3, 4], items, scores, guards=[MinKeys(10)])


def test_custom_guards(store: sharedrec.RecommendationStore, ranked: RankedData, live: str) -> None:
    def no_item_zero(new: sharedrec.Reader, old: sharedrec.Reader | None) -> str | None:
        items, _, _ = new.get_many("home", ranked.keys[:20])
        return "item 0 must never be recommended" if (items == 0).any() else None

    def explodes(new: sharedrec.Reader, old: sharedrec.Reader | None) -> bool:
        raise RuntimeError("model registry unreachable")

    items = ranked.items.copy()
    items[3, 0] = 0
    with pytest.raises(PublishRejected, match="no_item_zero: item 0 must never be recommended"):
        store.publish_ranked("home", ranked.keys, items, ranked.scores, guards=[no_item_zero])
    with pytest.raises(PublishRejected, match="explodes: raised RuntimeError: model registry unreachable"):
        store.publish_ranked("home", ranked.keys, ranked.items, ranked.scores, guards=[explodes])
    vid = store.publish_ranked("home", ranked.keys, ranked.items + 1, ranked.scores, guards=[no_item_zero])
    assert store.manifest(vid).checks == {"no_item_zero": {"passed": True, "message": "passed"}}
    assert store.current() == vid


def test_guard_arguments_are_checked() -> None:
    with pytest.raises(InvalidInput, match="max_drop"):
        MaxShrink(1.5)
    with pytest.raises(InvalidInput, match="min_coverage"):
        ListSimilarity(min_coverage=2)
    with pytest.raises(InvalidInput, match="a guard must be"):
        as_guard(5)  # type: ignore[arg-type]


def test_first_version_passes_comparisons(store: sharedrec.RecommendationStore, ranked: RankedData) -> None:
    vid = store.publish_ranked("home", ranked.keys[:5], ranked.items[:5], ranked.scores[:5])
    assert store.manifest(vid).checks["max_shrink"]["message"] == "first version: nothing to compare with"


def test_fallback_chain(store: sharedrec.RecommendationStore) -> None:
    with store.publish() as draft:
        draft.add_ranked(
            "home", [1, 2], [[10, 11], [20, 21]], [[2.0, 1.0]] * 2, fallbacks=["by_country", "popular"]
        )
        draft.add_ranked("by_country", ["DE", "FR"], [[30, 31], [40, 41]], [[2.0, 1.0]] * 2)
        draft.add_ranked("popular", ["all"], [[50, 51, 52]], [[3.0, 2.0, 1.0]], serve_to_all=True)
        draft.add_ranked("plain", [1], [[1]], [[1.0]], default=([9], [1.0]))
    reader = store.reader()
    own = reader.get("home", 1)
    assert own.source == "home" and own.items.tolist() == [10, 11]
    by_country = reader.get("home", 99, fallback_keys={"by_country": "FR"})
    assert by_country.source == "by_country" and by_country.items.tolist() == [40, 41]
    popular = reader.get("home", 99, k=2)  # an int key cannot be a country: next level
    assert popular.source == "popular" and popular.items.tolist() == [50, 51]
    unknown_country = reader.get("home", 99, fallback_keys={"by_country": "XX"})
    assert unknown_country.source == "popular"
    default = reader.get("plain", 5)
    assert default.source == "plain/default" and default.items.tolist() == [9]
    stats = reader.stats()
    assert stats.misses == 4 and stats.fallbacks_served == 4
    reader.close()


def test_fallback_must_exist(store: sharedrec.RecommendationStore) -> None:
    with pytest.raises(InvalidInput, match="names fallback 'nope'"), store.publish() as draft:
        draft.add_ranked("home", [1], [[1]], [[1.0]], fallbacks=["nope"])
    with pytest.raises(InvalidInput, match="its own fallback"), store.publish() as draft:
        draft.add_ranked("home", [1], [[1]], [[1.0]], fallbacks=["home"])
    assert store.current() is None
