"""String keys hashed with xxh3-64: what new collections record, how old and new mix, collisions.

Collections written before xxh3-64 (blake2b-64) are covered by ``test_strkeys_fixture.py``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sharedrec
from sharedrec.errors import KeyNotFound
from sharedrec.read import index
from test_strkeys_fixture import HERE, KEYS, _expected_items

ALICE_XXH3 = 0x4DA10DD61A0116B0
"""xxh3-64 of "alice", as docs/format.md gives it."""


def test_hashes_are_the_documented_ones() -> None:
    assert index.KEY_HASHES["xxh3-64"](b"alice") == ALICE_XXH3
    assert index.KEY_HASHES["blake2b-64"](b"alice") == 0x89DA54CE0CECEA4D
    assert index.hash_keys([b"alice", b""], "xxh3-64").tolist() == [
        ALICE_XXH3,
        index.key_hash_function("xxh3-64")(b""),
    ]
    documented = (Path(__file__).parents[1] / "docs" / "format.md").read_text()
    assert f'`"alice"` gives `0x{ALICE_XXH3:016x}`' in documented
    assert '`"alice"` gives\n      `0x89da54ce0cecea4d`' in documented


def test_new_collections_name_xxh3(store: sharedrec.RecommendationStore) -> None:
    keys = [f"user-{i}" for i in range(50)]
    vid = store.publish_ranked("users", keys, np.arange(100).reshape(50, 2), np.ones((50, 2)))
    assert store.manifest(vid).collections["users"].key_hash == "xxh3-64"
    reader = store.reader(lease=False)
    assert [reader.get("users", key).items.tolist() for key in keys[:3]] == [[0, 1], [2, 3], [4, 5]]


def test_a_new_delta_over_a_blake2b_version(tmp_path: Path) -> None:
    """Each version of a chain reads its own hash: xxh3-64 over blake2b-64 over blake2b-64."""
    root = tmp_path / "store"
    shutil.copytree(HERE / "store", root)
    store = sharedrec.open(root, create=False)
    # Over v2-delta: keys 20..29 changed (items + 2000), key 30 removed, "newer" added.
    old = store.reader(lease=False)
    current = sorted(old.keys("users"))
    items, scores, found = old.get_many("users", current)
    assert found.all()
    changed = {KEYS[i] for i in range(20, 30)}
    rows = [row for row, key in enumerate(current) if key != KEYS[30]]
    keys = [current[row] for row in rows] + ["newer"]
    new_items = np.r_[items[rows], [[7, 8, 9]]]
    new_items[[key in changed for key in keys]] += 2000
    vid = store.publish_ranked(
        "users", keys, new_items, np.r_[scores[rows], scores[:1]], delta=True, guards=[]
    )
    manifest = store.manifest(vid)
    assert manifest.base == "v2-delta" and manifest.collections["users"].key_hash == "xxh3-64"
    reader = store.reader(lease=False)
    for i, key in enumerate(KEYS):
        if 10 <= i < 20 or i == 30:
            with pytest.raises(KeyNotFound):
                reader.get("users", key)
            continue
        offset = 1000 if i < 10 else 2000 if i < 30 else 0
        assert reader.get("users", key).items.tolist() == _expected_items(i, offset), key
    assert reader.get("users", "newer").items.tolist() == [7, 8, 9]
    assert reader.get("users", "new-1").items.tolist() == _expected_items(1, 5000)
    got, _, hit = reader.get_many("users", [KEYS[0], KEYS[25], KEYS[30], "newer", KEYS[100]])
    assert hit.tolist() == [True, True, False, True, True]
    assert got.tolist() == [
        _expected_items(0, 1000),
        _expected_items(25, 2000),
        [-1, -1, -1],
        [7, 8, 9],
        _expected_items(100),
    ]


@pytest.mark.parametrize("values", [1, 3], ids=["all-collide", "three-hashes"])
def test_forced_collisions_in_batches(
    store: sharedrec.RecommendationStore, monkeypatch: pytest.MonkeyPatch, values: int
) -> None:
    """Runs of equal hashes longer than a key chunk: only equal bytes match, single or batch."""
    monkeypatch.setitem(index.KEY_HASHES, "collide-test", lambda data: (len(data) * 7) % values)
    monkeypatch.setattr(index, "DEFAULT_KEY_HASH", "collide-test")
    keys = [f"k{i}" for i in range(300)] + ["", "k", "é", "x" * 300]
    items = np.arange(len(keys) * 2).reshape(-1, 2)
    with store.publish(chunk_bytes=1024) as draft:  # 128 hashes per key chunk
        draft.add_ranked("home", keys, items, np.ones(items.shape))
    spec = store.manifest(draft.version_id).collections["home"]
    assert spec.key_hash == "collide-test" and len(spec.key_fences) > 1
    reader = store.reader(lease=False)
    absent = ["k300", "k-1", "x" * 299, "x" * 301, "kk", "\x00", "é\x00"]
    batch = [*keys[::-1], *absent]  # more than 64 keys: the sorted batch path
    got, _, found = reader.get_many("home", batch)
    assert found.tolist() == [True] * len(keys) + [False] * len(absent)
    np.testing.assert_array_equal(got[: len(keys)], items[::-1])
    small, _, found = reader.get_many("home", ["k7", "k8", "nope", ""])  # the unsorted path
    assert found.tolist() == [True, True, False, True]
    np.testing.assert_array_equal(small[[0, 1, 3]], items[[7, 8, 300]])
    for row, key in enumerate(keys):
        assert reader.get("home", key).items.tolist() == items[row].tolist()
    for key in absent:
        with pytest.raises(KeyNotFound):
            reader.get("home", key)


def test_the_hash_module_is_imported_at_the_first_lookup(tmp_path: Path) -> None:
    """Neither ``import sharedrec`` nor opening a reader imports xxhash: the first lookup does."""
    store = sharedrec.open(tmp_path / "store", create=True)
    store.publish_ranked("users", ["a", "b"], np.array([[1], [2]]), np.ones((2, 1)))
    script = f"""
