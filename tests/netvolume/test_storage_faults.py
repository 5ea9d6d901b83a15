"""Storage faults on a network volume: the writer on node A, readers on node B.

The reliability suite's storage faults (tests/reliability/test_storage_faults.py) that mean
something on a network volume, through the bench: damaged new versions, a garbage pointer
and its repair, a full volume, a read-only mount, files a reader may not read. Both nodes
cache attributes and names for a second, as NFS clients with ``actimeo=1`` do. And one fault
that only a network volume has: a chunk file replaced under a reader that maps it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

import sharedrec
from reliability._support import KEYS, N_KEYS, check_answers, publish_tagged
from sharedrec.errors import CorruptVersion, SharedrecError, VersionNotFound
from sharedrec.format.schema import Pointer
from sharedrec.testing import netvolume
from sharedrec.testing.netvolume import Node, Volume

pytestmark = [pytest.mark.netvolume]

ATTR_TIMEOUT = 1.0
SRC = str(Path(sharedrec.__file__).resolve().parents[1])
TESTS = str(Path(__file__).resolve().parents[1])


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x40
    path.write_bytes(bytes(data))


DAMAGE: dict[str, tuple[str, Callable[[Path], None]]] = {
    "chunk truncated": ("home/items/c/1/0", _truncate),
    "byte flipped": ("home/scores/c/1/0", _flip),
    "chunk deleted": ("emb/vectors/c/1/0", Path.unlink),
    "manifest truncated": ("manifest.json", _truncate),
    "key chunk flipped": ("home/keys/c/0", _flip),
}


def _nodes(volume: Volume, **options: object) -> tuple[Node, Node]:
    # Both nodes cache for a second: with no caching at all, each path's every component is
    # a request and a publish of this small version costs 16,000 round trips instead of 1,700.
    return volume.node("a", attr_timeout=ATTR_TIMEOUT, **options), volume.node(
        "b", attr_timeout=ATTR_TIMEOUT, **options
    )


def _stores(a: Node, b: Node) -> tuple[sharedrec.RecommendationStore, Path, sharedrec.RecommendationStore]:
    """The store as the writer sees it (node A), its root there, and as readers see it (B)."""
    root = Path(a.path) / "store"
    return sharedrec.open(root, create=True), root, sharedrec.open(Path(b.path) / "store", create=False)


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_new_version_is_refused_and_readers_stay(network_volume: Volume, damage: str) -> None:
    a, b = _nodes(network_volume)
    writer = sharedrec.open(Path(a.path) / "store", create=True)
    v0 = publish_tagged(writer, 0)
    root = Path(a.path) / "store"
    store = sharedrec.open(Path(b.path) / "store", create=False)
    readers = [store.reader(lease=False, refresh_interval=None, verify=v) for v in ("sizes", "full")]
    assert all(check_answers(reader, 0) == 0 for reader in readers)
    v1 = publish_tagged(writer, 1, make_current=False)
    relpath, hurt = DAMAGE[damage]
    hurt(root / "versions" / v1 / relpath)

    with pytest.raises(CorruptVersion, match=relpath.replace(".", r"\.")):
        store.verify(v1)  # node B sees the damage done through node A
    if damage == "manifest truncated":
        with pytest.raises(CorruptVersion, match=r"manifest\.json is truncated or invalid"):
            writer.set_current(v1)
        assert writer.current() == v0
        (root / "CURRENT").write_bytes(
            Pointer(version=v1, previous=[v0], updated_at=datetime.now(UTC)).dumps()
        )
    else:
        writer.set_current(v1)
    for number, reader in enumerate(readers):
        size_visible = damage in ("chunk truncated", "chunk deleted", "manifest truncated")
        if number == 1 or size_visible:
            with pytest.raises(SharedrecError, match=relpath.replace(".", r"\.")):
                reader.refresh()
            assert reader.version == v0
            assert check_answers(reader, 0) == 0  # the last good version is still served
        else:
            assert reader.refresh() and reader.version == v1
        reader.close()
    if damage in ("chunk truncated", "chunk deleted"):
        with pytest.raises(CorruptVersion, match=relpath.replace(".", r"\.")):
            store.reader(lease=False, verify="sizes")
        lazy = store.reader(lease=False, refresh_interval=None)
        rows = np.arange(N_KEYS)
        with pytest.raises(CorruptVersion, match="damaged"):
            if relpath.startswith("emb"):
                lazy.vectors("emb", KEYS[rows])
            else:
                lazy.get_many("home", KEYS[rows])
        lazy.close()
    if damage != "manifest truncated":
        assert writer.rollback() == v0
    else:
        writer.set_current(v0)
    with store.reader(lease=False) as fresh:
        assert fresh.version == v0 and check_answers(fresh, 0) == 0


def test_current_pointing_to_garbage(network_volume: Volume) -> None:
    a, b = _nodes(network_volume)
    writer, root, store = _stores(a, b)
    v0 = publish_tagged(writer, 0)
    reader = store.reader(lease=False, refresh_interval=None)
    for garbage in (
        b"\x00\xff garbage",
        b'{"version": "v1"',
        b'{"version": "missing-version", "updated_at": "2026-01-01T00:00:00Z"}',
        b"",
    ):
        (root / "CURRENT").write_bytes(garbage)  # in place, within node B's attribute timeout
        expected = VersionNotFound if b"missing-version" in garbage else CorruptVersion
        with pytest.raises(expected, match=r"CURRENT|missing-version"):
            reader.refresh()
        with pytest.raises(expected, match="CURRENT"):
            store.reader(lease=False)
        assert reader.version == v0
        assert check_answers(reader, 0) == 0
    assert reader.stats().refresh_failures == 4
    # set_current through node A repairs it; node B reads the repaired pointer at once.
    writer.set_current(v0)
    assert store.current() == v0
    assert not reader.refresh() and reader.version == v0
    with store.reader(lease=False) as fresh:
        assert check_answers(fresh, 0) == 0
    reader.close()


# -- a full volume ---------------------------------------------------------------------------


@contextlib.contextmanager
def _mount(*args: str) -> Iterator[None]:
    target = args[-1]
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here ({done.stderr.strip() or done.returncode}): needs root")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", target], check=True)


def test_a_full_volume_during_publish_leaves_the_old_version(tmp_path: Path) -> None:
    if (reason := netvolume.missing()) is not None:
        pytest.skip(reason)
    backing = tmp_path / "volume" / "backing"
    backing.mkdir(parents=True)
    with _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(backing)), Volume(tmp_path / "volume") as volume:
        a, b = _nodes(volume)
        writer, _, store = _stores(a, b)
        live_tag = 0
        before = os.statvfs(a.path)
        publish_tagged(writer, live_tag)
        after = os.statvfs(a.path)
        cost = (before.f_bavail - after.f_bavail) * after.f_frsize
        failures, successes = 0, 0
        for tag, room in enumerate(range(cost + 8192, 0, -8192), start=1):
            stat = os.statvfs(a.path)
            filler = backing / "filler"  # filled beside the nodes: another tenant of the volume
            with open(filler, "wb") as f, contextlib.suppress(OSError):
                f.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - room))
            old = writer.current()
            error: OSError | None = None
            try:
                publish_tagged(writer, tag)
            except OSError as exc:
                error = exc
            if error is not None:
                failures += 1
                assert error.errno == errno.ENOSPC, error  # crosses the network as itself
                assert writer.current() == old
            else:
                successes += 1
                live_tag = tag
            filler.unlink()
            with store.reader(lease=False) as reader:
                assert reader.metadata["tag"] == live_tag
                assert check_answers(reader, live_tag) == 0
            assert store.verify().ok
            writer.gc(keep=1, grace=0)
        assert failures >= 3 and successes >= 1, (failures, successes)


# -- a read-only mount, permission denied -----------------------------------------------------


def test_readers_on_a_read_only_mount(network_volume: Volume, tmp_path: Path) -> None:
    a, b = _nodes(network_volume)
    writer, _, _ = _stores(a, b)
    publish_tagged(writer, 0)
    view = tmp_path / "ro"
    view.mkdir()
    # What Kubernetes does for a volumeMount with readOnly: a read-only bind of the node's
    # mount; the generated manifests mount leases/ a second time, read-write.
    with _mount("--bind", "-o", "ro", b.path, str(view)):
        subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
        with pytest.raises(OSError, match="Read-only file system"):
            (view / "store" / "probe").write_bytes(b"")
        ro = sharedrec.open(view / "store", create=False)
        with pytest.raises(SharedrecError, match=r"cannot write reader lease .*lease_dir.*lease=False"):
            ro.reader()
        with ro.reader(lease=False) as reader:
            assert check_answers(reader, 0) == 0
        lease_dir = Path(b.path) / "store" / "leases"  # node B's read-write mount of leases/
        with ro.reader(lease_dir=lease_dir, reader_id="pod-1") as reader:
            assert check_answers(reader, 0) == 0
            (lease,) = (Path(a.path) / "store" / "leases").glob("pod-1.*.json")  # seen from A
            assert json.loads(lease.read_text())["version"] == reader.version
            assert [info.reader_id for info in writer.leases()] == ["pod-1"]
        with pytest.raises(OSError, match="Read-only file system"):
            publish_tagged(ro, 1)
        assert ro.current() == writer.current()


UNPRIVILEGED_READER = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, sys.argv[2])
    import fcntl, zlib
    import sharedrec, sharedrec.backends.posix, sharedrec.read.reader, sharedrec.manage.integrity
    from reliability._support import check_answers

    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)

    store = sharedrec.open(sys.argv[1], create=False)
    out = {}
    reader = store.reader(lease=False, refresh_interval=None, verify="full")
    out["first"] = [reader.version, check_answers(reader, 0)]
    print("ready", flush=True)
    sys.stdin.readline()
    try:
        reader.refresh()
        out["refresh"] = "switched"
    except Exception as exc:
        out["refresh"] = [type(exc).__name__, str(exc)]
    out["after"] = [reader.version, check_answers(reader, 0)]
    print(json.dumps(out), flush=True)
    """
)


