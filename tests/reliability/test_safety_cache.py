"""The node's S3 cache and staging folders: a cached file is only ever served for the exact
publish it came from (a version id used again never brings back the deleted version's
lists), and a SIGKILLed publisher's staging copy is removed by the next publish or gc on
the node, while a live publisher's staging is never touched."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sharedrec

from ._support import (
    BASE,
    DIM,
    KEYS,
    N_KEYS,
    SCORES,
    TAG,
    Tally,
    check_answers,
    fork_while_held,
    publish_tagged,
)
from .test_crash import Publisher

REUSED = "daily-2026-11-28"


def _publish(
    store: sharedrec.RecommendationStore, keys: np.ndarray[Any, Any], tag: int, version_id: str | None = None
) -> str:
    """Version ``tag`` over ``keys``: every item and vector value derived from ``tag``."""
    with store.publish(
        version_id=version_id, metadata={"tag": tag}, chunk_bytes=1024, progress=False, guards=[]
    ) as draft:
        draft.add_ranked("home", keys, BASE + tag * TAG, np.tile(SCORES, (len(keys), 1)))
        draft.add_vectors("emb", keys, np.full((len(keys), DIM), float(tag), dtype=np.float32))
    return draft.version_id


def test_a_reused_version_id_never_serves_the_deleted_versions_cached_chunks(
    s3_server: str, tmp_path: Path, tally: Tally
) -> None:
    from conftest import make_bucket, s3_options

    url = f"s3://{make_bucket(s3_server)}/recs"
    options = s3_options(s3_server)
    cache = tmp_path / "node-cache"
    store = sharedrec.open(url, storage_options=options, cache_dir=cache, create=True)
    old_keys = KEYS
    new_keys = KEYS + 1  # the same count: every file of the republished id has the same size
    _publish(store, old_keys, 1, REUSED)
    reader = store.reader(lease=False, refresh_interval=None)
    rows = np.arange(0, N_KEYS, 3)
    for row in rows.tolist():  # their chunks land in the node's cache
        assert int(reader.get("home", int(old_keys[row])).items[0]) == BASE[row, 0] + TAG
        reader.vector("emb", int(old_keys[row]))
    reader.get_many("home", old_keys)
    reader.close()
    _publish(store, old_keys, 2)
    report = store.gc(keep=0, grace=0)
    assert REUSED in report.deleted
    _publish(store, new_keys, 3, REUSED)
    assert store.current() == REUSED
    tally.scenarios += 1

    # Another process on the node, sharing the cache: what it serves is the new publish.
    for fresh in (
        sharedrec.open(url, storage_options=options, cache_dir=cache).reader(
            lease=False, refresh_interval=None
        ),
        sharedrec.open(url, storage_options=options, cache_dir=cache).reader(
            lease=False, version=REUSED, verify="sizes"
        ),
    ):
        wrong = 0
        for row in range(N_KEYS):
            recs = fresh.get("home", int(new_keys[row]))
            if not np.array_equal(recs.items, BASE[row] + 3 * TAG):
                wrong += 1
            if not np.all(fresh.vector("emb", int(new_keys[row])) == 3.0):
                wrong += 1
            with pytest.raises(KeyError):  # no longer published: not a neighbour's list either
                fresh.get("home", int(old_keys[row]))
        items, _, found = fresh.get_many("home", new_keys)
        if not (found.all() and np.array_equal(items, BASE + 3 * TAG)):
            wrong += 1
        tally.answers_checked += N_KEYS * 3 + 1
        tally.wrong_answers += wrong
        assert wrong == 0
        fresh.close()
    # The manifest in CURRENT and manifest.json name one cache folder; the old one is apart.
    folders = sorted(p.name for p in cache.glob("*/*") if p.name.startswith(f"{REUSED}@"))
    assert len(folders) == 2, folders
    pointer = json.loads(store._backend.read_bytes("CURRENT"))
    written = store._backend.read_bytes(f"versions/{REUSED}/manifest.json")
    from sharedrec.format.schema import Manifest, Pointer
    from sharedrec.read.cache import publish_folder

    inline = Pointer.loads(json.dumps(pointer).encode(), "CURRENT").manifest
    assert inline is not None
    assert publish_folder(inline) == publish_folder(Manifest.loads(written, "manifest.json"))
    assert publish_folder(store.manifest(REUSED)) == publish_folder(inline)


_LIVE_PUBLISHER = """
import sys, json
import numpy as np
import sharedrec
sys.path.insert(0, sys.argv[4])
from reliability._support import DIM, KEYS, N_KEYS, SCORES, tagged_items

