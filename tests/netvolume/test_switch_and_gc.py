"""Version switches and garbage collection through the network-volume bench.

A writer publishes and collects through node A; reader *processes* serve through node B, a
separate mount with its own page cache and attribute cache. A file deleted through A while B
maps it fails B's reads of pages B has not cached (``ESTALE``, which a mapped reader receives
as ``SIGBUS``): these tests show when that happens and that leases and the grace period keep
it from happening.

Every item of the version tagged ``t`` is ``row * K + j + t * TAG``, so an answer names the
version it came from and a wrong or torn answer shows.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

import sharedrec
from sharedrec.manage.gc import LEFT
from sharedrec.testing.netvolume import Node, Volume

pytestmark = [pytest.mark.netvolume]

K = 10
TAG = 1_000_000_000

# A reader process. argv[1] is a JSON object: the store, the size of the data, the reader's
# options and what to do. "follow": serve random lookups until the stop file appears, print
# each new tag when first seen. "hold": answer one key, wait for a line on stdin, then look
# up keys spread over every chunk (pages node B has not cached) and print the count of wrong
# answers.
CHILD = r"""
import json, os, sys, time
import numpy as np
import sharedrec

args = json.loads(sys.argv[1])
n, k, tag_unit = args["n"], args["k"], args["tag"]
keys = np.arange(n, dtype=np.int64) * 7 + 3
span = np.arange(k, dtype=np.int64)


