"""S3 through a real S3 server on 127.0.0.1 (moto), reached with s3fs as in production."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import pytest

import sharedrec
from sharedrec.errors import ConcurrentPublishError, SharedrecError, StoreNotFound, VersionGone

from conftest import KEYS, make_bucket, make_ranked, publish, s3_options

if TYPE_CHECKING:
    from sharedrec.backends.s3 import S3Backend


class RequestCounter:
    """Counts the HTTP requests one store's S3 client sends."""

    def __init__(self, store: sharedrec.RecommendationStore) -> None:
        self.calls: list[str] = []
        self._lock = threading.Lock()
        store._backend.client.meta.events.register("before-send.s3", self._count)  # type: ignore[attr-defined]

    def _count(self, request: object, **kwargs: object) -> None:
        with self._lock:
            self.calls.append(f"{getattr(request, 'method', '?')} {getattr(request, 'url', '?')}")

    def take(self) -> list[str]:
        with self._lock:
            calls, self.calls = self.calls, []
        return calls


def reopen(
    store: sharedrec.RecommendationStore, s3_server: str, cache: Path
) -> sharedrec.RecommendationStore:
    """A second handle on the same store, as another process would open it."""
    return sharedrec.open(store.location, storage_options=s3_options(s3_server), cache_dir=cache)


def test_publish_and_read(s3_store: sharedrec.RecommendationStore) -> None:
    data = make_ranked(3000, 20, seed=4)
    with s3_store.publish(chunk_bytes=16 * 1024, metadata={"model": "m1"}) as draft:
        draft.add_ranked("home", data.keys, data.items, data.scores)
        draft.add_vectors("emb", data.keys, data.scores)
    reader = s3_store.reader(refresh_interval=None)
    assert reader.metadata == {"model": "m1"}
    for row in (0, 1500, 2999):
        np.testing.assert_array_equal(reader.get("home", int(data.keys[row])).items, data.items[row])
        np.testing.assert_array_equal(reader.vector("emb", int(data.keys[row])), data.scores[row])
    items, _, found = reader.get_many("home", data.keys)
    assert found.all()
    np.testing.assert_array_equal(items, data.items)
    assert [v.id for v in s3_store.versions()] == [draft.version_id]
    assert s3_store.verify().ok
    reader.close()


def test_open_and_first_lookup_request_budget(
    s3_store: sharedrec.RecommendationStore, s3_server: str, tmp_path: Path
) -> None:
    data = make_ranked(20000, 50, seed=1)
    s3_store.publish_ranked("home", data.keys, data.items, data.scores, progress=False)
    fresh = reopen(s3_store, s3_server, tmp_path / "cache-a")
    counter = RequestCounter(fresh)
    reader = fresh.reader(refresh_interval=None, lease=False)
    opened = counter.take()
    # CURRENT alone, whatever the data size: it carries a copy of the manifest.
    assert [call.rsplit("/", 1)[-1] for call in opened] == ["CURRENT"], opened
    reader.get("home", int(data.keys[77]))
    first = counter.take()
    assert len(first) <= 3, first  # the chunks of keys, items and scores the lookup touches
    reader.get("home", int(data.keys[77]))
    assert counter.take() == []  # served from the cache and the page cache
    # A second process on the node reuses the cached chunks: no data requests at all.
    other = reopen(s3_store, s3_server, tmp_path / "cache-a")
    counter = RequestCounter(other)
    other_reader = other.reader(refresh_interval=None, lease=False)
    np.testing.assert_array_equal(other_reader.get("home", int(data.keys[77])).items, data.items[77])
    assert len(counter.take()) == 1


def test_pointer_carries_the_manifest_on_object_stores(
    s3_store: sharedrec.RecommendationStore, s3_server: str, tmp_path: Path
) -> None:
    first = publish(s3_store, 1)
    second = publish(s3_store, 2)
    raw = s3_store._backend.read_bytes("CURRENT")
    pointer = json.loads(raw)
    assert pointer["version"] == second and pointer["manifest"]["id"] == second
    assert pointer["manifest"] == json.loads(s3_store._backend.read_bytes(f"versions/{second}/manifest.json"))
    # A following reader switches with one request too: the changed pointer holds the manifest.
    fresh = reopen(s3_store, s3_server, tmp_path / "cache-b")
    reader = fresh.reader(refresh_interval=None, lease=False)
    counter = RequestCounter(fresh)
    fresh.rollback()
    counter.take()
    assert reader.refresh() is True and reader.version == first
    assert [call.split()[0] + " " + call.rsplit("/", 1)[-1] for call in counter.take()] == ["GET CURRENT"]
    assert json.loads(s3_store._backend.read_bytes("CURRENT"))["manifest"]["id"] == first
    assert int(reader.get("home", int(KEYS[3])).items[0]) == 1000


