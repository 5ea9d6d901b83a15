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
from sharedrec.write.draft import Written

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


# -- what a delta publish wrote, and why in full ----------------------------------------------


def _lists(n: int, k: int = 3) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.float32]]:
    keys = np.arange(n, dtype=np.int64)
    items = (keys[:, None] * 10 + np.arange(k)).astype(np.int32)
    scores = np.tile(np.array([0.9, 0.5, 0.1][:k], dtype=np.float32), (n, 1))
    return keys, items, scores


def test_a_delta_whose_wider_dtypes_cast_exactly_stays_a_delta(tmp_path: Path) -> None:
    # List input gave int32 items and float32 scores; long input gives int64 and float64 of
    # the same values: the new rows fit the base's dtypes, so only the changes are written.
    store = sharedrec.open(tmp_path / "store", create=True)
    keys, items, scores = _lists(1000)
    store.publish_ranked("home", keys, items, scores, progress=False)
    wide_items, wide_scores = items.astype(np.int64), scores.astype(np.float64)
    wide_items[:100] += 5  # 100 lists change
    with store.publish(delta=True, progress=False) as draft:
        draft.add_ranked("home", keys, wide_items, wide_scores)
    written = draft.written["home"]
    assert (written.mode, written.keys, written.written, written.reason) == ("delta", 1000, 100, None)
    assert (written.added, written.changed, written.removed) == (0, 100, 0)
    home = store.manifest(draft.version_id).collections["home"]
    assert home.delta
    assert home.arrays["items"].dtype == "<i4" and home.arrays["scores"].dtype == "<f4"
    assert home.arrays["keys"].shape == (100,)
    with store.reader(lease=False) as reader:
        got_items, got_scores, found = reader.get_many("home", keys)
        assert found.all()
        np.testing.assert_array_equal(got_items, wide_items)
        np.testing.assert_array_equal(got_scores, scores)


def test_a_delta_with_narrower_dtypes_stays_a_delta(tmp_path: Path) -> None:
    store = sharedrec.open(tmp_path / "store", create=True)
    keys, items, scores = _lists(200)
    store.publish_ranked("home", keys, items.astype(np.int64), scores.astype(np.float64), progress=False)
    items[:7] += 1
    with store.publish(delta=True, progress=False) as draft:
        draft.add_ranked("home", keys, items, scores)
    assert draft.written["home"].mode == "delta"
    assert draft.written["home"].changed == 7
    assert store.manifest(draft.version_id).collections["home"].arrays["items"].dtype == "<i8"


def test_a_delta_that_cannot_keep_the_base_dtypes_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    store = sharedrec.open(tmp_path / "store", create=True)
    keys, items, scores = _lists(300)
    store.publish_ranked("home", keys, items, scores, progress=False)
    wide = items.astype(np.int64)
    wide[3, 0] = 5_000_000_000  # needs int64
    capsys.readouterr()
    with caplog.at_level("WARNING", logger="sharedrec"), store.publish(delta=True, progress="plain") as draft:
        draft.add_ranked("home", keys, wide, scores)
    written = draft.written["home"]
    assert (written.mode, written.keys, written.written) == ("full", 300, 300)
    assert written.reason is not None
    assert "items dtype int64 differs from the base's int32" in written.reason
    assert "5000000000" in written.reason
    assert "not as a delta" in str(written) and "300 keys" in str(written)
    warned = [r for r in caplog.records if r.name == "sharedrec" and r.levelname == "WARNING"]
    assert len(warned) == 1
    assert "collection 'home'" in warned[0].getMessage()
    assert written.reason in warned[0].getMessage()
    assert written.reason in capsys.readouterr().err  # shown with the progress lines
    assert not store.manifest(draft.version_id).collections["home"].delta


def test_scores_that_float32_cannot_hold_exactly_are_written_in_full(tmp_path: Path) -> None:
    store = sharedrec.open(tmp_path / "store", create=True)
    keys, items, scores = _lists(50)
    store.publish_ranked("home", keys, items, scores, progress=False)
    precise = scores.astype(np.float64)
    precise[10] = [0.9, 0.5, 0.1]  # 0.1 as a float64: float32 rounds it
    version = store.publish_ranked("home", keys, items, precise, delta=True, guards=[], progress=False)
    home = store.manifest(version).collections["home"]
    assert not home.delta and home.arrays["scores"].dtype == "<f8"
    with store.publish(delta=True, guards=[], progress=False) as draft:
        draft.add_ranked("home", keys, items, precise + 1.0)
    reason = draft.written["home"].reason
    assert draft.written["home"].mode == "delta" and reason is None  # the base is float64 now


