"""A store whose string keys were hashed with blake2b-64 opens and answers as when it was written.

The store in ``tests/fixtures/strkeys-blake2b/store`` was written by the ``generate_strkeys.py`` beside it
with the code that hashed every string key with blake2b-64 (see the README there); the answers
follow from each key's position in ``generate_strkeys.keys()``.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import sharedrec
from sharedrec.errors import KeyNotFound

HERE = Path(__file__).parent / "fixtures" / "strkeys-blake2b"


def _generate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("strkeys_generate", HERE / "generate_strkeys.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATE = _generate()
KEYS: list[str] = GENERATE.keys()


@pytest.fixture
def old_store(tmp_path: Path) -> sharedrec.RecommendationStore:
    root = tmp_path / "store"
    shutil.copytree(HERE / "store", root)
    return sharedrec.open(root, create=False)


def _expected_items(i: int, offset: int = 0) -> list[int]:
    return [i + offset, i + offset + 1, i + offset + 2]


def test_the_fixture_is_hashed_with_blake2b(old_store: sharedrec.RecommendationStore) -> None:
    for version in ("v1-full", "v2-delta"):
        assert old_store.manifest(version).collections["users"].key_hash == "blake2b-64"
    assert old_store.manifest("v3-parts").collections["users"].key_hash == "blake2b-64"
    assert [old_store.verify(v).ok for v in ("v1-full", "v2-delta", "v3-parts")] == [True] * 3


def test_full_version_answers(old_store: sharedrec.RecommendationStore) -> None:
    reader = old_store.reader(version="v1-full", lease=False)
    for i, key in enumerate(KEYS):
        got = reader.get("users", key)
        assert got.items.tolist() == _expected_items(i), key
        assert got.scores.tolist() == [3.0, 2.0, 1.0]
        assert reader.vector("emb", key).tolist() == [(4 * i + j) / 8 for j in range(4)]
    for absent in ("user-1", "a", "a\x00", "x" * 199, "\ud800"):
        with pytest.raises(KeyNotFound):
            reader.get("users", absent)
    items, _, found = reader.get_many("users", [*KEYS, "nobody", "\ud800"])
    assert found.tolist() == [True] * len(KEYS) + [False, False]
    np.testing.assert_array_equal(items[: len(KEYS)], [_expected_items(i) for i in range(len(KEYS))])
    assert (items[len(KEYS) :] == -1).all()
    assert sorted(reader.keys("users")) == sorted(KEYS)


def test_delta_answers(old_store: sharedrec.RecommendationStore) -> None:
    reader = old_store.reader(lease=False)
    assert reader.version == "v2-delta"
    expected: dict[str, list[int] | None] = {}
    for i, key in enumerate(KEYS):
        expected[key] = _expected_items(i, 1000) if i < 10 else None if i < 20 else _expected_items(i)
    for j in range(5):
        expected[f"new-{j}"] = _expected_items(j, 5000)
    for key, items in expected.items():
        if items is None:
            with pytest.raises(KeyNotFound):
                reader.get("users", key)
        else:
            assert reader.get("users", key).items.tolist() == items, key
    got, _, found = reader.get_many("users", list(expected))
    assert found.tolist() == [items is not None for items in expected.values()]
    for row, items in zip(got.tolist(), expected.values(), strict=True):
        assert row == (items if items is not None else [-1, -1, -1])
    assert sorted(reader.keys("users")) == sorted(key for key, items in expected.items() if items)


def test_partitioned_answers(old_store: sharedrec.RecommendationStore) -> None:
    reader = old_store.reader(ref="parts", lease=False)
    for i, key in enumerate(KEYS[:60]):
        assert reader.get("users", key).items.tolist() == _expected_items(i), key
    with pytest.raises(KeyNotFound):
        reader.get("users", KEYS[60])
    items, _, found = reader.get_many("users", [KEYS[59], KEYS[60], KEYS[0]])
    assert found.tolist() == [True, False, True]
    assert items[0].tolist() == _expected_items(59) and items[2].tolist() == _expected_items(0)
    assert reader.count("users") == 60
