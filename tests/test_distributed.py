"""Partitioned collections and the two-phase publish, on every backend, without an engine."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sharedrec
from sharedrec.errors import CorruptVersion, InvalidInput, KeyNotFound, PublishRejected
from sharedrec.read.index import fibonacci64, partitions_of, splitmix64
from sharedrec.write.distributed import PartitionReceipt, PublishHandle

from conftest import make_ranked, version_folders


def _write_all(handle: PublishHandle, name: str, keys, items, scores) -> list[PartitionReceipt]:  # type: ignore[no-untyped-def]
    owners = handle.partition_of(keys)
    receipts = []
    for part in range(handle.partitions):
        where = np.flatnonzero(owners == part)
        part_keys = [keys[i] for i in where] if isinstance(keys, list) else keys[where]
        receipts.append(handle.write_ranked(name, part, part_keys, items[where], scores[where]))
    return receipts


@pytest.mark.parametrize("str_keys", [False, True])
def test_partitioned_version_answers_like_a_single_process_one(
    any_store: sharedrec.RecommendationStore, str_keys: bool
) -> None:
    data = make_ranked(800, 12, str_keys=str_keys, seed=5)
    whole = any_store.publish_ranked("home", data.keys, data.items, data.scores, guards=[])
    handle = any_store.begin_publish(partitions=8, chunk_bytes=4096)
    receipts = _write_all(handle, "home", data.keys, data.items, data.scores)
    version = any_store.commit_publish(handle, receipts, guards=[])
    assert any_store.current() == version
    spec = any_store.manifest(version).collections["home"]
    assert spec.partitions is not None and len(spec.partitions.parts) == 8
    assert spec.count == 800 and sum(p.count for p in spec.partitions.parts) == 800
    part, ref = any_store.reader(version=version, lease=False), any_store.reader(version=whole, lease=False)
    keys = list(data.keys) if str_keys else data.keys
    for key in keys[:200]:
        assert part.get("home", key, k=5).items.tolist() == ref.get("home", key, k=5).items.tolist()
    absent = ["nobody", "x"] if str_keys else [-1, 3]
    query = [*keys[:300], *absent] if str_keys else np.r_[keys[:300], absent]
    got, want = part.get_many("home", query, k=7), ref.get_many("home", query, k=7)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1], equal_nan=True)
    assert got[2].tolist() == want[2].tolist() == [True] * 300 + [False, False]
    with pytest.raises(KeyNotFound):
        part.get("home", absent[0])
    with pytest.raises(InvalidInput, match="keys"):
        part.get("home", 1.5)  # type: ignore[arg-type]
    assert any_store.verify(version).ok


def test_partitioned_vectors(store: sharedrec.RecommendationStore) -> None:
    rng = np.random.default_rng(1)
    keys = rng.choice(10**6, 300, replace=False)
    vectors = rng.random((300, 4), dtype=np.float32)
    handle = store.begin_publish(partitions=3)
    owners = handle.partition_of(keys)
    receipts = [handle.write_vectors("emb", p, keys[owners == p], vectors[owners == p]) for p in range(3)]
    reader = store.reader(version=store.commit_publish(handle, receipts), lease=False)
    assert np.array_equal(reader.vector("emb", int(keys[10])), vectors[10])
    out, found = reader.vectors("emb", np.r_[keys, [-5]])
    assert np.array_equal(out[:300], vectors) and found.tolist() == [True] * 300 + [False]


def test_unpartitioned_manifest_has_no_partitions_field(store: sharedrec.RecommendationStore) -> None:
    data = make_ranked(50, 3)
    version = store.publish_ranked("home", data.keys, data.items, data.scores)
    raw = (Path(store.location) / "versions" / version / "manifest.json").read_bytes()
    assert b"partitions" not in raw
    assert store.manifest(version).dumps() == raw


def test_partition_hash_is_the_documented_one() -> None:
    # fibonacci64 (docs/format.md): the key's 64 bits times 0x9E3779B97F4A7C15 modulo 2**64,
    # as a fraction of 2**64, times the partition count. Key 1 gives the golden ratio's
    # fraction, 0.618...; key -1 one minus it; key 2**62 one quarter (the multiplier is 1 mod 4).
    assert sharedrec.partition_of([1, -1, 2**62], 1000).tolist() == [618, 381, 250]
    assert [fibonacci64(key, 1000) for key in (1, -1, 2**62)] == [618, 381, 250]
    # SplitMix64's finaliser, which split int64 keys before (still read), and blake2b-64 of "alice".
    assert splitmix64(1) == 0x5692161D100B05E5
    older = partitions_of(np.array([1, -1, 2**62]), 1000, "splitmix64")
    assert older.tolist() == [splitmix64(1) % 1000, splitmix64(2**64 - 1) % 1000, splitmix64(2**62) % 1000]
    assert sharedrec.partition_of(["alice"], 7).tolist() == [9933345172075899469 % 7]


def test_fibonacci64_spreads_ids_evenly() -> None:
    # Sequential ids, ids of a stride (a power of two, the worst case of a multiplicative
    # hash's low bits) and random ids, over 8 and 7 partitions: every partition within 2% of
    # its share.
    rng = np.random.default_rng(5)
    for ids in (
        np.arange(400_000),
        np.arange(400_000) * 1024,
        np.arange(400_000) << 40,
        rng.integers(-(2**63), 2**63 - 1, 400_000),
    ):
        for parts in (8, 7):
            counts = np.bincount(sharedrec.partition_of(ids, parts), minlength=parts)
            assert np.abs(counts / (len(ids) / parts) - 1).max() < 0.02, (ids[:3], parts, counts)


def test_single_key_partition_matches_the_batch_one() -> None:
    from sharedrec.read.index import PartitionedIndex

    keys: list[Any] = [0, 1, -1, 2**63 - 1, -(2**63), 123456789, np.int64(-5), np.uint32(7)]
    ints = np.array([int(key) for key in keys])
    for hash in ("splitmix64", "fibonacci64"):
        index = PartitionedIndex("int64", [None] * 7, [0] * 7, hash)
        assert [index.partition(key) for key in keys] == partitions_of(ints, 7, hash).tolist()
    assert partitions_of(ints, 7, "fibonacci64").tolist() == sharedrec.partition_of(keys, 7).tolist()
    # The one-key form (one operation less) against the definition and the batch form, for
    # keys across int64 and partition counts up to the largest allowed.
    many = [
        *np.random.default_rng(9).integers(-(2**63), 2**63 - 1, 2000).tolist(),
        0,
        -1,
        2**63 - 1,
        -(2**63),
    ]
    for n in (1, 2, 7, 8, 1000, 100_000):
        index = PartitionedIndex("int64", [None] * n, [0] * n, "fibonacci64")
        ones = [index.partition(key) for key in many]
        assert ones == [fibonacci64(key, n) for key in many]
        assert ones == partitions_of(np.array(many, dtype=np.int64), n, "fibonacci64").tolist()
    for bad in (True, 1.0, "1"):
        with pytest.raises(InvalidInput, match="int64 keys"):
            index.partition(bad)


def test_handle_and_receipts_cross_process_boundaries(store: sharedrec.RecommendationStore) -> None:
    handle = store.begin_publish(partitions=2, metadata={"run": 1})
    assert pickle.loads(pickle.dumps(handle)) == handle == PublishHandle.loads(handle.dumps())
    data = make_ranked(40, 3)
    receipts = _write_all(handle, "home", data.keys, data.items, data.scores)
    as_json = [receipt.dumps() for receipt in receipts]
    assert all(len(text) < 4000 for text in as_json)
    version = store.commit_publish(handle, [as_json[0], json.loads(as_json[1])])
    assert store.manifest(version).metadata == {"run": 1}


def test_handle_repr_hides_the_storage_options() -> None:
    secret = "s3cr3t/NeverPrintMe"
    handle = PublishHandle(
        location="s3://bucket/recs",
        storage_options={"key": "AKIAEXAMPLE", "secret": secret},
        version_id="v1",
        partitions=2,
        chunk_bytes=4096,
        ref="current",
        parent_pointer=None,
        started_at="2026-11-29T00:00:00Z",
    )
    assert secret not in repr(handle) and secret not in str(handle)
    assert PublishHandle.loads(handle.dumps()).storage_options == {"key": "AKIAEXAMPLE", "secret": secret}


def test_retried_attempts_keep_one_copy(store: sharedrec.RecommendationStore) -> None:
    data = make_ranked(400, 5, seed=2)
    handle = store.begin_publish(partitions=4)
    receipts = _write_all(handle, "home", data.keys, data.items, data.scores)
    owners = handle.partition_of(data.keys)
    sel = owners == 2
    again = handle.write_ranked(
        "home", 2, data.keys[sel][::-1], data.items[sel][::-1], data.scores[sel][::-1]
    )
    handle.write_ranked("home", 1, data.keys[owners == 1], data.items[owners == 1], data.scores[owners == 1])
    # ^ a task that wrote partition 1 and died before reporting: no receipt
    version = store.commit_publish(handle, [*receipts, again])
    folders = sorted(p.name for p in (Path(store.location) / "versions" / version / "home").iterdir())
    assert len(folders) == 5 and folders[-1] == "zarr.json"
    assert [name[:10] for name in folders[:4]] == [f"part-0000{p}" for p in range(4)]
    assert store.verify(version).ok
    reader = store.reader(version=version, lease=False)
    assert reader.get("home", int(data.keys[sel][0])).items.tolist() == data.items[sel][0].tolist()


def test_bad_receipts_are_refused_clearly(store: sharedrec.RecommendationStore) -> None:
    data = make_ranked(300, 4, seed=3)
    handle = store.begin_publish(partitions=3)
    receipts = _write_all(handle, "home", data.keys, data.items, data.scores)
    with pytest.raises(InvalidInput, match=r"lacks the receipts of 1 of its 3 partitions \(1\)"):
        store.commit_publish(handle, [receipts[0], receipts[2]])
    other = store.begin_publish(partitions=3)
    with pytest.raises(InvalidInput, match=f"is for version {handle.version_id}, not {other.version_id}"):
        store.commit_publish(other, receipts)
    owners = handle.partition_of(data.keys)
    sel = np.flatnonzero(owners == 0)[:-1]  # one key fewer: another content
    changed = handle.write_ranked("home", 0, data.keys[sel], data.items[sel], data.scores[sel])
    with pytest.raises(InvalidInput, match="two receipts with different contents"):
        store.commit_publish(handle, [*receipts, changed])
    with pytest.raises(InvalidInput, match="not a sharedrec partition receipt"):
        store.commit_publish(handle, [*receipts[:2], '{"version": 1}'])
    wrong = np.flatnonzero(owners == 1)
    with pytest.raises(InvalidInput, match="belongs to partition 1 of 3, not 0"):
        handle.write_ranked("home", 0, data.keys[wrong], data.items[wrong], data.scores[wrong])
    with pytest.raises(InvalidInput, match="partition must be an int from 0 to 2"):
        handle.write_ranked("home", 3, data.keys[:1], data.items[:1], data.scores[:1])
    assert store.current() is None  # nothing was committed by the refused attempts
    version = store.commit_publish(handle, receipts)
    with pytest.raises(PublishRejected, match="already committed"):
        store.commit_publish(handle, receipts)
    with pytest.raises(PublishRejected, match="already committed"):
        handle.write_ranked(
            "home", 0, data.keys[owners == 0], data.items[owners == 0], data.scores[owners == 0]
        )
    assert store.current() == version


def test_a_removed_partition_file_is_caught_at_commit(store: sharedrec.RecommendationStore) -> None:
    data = make_ranked(100, 3)
    handle = store.begin_publish(partitions=2)
    receipts = _write_all(handle, "home", data.keys, data.items, data.scores)
    chunk = (
        Path(store.location) / "versions" / handle.version_id / "home" / str(receipts[1].path) / "items/c/0/0"
    )
    chunk.unlink()
    with pytest.raises(CorruptVersion, match="is missing: partition 1 of 'home'"):
        store.commit_publish(handle, receipts)


def test_guards_run_on_a_distributed_publish(store: sharedrec.RecommendationStore) -> None:
    data = make_ranked(400, 4)
    store.publish_ranked("home", data.keys, data.items, data.scores)
    handle = store.begin_publish(partitions=2)
    receipts = _write_all(handle, "home", data.keys[:100], data.items[:100], data.scores[:100])
    with pytest.raises(PublishRejected, match="max_shrink"):
        store.commit_publish(handle, receipts)
    assert store.commit_publish(handle, receipts, force=True) == store.current()


_KILLED_WRITER = """
import os, sys, numpy as np, sharedrec
store = sharedrec.open(sys.argv[1])
handle = store.begin_publish(partitions=4, lease_ttl=3.0)
keys = np.arange(1000, dtype=np.int64)
owners = handle.partition_of(keys)
for part in range(2):
    k = keys[owners == part]
    handle.write_ranked("home", part, k, np.zeros((len(k), 2), np.int32), np.ones((len(k), 2), np.float32))
