"""Warm-up on a cold node, and the readiness probe that waits for it.

A pod scheduled on a fresh node has an empty page cache: each first touch of a page is a
read request to the volume. ``prefetch()`` reads whole collections in the background so
that lookups stop waiting on the network, and ``sharedrec ready`` reports the pod ready only
once that read is done (when the service asked for it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import cast

import numpy as np
import pytest

import sharedrec
from sharedrec.errors import UnknownCollection
from sharedrec.testing.netvolume import Node, Profile, Volume

pytestmark = [pytest.mark.netvolume]

N_USERS, K = 12_000, 100  # items and scores: 4.8 MB each, in 4 MiB chunks
KEYS = np.arange(N_USERS, dtype=np.int64) * 7 + 1
ITEMS = (np.arange(N_USERS, dtype=np.int64)[:, None] * K + np.arange(K)[None, :]).astype(np.int32)
SCORES = np.tile(np.linspace(1.0, 0.01, K, dtype=np.float32), (N_USERS, 1))


def _publish(node: Node) -> str:
    store = sharedrec.open(os.path.join(node.path, "recs"), create=True)
    return store.publish_ranked("home", KEYS, ITEMS, SCORES, progress=False)


def _collection_bytes(store: sharedrec.RecommendationStore, collection: str) -> int:
    files = store.manifest(cast(str, store.current())).files
    return sum(entry.size for path, entry in files.items() if path.split("/", 1)[0] == collection)


def _look_up_everything(reader: sharedrec.Reader) -> None:
    items, _, found = reader.get_many("home", KEYS)
    assert found.all() and np.array_equal(items, ITEMS)
    assert np.array_equal(reader.get("home", int(KEYS[-1])).items, ITEMS[-1])


def test_prefetch_warms_a_cold_node(network_volume: Volume) -> None:
    a = network_volume.node("a")
    b = network_volume.node("b")
    _publish(a)

    # A cold node: every page a lookup touches first is a read request.
    b.remount()
    store = sharedrec.open(os.path.join(b.path, "recs"), create=False)
    with store.reader(lease=False, refresh_interval=None) as reader:
        before = b.counts()
        _look_up_everything(reader)
        cold = b.counts(before)
    assert cold["read"] > 0

    # Cold again; this time the reader warms the node before its lookups.
    b.remount()
    store = sharedrec.open(os.path.join(b.path, "recs"), create=False)
    with store.reader(lease=False, refresh_interval=None) as reader:
        before = b.counts()
        reader.prefetch(wait=True, progress=False)
        warming = b.counts(before)
        before = b.counts()
        _look_up_everything(reader)
        warm = b.counts(before)
    # The prefetch read the whole collection (the key chunk may have been read at open) ...
    assert warming["bytes_read"] >= _collection_bytes(store, "home") - KEYS.nbytes
    # ... and once it returned, lookups never waited on a read.
    assert warm["read"] == 0, warm


SERVICE = textwrap.dedent(
    """
    import sys
    import numpy as np
    import sharedrec

    store = sharedrec.open(sys.argv[1], create=False)
    reader = store.reader(prefetch=True, refresh_interval=None)
    print("opened", flush=True)
    sys.stdin.readline()  # the probe said ready
    keys = np.arange(int(sys.argv[2]), dtype=np.int64) * 7 + 1
    items, _, found = reader.get_many("home", keys)
    print("answered", bool(found.all()), int(items[-1, -1]), flush=True)
    sys.stdin.readline()
    reader.close()
    """
)


def _probe(store_path: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sharedrec", "ready", store_path],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_ready_waits_for_the_prefetch(network_volume: Volume) -> None:
    a = network_volume.node("a")
    # Node b's reads take 100 ms each: warming 10 MB takes seconds, long enough to probe.
    b = network_volume.node("b", profile=Profile(read=0.1))
    _publish(a)
    b.remount()
    store_path = os.path.join(b.path, "recs")
    src = str(Path(sharedrec.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src, "SHAREDREC_READER_ID": "pod-1"}
    service = subprocess.Popen(
        [sys.executable, "-c", SERVICE, store_path, str(N_USERS)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert service.stdin is not None and service.stdout is not None and service.stderr is not None
    try:
        assert service.stdout.readline().strip() == "opened", service.stderr.read()
        opened = time.monotonic()
        probe = _probe(store_path, env)
        assert probe.returncode == 1, probe.stdout
        assert "not ready: pod-1 is still warming its cache" in probe.stderr
        (lease_file,) = Path(network_volume.backing, "recs", "leases").glob("pod-1.*.json")
        assert json.loads(lease_file.read_bytes())["warming"] is True
        not_ready = 1
        while True:
            probe = _probe(store_path, env)
            if probe.returncode == 0:
                break
            assert "warming" in probe.stderr, probe.stderr
            assert time.monotonic() - opened < 60, "the prefetch never finished"
            not_ready += 1
            time.sleep(0.2)
        assert probe.stdout.startswith("ready: pod-1 serves version")
        assert "warming" not in json.loads(lease_file.read_bytes())

        # Ready means warm: the service's first lookups read nothing from the volume.
        before = b.counts()
        service.stdin.write("\n")
        service.stdin.flush()
        assert service.stdout.readline().split() == ["answered", "True", str(int(ITEMS[-1, -1]))]
        assert b.counts(before)["read"] == 0
        service.stdin.write("\n")
        service.stdin.flush()
        assert service.wait(30) == 0, service.stderr.read()
    finally:
        service.kill()
        service.communicate()
    print(f"probed not ready {not_ready} times over {time.monotonic() - opened:.1f} s of warm-up")


def test_a_reader_without_prefetch_is_ready_at_once(network_volume: Volume) -> None:
    a = network_volume.node("a")
    _publish(a)
    store = sharedrec.open(os.path.join(a.path, "recs"), create=False)
    src = str(Path(sharedrec.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src, "SHAREDREC_READER_ID": "pod-2"}
    with store.reader(reader_id="pod-2", refresh_interval=None):
        probe = _probe(store.location, env)
        assert probe.returncode == 0, probe.stderr
    # Asked to prefetch a collection the version lacks: refused, and no lease stays behind
    # claiming to warm.
    with pytest.raises(UnknownCollection, match="nope"):
        store.reader(reader_id="pod-2", prefetch=["nope"])
    assert not list(Path(network_volume.backing, "recs", "leases").glob("pod-2.*"))


def test_reader_ready_waits_for_the_prefetch(network_volume: Volume) -> None:
    """`Reader.ready` (the example service's /readyz, the metrics gauge) is False until the
    prefetch has read everything, and True from then on."""
    writer = network_volume.node("a", attr_timeout=1.0)
    _publish(writer)
    # Slow reads on the cold node make the prefetch last long enough to be seen running.
    reader_node = network_volume.node("b", attr_timeout=1.0, profile=Profile(read=2e-3))
    store = sharedrec.open(os.path.join(reader_node.path, "recs"), create=False)
    with store.reader(prefetch=True, refresh_interval=None) as reader:
        assert not reader.ready
        deadline = time.monotonic() + 60
        while not reader.ready:
            assert time.monotonic() < deadline, "the prefetch never finished"
            time.sleep(0.05)
        before = reader_node.counts()
        _look_up_everything(reader)
        assert reader_node.counts(before)["read"] == 0
    assert not reader.ready
