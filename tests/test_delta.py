"""Delta versions: only what changed is written; chains answer as the full data would."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

import sharedrec
from sharedrec.errors import CorruptVersion, KeyNotFound

from conftest import make_ranked


@pytest.fixture
def store(any_store: sharedrec.RecommendationStore) -> sharedrec.RecommendationStore:
    """Every test here runs on a local folder and on S3."""
    return any_store


class Model:
    """The data a store should serve, kept as plain dicts: key -> (items, scores)."""

    def __init__(self, keys: list[Any], items: np.ndarray, scores: np.ndarray) -> None:
        self.rows = {key: (items[i], scores[i]) for i, key in enumerate(keys)}

    def arrays(self) -> tuple[list[Any], np.ndarray, np.ndarray]:
        keys = list(self.rows)
        return keys, np.stack([self.rows[k][0] for k in keys]), np.stack([self.rows[k][1] for k in keys])


def _assert_serves(reader: sharedrec.Reader, model: Model, gone: set[Any]) -> None:
    keys, items, scores = model.arrays()
    got_items, got_scores, found = reader.get_many(
        "home", np.asarray(keys) if not isinstance(keys[0], str) else keys
    )
    assert found.all()
    np.testing.assert_array_equal(got_items, items)
    np.testing.assert_array_equal(got_scores, scores)
    for key in keys[:25]:
        np.testing.assert_array_equal(reader.get("home", key).items, model.rows[key][0])
    for key in list(gone)[:25]:
        with pytest.raises(KeyNotFound):
            reader.get("home", key)
    if gone:
        asked = list(gone) if isinstance(next(iter(gone)), str) else np.array(sorted(gone))
        assert not reader.get_many("home", asked)[2].any()
    assert sorted(reader.keys("home")) == sorted(keys)


def _step(
    rng: np.random.Generator, model: Model, next_key: int, str_keys: bool, k: int
) -> tuple[int, set[Any]]:
    """Change, add and remove a few keys of ``model``; returns the next fresh key and removals."""
    keys = list(model.rows)
    for key in rng.choice(len(keys), size=min(len(keys), 7), replace=False).tolist():
        items, scores = model.rows[keys[key]]
        model.rows[keys[key]] = (items + 1, scores)
    removed = {keys[i] for i in rng.choice(len(keys), size=min(len(keys) - 1, 3), replace=False).tolist()}
    for key in removed:
        del model.rows[key]
    for _ in range(4):
        key = f"user-{next_key}" if str_keys else next_key
        model.rows[key] = (
            np.arange(k, dtype=np.int32) * 3 + next_key % 100,
            np.linspace(1, 0, k, dtype=np.float32),
        )
        next_key += 1
    return next_key, removed


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), str_keys=st.booleans())
def test_a_chain_of_ten_deltas_equals_the_full_data(tmp_path: Path, seed: int, str_keys: bool) -> None:
    rng = np.random.default_rng(seed)
    data = make_ranked(300, 6, str_keys=str_keys, seed=seed % 1000)
    model = Model(list(data.keys), data.items, data.scores)
    folder = tmp_path / f"case-{seed}-{str_keys}"
    chained = sharedrec.open(folder / "chained", create=True)
    full = sharedrec.open(folder / "full", create=True)
    chained.publish_ranked("home", *model.arrays(), progress=False)
    gone: set[Any] = set()
    next_key = 10**6
    for _ in range(10):
        next_key, removed = _step(rng, model, next_key, str_keys, 6)
        gone = (gone | removed) - set(model.rows)
        with chained.publish(delta=True, max_chain=10, guards=[], progress=False) as draft:
            draft.add_ranked("home", *model.arrays())
    assert chained.manifest(chained.current() or "").depth == 10
    full.publish_ranked("home", *model.arrays(), progress=False)
    with chained.reader(lease=False) as a, full.reader(lease=False) as b:
        _assert_serves(a, model, gone)
        _assert_serves(b, model, gone)
    shutil.rmtree(folder)


def test_delta_writes_only_the_changes(store: sharedrec.RecommendationStore) -> None:
    data = make_ranked(2000, 10, seed=1)
    first = store.publish_ranked("home", data.keys, data.items, data.scores)
    items = data.items.copy()
    items[:20] += 1  # 1% of the lists change
    second = store.publish_ranked("home", data.keys, items, data.scores, delta=True)
    manifest = store.manifest(second)
    home = manifest.collections["home"]
    assert (manifest.base, manifest.depth, home.delta, home.removed) == (first, 1, True, 0)
    assert home.arrays["keys"].shape == (20,)
    assert home.count == 2000
    assert manifest.data_bytes < store.manifest(first).data_bytes / 10
    with store.reader(lease=False) as reader:
        got, _, found = reader.get_many("home", data.keys)
        assert found.all()
        np.testing.assert_array_equal(got, items)
        assert reader.get("home", int(data.keys[5])).source == "home"


def test_removed_keys_are_gone_and_new_ones_served(store: sharedrec.RecommendationStore) -> None:
    data = make_ranked(500, 5, seed=2)
    store.publish_ranked("home", data.keys, data.items, data.scores, default=([9], [0.1]))
    keys = np.concatenate([data.keys[10:], [7, 8]])
    items = np.concatenate([data.items[10:], data.items[:2]])
    scores = np.concatenate([data.scores[10:], data.scores[:2]])
    version = store.publish_ranked("home", keys, items, scores, delta=True, default=([9], [0.1]))
    assert store.manifest(version).collections["home"].removed == 10
    with store.reader(lease=False) as reader:
        for key in cast(NDArray[np.int64], data.keys)[:10].tolist():  # removed: the default list answers
            assert reader.get("home", key).source == "home/default"
        np.testing.assert_array_equal(reader.get("home", 8).items, data.items[1])
        _, _, found = reader.get_many("home", data.keys[:12])
        assert found.tolist() == [False] * 10 + [True, True]


def test_collections_not_added_are_kept(store: sharedrec.RecommendationStore) -> None:
    data = make_ranked(300, 4, seed=3)
    vectors = np.random.default_rng(0).random((300, 8)).astype(np.float32)
    with store.publish() as draft:
        draft.add_ranked("home", data.keys, data.items, data.scores, default=([1], [1.0]))
        draft.add_vectors("emb", data.keys, vectors)
    changed = vectors.copy()
    changed[3] = 0.5
    with store.publish(delta=True) as draft:
        draft.add_vectors("emb", data.keys, changed)
    manifest = store.manifest(draft.version_id)
    assert manifest.collections["home"].delta and manifest.collections["home"].arrays.keys() == {
        "default_items",
        "default_scores",
    }
    assert manifest.collections["emb"].arrays["keys"].shape == (1,)
    with store.reader(lease=False) as reader:
        np.testing.assert_array_equal(reader.vector("emb", int(data.keys[3])), changed[3])
        got, found = reader.vectors("emb", data.keys)
        assert found.all()
        np.testing.assert_array_equal(got, changed)
        assert reader.get("home", -1).source == "home/default"
        np.testing.assert_array_equal(reader.get("home", int(data.keys[0])).items, data.items[0])


def test_compaction_preserves_answers(store: sharedrec.RecommendationStore) -> None:
    data = make_ranked(400, 6, seed=4)
    store.publish_ranked("home", data.keys, data.items, data.scores)
    items = data.items.copy()
    for step in range(3):
        items[step * 10 : step * 10 + 5] += 7
        store.publish_ranked(
            "home", data.keys[: -step - 1], items[: -step - 1], data.scores[: -step - 1], delta=True
        )
    before = store.current()
    compacted = store.compact()
    assert compacted != before and store.current() == compacted
    manifest = store.manifest(compacted)
    assert manifest.base is None and manifest.metadata["compacted_from"] == before
    assert store.compact() == compacted  # already full: nothing to do
    with store.reader(lease=False, version=before) as old, store.reader(lease=False) as new:
        for reader in (old, new):
            got, scores, found = reader.get_many("home", data.keys)
            assert found.tolist() == [True] * 397 + [False] * 3  # the last step kept keys[:-3]
            np.testing.assert_array_equal(got[:397], items[:397])
            np.testing.assert_array_equal(scores[:397], data.scores[:397])


def test_max_chain_writes_a_full_version(tmp_path: Path) -> None:
    store = sharedrec.open(tmp_path / "store", create=True)
    data = make_ranked(100, 3, seed=5)
    store.publish_ranked("home", data.keys, data.items, data.scores)
    depths = []
    for step in range(5):
        items = data.items + step + 1
        with store.publish(delta=True, max_chain=2, guards=[]) as draft:
            draft.add_ranked("home", data.keys, items, data.scores)
        depths.append(store.manifest(draft.version_id).depth)
    assert depths == [1, 2, 0, 1, 2]


def test_gc_keeps_every_base_a_kept_version_needs(tmp_path: Path) -> None:
    store = sharedrec.open(tmp_path / "store", create=True)
    data = make_ranked(100, 3, seed=6)
    full = store.publish_ranked("home", data.keys, data.items, data.scores)
    first = store.publish_ranked("home", data.keys, data.items + 1, data.scores, delta=True, guards=[])
    second = store.publish_ranked("home", data.keys, data.items + 2, data.scores, delta=True, guards=[])
    report = store.gc(keep=1, grace=0)
    assert report.deleted == []
    assert "a base of delta version" in report.kept[full] and "a base of delta version" in report.kept[first]
    leased = store.reader(refresh_interval=None)  # holds `second` through its lease
    store.publish_ranked("home", data.keys, data.items + 3, data.scores, guards=[])  # a full version
    report = store.gc(keep=1, grace=0)
    assert set(report.deleted) == set()  # `second` is leased, and it needs `first` and `full`
    assert report.kept[second].startswith("leased")
    leased.close()
    report = store.gc(keep=1, grace=0)
    assert set(report.deleted) == {full, first, second}


def test_a_delta_whose_base_is_gone_is_refused(tmp_path: Path) -> None:
    store = sharedrec.open(tmp_path / "store", create=True)
    data = make_ranked(100, 3, seed=7)
    full = store.publish_ranked("home", data.keys, data.items, data.scores)
    store.publish_ranked("home", data.keys, data.items + 1, data.scores, delta=True, guards=[])
    shutil.rmtree(tmp_path / "store" / "versions" / full)
    with pytest.raises(CorruptVersion, match=f"delta over version {full}, which is gone"):
        store.reader()


def test_a_following_reader_moves_through_deltas(tmp_path: Path) -> None:
    store = sharedrec.open(tmp_path / "store", create=True)
    data = make_ranked(200, 4, seed=8)
    store.publish_ranked("home", data.keys, data.items, data.scores)
    reader = store.reader(refresh_interval=None, lease=False)
    for step in range(1, 4):
        store.publish_ranked("home", data.keys, data.items + step, data.scores, delta=True, guards=[])
        assert reader.refresh() is True
        np.testing.assert_array_equal(reader.get("home", int(data.keys[9])).items, data.items[9] + step)
    store.rollback()
    assert reader.refresh() is True
    np.testing.assert_array_equal(reader.get("home", int(data.keys[9])).items, data.items[9] + 2)
    reader.close()


def test_guards_see_the_delta_as_the_full_data(tmp_path: Path) -> None:
    store = sharedrec.open(tmp_path / "store", create=True)
    data = make_ranked(1000, 4, seed=9)
    store.publish_ranked("home", data.keys, data.items, data.scores)
    with pytest.raises(sharedrec.PublishRejected, match="max_shrink"):  # 70% of the keys removed
        store.publish_ranked("home", data.keys[:300], data.items[:300], data.scores[:300], delta=True)
    version = store.publish_ranked("home", data.keys[:900], data.items[:900], data.scores[:900], delta=True)
    assert store.manifest(version).checks["max_shrink"]["passed"] is True


def test_a_dtype_change_is_written_in_full(tmp_path: Path) -> None:
    store = sharedrec.open(tmp_path / "store", create=True)
    keys = np.arange(50)
    store.publish_ranked("home", keys, np.ones((50, 3), dtype=np.int32), np.ones((50, 3), np.float32))
    wide = np.ones((50, 3), dtype=np.int64)
    wide[0, 0] = 5_000_000_000  # needs int64
    version = store.publish_ranked("home", keys, wide, np.ones((50, 3), np.float32), delta=True, guards=[])
    home = store.manifest(version).collections["home"]
    assert not home.delta and home.arrays["items"].dtype == "<i8"
    with store.reader(lease=False) as reader:
        assert reader.get("home", 0).items[0] == 5_000_000_000
        assert reader.get_many("home", [0, 1])[0][0, 0] == 5_000_000_000


def test_inherited_collections_keep_their_fallbacks(tmp_path: Path) -> None:
    store = sharedrec.open(tmp_path / "store", create=True)
    with store.publish() as draft:
        draft.add_ranked("popular", [0], [[9, 8]], [[1.0, 0.5]], serve_to_all=True)
        draft.add_ranked("home", [1, 2], [[1], [2]], [[1.0], [1.0]], fallbacks=["popular"])
    # "popular" becomes a vectors collection: "home", inherited, would name a fallback that
    # is no longer ranked, so the publish is refused before anything is committed.
    live = store.current()
    with (
        pytest.raises(sharedrec.InvalidInput, match="names fallback 'popular'"),
        store.publish(delta=True, guards=[]) as draft,
    ):
        draft.add_vectors("popular", [0], np.ones((1, 4), np.float32))
    assert store.current() == live
    with store.reader(lease=False) as reader:
        assert reader.get("home", 5).source == "popular"


def test_the_base_is_leased_while_a_delta_is_written(tmp_path: Path) -> None:
    store = sharedrec.open(tmp_path / "store", create=True)
    data = make_ranked(100, 3, seed=10)
    old = store.publish_ranked("home", data.keys, data.items, data.scores)
    store.publish_ranked("home", data.keys, data.items + 1, data.scores, guards=[])
    time.sleep(1.2)  # both versions are now older than the collector's grace period
    with store.publish(base=old, guards=[]) as draft:
        draft.add_ranked("home", data.keys, data.items + 2, data.scores)
        report = store.gc(keep=0, grace=1)  # a collector running meanwhile
        assert old not in report.deleted and report.kept[old].startswith("leased")
    assert store.manifest(draft.version_id).base == old
    assert store.leases() == []  # the draft's lease ends with it
    with store.reader(lease=False) as reader:
        np.testing.assert_array_equal(reader.get("home", int(data.keys[4])).items, data.items[4] + 2)


def test_damaged_chains_are_refused(tmp_path: Path) -> None:
    import json

    store = sharedrec.open(tmp_path / "store", create=True)
    data = make_ranked(100, 3, seed=11)
    store.publish_ranked("home", data.keys, data.items, data.scores)
    delta = store.publish_ranked("home", data.keys, data.items + 1, data.scores, delta=True, guards=[])
    path = tmp_path / "store" / "versions" / delta / "manifest.json"
    manifest = json.loads(path.read_bytes())
    path.write_text(json.dumps({**manifest, "base": delta}))  # a delta over itself
    with pytest.raises(CorruptVersion, match="loop or run too long"):
        store.reader(lease=False)
    path.write_text(json.dumps({**manifest, "base": None}))  # a delta collection, no base
    with pytest.raises(CorruptVersion, match="is a delta, but the version names no base"):
        store.reader(lease=False)