print(handle.version_id, flush=True)
os._exit(9)  # dies before the commit
"""


def test_a_job_killed_before_commit_changes_nothing_and_gc_removes_it(
    store: sharedrec.RecommendationStore,
) -> None:
    data = make_ranked(100, 3)
    live = store.publish_ranked("home", data.keys, data.items, data.scores)
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, store.location], capture_output=True, text=True, check=False
    )
    assert done.returncode == 9, done.stderr
    unfinished = done.stdout.strip()
    assert unfinished in version_folders(store)
    assert store.current() == live and [v.id for v in store.versions()] == [live]
    assert store.reader(lease=False).version == live
    # Its lease keeps the unfinished folder from garbage collection until it expires.
    assert "a publish is writing it" in store.gc(grace=0).kept[unfinished]
    lease = json.loads((Path(store.location) / "leases" / f"publish-{unfinished}.json").read_bytes())
    expires = datetime.fromisoformat(lease["expires_at"].replace("Z", "+00:00"))
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.1)
    report = store.gc(grace=0)
    assert report.unfinished == [unfinished] and unfinished not in version_folders(store)


def test_abort_publish_removes_the_folder(any_store: sharedrec.RecommendationStore) -> None:
    handle = any_store.begin_publish(partitions=2)
    handle.write_ranked("home", 0, [], [], [])
    keys = np.arange(50)
    owned = keys[handle.partition_of(keys) == 1]
    handle.write_ranked("home", 1, owned, np.zeros((len(owned), 1), np.int32), np.ones((len(owned), 1)))
    any_store.abort_publish(handle)
    assert handle.version_id not in version_folders(any_store)
    with pytest.raises(PublishRejected, match="not being published"):
        handle.write_ranked("home", 1, owned, np.zeros((len(owned), 1), np.int32), np.ones((len(owned), 1)))


# -- the partition hash across sharedrec versions --------------------------------------------


def test_a_task_that_routed_by_another_hash_is_refused_at_commit(
    store: sharedrec.RecommendationStore,
) -> None:
    """A task of an older sharedrec routes int64 keys by splitmix64: committing its partition
    under a fibonacci64 publish would hide its keys from every reader, so the commit refuses
    it, whether its receipt names the hash or (older still) names none."""
    data = make_ranked(400, 3)
    keys = np.asarray(data.keys, dtype=np.int64)
    live = store.publish_ranked("home", keys, data.items, data.scores)
    handle = store.begin_publish(partitions=3)
    older = handle.model_copy(update={"partition_hash": "splitmix64"})
    ours = _write_all(handle, "home", keys, data.items, data.scores)
    theirs = _write_all(older, "home", keys, data.items, data.scores)
    assert theirs[1].partition_hash == "splitmix64" and ours[1].partition_hash == "fibonacci64"
    unnamed = json.loads(theirs[1].dumps())
    del unnamed["partition_hash"]  # a receipt of a sharedrec from before fibonacci64
    for stray in (theirs[1], unnamed):
        with pytest.raises(
            InvalidInput, match=r"routed its keys by splitmix64, this publish routes them by fibonacci64"
        ):
            store.commit_publish(handle, [ours[0], stray, ours[2]])
    assert store.current() == live
    version = store.commit_publish(handle, ours)
    with store.reader() as reader:
        assert reader.version == version
        for i, key in enumerate(keys.tolist()):
            assert reader.get("home", key).items.tolist() == data.items[i].tolist()


def test_a_handle_from_before_fibonacci64_still_publishes(store: sharedrec.RecommendationStore) -> None:
    """A handle an older sharedrec began names no partition hash: it routes and commits by
    splitmix64, a version any sharedrec reads (format sharedrec/2)."""
    data = make_ranked(400, 3)
    keys = np.asarray(data.keys, dtype=np.int64)
    raw = json.loads(store.begin_publish(partitions=3).dumps())
    del raw["partition_hash"], raw["huge_up_to"]
    handle = PublishHandle.loads(json.dumps(raw))
    assert handle.partition_hash == "splitmix64"
    assert handle.partition_of(keys).tolist() == partitions_of(keys, 3, "splitmix64").tolist()
    version = store.commit_publish(handle, _write_all(handle, "home", keys, data.items, data.scores))
    manifest = store.manifest(version)
    partitions = manifest.collections["home"].partitions
    assert manifest.format == "sharedrec/2" and partitions is not None and partitions.hash == "splitmix64"
    with store.reader() as reader:
        for i, key in enumerate(keys.tolist()):
            assert reader.get("home", key).items.tolist() == data.items[i].tolist()
        items, _, found = reader.get_many("home", keys)
        assert found.all() and items.tolist() == data.items.tolist()


def test_the_partition_hash_must_fit_the_format_and_the_key_type(
    store: sharedrec.RecommendationStore,
) -> None:
    """A version split by fibonacci64 is ``sharedrec/4``, which an older sharedrec refuses as
    newer instead of looking keys up in the wrong partitions; a manifest whose hash does not
    fit its format or its key type is damaged."""
    data = make_ranked(200, 3)
    keys = np.asarray(data.keys, dtype=np.int64)
    handle = store.begin_publish(partitions=2)
    ints = store.commit_publish(handle, _write_all(handle, "home", keys, data.items, data.scores))
    names = [f"user-{key}" for key in keys.tolist()]
    handle = store.begin_publish(partitions=2)
    strs = store.commit_publish(handle, _write_all(handle, "home", names, data.items, data.scores), guards=[])
    assert store.manifest(ints).format == "sharedrec/4"
    assert store.manifest(strs).format == "sharedrec/2"  # str keys: blake2b-64, as before
    folder = Path(store.location) / "versions"
    good = {vid: (folder / vid / "manifest.json").read_bytes() for vid in (ints, strs)}
    cases = [
        (
            ints,
            "sharedrec/3",
            "fibonacci64",
            r"partitions.hash is fibonacci64, which needs format sharedrec/4",
        ),
        (
            ints,
            "sharedrec/4",
            "blake2b-64",
            r"hash is blake2b-64, but int64 keys are split by fibonacci64 or splitmix64",
        ),
        (strs, "sharedrec/4", "fibonacci64", r"hash is fibonacci64, but str keys are split by blake2b-64"),
        (strs, "sharedrec/4", "splitmix64", r"hash is splitmix64, but str keys are split by blake2b-64"),
    ]
    for vid, format, hash, message in cases:
        manifest = json.loads(good[vid])
        manifest["format"] = format
        manifest["collections"]["home"]["partitions"]["hash"] = hash
        (folder / vid / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(CorruptVersion, match=message):
            store.reader(vid)
        (folder / vid / "manifest.json").write_bytes(good[vid])
        with store.reader(vid) as reader:
            assert reader.get("home", int(keys[0]) if vid == ints else names[0]).items.tolist()