def test_written_counts_added_changed_and_removed(tmp_path: Path) -> None:
    store = sharedrec.open(tmp_path / "store", create=True)
    keys, items, scores = _lists(100)
    store.publish_ranked("home", keys, items, scores, progress=False)
    new_keys = np.concatenate([keys[5:], [1000, 1001, 1002]])  # 5 removed, 3 added
    new_items = np.concatenate([items[5:], items[:3]])
    new_items[:4] += 1  # 4 changed
    new_scores = np.concatenate([scores[5:], scores[:3]])
    with store.publish(delta=True, guards=[], progress=False) as draft:
        draft.add_ranked("home", new_keys, new_items, new_scores)
        draft.add_vectors("emb", keys, np.ones((100, 4), np.float32))  # not in the base
    home, emb = draft.written["home"], draft.written["emb"]
    assert (home.mode, home.keys, home.written) == ("delta", 98, 12)
    assert (home.added, home.changed, home.removed) == (3, 4, 5)
    assert str(home) == "written as a delta: 3 added, 4 changed, 5 removed (98 keys in all)"
    assert (emb.mode, emb.keys, emb.written) == ("full", 100, 100)
    assert emb.reason is not None and "has no collection 'emb'" in emb.reason


def test_written_when_no_delta_was_asked_or_none_was_possible(tmp_path: Path) -> None:
    store = sharedrec.open(tmp_path / "store", create=True)
    keys, items, scores = _lists(20)
    with store.publish(delta=True, progress=False) as draft:  # nothing live yet
        draft.add_ranked("home", keys, items, scores)
    first = draft.written["home"]
    assert (first.mode, first.keys, first.written) == ("full", 20, 20)
    assert first.reason is not None and "no version is live yet" in first.reason
    with store.publish(progress=False, guards=[]) as draft:  # no delta asked for
        draft.add_ranked("home", keys, items + 1, scores)
    assert draft.written["home"] == Written("full", 20, 20)
    assert str(draft.written["home"]) == "written in full: 20 keys"
    with store.publish(delta=True, max_chain=1, progress=False, guards=[]) as draft:
        draft.add_ranked("home", keys, items + 2, scores)
    assert draft.written["home"].mode == "delta"
    with store.publish(delta=True, max_chain=1, progress=False, guards=[]) as draft:
        draft.add_ranked("home", keys, items + 3, scores)
    chained = draft.written["home"]
    assert chained.mode == "full" and "max_chain=1" in (chained.reason or "")


def test_vectors_of_another_dtype_cast_or_say_why(tmp_path: Path) -> None:
    store = sharedrec.open(tmp_path / "store", create=True)
    keys = np.arange(40)
    vectors = np.arange(160, dtype=np.float32).reshape(40, 4)
    store.publish_vectors("emb", keys, vectors, progress=False)
    exact = vectors.astype(np.float64)
    exact[:2] += 1
    with store.publish(delta=True, progress=False) as draft:
        draft.add_vectors("emb", keys, exact)
    assert (draft.written["emb"].mode, draft.written["emb"].changed) == ("delta", 2)
    with store.publish(delta=True, progress=False, guards=[]) as draft:
        draft.add_vectors("emb", keys, np.ones((40, 8), np.float32))
    assert draft.written["emb"].reason == "its vectors have 8 dimensions; the base's have 4"


def test_a_default_item_beyond_int32_widens_the_lists(tmp_path: Path) -> None:
    # The default list is stored in the lists' dtype: an id int32 cannot hold must widen the
    # lists rather than wrap to a negative id.
    store = sharedrec.open(tmp_path / "store", create=True)
    keys, items, scores = _lists(10)
    store.publish_ranked("home", keys, items, scores, default=([5_000_000_000], [0.5]), progress=False)
    with store.reader(lease=False) as reader:
        assert reader.get("home", 99).items.tolist() == [5_000_000_000]
        assert reader.get("home", 1).items.tolist() == [10, 11, 12]


def test_a_draft_has_a_repr(tmp_path: Path) -> None:
    store = sharedrec.open(tmp_path / "store", create=True)
    keys, items, scores = _lists(10)
    base = store.publish_ranked("home", keys, items, scores, progress=False)
    draft = store.publish(delta=True, ref="current", progress=False, version_id="v-2")
    assert repr(draft) == f"Draft(version='v-2', ref='current', delta over '{base}', collections=[], new)"
    with draft:
        draft.add_ranked("home", keys, items + 1, scores)
        assert repr(draft).endswith("collections=['home'], open)")
    assert repr(draft).endswith("committed)") and draft.state == "committed"
    with pytest.raises(RuntimeError), store.publish(progress=False, ref="canary") as failed:
        raise RuntimeError("boom")
    assert repr(failed).startswith("Draft(version=") and "ref='canary', full" in repr(failed)
    assert repr(failed).endswith("aborted)")


def test_a_delta_over_partitioned_collections_is_a_full_version_that_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = sharedrec.open(tmp_path / "store", create=True)
    keys, items, scores = _lists(60)
    handle = store.begin_publish(partitions=2)
    owners = handle.partition_of(keys)
    receipts = [
        handle.write_ranked("home", part, keys[owners == part], items[owners == part], scores[owners == part])
        for part in range(2)
    ]
    base = store.commit_publish(handle, receipts, guards=[])
    with caplog.at_level("WARNING", logger="sharedrec"), store.publish(delta=True, progress=False) as draft:
        draft.add_ranked("home", keys, items + 1, scores)
    written = draft.written["home"]
    assert (written.mode, written.keys, written.written) == ("full", 60, 60)
    assert written.reason == (
        f"the base version {base} holds partitioned collections (home), which deltas cannot build on"
    )
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"version {draft.version_id} is written in full, not as a delta: {written.reason}"
    ]
    assert store.manifest(draft.version_id).base is None