def test_pointer_on_a_posix_path_stays_small(store: sharedrec.RecommendationStore) -> None:
    publish(store, 1)
    pointer = json.loads(Path(store.location, "CURRENT").read_bytes())
    assert pointer.get("manifest") is None


def test_pointer_polls_are_conditional(s3_store: sharedrec.RecommendationStore) -> None:
    publish(s3_store, 1)
    reader = s3_store.reader(refresh_interval=None, lease=False)
    counter = RequestCounter(s3_store)
    assert reader.refresh() is False
    calls = counter.take()
    assert len(calls) == 1 and calls[0].startswith("GET")
    v2 = publish(s3_store, 2)
    counter.take()
    assert reader.refresh() is True and reader.version == v2
    assert int(reader.get("home", int(KEYS[3])).items[0]) == 2000


def test_concurrent_publishers(s3_store: sharedrec.RecommendationStore) -> None:
    base = publish(s3_store, 1)
    slow = s3_store.publish(guards=[]).__enter__()
    slow.add_ranked("home", KEYS, np.zeros((len(KEYS), 5), dtype=int), np.ones((len(KEYS), 5)))
    winner = publish(s3_store, 2)
    with pytest.raises(ConcurrentPublishError) as caught:
        slow.__exit__(None, None, None)
    assert winner in str(caught.value) and slow.version_id in str(caught.value) and base in str(caught.value)
    assert s3_store.current() == winner


def test_first_publishers_race(s3_server: str, tmp_path: Path) -> None:
    bucket = make_bucket(s3_server)
    a = sharedrec.open(
        f"s3://{bucket}/r", storage_options=s3_options(s3_server), cache_dir=tmp_path, create=True
    )
    b = sharedrec.open(f"s3://{bucket}/r", storage_options=s3_options(s3_server), cache_dir=tmp_path)
    draft_a = a.publish(guards=[]).__enter__()
    draft_a.add_vectors("v", [1], np.ones((1, 2)))
    b.publish_vectors("v", [1], np.ones((1, 2)) * 2)  # b wins: CURRENT did not exist for either
    with pytest.raises(ConcurrentPublishError):
        draft_a.__exit__(None, None, None)
    assert a.current() == b.current()


def test_failed_publish_leaves_nothing(s3_store: sharedrec.RecommendationStore) -> None:
    live = publish(s3_store, 1)
    with pytest.raises(RuntimeError), s3_store.publish() as draft:
        draft.add_ranked("home", KEYS, np.zeros((len(KEYS), 5), dtype=int), np.ones((len(KEYS), 5)))
        raise RuntimeError("job died")
    assert s3_store.current() == live
    assert s3_store._backend.listdir("versions") == [live]


def test_gc_and_a_reader_on_a_deleted_version(
    s3_store: sharedrec.RecommendationStore, s3_server: str, tmp_path: Path
) -> None:
    v1 = publish(s3_store, 1)
    elsewhere = reopen(s3_store, s3_server, tmp_path / "other-node")  # its cache holds nothing yet
    follower = elsewhere.reader(refresh_interval=None, lease=False)
    pinned = elsewhere.reader(version=v1, lease=False)
    v2 = publish(s3_store, 2)
    report = s3_store.gc(keep=0, grace=0)
    assert report.deleted == [v1]
    # The follower meets the deleted chunks, re-reads CURRENT and moves on instead of failing.
    assert int(follower.get("home", int(KEYS[5])).items[0]) == 2000
    assert follower.version == v2
    with pytest.raises(VersionGone, match="garbage-collected"):
        pinned.get("home", int(KEYS[5]))