def emit(**event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def tags_of(rows, items):
    # The tag each row's answer claims, and how many rows are not exactly that tag's data.
    tags = (items[:, 0] - rows * k) // tag_unit
    expected = rows[:, None] * k + span[None, :] + tags[:, None] * tag_unit
    return tags, int(np.count_nonzero((items != expected).any(axis=1)))


store = sharedrec.open(args["store"], create=False)
reader = store.reader(**args["reader"])
if args["mode"] == "follow":
    rng = np.random.default_rng(os.getpid())
    seen, wrong, torn, back, lookups = -1, 0, 0, 0, 0
    emit(event="ready", version=reader.version)
    while not os.path.exists(args["stop"]):
        rows = rng.integers(0, n, 32)
        items, _, found = reader.get_many("home", keys[rows], k=k)
        tags, bad = tags_of(rows, np.asarray(items, dtype=np.int64))
        wrong += bad + int(np.count_nonzero(~found)) + int(np.count_nonzero(tags > args["newest"]))
        torn += int(len(set(tags.tolist())) > 1)  # one call, one version
        one = reader.get("home", int(keys[rows[0]]), k=k)
        tag1, bad1 = tags_of(rows[:1], np.asarray(one.items, dtype=np.int64)[None, :])
        wrong += bad1
        lookups += len(rows) + 1
        for tag in (int(tags[0]), int(tag1[0])):
            if tag < seen:
                back += 1
            elif tag > seen:
                seen = tag
                emit(event="tag", tag=tag, at=time.time())
        time.sleep(0.002)
    stats = reader.stats()
    emit(event="done", wrong=wrong, torn=torn, back=back, lookups=lookups, switches=stats.switches,
         failures=stats.refresh_failures, last_error=stats.last_error)
else:
    first = reader.get("home", int(keys[0]), k=k)
    emit(event="ready", version=reader.version, first=int(first.items[0]))
    sys.stdin.readline()
    rows = np.arange(0, n, 97, dtype=np.int64)
    wrong = 0
    tags = set()
    for row in rows.tolist():
        one = reader.get("home", int(keys[row]), k=k)
        t, bad = tags_of(np.array([row]), np.asarray(one.items, dtype=np.int64)[None, :])
        wrong += bad
        tags.add(int(t[0]))
    emit(event="done", wrong=wrong, tags=sorted(tags), version=reader.version)
"""


def keys_of(n: int) -> NDArray[np.int64]:
    return np.arange(n, dtype=np.int64) * 7 + 3


def publish(store: sharedrec.RecommendationStore, tag: int, n: int) -> str:
    """Publish version ``tag`` of ``n`` users: every item derived from its row and ``tag``."""
    items = np.arange(n * K, dtype=np.int64).reshape(n, K) + tag * TAG
    scores = np.tile(np.linspace(1.0, 0.1, K, dtype=np.float32), (n, 1))
    with store.publish(metadata={"tag": tag}, progress=False, guards=[]) as draft:
        draft.add_ranked("home", keys=keys_of(n), items=items, scores=scores)
    return draft.version_id


class Child:
    """A reader process on a node; its events (JSON lines) are collected by a thread."""

    def __init__(self, node: Node, n: int, mode: str, reader: dict[str, Any], **extra: Any) -> None:
        args = {"store": os.path.join(node.path, "recs"), "n": n, "k": K, "tag": TAG, "mode": mode}
        args.update(reader=reader, **extra)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115 - read in finish()
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD, json.dumps(args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
        )
        self.events: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.events.append(json.loads(line))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, event: str, timeout: float, **match: Any) -> dict[str, Any] | None:
        """The first event named ``event`` whose fields include ``match``, waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for seen in self.events:
                    if seen["event"] == event and all(seen.get(k) == v for k, v in match.items()):
                        return seen
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and not self._thread.is_alive()):
                    return None
                self._changed.wait(min(left, 0.05))

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()

    def finish(self, timeout: float = 60.0) -> tuple[int, str]:
        """Wait for the process to end: its exit code and its standard error."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._thread.join(5)
        self._stderr.seek(0)
        return self.process.returncode, self._stderr.read()[-4000:]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._stderr.close()


@pytest.fixture
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in started:
        child.kill()


def backdate(root: str | Path, version: str, hours: float) -> None:
    """Make ``version`` of the store at ``root`` look published ``hours`` ago (its manifest's
    ``created_at``)."""
    path = Path(root) / "versions" / version / "manifest.json"
    manifest = json.loads(path.read_bytes())
    created = datetime.fromisoformat(manifest["created_at"].replace("Z", "+00:00"))
    manifest["created_at"] = (created - timedelta(hours=hours)).isoformat().replace("+00:00", "Z")
    path.write_text(json.dumps(manifest))


# -- 1. switches under gc ------------------------------------------------------------------


REFRESH = 0.2
ATTR_TIMEOUT = 1.0
SLACK = 5.0  # a loaded machine: the bound asserted is the product's, with room to spare


def test_readers_on_another_node_follow_twenty_publishes_with_gc_between(
    network_volume: Volume, children: list[Child]
) -> None:
    """Two reader processes on node B serve through 20 publishes and collections on node A:
    no wrong, torn or backward answer, no crash, and each switch within the refresh interval
    plus B's attribute timeout."""
    n, switches = 2_000, 20
    a = network_volume.node("a")
    b = network_volume.node("b", attr_timeout=ATTR_TIMEOUT)
    writer = sharedrec.open(os.path.join(a.path, "recs"), create=True)
    publish(writer, 0, n)
    stop = os.path.join(network_volume.root, "stop")
    # A reader keeps leasing the version it left for its lease's ttl: a short one lets gc
    # delete versions during the test.
    options = {"refresh_interval": REFRESH, "lease_ttl": 2.0}
    children.extend(Child(b, n, "follow", options, stop=stop, newest=switches) for _ in range(2))
    for child in children:
        assert child.wait_for("tag", 30.0, tag=0), child.finish(1)
    delays: list[float] = []
    deleted = 0
    for tag in range(1, switches + 1):
        publish(writer, tag, n)
        published = time.time()
        deleted += len(writer.gc(keep=2, grace=0.5).deleted)
        for child in children:
            seen = child.wait_for("tag", REFRESH + ATTR_TIMEOUT + SLACK, tag=tag)
            assert seen is not None, f"a reader did not serve version {tag}: {child.finish(1)}"
            delays.append(seen["at"] - published)
    Path(stop).touch()
    dones = []
    for child in children:
        code, err = child.finish()
        assert code == 0, err
        done = child.wait_for("done", 1.0)
        assert done is not None, err
        dones.append(done)
        assert (done["wrong"], done["torn"], done["back"]) == (0, 0, 0), done
        assert done["switches"] == switches, done
        assert done["lookups"] > 0
    # gc really deleted versions (a reader leases the version it left for its lease's ttl)
    assert deleted >= switches // 2
    assert max(delays) < REFRESH + ATTR_TIMEOUT + SLACK
    print(
        f"switch delay over {len(delays)} switches: median {np.median(delays):.3f} s, "
        f"max {max(delays):.3f} s; versions deleted: {deleted}; "
        f"lookups: {[d['lookups'] for d in dones]}; refresh failures: {[d['failures'] for d in dones]}"
    )


