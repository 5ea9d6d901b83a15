"""Publishing and version management on a local store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import sharedrec
from sharedrec.errors import (
    ConcurrentPublishError,
    InvalidInput,
    PublishRejected,
    StoreNotFound,
    UnsupportedLocation,
    VersionNotFound,
)

from conftest import RankedData, make_ranked, version_folders


@pytest.fixture
def store(any_store: sharedrec.RecommendationStore) -> sharedrec.RecommendationStore:
    """Every test here runs on a local folder and on S3."""
    return any_store


def test_publish_then_read(store: sharedrec.RecommendationStore, ranked: RankedData) -> None:
    with store.publish(metadata={"model": "als-1"}) as draft:
        draft.add_ranked("home", ranked.keys, ranked.items, ranked.scores)
    assert store.current() == draft.version_id
    reader = store.reader()
    assert reader.version == draft.version_id
    assert reader.metadata == {"model": "als-1"}
    for row in (0, 17, 499):
        recs = reader.get("home", int(ranked.keys[row]))
        np.testing.assert_array_equal(recs.items, ranked.items[row])
        np.testing.assert_array_equal(recs.scores, ranked.scores[row])


@pytest.mark.local_only
def test_layout_on_disk(store: sharedrec.RecommendationStore, ranked: RankedData) -> None:
    vid = store.publish_ranked("home", ranked.keys, ranked.items, ranked.scores)
    root = Path(store.location)
    assert (root / "CURRENT").is_file()
    version = root / "versions" / vid
    assert (version / "manifest.json").is_file()
    assert (version / "zarr.json").is_file()
    for array in ("keys", "items", "scores", "lengths"):
        assert (version / "home" / array / "zarr.json").is_file()
        assert (version / "home" / array / "c" / "0").exists()
    assert not [p for p in root.rglob("*") if ".tmp-" in p.name]


def test_results_are_read_only_views(store: sharedrec.RecommendationStore, ranked: RankedData) -> None:
    store.publish_ranked("home", ranked.keys, ranked.items, ranked.scores)
    recs = store.reader().get("home", int(ranked.keys[3]))
    assert not recs.items.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        recs.items[0] = 5


def test_exception_in_block_leaves_live_version(
    store: sharedrec.RecommendationStore, ranked: RankedData
) -> None:
    first = store.publish_ranked("home", ranked.keys, ranked.items, ranked.scores)
    with pytest.raises(RuntimeError, match="boom"), store.publish() as draft:
        draft.add_ranked("home", ranked.keys, ranked.items + 1, ranked.scores)
        raise RuntimeError("boom")
    assert store.current() == first
    assert [v.id for v in store.versions()] == [first]
    assert draft.version_id not in version_folders(store)
    recs = store.reader().get("home", int(ranked.keys[0]))
    np.testing.assert_array_equal(recs.items, ranked.items[0])


def test_invalid_input_inside_block_publishes_nothing(
    store: sharedrec.RecommendationStore, ranked: RankedData
) -> None:
    first = store.publish_ranked("home", ranked.keys, ranked.items, ranked.scores)
    bad_scores = ranked.scores.copy()
    bad_scores[7, 3] = np.nan
    with pytest.raises(InvalidInput, match="finite"), store.publish() as draft:
        draft.add_ranked("home", ranked.keys, ranked.items, bad_scores)
    assert store.current() == first
    assert draft.version_id not in version_folders(store)


def test_empty_draft_is_rejected(store: sharedrec.RecommendationStore) -> None:
    with pytest.raises(PublishRejected, match="at least one collection"), store.publish():
        pass
    assert store.current() is None
    assert store.versions() == []


def test_add_outside_with_block(store: sharedrec.RecommendationStore, ranked: RankedData) -> None:
    draft = store.publish()
    with pytest.raises(PublishRejected, match=r"with store\.publish"):
        draft.add_ranked("home", ranked.keys, ranked.items, ranked.scores)


def test_duplicate_collection_name(store: sharedrec.RecommendationStore, ranked: RankedData) -> None:
    with pytest.raises(InvalidInput, match="already added"), store.publish() as draft:
        draft.add_ranked("home", ranked.keys, ranked.items, ranked.scores)
        draft.add_ranked("home", ranked.keys, ranked.items, ranked.scores)
    assert store.current() is None


def test_versions_current_set_current_rollback(
    store: sharedrec.RecommendationStore, ranked: RankedData
) -> None:
    ids = [
        store.publish_ranked("home", ranked.keys, ranked.items + i, ranked.scores, metadata={"i": i})
        for i in range(3)
    ]
    listed = store.versions()
    assert [v.id for v in listed] == ids
    assert [v.current for v in listed] == [False, False, True]
    assert listed[1].parent == ids[0]
    assert listed[2].metadata == {"i": 2}
    assert listed[0].collections == {"home": 500}
    assert listed[0].size_bytes > ranked.items.nbytes

    assert store.rollback() == ids[1]
    assert store.current() == ids[1]
    assert store.reader().get("home", int(ranked.keys[0])).items[0] == ranked.items[0, 0] + 1
    assert store.rollback() == ids[0]
    with pytest.raises(VersionNotFound, match="no earlier version"):
        store.rollback()

    store.set_current(ids[2])
    assert store.current() == ids[2]
    assert store.rollback() == ids[0]  # the version that was live before set_current


def test_set_current_to_missing_version(store: sharedrec.RecommendationStore, ranked: RankedData) -> None:
    live = store.publish_ranked("home", ranked.keys, ranked.items, ranked.scores)
    with pytest.raises(VersionNotFound, match="does not exist"):
        store.set_current("20990101T000000000000Z-abcdef")
    assert store.current() == live


def test_rollback_on_empty_store(store: sharedrec.RecommendationStore) -> None:
    with pytest.raises(VersionNotFound, match="no version is live"):
        store.rollback()
    with pytest.raises(VersionNotFound, match="publish one first"):
        store.reader()


def test_make_current_false_and_pinned_reader(
    store: sharedrec.RecommendationStore, ranked: RankedData
) -> None:
    live = store.publish_ranked("home", ranked.keys, ranked.items, ranked.scores)
    with store.publish(make_current=False, version_id="candidate-1") as draft:
        draft.add_ranked("home", ranked.keys, ranked.items + 100, ranked.scores)
    assert store.current() == live
    pinned = store.reader(version="candidate-1")
    assert pinned.get("home", int(ranked.keys[0])).items[0] == ranked.items[0, 0] + 100
    store.set_current("candidate-1")
    assert store.reader().version == "candidate-1"


def test_version_id_rules(store: sharedrec.RecommendationStore, ranked: RankedData) -> None:
    with pytest.raises(InvalidInput, match="invalid version id"):
        store.publish(version_id="../escape")
    store.publish_ranked("home", ranked.keys, ranked.items, ranked.scores)
    with store.publish(version_id="v1", guards=[]) as draft:
        draft.add_vectors("emb", [1, 2], np.ones((2, 3), dtype=np.float32))
    with pytest.raises(InvalidInput, match="already exists"), store.publish(version_id="v1"):
        pass
    assert store.current() == "v1"


def test_version_ids_sort_by_time(store: sharedrec.RecommendationStore, ranked: RankedData) -> None:
    ids = [store.publish_ranked("home", ranked.keys, ranked.items, ranked.scores) for _ in range(3)]
    assert ids == sorted(ids)


def test_concurrent_publish_keeps_the_winner(
    store: sharedrec.RecommendationStore, ranked: RankedData
) -> None:
    base = store.publish_ranked("home", ranked.keys, ranked.items, ranked.scores)
    slow = store.publish().__enter__()
    slow.add_ranked("home", ranked.keys, ranked.items + 1, ranked.scores)
    winner = store.publish_ranked("home", ranked.keys, ranked.items + 2, ranked.scores)
    with pytest.raises(ConcurrentPublishError) as caught:
        slow.__exit__(None, None, None)
    message = str(caught.value)
    assert winner in message
    assert slow.version_id in message
    assert base in message
    assert store.current() == winner
    # The loser is complete and kept, so it can still be made live by hand.
    store.set_current(slow.version_id)
    assert store.reader().get("home", int(ranked.keys[0])).items[0] == ranked.items[0, 0] + 1


def test_open_missing_store_without_create(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFound, match="does not exist"):
        sharedrec.open(tmp_path / "nope", create=False)
    assert not (tmp_path / "nope").exists()


def test_open_file_url(tmp_path: Path, ranked: RankedData) -> None:
    store = sharedrec.open(f"file://{tmp_path}/s")
    store.publish_ranked("home", ranked.keys, ranked.items, ranked.scores)
    assert sharedrec.open(tmp_path / "s", create=False).current() == store.current()


def test_unsupported_protocol(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedLocation, match="nosuchproto://"):
        sharedrec.open("nosuchproto://example.invalid/recs")


def test_publish_vectors_and_ranked_together(store: sharedrec.RecommendationStore) -> None:
    data = make_ranked(50, 5, str_keys=True)
    emb = np.random.default_rng(1).standard_normal((50, 16)).astype(np.float32)
    with store.publish() as draft:
        draft.add_ranked("home", data.keys, data.items, data.scores)
        draft.add_vectors("user_emb", data.keys, emb)
        assert set(draft.collections) == {"home", "user_emb"}
    reader = store.reader()
    assert set(reader.collections) == {"home", "user_emb"}
    np.testing.assert_array_equal(reader.vector("user_emb", data.keys[9]), emb[9])
    np.testing.assert_array_equal(reader.get("home", data.keys[9]).items, data.items[9])


def test_publish_vectors_shortcut(store: sharedrec.RecommendationStore) -> None:
    emb = np.arange(12, dtype=np.float64).reshape(4, 3)
    vid = store.publish_vectors("emb", [10, 20, 30, 40], emb)
    assert store.manifest(vid).collections["emb"].arrays["vectors"].dtype == "<f8"
    np.testing.assert_array_equal(store.reader().vector("emb", 30), [6.0, 7.0, 8.0])
