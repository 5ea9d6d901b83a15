"""Real processes: readers never see part of a version; a killed publish changes nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import sharedrec

N_KEYS, K = 3000, 10
TAG = 1_000_000  # items of version t are base + t * TAG


def _base(n: int = N_KEYS) -> tuple[np.ndarray, np.ndarray]:
    keys = np.arange(n, dtype=np.int64) * 7 + 3
    items = (np.arange(n)[:, None] * K + np.arange(K)[None, :]).astype(np.int64)
    return keys, items


def _publish_tagged(store: sharedrec.RecommendationStore, tag: int) -> str:
    keys, items = _base()
    scores = np.broadcast_to(np.linspace(1.0, 0.0, K, dtype=np.float32) + tag, (N_KEYS, K))
    with store.publish(metadata={"tag": tag}, chunk_bytes=8192, progress=False) as draft:
        draft.add_ranked("home", keys, items + tag * TAG, scores)
        draft.add_vectors("emb", keys, np.full((N_KEYS, 4), float(tag)))
    return draft.version_id


READER = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    import sharedrec

    root, seconds = sys.argv[1], float(sys.argv[2])
    N, K, TAG = 3000, 10, 1_000_000
    keys = np.arange(N, dtype=np.int64) * 7 + 3
    base = np.arange(N)[:, None] * K + np.arange(K)[None, :]
    store = sharedrec.open(root, create=False)
    rng = np.random.default_rng()
    seen, checks, bad = set(), 0, []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        reader = store.reader()
        tag = reader.metadata["tag"]
        seen.add(tag)
        for row in rng.integers(0, N, size=20).tolist():
            recs = reader.get("home", int(keys[row]))
            vec = reader.vector("emb", int(keys[row]))
            ok = (
                np.array_equal(recs.items, base[row] + tag * TAG)
                and np.allclose(recs.scores, np.linspace(1.0, 0.0, K) + tag)
                and np.all(vec == tag)
            )
            checks += 1
            if not ok:
                bad.append([reader.version, row, recs.items.tolist()[:3]])
        rows = rng.integers(0, N, size=50)
        items, _, found = reader.get_many("home", keys[rows])
        checks += 1
        if not (found.all() and np.array_equal(items, base[rows] + tag * TAG)):
            bad.append([reader.version, "batch"])
    print(json.dumps({"seen": sorted(seen), "checks": checks, "bad": bad[:5]}))
    """
)


@pytest.mark.slow
def test_readers_only_see_whole_versions(tmp_path: Path) -> None:
    store = sharedrec.open(tmp_path / "store", create=True)
    _publish_tagged(store, 0)
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", READER, str(tmp_path / "store"), "6"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    tags = [0]
    deadline = time.monotonic() + 5
    tag = 1
    while time.monotonic() < deadline:
        _publish_tagged(store, tag)
        tags.append(tag)
        if tag % 4 == 0:
            store.rollback()
        tag += 1
    results = []
    for proc in readers:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    for result in results:
        assert result["bad"] == [], result["bad"]
        assert result["checks"] > 50
        assert set(result["seen"]) <= set(tags)
    assert len(set().union(*(r["seen"] for r in results))) > 3, "readers saw too few versions"


WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import sharedrec

    store = sharedrec.open(sys.argv[1])
    rng = np.random.default_rng(0)
    n, k = 20000, 50
    keys = np.arange(n)
    items = rng.integers(0, 10**6, (n, k), dtype=np.int32)
    scores = np.sort(rng.random((n, k), dtype=np.float32), axis=1)[:, ::-1]
    with store.publish(metadata={"tag": "killed"}, progress=False) as draft:
        for i in range(10_000):  # far more than can be written before the kill
            draft.add_ranked(f"c{i}", keys, items, scores)
    """
)


@pytest.mark.slow
def test_publish_killed_midway_leaves_old_version(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = sharedrec.open(root, create=True)
    old = _publish_tagged(store, 0)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            partial = [p for p in (root / "versions").iterdir() if p.name != old]
            if partial and (partial[0] / "c2").exists():
                break
            time.sleep(0.01)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    (partial_dir,) = (p for p in (root / "versions").iterdir() if p.name != old)
    assert not (partial_dir / "manifest.json").exists()

    assert store.current() == old
    assert [v.id for v in store.versions()] == [old]
    reader = store.reader()
    assert reader.version == old
    keys, items = _base()
    np.testing.assert_array_equal(reader.get("home", int(keys[5])).items, items[5])
    # The store stays writable: the next publish goes through.
    assert _publish_tagged(store, 1) == store.current()


FOLLOWER = textwrap.dedent(
    """
    import json, select, sys
    import numpy as np
    import sharedrec

    root = sys.argv[1]
    N, K, TAG = 3000, 10, 1_000_000
    keys = np.arange(N, dtype=np.int64) * 7 + 3
    base = np.arange(N)[:, None] * K + np.arange(K)[None, :]
    reader = sharedrec.open(root, create=False).reader(refresh_interval=0.01)
    rng = np.random.default_rng()
    seen, answers, bad = set(), 0, []
    print("ready", flush=True)
    while not select.select([sys.stdin], [], [], 0)[0]:  # until the test says stop
        rows = rng.integers(0, N, size=20)
        items, _, found = reader.get_many("home", keys[rows])
        tags = set((items[:, 0] // TAG).tolist())
        tag = tags.pop() if len(tags) == 1 else None
        if tag is None or not found.all() or not np.array_equal(items, base[rows] + tag * TAG):
            bad.append(sorted(tags))
        else:
            seen.add(tag)
        recs = reader.get("home", int(keys[rows[0]]))
        vec = reader.vector("emb", int(keys[rows[0]]))
        answers += 2
    stats = reader.stats()
    reader.close()
    print(json.dumps({"seen": sorted(seen), "answers": answers, "bad": bad[:5],
                      "switches": stats.switches, "failures": stats.refresh_failures}))
    """
)


@pytest.mark.slow
def test_following_readers_through_20_publishes_and_rollbacks(tmp_path: Path) -> None:
    store = sharedrec.open(tmp_path / "store", create=True)
    _publish_tagged(store, 0)
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", FOLLOWER, str(tmp_path / "store")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    # Every move happens while every reader serves, however slowly a busy machine starts them.
    for proc in readers:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    for tag in range(1, 21):
        _publish_tagged(store, tag)
        time.sleep(0.05)
        if tag % 2 == 0:
            store.rollback()
            time.sleep(0.05)
    time.sleep(0.5)  # the last move reaches every reader
    results = []
    for proc in readers:
        out, err = proc.communicate("stop\n", timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    for result in results:
        assert result["bad"] == [], result["bad"]
        assert result["failures"] == 0
        assert result["switches"] >= 10, result  # the readers followed the moves
        assert set(result["seen"]) <= set(range(21))
        assert result["answers"] > 1000


S3_FOLLOWER = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    import sharedrec

    url, endpoint, cache = sys.argv[1], sys.argv[2], sys.argv[3]
    options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing",
               "client_kwargs": {"region_name": "us-east-1"}}
    N, K, TAG = 3000, 10, 1_000_000
    keys = np.arange(N, dtype=np.int64) * 7 + 3
    base = np.arange(N)[:, None] * K + np.arange(K)[None, :]
    store = sharedrec.open(url, storage_options=options, cache_dir=cache, create=False)
    reader = store.reader(refresh_interval=0.05)
    rng = np.random.default_rng()
    seen, bad, answers = set(), [], 0
    print("ready", flush=True)
    import select
    while not select.select([sys.stdin], [], [], 0)[0]:  # until the test closes stdin
        rows = rng.integers(0, N, size=20)
        items, _, found = reader.get_many("home", keys[rows])
        tags = set((items[:, 0] // TAG).tolist())
        tag = tags.pop() if len(tags) == 1 else None
        if tag is None or not found.all() or not np.array_equal(items, base[rows] + tag * TAG):
            bad.append(sorted(tags))
        else:
            seen.add(tag)
        answers += 1
    stats = reader.stats()
    reader.close()
    print(json.dumps({"seen": sorted(seen), "bad": bad[:5], "answers": answers, "switches": stats.switches}))
    """
)


@pytest.mark.slow
def test_s3_followers_see_whole_versions(s3_server: str, tmp_path: Path) -> None:
    from conftest import make_bucket, s3_options

    url = f"s3://{make_bucket(s3_server)}/recs"
    store = sharedrec.open(
        url, storage_options=s3_options(s3_server), cache_dir=tmp_path / "writer-cache", create=True
    )
    _publish_tagged(store, 0)
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", S3_FOLLOWER, url, s3_server, str(tmp_path / f"cache-{i}")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for proc in readers:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    for tag in range(1, 9):
        _publish_tagged(store, tag)
        if tag % 3 == 0:
            store.rollback()
        time.sleep(0.3)  # several polls: each reader sees every move
    for proc in readers:
        out, err = proc.communicate("stop\n", timeout=120)
        assert proc.returncode == 0, err
        result = json.loads(out)
        assert result["bad"] == [], result["bad"]
        assert result["switches"] >= 3 and result["answers"] > 100
        assert set(result["seen"]) <= set(range(9))


S3_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import sharedrec

    url, endpoint = sys.argv[1], sys.argv[2]
    options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing",
               "client_kwargs": {"region_name": "us-east-1"}}
    store = sharedrec.open(url, storage_options=options, cache_dir=sys.argv[3])
    rng = np.random.default_rng(0)
    n, k = 20000, 50
    items = rng.integers(0, 10**6, (n, k), dtype=np.int32)
    scores = np.sort(rng.random((n, k), dtype=np.float32), axis=1)[:, ::-1]
    with store.publish(progress=False, guards=[]) as draft:
        for i in range(200):
            draft.add_ranked(f"c{i}", np.arange(n), items, scores)
        print("uploading", flush=True)
    """
)


@pytest.mark.slow
def test_s3_publish_killed_during_upload(s3_server: str, tmp_path: Path) -> None:
    from conftest import make_bucket, s3_options

    url = f"s3://{make_bucket(s3_server)}/recs"
    store = sharedrec.open(url, storage_options=s3_options(s3_server), cache_dir=tmp_path / "c", create=True)
    old = _publish_tagged(store, 0)
    proc = subprocess.Popen(
        [sys.executable, "-c", S3_WRITER, url, s3_server, str(tmp_path / "w")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        backend = store._backend
        while time.monotonic() < deadline and proc.poll() is None:
            if len(backend.listdir("versions")) > 1:  # objects of the new version are arriving
                break
            time.sleep(0.05)
        assert proc.poll() is None
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert len(backend.listdir("versions")) == 2  # the partial upload is there...
    assert [v.id for v in store.versions()] == [old]  # ...but it is no version
    assert store.current() == old
    keys, items = _base()
    np.testing.assert_array_equal(store.reader(lease=False).get("home", int(keys[5])).items, items[5])


def test_a_service_that_exits_without_closing_its_readers_prints_nothing(tmp_path: Path) -> None:
    """Readers a process never closes (held by closures and dicts at module level, as a web
    service keeps them) end quietly with it: no "Exception ignored" from weakref callbacks."""
    store = sharedrec.open(tmp_path / "store", create=True)
    _publish_tagged(store, 1)
    script = textwrap.dedent(
        """
        import sys
        import sharedrec
        store = sharedrec.open(sys.argv[1])
        readers = {name: store.reader() for name in "abc"}
        def lookup(reader):
            def get(key):
                return reader.get("home", key)
            return get
        lookups = {name: lookup(reader) for name, reader in readers.items()}
        print(lookups["a"](3).items[0], len(lookups))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "store")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(TAG), "3"]
    assert done.stderr == "", done.stderr