def test_gc_reads_leases_that_readers_on_another_node_renew_meanwhile(
    network_volume: Volume, children: list[Child]
) -> None:
    """A lease replaced through node B between node A's open and read fails the read with
    ``ESTALE``; gc through A reads it again instead of failing (or skipping it)."""
    n = 2_000
    a = network_volume.node("a")
    b = network_volume.node("b")
    writer = sharedrec.open(os.path.join(a.path, "recs"), create=True)
    first = publish(writer, 0, n)
    stop = os.path.join(network_volume.root, "stop")
    # Polling every 5 ms renews the lease every 5 ms.
    children.append(Child(b, n, "follow", {"refresh_interval": 0.005}, stop=stop, newest=1))
    assert children[0].wait_for("tag", 30.0, tag=0)
    publish(writer, 1, n)
    assert children[0].wait_for("tag", 10.0, tag=1)
    stale_before = a.counts()["stale"]
    for _ in range(100):
        report = writer.gc(keep=0, grace=0)
        assert first in report.kept and report.kept[first].startswith("leased by"), report
        assert len(writer.leases()) == 1
    Path(stop).touch()
    code, err = children[0].finish()
    assert code == 0, err
    print(f"reads of a lease answered ESTALE through node A: {a.counts()['stale'] - stale_before}")


# -- 2. leases protect readers on a cold node ------------------------------------------------

N_COLD = 50_000  # 4 MB of items: a reader that answered one key has cached little of it


def test_gc_spares_versions_that_readers_on_a_cold_node_lease(
    network_volume: Volume, children: list[Child]
) -> None:
    """Readers on a cold node B still on version 1 (pinned, opened on it, or not switched
    yet) keep it through gc on node A: they then read pages B never cached, and live."""
    a = network_volume.node("a")
    b = network_volume.node("b", attr_timeout=ATTR_TIMEOUT)
    writer = sharedrec.open(os.path.join(a.path, "recs"), create=True)
    v1 = publish(writer, 1, N_COLD)
    b.remount()
    kinds: list[dict[str, Any]] = [
        {"pin": True},
        {"version": v1},
        {"refresh_interval": None},
        {"refresh_interval": 60.0},  # has not polled since the publishes below
    ]
    children.extend(Child(b, N_COLD, "hold", options) for options in kinds)
    for child in children:
        ready = child.wait_for("ready", 30.0)
        assert ready is not None and ready["version"] == v1, child.finish(1)
    v2 = publish(writer, 2, N_COLD)
    publish(writer, 3, N_COLD)
    report = writer.gc(keep=0, grace=0)
    assert report.deleted == [v2]
    assert report.kept[v1].startswith("leased by"), report.kept
    for child in children:
        child.go()
    for child, options in zip(children, kinds, strict=True):
        code, err = child.finish()
        assert code == 0, f"{options}: exit {code}: {err}"
        done = child.wait_for("done", 1.0)
        assert done is not None and done["wrong"] == 0 and done["tags"] == [1], (options, done)


# -- 3. without leases: the danger, and the rule that avoids it ------------------------------


def test_without_a_lease_gc_with_no_grace_kills_a_reader_on_another_node(
    network_volume: Volume, children: list[Child]
) -> None:
    """gc through node A deletes the version a lease-less reader on node B maps; B's next
    read of a page it had not cached fails, and the reader dies of SIGBUS."""
    a = network_volume.node("a")
    b = network_volume.node("b", attr_timeout=ATTR_TIMEOUT)
    writer = sharedrec.open(os.path.join(a.path, "recs"), create=True)
    v1 = publish(writer, 1, N_COLD)
    b.remount()
    children.append(Child(b, N_COLD, "hold", {"lease": False, "refresh_interval": None}))
    ready = children[0].wait_for("ready", 30.0)
    assert ready is not None and ready["version"] == v1, children[0].finish(1)
    publish(writer, 2, N_COLD)
    assert writer.gc(keep=1, grace=0).deleted == [v1]
    children[0].go()
    code, err = children[0].finish()
    assert code == -signal.SIGBUS, f"exit {code}: {err}"


