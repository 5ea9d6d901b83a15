"""Garbage collection: what is deleted, what is kept and why."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

import sharedrec
from sharedrec.errors import InvalidInput

from conftest import KEYS, publish


def version_dirs(store: sharedrec.RecommendationStore) -> set[str]:
    return set(os.listdir(Path(store.location) / "versions"))


def test_keeps_current_newest_and_young(store: sharedrec.RecommendationStore) -> None:
    ids = [publish(store, tag) for tag in range(5)]
    report = store.gc(keep=2, grace=3600)
    assert report.deleted == [] and all("grace" in report.kept[v] for v in ids[:3])
    report = store.gc(keep=2, grace=0, dry_run=True)
    assert report.dry_run and sorted(report.deleted) == ids[:3]
    assert version_dirs(store) == set(ids)  # a dry run deletes nothing
    report = store.gc(keep=2, grace=0)
    assert sorted(report.deleted) == ids[:3]
    assert report.freed_bytes > 0
    assert report.kept == {ids[3]: "among the newest 2", ids[4]: "live (CURRENT)"}
    assert version_dirs(store) == set(ids[3:])
    assert [v.id for v in store.versions()] == ids[3:]


def test_current_is_kept_even_when_old(store: sharedrec.RecommendationStore) -> None:
    ids = [publish(store, tag) for tag in range(3)]
    store.set_current(ids[0])
    report = store.gc(keep=0, grace=0)
    assert sorted(report.deleted) == ids[1:]
    assert store.reader(lease=False).version == ids[0]


def test_unfinished_folders(store: sharedrec.RecommendationStore) -> None:
    live = publish(store, 1)
    stale = Path(store.location) / "versions" / "20200101T000000000000Z-dead00"
    (stale / "home").mkdir(parents=True)
    (stale / "zarr.json").write_text("{}")
    old = time.time() - 7200
    for path in (stale, stale / "home", stale / "zarr.json"):
        os.utime(path, (old, old))
    fresh = Path(store.location) / "versions" / "20990101T000000000000Z-beef00"
    fresh.mkdir()
    # A long publish: the folder itself is old, but a chunk deep inside was just written.
    writing = Path(store.location) / "versions" / "20250101T000000000000Z-c0ffee"
    (writing / "home" / "items" / "c" / "7").mkdir(parents=True)
    (writing / "home" / "items" / "c" / "7" / "0").write_bytes(b"x")
    for path in (writing, writing / "home", writing / "home" / "items"):
        os.utime(path, (old, old))
    report = store.gc(keep=1, grace=timedelta(hours=1))
    assert report.unfinished == [stale.name]
    assert "recent" in report.kept[fresh.name]
    assert "recent" in report.kept[writing.name]
    assert version_dirs(store) == {live, fresh.name, writing.name}


def test_leased_versions_survive(store: sharedrec.RecommendationStore) -> None:
    v1 = publish(store, 1)
    pinned = store.reader(version=v1, reader_id="batch-scorer")
    v2 = publish(store, 2)
    v3 = publish(store, 3)
    report = store.gc(keep=0, grace=0)
    assert report.deleted == [v2]
    assert report.kept[v1] == "leased by reader batch-scorer"
    assert pinned.get("home", int(KEYS[3])).items[0] == 1000
    pinned.close()
    assert store.gc(keep=0, grace=0).deleted == [v1]
    assert version_dirs(store) == {v3}


def test_expired_and_damaged_leases(store: sharedrec.RecommendationStore) -> None:
    v1 = publish(store, 1)
    publish(store, 2)
    leases = Path(store.location) / "leases"
    leases.mkdir(exist_ok=True)  # publishes hold leases there too
    now = datetime.now(UTC)
    expired = {
        "reader_id": "gone",
        "host": "h",
        "pid": 1,
        "version": v1,
        "versions": [v1],
        "started_at": (now - timedelta(hours=2)).isoformat(),
        "heartbeat": (now - timedelta(hours=1)).isoformat(),
        "expires_at": (now - timedelta(minutes=59)).isoformat(),
    }
    (leases / "gone.json").write_text(json.dumps(expired))
    (leases / "broken.json").write_text('{"reader_id": "bro')
    report = store.gc(keep=0, grace=0)
    assert report.deleted == [] and "damaged lease files" in report.kept[v1]
    (leases / "broken.json").unlink()
    assert store.gc(keep=0, grace=0).deleted == [v1]  # an expired lease protects nothing


def test_damaged_manifest_is_left_for_a_person(store: sharedrec.RecommendationStore) -> None:
    v1 = publish(store, 1)
    publish(store, 2)
    (Path(store.location) / "versions" / v1 / "manifest.json").write_text("{")
    report = store.gc(keep=0, grace=0)
    assert "damaged" in report.kept[v1] and v1 in version_dirs(store)


def test_bad_arguments(store: sharedrec.RecommendationStore) -> None:
    with pytest.raises(InvalidInput, match="keep"):
        store.gc(keep=-1)
    with pytest.raises(InvalidInput, match="grace"):
        store.gc(grace=-5)


PINNED_READER = textwrap.dedent(
    """
    import sys, time
    import sharedrec
    store = sharedrec.open(sys.argv[1], create=False)
    reader = store.reader(version=sys.argv[2], reader_id="worker", lease_ttl=2.0)
    print("ready", flush=True)
    answers = 0
    while sys.stdin.readline().strip() == "read":
        for key in range(0, 600, 3):
            items = reader.get("home", key).items
            assert int(items[0]) == 1000, items
            answers += 1
        print(answers, flush=True)
    reader.close()
    """
)


@pytest.mark.slow
def test_gc_never_deletes_what_a_live_reader_maps(store: sharedrec.RecommendationStore) -> None:
    v1 = publish(store, 1)
    proc = subprocess.Popen(
        [sys.executable, "-c", PINNED_READER, store.location, v1],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin and proc.stdout
    try:
        assert proc.stdout.readline().strip() == "ready"
        for tag in range(2, 5):
            publish(store, tag)
            report = store.gc(keep=0, grace=0)
            assert v1 not in report.deleted and report.kept[v1] == "leased by reader worker"
            time.sleep(0.8)  # past the lease's first heartbeats
            proc.stdin.write("read\n")
            proc.stdin.flush()
            assert int(proc.stdout.readline()) > 0  # the reader process still answers from v1
        assert v1 in version_dirs(store)
    finally:
        proc.stdin.write("stop\n")
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
    assert v1 in store.gc(keep=0, grace=0).deleted  # closed: its lease is gone


def test_a_publish_whose_files_a_collector_removed_is_refused(tmp_path: Path) -> None:
    store = sharedrec.open(tmp_path / "store", create=True)
    keys = np.arange(20)
    live = store.publish_ranked("home", keys, np.ones((20, 2), dtype=int), np.ones((20, 2)))
    with store.publish(guards=[]) as draft:
        draft.add_ranked("home", keys, np.ones((20, 2), dtype=int) * 2, np.ones((20, 2)))
        report = store.gc(keep=0, grace=0)  # no grace, but the draft's lease protects it
        assert "a publish is writing it" in report.kept[draft.version_id]
    assert store.current() == draft.version_id
    with (
        pytest.raises(sharedrec.PublishRejected, match="while it was published"),
        store.publish(guards=[]) as lost,
    ):
        lost.add_ranked("home", keys, np.ones((20, 2), dtype=int) * 3, np.ones((20, 2)))
        shutil.rmtree(Path(store.location) / "versions" / lost.version_id)  # removed by hand
    assert store.current() == draft.version_id
    assert [v.id for v in store.versions()] == [live, draft.version_id]


def test_a_killed_writers_probe_object_is_removed_after_the_grace_period(
    s3_store: sharedrec.RecommendationStore, s3_server: str
) -> None:
    # A writer killed between the probe's first PUT and its DELETE leaves the scratch object.
    from conftest import s3_client

    publish(s3_store, 0)
    bucket, _, prefix = s3_store.location.removeprefix("s3://").partition("/")
    client = s3_client(s3_server)
    written = int(time.time()) - 60  # named after the time it was written
    client.put_object(Bucket=bucket, Key=f"{prefix}/.sharedrec-probe-{written}-0123abcd", Body=b"probe")

    def probes() -> list[str]:
        listed = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/.sharedrec-probe")
        return [item["Key"] for item in listed.get("Contents", [])]

    s3_store.gc(keep=1, grace=3600)
    assert len(probes()) == 1  # young: a writer may be probing right now
    s3_store.gc(keep=1, grace=30)
    assert probes() == []
    assert s3_store.reader().get("home", int(KEYS[0])) is not None  # the store is whole