def test_permission_denied(tmp_path: Path) -> None:
    if (reason := netvolume.missing()) is not None:
        pytest.skip(reason)
    if os.geteuid() != 0:
        pytest.skip("needs root to run a reader as another user")
    with tempfile.TemporaryDirectory() as folder, Volume(folder) as volume:
        os.chmod(folder, 0o755)
        os.chmod(volume.backing, 0o755)
        a, b = _nodes(volume, allow_other=True)
        writer, root, _ = _stores(a, b)
        publish_tagged(writer, 0)
        for path in [root, *root.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        reader = subprocess.Popen(
            [sys.executable, "-c", UNPRIVILEGED_READER, str(Path(b.path) / "store"), TESTS],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": SRC},
        )
        assert reader.stdout is not None and reader.stderr is not None
        assert reader.stdout.readline().strip() == "ready", reader.stderr.read()
        v1 = publish_tagged(writer, 1, make_current=False)
        for path in (root / "versions" / v1).rglob("*"):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        locked = root / "versions" / v1 / "home" / "items" / "c" / "1" / "0"
        locked.chmod(0o600)
        writer.set_current(v1)
        out, err = reader.communicate("go\n", timeout=60)
        assert reader.returncode == 0, err
        result = json.loads(out.splitlines()[-1])
        assert result["first"][1] == 0
        assert isinstance(result["refresh"], list), result  # it switched: it read the locked file
        kind, message = result["refresh"]
        assert kind == "PermissionError" and f"versions/{v1}/home/items/c/1/0" in message
        assert result["after"] == [result["first"][0], 0]  # still serving v0, all answers right


# -- a chunk file replaced under a reader that maps it -----------------------------------------

N_USERS, K = 12_000, 100  # the first chunk of items (4 MB) holds rows 0 to 10239
BIG_KEYS = np.arange(N_USERS, dtype=np.int64) * 7 + 1
BIG_ITEMS = (np.arange(N_USERS, dtype=np.int64)[:, None] * K + np.arange(K)[None, :]).astype(np.int32)

MAPPED_READER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import sharedrec

    store = sharedrec.open(sys.argv[1], create=False)
    reader = store.reader(lease=False, refresh_interval=None)
    first = reader.get("home", 1).items.copy()  # row 0: its page is now cached on this node
    print("mapped", first[0], flush=True)
    sys.stdin.readline()
    print("cached", reader.get("home", 1).items[0], flush=True)  # the same page again
    print("uncached", reader.get("home", 10_000 * 7 + 1).items[0], flush=True)  # row 10000
    """
)


def test_a_chunk_replaced_under_a_mapped_reader(network_volume: Volume) -> None:
    a, b = _nodes(network_volume)
    writer, root, store = _stores(a, b)
    scores = np.tile(np.linspace(1.0, 0.01, K, dtype=np.float32), (N_USERS, 1))
    v0 = writer.publish_ranked("home", BIG_KEYS, BIG_ITEMS, scores, progress=False)
    chunk = root / "versions" / v0 / "home" / "items" / "c" / "0" / "0"
    assert chunk.stat().st_size > (10_000 + 1) * K * 4  # rows 0 and 10000 share it, pages apart
    b.remount()  # a cold node
    reader = subprocess.Popen(
        [sys.executable, "-c", MAPPED_READER, str(Path(b.path) / "store")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    assert reader.stdout is not None
    assert reader.stdout.readline().split() == ["mapped", "0"]
    # Tampering through node A: a copy with other bytes renamed over the chunk, as a careless
    # "repair" or a sync tool would do. Versions are immutable: nothing in sharedrec does it.
    forged = np.frombuffer(chunk.read_bytes(), dtype=np.int32) + 7
    chunk.with_name("forged").write_bytes(forged.tobytes())
    os.replace(chunk.with_name("forged"), chunk)
    out, err = reader.communicate("go\n", timeout=60)
    # The page the reader had cached still gives the original bytes; the first uncached page
    # is a stale handle, and the mapped reader dies of SIGBUS: it never serves forged bytes.
    assert out.splitlines() == ["cached 0"], (out, err)
    assert reader.returncode == -signal.SIGBUS, (reader.returncode, err)
    # What sees the tampering: a full verify names the file, and a fresh reader that checks
    # every checksum refuses the version.
    with pytest.raises(CorruptVersion, match=r"home/items/c/0/0"):
        store.verify(v0)
    with pytest.raises(CorruptVersion, match=r"home/items/c/0/0"):
        store.reader(lease=False, verify="full")