import json, sys
import sharedrec
seen = ["xxhash" in sys.modules]
reader = sharedrec.open({str(tmp_path / "store")!r}, create=False).reader(lease=False)
seen.append("xxhash" in sys.modules)
seen.append(reader.get("users", "b").items.tolist() == [2])
seen.append("xxhash" in sys.modules)
print(json.dumps(seen))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [False, False, True, True]


def test_partition_receipts_name_their_key_hash(store: sharedrec.RecommendationStore) -> None:
    """A task of an older sharedrec (blake2b-64, no key_hash in its receipt) cannot be mixed in."""
    keys = [f"user-{i}" for i in range(40)]
    items = np.arange(80).reshape(40, 2)
    handle = store.begin_publish(partitions=2)
    owners = handle.partition_of(keys)
    receipts = [
        handle.write_ranked(
            "users",
            p,
            [key for key, owner in zip(keys, owners.tolist(), strict=True) if owner == p],
            items[owners == p],
            np.ones((int((owners == p).sum()), 2)),
        )
        for p in range(2)
    ]
    assert [receipt.key_hash for receipt in receipts] == ["xxh3-64", "xxh3-64"]
    old = json.loads(receipts[1].dumps())
    del old["key_hash"]  # as a task of an older sharedrec wrote it
    older = sharedrec.PartitionReceipt.loads(json.dumps(old))
    assert older.key_hash is None
    with pytest.raises(
        sharedrec.InvalidInput, match="hashes its keys with blake2b-64, partition 0 with xxh3-64"
    ):
        store.commit_publish(handle, [receipts[0], older], guards=[])
    vid = store.commit_publish(handle, receipts, guards=[])
    assert store.manifest(vid).collections["users"].key_hash == "xxh3-64"
    reader = store.reader(lease=False)
    assert [reader.get("users", key).items.tolist() for key in keys[:2]] == [[0, 1], [2, 3]]
