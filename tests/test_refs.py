"""Named refs: a canary pointer beside CURRENT, promotion, side-by-side readers."""

from __future__ import annotations

import pytest

import sharedrec
from sharedrec.errors import InvalidInput, VersionNotFound

from conftest import KEYS, publish


@pytest.fixture
def store(any_store: sharedrec.RecommendationStore) -> sharedrec.RecommendationStore:
    """Every test here runs on a local folder and on S3."""
    return any_store


def tag(reader: sharedrec.Reader) -> int:
    return int(reader.get("home", int(KEYS[1])).items[0]) // 1000


def test_canary_beside_current(store: sharedrec.RecommendationStore) -> None:
    live = publish(store, 1)
    canary = publish(store, 2, ref="canary")
    assert store.current() == live
    assert store.current("canary") == canary
    assert store.refs() == {"current": live, "canary": canary}
    with (
        store.reader(refresh_interval=None) as everyone,
        store.reader(ref="canary", refresh_interval=None) as some,
    ):
        assert (tag(everyone), tag(some)) == (1, 2)  # side by side in one process
        canary2 = publish(store, 3, ref="canary")
        assert some.refresh() and some.version == canary2 and tag(some) == 3
        assert not everyone.refresh() and tag(everyone) == 1
        assert store.promote("canary") == canary2
        assert everyone.refresh() and everyone.version == canary2
    assert store.rollback() == live  # CURRENT's own history
    assert store.current("canary") == canary2
    assert store.rollback(ref="canary") == canary


def test_reader_ref_from_environment(
    store: sharedrec.RecommendationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(store, 1)
    publish(store, 2, ref="model-b")
    monkeypatch.setenv("SHAREDREC_REF", "model-b")
    with store.reader(refresh_interval=None) as reader:
        assert tag(reader) == 2


def test_gc_keeps_what_refs_name(store: sharedrec.RecommendationStore) -> None:
    canary = publish(store, 1, ref="canary")
    publish(store, 2)
    publish(store, 3)
    report = store.gc(keep=0, grace=0)
    assert report.kept[canary] == "named by ref 'canary'"
    assert canary not in report.deleted


def test_ref_errors(store: sharedrec.RecommendationStore) -> None:
    publish(store, 1)
    with pytest.raises(VersionNotFound, match="ref 'nope' names no version"):
        store.reader(ref="nope")
    with pytest.raises(VersionNotFound, match=r"ref .nope. of .* names no version"):
        store.promote("nope")
    for bad in ("../x", "CURRENT", "a/b", ""):
        with pytest.raises(InvalidInput, match="invalid ref name"):
            store.current(bad)


def test_rolling_back_a_ref_names_the_ref(store: sharedrec.RecommendationStore) -> None:
    with pytest.raises(VersionNotFound, match="ref 'canary' names no version"):
        store.rollback(ref="canary")
    publish(store, 1, ref="canary")
    with pytest.raises(VersionNotFound, match="under ref 'canary'"):
        store.rollback(ref="canary")
