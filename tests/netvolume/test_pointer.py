"""The pointer under a network volume's caches: a reader on node B sees a pointer moved
through node A within its refresh interval plus the attribute timeout, and never reads a
partial pointer or fails while the pointer is replaced under it.

The writer and the readers are separate processes on separate nodes (mounts) of one volume;
node B caches attributes and names for 3 s, as an NFS client with ``actimeo=3`` does.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import IO, Any

import numpy as np
import pytest

import sharedrec
from sharedrec.backends.posix import PosixBackend
from sharedrec.format.schema import Pointer
from sharedrec.testing.netvolume import Volume

pytestmark = [pytest.mark.netvolume]

ATTR_TIMEOUT = 3.0
REFRESH = 0.5
SLACK = 2.0
POLLERS = 4

_SERVE = r"""
import json, sys, time
import sharedrec
store = sharedrec.open(sys.argv[1], create=False)
reader = store.reader(refresh_interval=float(sys.argv[2]), ref=sys.argv[3])
last = None
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    served = int(reader.get("home", 0, k=1).items[0])
    if served != last:
        last = served
        print(json.dumps({"served": served, "t": time.time(), "failures": reader.stats().refresh_failures}),
              flush=True)
    time.sleep(0.002)
"""

_POLL = r"""
import collections, json, sys, time
import sharedrec
from sharedrec.backends.posix import PosixBackend
from sharedrec.format.schema import Pointer
store = sharedrec.open(sys.argv[1], create=False)
backend = PosixBackend(sys.argv[1], create=False)
expected = json.loads(sys.argv[2])  # version id -> the item its lists hold
reader = store.reader(refresh_interval=None, lease=False)
errors = collections.Counter()
reads = 0
print(json.dumps({"ready": True}), flush=True)
deadline = time.monotonic() + float(sys.argv[3])
while time.monotonic() < deadline:
    try:
        # The read every pointer lookup makes (store.current(), a reader's poll)...
        live = Pointer.loads(backend.read_bytes("CURRENT"), "CURRENT").version
        if reads % 20 == 0:  # ...and, now and then, the public calls themselves
            live = store.current()
            reader.refresh()
            served = int(reader.get("home", 0, k=1).items[0])
            if served != expected.get(reader.version):
                errors[f"version {reader.version} answered {served}"] += 1
    except Exception as exc:  # every failure is counted: there must be none
        errors[f"{type(exc).__name__}: {exc}"[:200]] += 1
        continue
    reads += 1
    if live not in expected:
        errors[f"CURRENT named {live!r}"] += 1
print(json.dumps({"reads": reads, "errors": dict(errors), "failures": reader.stats().refresh_failures}))
"""


def _publish(store: sharedrec.RecommendationStore, n: int, ref: str = "current") -> str:
    keys = np.arange(100, dtype=np.int64)
    with store.publish(ref=ref, guards=[]) as draft:
        draft.add_ranked(
            "home",
            keys=keys,
            items=np.full((100, 5), n, dtype=np.int32),
            scores=np.ones((100, 5), dtype=np.float32),
        )
    live = store.current(ref)
    assert live is not None
    return live


def _child(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _line(stream: IO[str] | None, process: subprocess.Popen[str]) -> dict[str, Any]:
    assert stream is not None
    line = stream.readline()
    if not line:
        process.wait(10)
        assert process.stderr is not None
        raise AssertionError(f"child ended (exit {process.returncode}): {process.stderr.read()[-2000:]}")
    return json.loads(line)  # type: ignore[no-any-return]


@pytest.mark.parametrize("ref", ["current", "canary"])
def test_a_reader_on_another_node_switches_within_refresh_plus_attribute_timeout(
    network_volume: Volume, ref: str
) -> None:
    a = network_volume.node("a")
    b = network_volume.node("b", attr_timeout=ATTR_TIMEOUT, entry_timeout=ATTR_TIMEOUT)
    writer = sharedrec.open(os.path.join(a.path, "recs"), create=True)
    _publish(writer, 1, ref)
    pointer_on_b = os.path.join(b.path, "recs", "CURRENT" if ref == "current" else f"refs/{ref}")
    reader = _child(_SERVE, os.path.join(b.path, "recs"), str(REFRESH), ref)
    try:
        assert _line(reader.stdout, reader)["served"] == 1
        for n in (2, 3):
            # Node B's caches hold the old pointer: its size, its name, its pages.
            os.stat(pointer_on_b)
            time.sleep(2 * REFRESH)
            _publish(writer, n, ref)  # the new pointer is longer: it lists one more previous version
            published = time.time()
            event = _line(reader.stdout, reader)
            assert event["served"] == n
            assert event["failures"] == 0
            assert event["t"] - published <= REFRESH + ATTR_TIMEOUT + SLACK, (
                f"the reader on node B served version {n} {event['t'] - published:.2f} s after it was "
                f"published on node A (refresh interval {REFRESH} s, attribute timeout {ATTR_TIMEOUT} s)"
            )
    finally:
        reader.kill()
        reader.wait()


@pytest.mark.parametrize("attr_timeout", [0.0, ATTR_TIMEOUT])
def test_pointer_reads_are_whole_while_another_node_replaces_the_pointer(
    network_volume: Volume, attr_timeout: float
) -> None:
    a = network_volume.node("a")
    b = network_volume.node("b", attr_timeout=attr_timeout, entry_timeout=attr_timeout)
    root_a = os.path.join(a.path, "recs")
    writer = sharedrec.open(root_a, create=True)
    first, second = _publish(writer, 1), _publish(writer, 2)
    # A short pointer and a long one (a full history), replaced the way a publish does.
    now = datetime.now(UTC)
    short = Pointer(version=first, previous=[], updated_at=now).dumps()
    long = Pointer(version=second, previous=[first] * 32, updated_at=now).dumps()
    assert len(long) > 4 * len(short)
    backend = PosixBackend(root_a, create=False)
    # Several processes on node B: each one's lookups refresh the size node B caches for the
    # name, while another one reads the file it opened before.
    pollers = [
        _child(_POLL, os.path.join(b.path, "recs"), json.dumps({first: 1, second: 2}), "3")
        for _ in range(POLLERS)
    ]
    try:
        for poller in pollers:
            assert _line(poller.stdout, poller)["ready"]
        replaced = 0
        while any(poller.poll() is None for poller in pollers):
            # Without fsync the pointer is replaced as fast as it can be; readers see the same
            # os.replace as after a publish.
            backend.write_atomic("CURRENT", long if replaced % 2 else short, durable=False)
            replaced += 1
        results = [_line(poller.stdout, poller) for poller in pollers]
    finally:
        for poller in pollers:
            poller.kill()
            poller.wait()
    errors: collections.Counter[str] = collections.Counter()
    for result in results:
        errors.update(result["errors"])
    assert replaced > 50
    assert sum(result["reads"] for result in results) > 20
    assert errors == {}
    assert sum(result["failures"] for result in results) == 0
