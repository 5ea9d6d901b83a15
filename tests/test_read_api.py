"""The public read API writer-side code and users share: keys, key_at, count, contains, default.

Every kind of collection answers it alike: stored whole, split into partitions, and served
through a chain of deltas (with keys added, changed and removed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

import sharedrec
from sharedrec.errors import InvalidInput, UnknownCollection


def _rows(keys: list[Any], k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    items = np.arange(len(keys) * k, dtype=np.int32).reshape(len(keys), k)
    scores = np.tile(np.linspace(1.0, 0.1, k, dtype=np.float32), (len(keys), 1))
    return items, scores


def _check(reader: sharedrec.Reader, name: str, served: list[Any], absent: list[Any]) -> None:
    keys = reader.keys(name)
    listed = [int(key) for key in keys] if isinstance(keys, np.ndarray) else list(keys)
    assert sorted(listed) == sorted(served)
    assert reader.count(name) == len(served)
    assert [reader.key_at(name, i) for i in range(len(listed))] == listed
    for key in served:
        assert reader.contains(name, key)
    for key in absent:
        assert not reader.contains(name, key)


@pytest.mark.parametrize("str_keys", [False, True], ids=["int", "str"])
def test_whole_collection(tmp_path: Any, str_keys: bool) -> None:
    keys: list[Any] = [f"user-{i}" for i in range(50)] if str_keys else list(range(0, 500, 10))
    items, scores = _rows(keys)
    store = sharedrec.open(tmp_path / "s", create=True)
    store.publish_ranked("home", keys, items, scores, default=(np.array([7, 8]), np.array([0.5, 0.4])))
    with store.reader() as reader:
        _check(reader, "home", keys, ["nobody"] if str_keys else [5, -1])
        default = reader.default("home")
        assert default is not None
        assert default.items.tolist() == [7, 8]


def test_delta_chain_counts_added_and_removed_keys(tmp_path: Any) -> None:
    store = sharedrec.open(tmp_path / "s", create=True)
    keys = list(range(100))
    items, scores = _rows(keys)
    store.publish_ranked("home", keys, items, scores)
    now = [*range(10, 100), 1000, 1001]  # 0..9 removed, two added
    items, scores = _rows(now)
    items[5] += 1  # one changed
    store.publish_ranked("home", now, items, scores, delta=True, guards=[])
    with store.reader() as reader:
        assert store.manifest(reader.version).base is not None  # really served through a chain
        _check(reader, "home", now, list(range(10)))
        assert reader.default("home") is None


def test_partitioned_collection(tmp_path: Any) -> None:
    store = sharedrec.open(tmp_path / "s", create=True)
    keys = np.arange(0, 3000, 7, dtype=np.int64)
    handle = store.begin_publish(partitions=4)
    owners = handle.partition_of(keys)
    receipts = []
    for part in range(4):
        mine = keys[owners == part]
        items, scores = _rows(mine.tolist())
        receipts.append(handle.write_ranked("home", part, mine, items, scores))
    store.commit_publish(handle, receipts, guards=[])
    with store.reader() as reader:
        _check(reader, "home", keys.tolist(), [1, 3001])


def test_vectors_and_errors(tmp_path: Any) -> None:
    store = sharedrec.open(tmp_path / "s", create=True)
    store.publish_vectors("emb", ["a", "b", "c"], np.eye(3, dtype=np.float32))
    with store.reader() as reader:
        _check(reader, "emb", ["a", "b", "c"], ["d"])
        assert reader.default("emb") is None
        with pytest.raises(InvalidInput):
            reader.contains("emb", 3)  # an int key for a collection of str keys
        with pytest.raises(UnknownCollection):
            reader.keys("nope")


# -- a collection as a mapping, and the reprs --------------------------------------------------


def test_a_collection_reads_as_a_mapping(tmp_path: Any) -> None:
    store = sharedrec.open(tmp_path / "s", create=True)
    keys = [101, 102, 103]
    items, scores = _rows(keys)
    with store.publish() as draft:
        draft.add_ranked("home", keys, items, scores, default=([9], [0.1]))
        draft.add_vectors("emb", ["a", "b"], np.eye(2, dtype=np.float32))
    with store.reader() as reader:
        home = reader["home"]
        assert isinstance(home, Mapping)
        assert len(home) == 3 and list(home) == [101, 102, 103]
        assert all(type(key) is int for key in home)
        assert 102 in home and 999 not in home
        assert home[102].items.tolist() == items[1].tolist()
        assert home[999].source == "home/default"  # [] answers as get() does; `in` does not count it
        assert home.get(101) is not None
        emb = reader["emb"]
        assert sorted(emb) == ["a", "b"] and "a" in emb and len(emb) == 2
        assert emb["b"].tolist() == [0.0, 1.0]
        assert emb.get("zz") is None  # KeyNotFound is a KeyError
        with pytest.raises(KeyError):
            emb["zz"]
        with pytest.raises(InvalidInput):
            3 in emb  # noqa: B015  # an int key for str keys is an error, as in contains()
        assert "home" in reader and "nope" not in reader
        assert sorted(reader) == ["emb", "home"]
        with pytest.raises(UnknownCollection, match="nope"):
            reader["nope"]
        assert repr(home) == f"CollectionView('home', ranked, 3 int64 keys, version={reader.version!r})"


def test_a_view_follows_the_reader_across_versions(tmp_path: Any) -> None:
    store = sharedrec.open(tmp_path / "s", create=True)
    items, scores = _rows([1, 2])
    store.publish_ranked("home", [1, 2], items, scores)
    with store.reader(refresh_interval=None) as reader:
        home = reader["home"]
        store.publish_ranked("home", [1, 2, 3], *_rows([1, 2, 3]), delta=True, guards=[])
        assert reader.refresh()
        assert list(home) == [1, 2, 3] and 3 in home and len(home) == 3


def test_reprs_say_what_is_open(tmp_path: Any) -> None:
    store = sharedrec.open(tmp_path / "s", create=True)
    keys = list(range(100))
    items, scores = _rows(keys)
    with store.publish() as draft:
        draft.add_ranked("popular", [0], items[:1], scores[:1], serve_to_all=True)
        draft.add_ranked("home", keys, items, scores, default=([9], [0.1]), fallbacks=["popular"])
    full = draft.version_id
    assert repr(store).startswith("sharedrec.RecommendationStore(") and str(tmp_path / "s") in repr(store)
    changed = items.copy()
    changed[:3] += 1
    delta = store.publish_ranked("home", keys[:-1], changed[:-1], scores[:-1], delta=True, guards=[])
    with store.reader(version=full) as reader:
        assert repr(reader) == f"Reader(version={full!r}, pinned, collections=['home', 'popular'])"
        v = reader._v  # noqa: SLF001 - the objects behind the reader are what is under test
        assert repr(v) == f"OpenVersion({full!r}, ranked=['popular', 'home'], vectors=[])"
        assert repr(v.ranked["home"]) == (
            "Whole('home', ranked, 100 int64 keys, default of 1, fallbacks=['popular'], 4 wide)"
        )
        assert repr(v.ranked["popular"]) == "Whole('popular', ranked, 1 int64 keys, serve_to_all, 4 wide)"
    store.set_current(delta, ref="canary")
    with store.reader(ref="canary") as reader:
        assert (
            repr(reader)
            == f"Reader(version={delta!r}, following refs/canary, collections=['home', 'popular'])"
        )
    with store.reader() as reader:
        assert repr(reader).startswith(f"Reader(version={delta!r}, following CURRENT, ")
        v = reader._v  # noqa: SLF001 - the objects behind the reader are what is under test
        assert repr(v).startswith(f"OpenVersion({delta!r}, ") and repr(v).endswith(f", base={full!r})")
        assert repr(v.ranked["home"]) == (
            "Chained('home', ranked, 99 int64 keys; deltas added, changed or removed 4)"
        )
    handle = store.begin_publish(partitions=2)
    owners = handle.partition_of(np.asarray(keys))
    receipts = [
        handle.write_ranked(
            "home", part, np.asarray(keys)[owners == part], items[owners == part], scores[owners == part]
        )
        for part in range(2)
    ]
    store.commit_publish(handle, receipts, guards=[])
    with store.reader() as reader:
        v = reader._v  # noqa: SLF001 - the objects behind the reader are what is under test
        assert repr(v.ranked["home"]) == (
            "Partitioned('home', ranked, 100 int64 keys, 2 partitions, 2 holding keys)"
        )