store = sharedrec.open(sys.argv[1], storage_options=json.loads(sys.argv[2]), cache_dir=sys.argv[3])
options = dict(chunk_bytes=1024, progress=False, guards=[], make_current=False)
with store.publish(metadata={"tag": 7}, **options) as draft:
    draft.add_ranked("home", KEYS, tagged_items(7), np.tile(SCORES, (N_KEYS, 1)))
    draft.add_vectors("emb", KEYS, np.full((N_KEYS, DIM), 7.0, dtype=np.float32))
    print(draft._staging, flush=True)
    sys.stdin.readline()  # the test says when to commit
print(draft.version_id, flush=True)
"""


def _leftovers(*folders: Path) -> list[str]:
    """Staging folders and files under ``folders`` (the node's cache and temp folders)."""
    found: list[str] = []
    for folder in folders:
        found += [str(p) for p in folder.glob("sharedrec-*")]  # mkdtemp-style temp folders
        found += [str(p) for p in folder.glob("staging/*/*")]
    return sorted(found)


def test_a_killed_s3_publishers_staging_is_removed_by_the_next_publish_or_gc(
    s3_server: str, tmp_path: Path, tally: Tally, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conftest import make_bucket, s3_options

    url = f"s3://{make_bucket(s3_server)}/recs"
    options = s3_options(s3_server)
    node_tmp, cache = tmp_path / "tmp", tmp_path / "node-cache"
    node_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(node_tmp))  # the publishers' temp folder, to look into
    store = sharedrec.open(url, storage_options=options, cache_dir=cache, create=True)
    publish_tagged(store, 0)
    assert _leftovers(node_tmp, cache) == []

    killer = Publisher()
    live = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _LIVE_PUBLISHER,
            url,
            json.dumps(options),
            str(cache),
            str(Path(__file__).parents[1]),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert live.stdout is not None and live.stdin is not None
        live_staging = live.stdout.readline().strip()
        assert live_staging and Path(live_staging).is_dir()
        for tag, clean in ((1, "gc"), (2, "publish")):
            # Killed after its second upload: the whole version is still staged on this node.
            s3 = {"options": options, "cache": str(cache)}
            answer = killer.publish(root=url, tag=tag, kill_at=3, events=None, s3=s3)
            assert answer == {"signal": signal.SIGKILL}
            tally.faults_injected += 1
            tally.scenarios += 1
            left = [p for p in _leftovers(node_tmp, cache) if not p.startswith(live_staging)]
            assert left, "the kill left no staging: it did not hit the upload"
            if clean == "gc":
                sharedrec.open(url, storage_options=options, cache_dir=cache).gc(keep=10, grace=3600)
            else:
                publish_tagged(sharedrec.open(url, storage_options=options, cache_dir=cache), 10 + tag)
            left = [p for p in _leftovers(node_tmp, cache) if not p.startswith(live_staging)]
            assert left == [], f"a {clean} on the node left the killed publisher's staging: {left}"
            # The live publisher's staging is never taken for a dead one.
            assert Path(live_staging).is_dir() and any(Path(live_staging).rglob("*.json"))
        live.stdin.write("commit\n")
        live.stdin.flush()
        assert live.wait(timeout=60) == 0
        store.set_current(live.stdout.readline().strip())
    finally:
        killer.close()
        if live.poll() is None:
            live.kill()
            live.wait()
    assert _leftovers(node_tmp, cache) == []  # the live publisher cleaned up after its commit
    reader = store.reader(lease=False, refresh_interval=None)
    assert reader.metadata["tag"] == 7 and check_answers(reader, 7) == 0
    reader.close()


_KILLED_WORKER = """
import os, signal, sys
import numpy as np
from sharedrec.backends.s3 import S3Backend
from sharedrec.write.distributed import PublishHandle

def die(self, files, progress=None):  # the partition is written and staged: killed before its upload
    os.kill(os.getpid(), signal.SIGKILL)

S3Backend.upload = die
handle = PublishHandle.loads(sys.stdin.read())
keys = np.arange(400, dtype=np.int64)
mine = keys[handle.partition_of(keys) == 0]
handle.write_ranked("home", 0, mine, np.ones((len(mine), 5), dtype=np.int32), np.ones((len(mine), 5)))
"""


def test_a_killed_distributed_workers_staging_is_removed_by_gc(
    s3_server: str, tmp_path: Path, tally: Tally, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conftest import make_bucket, s3_options

    node_tmp, cache = tmp_path / "tmp", tmp_path / "node-cache"
    node_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(node_tmp))
    monkeypatch.setenv("SHAREDREC_CACHE_DIR", str(cache))  # a worker stages in the node's default cache
    store = sharedrec.open(
        f"s3://{make_bucket(s3_server)}/recs", storage_options=s3_options(s3_server), create=True
    )
    handle = store.begin_publish(partitions=2)
    worker = subprocess.run(
        [sys.executable, "-c", _KILLED_WORKER],
        input=handle.dumps(),
        text=True,
        capture_output=True,
        check=False,
    )
    assert worker.returncode == -signal.SIGKILL, worker.stderr
    tally.faults_injected += 1
    tally.scenarios += 1
    assert _leftovers(node_tmp, cache), "the kill left no staging"
    store.gc(keep=10, grace=3600)
    assert _leftovers(node_tmp, cache) == []


def test_staging_falls_back_to_the_temp_folder_and_a_live_draft_of_this_process_stays(
    tmp_path: Path, tally: Tally, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    from sharedrec.write.staging import new_staging, remove_staging, sweep_staging

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")  # the cache folder cannot be created: staging goes to the temp folder
    first = new_staging(blocked, "s3://bucket/recs")
    assert first.startswith(str(tmp_path / "tmp"))
    second = new_staging(blocked, "s3://bucket/recs")  # its sweep sees the first one alive
    assert Path(first).is_dir() and sweep_staging(blocked, "s3://bucket/recs") == []
    tally.scenarios += 1
    remove_staging(first)
    remove_staging(second)
    left = list((tmp_path / "tmp").rglob("*"))  # only the empty staging root remains
    assert not [p for p in left if p.is_file() or len(p.relative_to(tmp_path / "tmp").parts) > 2]


def test_a_forked_child_fetches_into_the_cache_while_a_parent_thread_held_its_lock(
    s3_server: str, tmp_path: Path, tally: Tally
) -> None:
    from conftest import make_bucket, s3_options

    url = f"s3://{make_bucket(s3_server)}/recs"
    store = sharedrec.open(
        url,
        storage_options=s3_options(s3_server),
        cache_dir=tmp_path / "cache",
        cache_max_bytes=1 << 30,
        create=True,
    )
    _publish(store, KEYS, 1)
    reader = store.reader(lease=False, refresh_interval=None)
    assert reader.get("home", int(KEYS[0])).items.tolist() == (BASE[0] + TAG).tolist()
    # A thread of the parent is inside the cache's bookkeeping (holds its lock) at fork(); the
    # child looks up a key whose chunks are not cached yet (a download, then the bookkeeping).
    # The reader fetches through the store root's one chunk cache: hold that cache's lock.
    cache_lock = store._root.chunk_cache()._lock
    answered, result = fork_while_held(
        cache_lock, lambda: reader.get("home", int(KEYS[-1])).items.tolist(), 10
    )
    tally.scenarios += 1
    assert answered, "the forked child blocked on the cache lock its parent's thread held at fork()"
    assert result == (BASE[-1] + TAG).tolist()
    reader.close()
