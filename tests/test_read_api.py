"""The public read API writer-side code and users share: keys, key_at, count, contains, default.

Every kind of collection answers it alike: stored whole, split into partitions, and served
through a chain of deltas (with keys added, changed and removed).
"""

from __future__ import annotations

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