def test_default_gc_spares_the_version_a_pointer_just_left_for_readers_without_lease(
    network_volume: Volume, children: list[Child]
) -> None:
    """The grace period counts from when a pointer left a version, not from its creation.

    Versions published hours ago; ``CURRENT`` set back to the oldest (a known-good model);
    a lease-less reader on node B serves it; a publish moves ``CURRENT`` on. The reader
    leaves the version only at its next poll (up to ``refresh_interval`` plus B's attribute
    timeout later), so gc with the default settings right after the publish must keep it:
    the reader then reads pages B never cached and lives. With ``grace=0`` it dies.
    """
    a = network_volume.node("a")
    b = network_volume.node("b", attr_timeout=ATTR_TIMEOUT)
    writer = sharedrec.open(os.path.join(a.path, "recs"), create=True)
    ids = [publish(writer, tag, N_COLD) for tag in range(1, 5)]
    for age, version in zip((5, 4, 3, 2), ids, strict=True):
        backdate(Path(network_volume.backing) / "recs", version, hours=age)
    writer.set_current(ids[0])
    b.remount()
    children.append(Child(b, N_COLD, "hold", {"lease": False}))  # default refresh_interval
    ready = children[0].wait_for("ready", 30.0)
    assert ready is not None and ready["version"] == ids[0], children[0].finish(1)
    publish(writer, 5, N_COLD)
    report = writer.gc()  # keep=3, grace=1 h
    children[0].go()
    code, err = children[0].finish()
    assert code == 0, f"exit {code}: {err}"
    assert ids[0] not in report.deleted and "grace" in report.kept[ids[0]], report
    done = children[0].wait_for("done", 1.0)
    assert done is not None and done["wrong"] == 0 and done["tags"] == [1], done

    # The same reader, the same moment, with grace=0: gc deletes the version under it.
    b.remount()
    children.append(Child(b, N_COLD, "hold", {"lease": False, "version": ids[0]}))
    assert children[1].wait_for("ready", 30.0), children[1].finish(1)
    assert ids[0] in writer.gc(grace=0).deleted
    children[1].go()
    code, err = children[1].finish()
    assert code == -signal.SIGBUS, f"exit {code}: {err}"


def test_versions_without_a_note_count_the_grace_period_from_their_successor(tmp_path: Path) -> None:
    """A store written before pointers noted when they left a version (or whose note was
    lost): a version left the pointer no earlier than its successor was created."""
    store = sharedrec.open(tmp_path / "recs", create=True)
    ids = [publish(store, tag, 100) for tag in range(3)]
    for age, version in zip((5, 4), ids[:2], strict=True):
        backdate(tmp_path / "recs", version, hours=age)
    for version in ids:
        (tmp_path / "recs" / "versions" / version / LEFT).unlink(missing_ok=True)
    report = store.gc(keep=0, grace=timedelta(hours=1))
    assert report.deleted == [ids[0]]  # its successor is 4 hours old
    assert "grace" in report.kept[ids[1]]  # its successor was published just now


def test_gc_leaves_a_folder_that_files_open_on_its_own_node_hold_for_later(
    network_volume: Volume, children: list[Child]
) -> None:
    """A file deleted through the node that holds it open is renamed ``.fuse_hidden*`` (NFS:
    ``.nfs*``) and its folder cannot be removed until it is closed. gc says so and leaves the
    folder; once the file is closed a later gc removes it."""
    a = network_volume.node("a")
    writer = sharedrec.open(os.path.join(a.path, "recs"), create=True)
    v1 = publish(writer, 1, N_COLD)
    children.append(Child(a, N_COLD, "hold", {"lease": False, "refresh_interval": None}))
    ready = children[0].wait_for("ready", 30.0)
    assert ready is not None and ready["version"] == v1, children[0].finish(1)
    publish(writer, 2, N_COLD)
    assert writer.gc(keep=1, grace=0).deleted == [v1]
    folder = Path(network_volume.backing) / "recs" / "versions" / v1
    left = [p.name for p in folder.rglob("*") if p.is_file()]
    assert left and all(name.startswith(".fuse_hidden") for name in left), left
    report = writer.gc(keep=1, grace=0)
    assert report.unfinished == [] and "open" in report.kept[v1], report
    assert v1 not in [v.id for v in writer.versions()]
    children[0].go()  # the same node keeps a file it deleted readable
    code, err = children[0].finish()
    assert code == 0, f"exit {code}: {err}"
    done = children[0].wait_for("done", 1.0)
    assert done is not None and done["wrong"] == 0 and done["tags"] == [1], done
    writer.gc(keep=1, grace=0)
    assert not folder.exists()