def test_leases_on_s3(s3_store: sharedrec.RecommendationStore) -> None:
    v1 = publish(s3_store, 1)
    with s3_store.reader(reader_id="pod-s3") as reader:
        assert [lease.reader_id for lease in s3_store.leases()] == ["pod-s3"]
        publish(s3_store, 2)
        assert s3_store.gc(keep=0, grace=0).kept[v1] == "leased by reader pod-s3"
        assert reader.version == v1
    assert s3_store.leases() == []


def test_cache_eviction_and_prefetch(s3_server: str, tmp_path: Path) -> None:
    bucket = make_bucket(s3_server)
    store = sharedrec.open(
        f"s3://{bucket}/r",
        storage_options=s3_options(s3_server),
        cache_dir=tmp_path / "c",
        cache_max_bytes=200_000,
        create=True,
    )
    data = make_ranked(4000, 20, seed=2)
    with store.publish(chunk_bytes=16 * 1024) as draft:
        draft.add_ranked("home", data.keys, data.items, data.scores)
    reader = store.reader(refresh_interval=None, lease=False)
    reader.prefetch(wait=True, progress=False)
    cached = sum(p.stat().st_size for p in (tmp_path / "c").rglob("*") if p.is_file())
    assert cached <= 200_000
    items, _, found = reader.get_many("home", data.keys)  # evicted chunks come back on demand
    assert found.all()
    np.testing.assert_array_equal(items, data.items)


def test_corrupt_download_is_refused(
    s3_store: sharedrec.RecommendationStore, s3_server: str, tmp_path: Path
) -> None:
    vid = publish(s3_store, 1)
    key = f"recs/versions/{vid}/home/items/c/0/0"
    backend = cast("S3Backend", s3_store._backend)
    body = bytearray(backend.read_bytes(f"versions/{vid}/home/items/c/0/0"))
    body[0] ^= 1
    backend._call("put_object", Bucket=backend.bucket, Key=key, Body=bytes(body))
    reader = reopen(s3_store, s3_server, tmp_path / "fresh").reader(refresh_interval=None, lease=False)
    with pytest.raises(sharedrec.CorruptVersion, match="does not match its manifest"):
        reader.get("home", int(KEYS[0]))
    cached = [p.as_posix() for p in (tmp_path / "fresh").rglob("*") if p.is_file()]
    assert cached and not [p for p in cached if p.endswith("home/items/c/0/0")]  # nothing bad was cached


def test_readers_open_without_a_request(
    s3_store: sharedrec.RecommendationStore, s3_server: str, tmp_path: Path
) -> None:
    publish(s3_store, 1)
    calls: list[str] = []
    reader_store = sharedrec.open(
        s3_store.location, storage_options=s3_options(s3_server), cache_dir=tmp_path / "r", create=False
    )
    counter = RequestCounter(reader_store)
    reader = reader_store.reader(lease=False, refresh_interval=None)
    reader.get("home", int(KEYS[2]))
    calls = counter.take()
    assert len(calls) == 4, calls  # CURRENT (with the manifest), then keys, items and scores chunks
    missing = sharedrec.open("s3://no-such-bucket-z/r", storage_options=s3_options(s3_server), create=False)
    with pytest.raises(StoreNotFound, match="no bucket 'no-such-bucket-z'"):
        missing.reader(lease=False)


def test_missing_bucket_and_unreachable_endpoint(s3_server: str) -> None:
    with pytest.raises(StoreNotFound, match="no bucket 'nope-"):
        sharedrec.open("s3://nope-bucket-x/r", storage_options=s3_options(s3_server), create=True)
    options = s3_options("http://127.0.0.1:9") | {
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1}
    }
    with pytest.raises(SharedrecError, match="cannot reach s3://b/r"):
        sharedrec.open("s3://b/r", storage_options=options, create=True)


