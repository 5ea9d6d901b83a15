"""The network-volume bench's own behaviours, each seen through real mounts.

Every behaviour the store's tests rely on is asserted here first: latency per request kind,
counting, attribute caching, close-to-open, one page cache per node, stale handles after a
delete on another node (``ESTALE``, ``SIGBUS`` for a mapped reader), silly rename after a
delete on the same node, locks across nodes, and the command line.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sharedrec.testing import netvolume
from sharedrec.testing.netvolume import ROUND_TRIP_KINDS, Profile, Volume, round_trips

pytestmark = [pytest.mark.netvolume]

MiB = 1 << 20
PAGE = os.sysconf("SC_PAGE_SIZE")


def _write(path: str | Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _read(path: str | Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _child_env() -> dict[str, str]:
    src = str(Path(netvolume.__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


def test_the_bench_runs_here() -> None:
    # The suite runs these tests, not skips them: a machine without FUSE is a broken setup.
    assert netvolume.missing() is None


def test_latency_is_added_per_kind(network_volume: Volume) -> None:
    _write(Path(network_volume.backing) / "f", b"x" * 4096)
    slow = network_volume.node("slow", profile=Profile(read=0.02))
    fast = network_volume.node("fast")
    with open(Path(slow.path) / "f", "rb") as f:  # the open is free: only the read waits
        started = time.perf_counter()
        assert f.read() == b"x" * 4096
        slow_read = time.perf_counter() - started
    assert slow_read >= 0.02
    assert slow.counts()["read"] >= 1
    # Through the "efs" profile, a write waits 2.7 ms and its fsync 2.7 ms more.
    efs = network_volume.node("efs", profile="efs")
    started = time.perf_counter()
    with open(Path(efs.path) / "g", "wb") as f:
        f.write(b"y")
        f.flush()
        os.fsync(f.fileno())
    assert time.perf_counter() - started >= 3 * 2.7e-3  # create, write, fsync (and flush)
    assert _read(Path(fast.path) / "g") == b"y"


def test_requests_are_counted_by_kind(network_volume: Volume) -> None:
    _write(Path(network_volume.backing) / "f", b"x" * 10_000)
    node = network_volume.node("b")
    before = node.counts()
    assert _read(Path(node.path) / "f") == b"x" * 10_000
    counts = node.counts(since=before)
    assert counts["open"] == 1
    assert counts["read"] >= 1 and counts["bytes_read"] == 10_000
    assert counts["lookup"] >= 1
    # close and release are counted but do not wait on the server: not round trips.
    assert counts["close"] == 1
    waited = sum(counts[kind] for kind in ROUND_TRIP_KINDS)
    assert node.round_trips(before) == round_trips(counts) == waited
    assert waited == sum(counts[kind] for kind in netvolume.KINDS) - counts["close"] - counts["release"]
    # Writes are counted with their bytes.
    before = node.counts()
    _write(Path(node.path) / "g", b"z" * 5000)
    counts = node.counts(since=before)
    assert counts["create"] == 1 and counts["write"] >= 1 and counts["bytes_written"] == 5000
    assert counts["flush"] == 1 and counts["close"] == 0  # a flush that wrote is a round trip


def test_attributes_are_cached_for_attr_timeout(network_volume: Volume) -> None:
    a = network_volume.node("a")
    b = network_volume.node("b", attr_timeout=2)
    c = network_volume.node("c", attr_timeout=0)
    _write(Path(a.path) / "f", b"1" * 10)
    assert os.stat(Path(b.path) / "f").st_size == 10
    assert os.stat(Path(c.path) / "f").st_size == 10
    with open(Path(a.path) / "f", "ab") as f:
        f.write(b"2" * 10)
    # Node b keeps the size it learnt until its attribute timeout passes; node c asks again.
    assert os.stat(Path(b.path) / "f").st_size == 10
    assert os.stat(Path(c.path) / "f").st_size == 20
    deadline = time.monotonic() + 2 + 3  # the timeout, and generous slack
    while os.stat(Path(b.path) / "f").st_size != 20:
        assert time.monotonic() < deadline, "node b never saw the new size"
        time.sleep(0.1)


def test_entries_are_cached_for_entry_timeout(network_volume: Volume) -> None:
    a = network_volume.node("a")
    b = network_volume.node("b", attr_timeout=2)
    assert not os.path.exists(Path(b.path) / "new")  # a negative entry, cached on b
    _write(Path(a.path) / "new", b"n")
    assert not os.path.exists(Path(b.path) / "new")
    deadline = time.monotonic() + 2 + 3
    while not os.path.exists(Path(b.path) / "new"):
        assert time.monotonic() < deadline, "node b never saw the new name"
        time.sleep(0.1)


def test_a_node_without_negative_caching_sees_a_new_name_at_once(network_volume: Volume) -> None:
    """``negative_timeout=0`` models NFS ``lookupcache=positive``: names found missing are
    asked again, while names found present stay cached for the entry timeout."""
    a = network_volume.node("a")
    b = network_volume.node("b", attr_timeout=5, negative_timeout=0)
    assert not os.path.exists(Path(b.path) / "new")
    _write(Path(a.path) / "new", b"n")
    assert os.path.exists(Path(b.path) / "new")


def test_a_trace_names_every_request(network_volume: Volume) -> None:
    trace = Path(network_volume.root) / "b.trace"
    a = network_volume.node("a")
    _write(Path(a.path) / "f", b"x" * 10)
    b = network_volume.node("b", trace=trace)
    before = b.counts()
    assert _read(Path(b.path) / "f") == b"x" * 10
    counted = b.counts(before)
    lines = [line.split() for line in trace.read_text().splitlines()]
    assert all(len(line) == 3 and line[2] == "/f" for line in lines if line[1] in ("open", "read"))
    kinds = [line[1] for line in lines]
    assert kinds.count("open") == counted["open"] == 1
    assert kinds.count("read") == counted["read"]


def test_close_to_open_rereads_a_changed_file(network_volume: Volume) -> None:
    a = network_volume.node("a")
    b = network_volume.node("b", attr_timeout=2)
    _write(Path(a.path) / "f", b"old bytes")
    assert _read(Path(b.path) / "f") == b"old bytes"
    before = b.counts()
    assert _read(Path(b.path) / "f") == b"old bytes"  # unchanged: served from b's page cache
    assert b.counts(before)["read"] == 0
    time.sleep(0.01)  # a new mtime
    _write(Path(a.path) / "f", b"new bytes")  # same size, in place
    # Within b's attribute timeout, yet the reopen sees the change (as NFS's open does).
    before = b.counts()
    assert _read(Path(b.path) / "f") == b"new bytes"
    assert b.counts(before)["read"] >= 1
    # A new size too: the reopen learns it, rather than reading as far as the cached one.
    assert os.stat(Path(b.path) / "f").st_size == 9
    _write(Path(a.path) / "f", b"a longer pointer than before")
    assert _read(Path(b.path) / "f") == b"a longer pointer than before"
    _write(Path(a.path) / "f", b"short")
    assert _read(Path(b.path) / "f") == b"short"


def test_each_node_has_its_own_page_cache(network_volume: Volume) -> None:
    _write(Path(network_volume.backing) / "f", os.urandom(MiB))
    a = network_volume.node("a")
    b = network_volume.node("b")
    data = _read(Path(a.path) / "f")
    before_a, before_b = a.counts(), b.counts()
    assert _read(Path(a.path) / "f") == data
    assert a.counts(before_a)["read"] == 0  # a's cache holds it
    assert _read(Path(b.path) / "f") == data
    assert b.counts(before_b)["bytes_read"] == MiB  # b's does not: every byte crossed again


def test_a_delete_on_another_node_makes_uncached_reads_stale(network_volume: Volume) -> None:
    a = network_volume.node("a")
    b = network_volume.node("b")
    data = os.urandom(4 * MiB)
    _write(Path(a.path) / "f", data)
    fd = os.open(Path(b.path) / "f", os.O_RDONLY)
    try:
        assert os.pread(fd, PAGE, 0) == data[:PAGE]  # cached on b, with some readahead
        os.unlink(Path(a.path) / "f")
        stale = b.counts()["stale"]
        with pytest.raises(OSError, match="Stale file handle") as caught:
            os.pread(fd, PAGE, 3 * MiB)  # far beyond any readahead
        assert caught.value.errno == errno.ESTALE
        assert b.counts()["stale"] > stale
        # Even a cached page fails through read() here: with attr_timeout 0 every read
        # revalidates the file's attributes, and that request is stale too (so is NFS's
        # GETATTR). A mapped reader keeps its cached pages (next test).
        with pytest.raises(OSError, match="Stale file handle") as caught:
            os.pread(fd, PAGE, 0)
        assert caught.value.errno == errno.ESTALE
    finally:
        os.close(fd)


MAPPED_READER = textwrap.dedent(
    """
    import mmap, sys
    with open(sys.argv[1], "rb") as f:
        m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    first = m[0]  # page 0 is now in this node's cache
    print("mapped", flush=True)
    sys.stdin.readline()
    print("cached page", m[0] == first, flush=True)
    print("survived", m[3 * 1024 * 1024], flush=True)  # an uncached page
    """
)


def test_a_delete_on_another_node_kills_a_mapped_reader_with_sigbus(network_volume: Volume) -> None:
    a = network_volume.node("a")
    b = network_volume.node("b")
    _write(Path(a.path) / "f", os.urandom(4 * MiB))
    child = subprocess.Popen(
        [sys.executable, "-c", MAPPED_READER, str(Path(b.path) / "f")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "mapped"
    os.unlink(Path(a.path) / "f")
    out, err = child.communicate("go\n", timeout=30)
    assert child.returncode == -signal.SIGBUS, (child.returncode, out, err)
    assert out.splitlines()[-1] == "cached page True"  # died at the uncached page


def test_a_delete_on_the_same_node_keeps_the_open_file_readable(network_volume: Volume) -> None:
    b = network_volume.node("b")
    data = os.urandom(4 * MiB)
    _write(Path(b.path) / "f", data)
    b.remount()  # nothing of the file cached
    fd = os.open(Path(b.path) / "f", os.O_RDONLY)
    try:
        os.unlink(Path(b.path) / "f")
        assert not os.path.exists(Path(b.path) / "f")
        hidden = [name for name in os.listdir(network_volume.backing) if name.startswith(".fuse_hidden")]
        assert len(hidden) == 1  # NFS's .nfs* file
        assert os.pread(fd, PAGE, 3 * MiB) == data[3 * MiB : 3 * MiB + PAGE]  # uncached, still there
    finally:
        os.close(fd)
    deadline = time.monotonic() + 5
    while any(name.startswith(".fuse_hidden") for name in os.listdir(network_volume.backing)):
        assert time.monotonic() < deadline, "the silly-renamed file outlived its last close"
        time.sleep(0.05)


def test_flock_excludes_across_nodes(network_volume: Volume) -> None:
    a = network_volume.node("a")
    b = network_volume.node("b")
    _write(Path(a.path) / "lock", b"")
    with open(Path(a.path) / "lock", "rb") as held, open(Path(b.path) / "lock", "rb") as other:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(held, fcntl.LOCK_UN)
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(BlockingIOError):
            fcntl.flock(held, fcntl.LOCK_SH | fcntl.LOCK_NB)
    assert a.counts()["lock"] >= 2 and b.counts()["lock"] >= 1


MOUNT = [sys.executable, "-m", "sharedrec.testing.netvolume", "mount"]


def test_the_command_line_mounts_and_counts(tmp_path: Path) -> None:
    if (reason := netvolume.missing()) is not None:
        pytest.skip(reason)
    backing, mountpoint = tmp_path / "backing", tmp_path / "mnt"
    backing.mkdir()
    mountpoint.mkdir()
    _write(backing / "f", b"hello")
    counts_path = tmp_path / "mnt.counts"
    node = subprocess.Popen(
        [*MOUNT, str(backing), str(mountpoint), "--profile=efs", "--latency=read=5ms", "--attr-timeout=0"],
        env=_child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not (os.path.ismount(mountpoint) and counts_path.exists()):
            assert node.poll() is None, node.communicate()[0]
            assert time.monotonic() < deadline, "the node did not mount"
            time.sleep(0.05)
        started = time.perf_counter()
        assert _read(mountpoint / "f") == b"hello"
        assert time.perf_counter() - started >= 5e-3  # --latency read=5ms over the profile
        shown = subprocess.run(
            [sys.executable, "-m", "sharedrec.testing.netvolume", "counts", str(counts_path)],
            env=_child_env(),
            capture_output=True,
            text=True,
            check=True,
        )
        counts = json.loads(shown.stdout)
        assert counts["open"] == 1 and counts["read"] == 1 and counts["bytes_read"] == 5
        assert counts["round_trips"] == round_trips(counts) > 0
    finally:
        subprocess.run(["fusermount3", "-u", str(mountpoint)], check=False)
        output = node.communicate(timeout=20)[0]
    assert node.returncode == 0, output
    assert not os.path.ismount(mountpoint)
    bad = subprocess.run(
        [*MOUNT, str(backing), str(mountpoint), "--latency", "reed=1ms"],
        env=_child_env(),
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "reed=1ms" in bad.stderr and "lookup" in bad.stderr
