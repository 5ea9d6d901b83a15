"""A store written before the one-schema change opens unchanged and gives the same answers.

The store in ``tests/fixtures/store-0.1.0/store`` was written by ``generate.py`` beside it with the
code of main at 10ac003 (pydantic models on the writing side); the expected answers below were
recorded from that same code. See the README next to the store.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import sharedrec
from sharedrec.errors import KeyNotFound
from sharedrec.format.schema import Manifest, Pointer

FIXTURE = Path(__file__).parent / "fixtures" / "store-0.1.0" / "store"


@pytest.fixture
def old_store(tmp_path: Path) -> sharedrec.RecommendationStore:
    root = tmp_path / "store"
    shutil.copytree(FIXTURE, root)
    return sharedrec.open(root, create=False)


def test_pointers_and_versions(old_store: sharedrec.RecommendationStore) -> None:
    assert old_store.current() == "v2-delta"
    assert old_store.refs() == {"current": "v2-delta", "canary": "v3-parts"}
    assert [v.id for v in old_store.versions()] == ["v1-full", "v2-delta", "v3-parts"]
    manifest = old_store.manifest("v2-delta")
    assert manifest.metadata == {"model": "fixture", "run": 2}
    assert (manifest.base, manifest.depth, manifest.parent) == ("v1-full", 1, "v1-full")
    assert sorted(manifest.collections) == ["emb", "home", "names"]
    assert [old_store.verify(v).ok for v in ("v1-full", "v2-delta", "v3-parts")] == [True, True, True]


def test_current_answers(old_store: sharedrec.RecommendationStore) -> None:
    reader = old_store.reader(lease=False)
    home = {
        10: ([1000, 1001, 1002, 1003, 1004], [1.0, 0.75, 0.5, 0.25, 0.0]),
        20: ([1, 2, 3, 4, 5], [2.0, 1.75, 1.5, 1.25, 1.0]),  # changed by the delta
        30: ([1, 2, 3], [0.3, 0.2, 0.1]),  # removed by the delta: the default list
        40: ([], []),  # an empty list
        999: ([9, 8], [5.0, 4.0]),  # added by the delta
        12345: ([1, 2, 3], [0.3, 0.2, 0.1]),  # unknown: the default list
    }
    for key, (items, scores) in home.items():
        got = reader.get("home", key, k=10)
        assert got.items.tolist() == items
        assert np.allclose(got.scores, scores)
    assert reader.get("names", "alice", k=10).items.tolist() == [7, 8, 9]
    assert reader.get("names", "mallory", k=10).scores.tolist() == [3.0, 2.0, 1.0]
    assert reader.get("names", "zed", k=10).items.tolist() == [1, 2, 3]  # falls back to home
    assert reader.vector("emb", 3).tolist() == [1.0, 1.125, 1.25, 1.375]
    assert (reader.count("home"), reader.count("names"), reader.count("emb")) == (20, 6, 10)
    many, _, found = reader.get_many("home", np.array([10, 30, 999, 5]), k=3)
    assert many.tolist() == [[1000, 1001, 1002], [1, 2, 3], [9, 8, -1], [1, 2, 3]]
    assert found.tolist() == [True, False, True, False]
    assert sorted(int(key) for key in reader.keys("home")) == [10, 20, *range(40, 210, 10), 999]
    old = old_store.reader(version="v1-full", lease=False)
    assert old.get("home", 30).items.tolist() == [1010, 1011, 1012]
    assert old.get("home", 20).items.tolist() == [1005, 1006, 1007, 1008]


def test_partitioned_ref_answers(old_store: sharedrec.RecommendationStore) -> None:
    reader = old_store.reader(ref="canary", lease=False)
    for key, items in {0: [0, 1], 7: [2, 3], 203: [58, 59]}.items():
        got = reader.get("parts", key)
        assert got.items.tolist() == items and got.scores.tolist() == [1.0, 0.5]
    with pytest.raises(KeyNotFound):
        reader.get("parts", 1)
    assert reader.count("parts") == 30


@pytest.mark.parametrize("version", ["v1-full", "v2-delta", "v3-parts"])
def test_manifests_dump_to_the_bytes_they_were_read_from(version: str) -> None:
    raw = (FIXTURE / "versions" / version / "manifest.json").read_bytes()
    assert Manifest.loads(raw, version).dumps() == raw


@pytest.mark.parametrize("path", ["CURRENT", "refs/canary"])
def test_pointers_dump_to_the_bytes_they_were_read_from(path: str) -> None:
    raw = (FIXTURE / path).read_bytes()
    assert Pointer.loads(raw, path).dumps() == raw