def test_transient_errors_are_retried(s3_server: str, tmp_path: Path) -> None:
    from faulty_proxy import FaultyProxy

    bucket = make_bucket(s3_server)
    with FaultyProxy(s3_server) as proxy:
        options = s3_options(proxy.url) | {
            "config_kwargs": {"retries": {"max_attempts": 10, "mode": "standard"}}
        }
        store = sharedrec.open(
            f"s3://{bucket}/r", storage_options=options, cache_dir=tmp_path / "c", create=True
        )
        v1 = publish(store, 1)
        proxy.failures = 4  # a bad moment on the server: several requests in a row fail
        v2 = publish(store, 2)
        assert proxy.failed == 4
        proxy.failures, proxy.reset = 2, True  # and connections reset
        reader = store.reader(refresh_interval=None, lease=False)
        assert reader.version == v2
        assert int(reader.get("home", int(KEYS[9])).items[0]) == 2000
        assert proxy.failed == 6
    clean = sharedrec.open(
        f"s3://{bucket}/r", storage_options=s3_options(s3_server), cache_dir=tmp_path / "d"
    )
    assert [v.id for v in clean.versions()] == [v1, v2]
    assert clean.verify(v2).ok


def test_outage_fails_the_publish_and_keeps_the_live_version(s3_server: str, tmp_path: Path) -> None:
    from faulty_proxy import FaultyProxy

    bucket = make_bucket(s3_server)
    with FaultyProxy(s3_server) as proxy:
        options = s3_options(proxy.url) | {
            "config_kwargs": {"retries": {"max_attempts": 2, "mode": "standard"}}
        }
        store = sharedrec.open(
            f"s3://{bucket}/r", storage_options=options, cache_dir=tmp_path / "c", create=True
        )
        v1 = publish(store, 1)
        proxy.failures = 10_000  # the server is down for good
        with pytest.raises(Exception):  # noqa: B017, PT011 - whatever the client raises
            publish(store, 2)
        proxy.failures = 0
    clean = sharedrec.open(
        f"s3://{bucket}/r", storage_options=s3_options(s3_server), cache_dir=tmp_path / "d"
    )
    assert clean.current() == v1
    assert clean.reader(lease=False).get("home", int(KEYS[1])).items[0] == 1000


CACHED_READER = """
import json, sys
import sharedrec
url, endpoint, cache, key = sys.argv[1:5]
options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing",
           "client_kwargs": {"region_name": "us-east-1"}}
store = sharedrec.open(url, storage_options=options, cache_dir=cache, create=False)
calls = []
store._backend.client.meta.events.register("before-send.s3", lambda request, **kw: calls.append(request.url))
reader = store.reader(lease=False, refresh_interval=None)
items = reader.get("home", int(key)).items.tolist()
print(json.dumps({"items": items, "requests": calls}))
"""


def test_processes_on_one_node_share_the_cache(
    s3_store: sharedrec.RecommendationStore, s3_server: str, tmp_path: Path
) -> None:
    import json
    import subprocess
    import sys

    publish(s3_store, 3)
    runs = []
    for _ in range(2):
        args = [s3_store.location, s3_server, str(tmp_path / "node-cache"), str(int(KEYS[11]))]
        done = subprocess.run([sys.executable, "-c", CACHED_READER, *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        runs.append(json.loads(done.stdout))
    assert runs[0]["items"] == runs[1]["items"] == [3000, 3001, 3002, 3003, 3004]
    chunk_gets = [
        [url for url in run["requests"] if "/versions/" in url and "manifest" not in url] for run in runs
    ]
    assert chunk_gets[0] and chunk_gets[1] == []  # the second process fetched no chunk


def test_an_object_store_keeps_the_target_chunk_size(s3_store: sharedrec.RecommendationStore) -> None:
    """Readers download an object store's chunks whole: rows that a file-system store would
    write as one 7.2 MB chunk of whole 2 MiB pages (see `test_mmap.py`) stay in 4 MiB ones."""
    n = 600_000
    keys = np.arange(n, dtype=np.int64) * 3
    items = np.tile(np.arange(3, dtype=np.int32), (n, 1))
    scores = np.tile(np.array([0.3, 0.2, 0.1], dtype=np.float32), (n, 1))
    version = s3_store.publish_ranked("home", keys, items, scores, guards=[], progress=False)
    spec = s3_store.manifest(version).collections["home"].arrays["items"]
    assert spec.chunks[0] * 12 <= 4 << 20 < spec.shape[0] * 12
    handle = s3_store.begin_publish(partitions=2)  # and so do the tasks of a partitioned publish
    assert handle.chunk_bytes == 4 << 20 and handle.huge_up_to is None
    s3_store.abort_publish(handle)
