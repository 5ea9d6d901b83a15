"""Publishing and version management on a local store."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sharedrec
from sharedrec.backends import backend_for
from sharedrec.backends.base import STORE_MARKER
from sharedrec.errors import (
    ConcurrentPublishError,
    InvalidInput,
    PublishRejected,
    StoreNotFound,
    UnsupportedLocation,
    VersionNotFound,
)

from conftest import RankedData, make_bucket, make_ranked, s3_client, s3_options, version_folders


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


# -- what a store is, and who creates one ------------------------------------------------------


@dataclass
class Nowhere:
    """A location where nothing exists yet, on one backend, and a look at what exists there."""

    url: str
    options: dict[str, Any]
    contents: Callable[[], list[str] | None]  # None: not even the location itself

    def open(self, **options: Any) -> sharedrec.RecommendationStore:
        return sharedrec.open(self.url, **self.options, **options)

    def nothing(self) -> bool:
        return not self.contents()


@pytest.fixture(params=["local", "s3", "memory"])
def nowhere(request: pytest.FixtureRequest, tmp_path: Path) -> Nowhere:
    """A mistyped store location: a missing folder, an empty S3 prefix (the bucket exists), a
    missing memory:// path."""
    if request.param == "local":
        root = tmp_path / "recs"

        def files() -> list[str] | None:
            return sorted(p.name for p in root.rglob("*")) if root.exists() else None

        return Nowhere(str(root), {}, files)
    if request.param == "memory":
        import fsspec

        memory = fsspec.filesystem("memory")
        path = f"/nowhere-{uuid.uuid4().hex[:12]}/recs"

        def entries() -> list[str] | None:
            return sorted(memory.find(path, withdirs=True)) if memory.exists(path) else None

        return Nowhere(f"memory:/{path}", {}, entries)
    server: str = request.getfixturevalue("s3_server")
    bucket = make_bucket(server)
    client = s3_client(server)

    def keys() -> list[str] | None:
        return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))

    options = {"storage_options": s3_options(server), "cache_dir": tmp_path / "cache"}
    return Nowhere(f"s3://{bucket}/recs", options, keys)


def test_opening_without_create_creates_nothing(nowhere: Nowhere) -> None:
    # A folder is looked at on opening; an S3 prefix, which costs a request, at the first read.
    reads: list[Callable[[sharedrec.RecommendationStore], object]] = [
        lambda store: store.reader(),
        lambda store: store.reader(lease=False),
        lambda store: store.current(),
    ]
    for read in reads:
        with pytest.raises(
            StoreNotFound, match="check the path, or create the store there with create=True"
        ) as caught:
            read(nowhere.open())
        assert nowhere.url.split("://")[-1] in str(caught.value)
        assert nowhere.nothing(), nowhere.contents()
    # A reader pinned to a version id writes its lease first: that write is refused too, as
    # the missing store it is (not as a leases folder to mount read-write).
    with pytest.raises(StoreNotFound, match="no store at"):
        nowhere.open().reader("20261201T000000000000Z-0a1b2c")
    assert nowhere.nothing(), nowhere.contents()


def test_publishing_without_create_fails_and_leaves_nothing(nowhere: Nowhere, ranked: RankedData) -> None:
    with pytest.raises(StoreNotFound, match="create=True"):
        nowhere.open().publish_ranked("home", ranked.keys, ranked.items, ranked.scores)
    with pytest.raises(StoreNotFound, match="create=True"):
        nowhere.open().begin_publish(partitions=2)
    assert nowhere.nothing(), nowhere.contents()


def test_create_makes_a_store_that_everyone_then_opens(nowhere: Nowhere, ranked: RankedData) -> None:
    created = nowhere.open(create=True)
    assert nowhere.contents() is not None  # the folder, or the marker under the prefix
    assert created.current() is None and created.versions() == []
    with pytest.raises(VersionNotFound, match="no version"):
        nowhere.open().reader()  # a store without versions, not a missing store
    # Writing to an existing store needs no create=True.
    vid = nowhere.open().publish_ranked("home", ranked.keys, ranked.items, ranked.scores)
    assert nowhere.open().reader().version == vid
    assert nowhere.open(create=True).current() == vid  # create=True on a store opens it


def test_the_marker_is_written_only_where_nothing_exists(
    s3_server: str, tmp_path: Path, ranked: RankedData
) -> None:
    url = f"s3://{make_bucket(s3_server)}/recs"
    options: dict[str, Any] = {"storage_options": s3_options(s3_server), "cache_dir": tmp_path / "c"}
    backend = backend_for(url, create=False, storage_options=options["storage_options"])
    store = sharedrec.open(url, create=True, **options)
    assert backend.read_bytes(STORE_MARKER) == b""
    store.publish_ranked("home", ranked.keys, ranked.items, ranked.scores)
    # A store written before markers existed: versions, no marker. It is a store all the same,
    # and opening it with create=True adds nothing.
    backend.remove_tree(STORE_MARKER)
    assert (
        sharedrec.open(url, **options).reader().get("home", int(ranked.keys[0])).items[0]
        == ranked.items[0, 0]
    )
    sharedrec.open(url, create=True, **options)
    assert not backend.exists(STORE_MARKER)
    # The prefix beside it holds nothing: no store there.
    with pytest.raises(StoreNotFound, match="no object exists under that prefix"):
        sharedrec.open(url[:-1], **options).reader()


def test_an_existing_empty_folder_is_a_store(tmp_path: Path, ranked: RankedData) -> None:
    # A freshly mounted volume: the batch job publishes to it without create=True.
    (tmp_path / "mnt").mkdir()
    vid = sharedrec.open(tmp_path / "mnt", create=True).publish_ranked(
        "home", ranked.keys, ranked.items, ranked.scores
    )
    assert sharedrec.open(tmp_path / "mnt").current() == vid
    assert not (tmp_path / "mnt" / STORE_MARKER).exists()  # folders need no marker


def test_open_file_url(tmp_path: Path, ranked: RankedData) -> None:
    store = sharedrec.open(f"file://{tmp_path}/s", create=True)
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
