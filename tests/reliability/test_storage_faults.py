"""Storage faults: damaged files, a garbage pointer, a full disk, a read-only volume, and
files the reader may not read. Each is detected with a clear error, and a reader that
serves a good version keeps serving it."""

from __future__ import annotations

import contextlib
import errno
import json
import os
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
from sharedrec.errors import CorruptVersion, SharedrecError, VersionNotFound
from sharedrec.format.schema import Pointer

from ._support import KEYS, N_KEYS, Tally, check_answers, publish_tagged


def _chunk(root: Path, version: str, array: str = "home/items", index: int = 1) -> Path:
    return root / "versions" / version / array / "c" / str(index) / "0"


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


@pytest.fixture
def live(tmp_path: Path) -> tuple[sharedrec.RecommendationStore, Path, str]:
    root = tmp_path / "store"
    store = sharedrec.open(root, create=True)
    return store, root, publish_tagged(store, 0)


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_new_version_is_refused_and_readers_stay(
    live: tuple[sharedrec.RecommendationStore, Path, str], damage: str, tally: Tally
) -> None:
    store, root, v0 = live
    readers = [store.reader(lease=False, refresh_interval=None, verify=v) for v in ("sizes", "full")]
    v1 = publish_tagged(store, 1, make_current=False)
    relpath, hurt = DAMAGE[damage]
    hurt(root / "versions" / v1 / relpath)
    tally.faults_injected += 1
    tally.scenarios += 1

    # verify() names the damaged file.
    with pytest.raises(CorruptVersion, match=relpath.replace(".", r"\.")):
        store.verify(v1)
    if damage == "manifest truncated":
        with pytest.raises(CorruptVersion, match=r"manifest\.json is truncated or invalid"):
            store.set_current(v1)
        assert v1 not in [v.id for v in store.versions()]
        assert store.current() == v0
        # The manifest was damaged after CURRENT moved to it: readers must refuse it too.
        (root / "CURRENT").write_bytes(
            Pointer(version=v1, previous=[v0], updated_at=datetime.now(UTC)).dumps()
        )
    else:
        store.set_current(v1)
    for reader in readers:
        size_visible = damage in ("chunk truncated", "chunk deleted", "manifest truncated")
        full = readers.index(reader) == 1
        if full or size_visible:
            with pytest.raises(SharedrecError, match=relpath.replace(".", r"\.")):
                reader.refresh()
            assert reader.version == v0
            assert reader.stats().refresh_failures == 1
            assert check_answers(reader, 0) == 0  # the last good version is still served
        else:
            # verify="sizes" cannot see a flipped byte of the same size: it is documented to
            # check sizes only; "full" above and verify() catch it.
            assert reader.refresh() and reader.version == v1
        reader.close()
    if damage != "manifest truncated":
        # A fresh reader that checks sizes refuses a version whose sizes are wrong, and a
        # lazy one raises on the damaged chunk instead of serving fill values.
        if damage in ("chunk truncated", "chunk deleted"):
            with pytest.raises(CorruptVersion, match=relpath.replace(".", r"\.")):
                store.reader(lease=False, verify="sizes")
            lazy = store.reader(lease=False, refresh_interval=None)
            collection = relpath.split("/")[0]
            rows = np.arange(N_KEYS)
            with pytest.raises(CorruptVersion, match="damaged"):
                if collection == "emb":
                    lazy.vectors("emb", KEYS[rows])
                else:
                    lazy.get_many("home", KEYS[rows])
        # Rolling back restores service.
        assert store.rollback() == v0
        assert check_answers(store.reader(lease=False), 0) == 0


def test_current_pointing_to_garbage(
    live: tuple[sharedrec.RecommendationStore, Path, str], tally: Tally
) -> None:
    store, root, v0 = live
    reader = store.reader(lease=False, refresh_interval=None)
    for garbage in (
        b"\x00\xff garbage",
        b'{"version": "v1"',
        b'{"version": "missing-version", "updated_at": "2026-01-01T00:00:00Z"}',
        b"",
    ):
        (root / "CURRENT").write_bytes(garbage)
        tally.faults_injected += 1
        tally.scenarios += 1
        expected = VersionNotFound if b"missing-version" in garbage else CorruptVersion
        with pytest.raises(expected, match=r"CURRENT|missing-version"):
            reader.refresh()
        with pytest.raises(expected, match="CURRENT"):
            store.reader(lease=False)
        assert reader.version == v0
        assert check_answers(reader, 0) == 0
    assert reader.stats().refresh_failures == 4


def test_set_current_repairs_a_garbage_pointer(live: tuple[sharedrec.RecommendationStore, Path, str]) -> None:
    store, root, v0 = live
    (root / "CURRENT").write_bytes(b"\x00garbage")
    store.set_current(v0)
    assert store.current() == v0


# -- a full disk ---------------------------------------------------------------------------


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


def test_enospc_during_publish_leaves_the_old_version(tmp_path: Path, tally: Tally) -> None:
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    with _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)):
        store = sharedrec.open(mountpoint / "store", create=True)
        live_tag = 0
        before = os.statvfs(mountpoint)
        publish_tagged(store, live_tag)
        after = os.statvfs(mountpoint)
        cost = (before.f_bavail - after.f_bavail) * after.f_frsize  # files take whole pages
        failures, successes = 0, 0
        # Leave less and less room, so that the disk fills at the chunks, the manifest or CURRENT.
        for tag, room in enumerate(range(cost + 8192, 0, -4096), start=1):
            stat = os.statvfs(mountpoint)
            free = stat.f_bavail * stat.f_frsize
            filler = mountpoint / "filler"
            with open(filler, "wb") as f, contextlib.suppress(OSError):  # full is full enough
                f.write(b"\0" * max(0, free - room))
            tally.scenarios += 1
            old = store.current()
            error: OSError | None = None
            try:
                publish_tagged(store, tag)
            except OSError as exc:
                error = exc
            if error is not None:
                failures += 1
                tally.faults_injected += 1
                assert error.errno == errno.ENOSPC, error
                assert store.current() == old
            else:
                successes += 1
                live_tag = tag
            filler.unlink()
            reader = store.reader(lease=False)
            if reader.metadata["tag"] != live_tag:
                tally.data_lost += 1
            assert reader.metadata["tag"] == live_tag
            assert store.verify().ok
            assert check_answers(reader, live_tag) == 0
            reader.close()
            store.gc(keep=1, grace=0)  # frees the room for the next round
        assert failures >= 3 and successes >= 1, (failures, successes)


# -- read-only volume, permission denied ------------------------------------------------------


def test_readers_on_a_read_only_volume(tmp_path: Path, tally: Tally) -> None:
    source = tmp_path / "store"
    store = sharedrec.open(source, create=True)
    publish_tagged(store, 0)
    view = tmp_path / "ro"
    view.mkdir()
    with _mount("--bind", "-o", "ro", str(source), str(view)):
        subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
        tally.scenarios += 1
        tally.faults_injected += 1
        with pytest.raises(OSError, match="Read-only file system"):
            (view / "probe").write_bytes(b"")
        ro = sharedrec.open(view, create=False)
        with pytest.raises(SharedrecError, match=r"cannot write reader lease .*lease_dir.*lease=False"):
            ro.reader()
        assert check_answers(ro.reader(lease=False), 0) == 0
        lease_dir = tmp_path / "leases"
        with ro.reader(lease_dir=lease_dir, reader_id="pod-1") as reader:
            assert check_answers(reader, 0) == 0
            (lease,) = lease_dir.glob("pod-1.*.json")  # <reader-id>.<pid>-<random>.json
            assert json.loads(lease.read_text())["version"] == reader.version
        # The writer sees the volume is read-only with a clear error, and nothing changes.
        with pytest.raises(OSError, match="Read-only file system"):
            publish_tagged(ro, 1)
        assert ro.current() == store.current()


UNPRIVILEGED_READER = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, sys.argv[2])
    import fcntl, zlib
    import sharedrec, sharedrec.backends.posix, sharedrec.read.reader, sharedrec.manage.integrity
    from reliability._support import check_answers

    # Imported as root (the interpreter lives in root's home); from here on, nobody.
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)

    store = sharedrec.open(sys.argv[1], create=False)
    out = {}
    try:
        reader = store.reader(lease=False, refresh_interval=None, verify="full")
        out["first"] = [reader.version, check_answers(reader, 0)]
    except Exception as exc:
        out["first"] = [type(exc).__name__, str(exc)]
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


def test_permission_denied(tally: Tally) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run a reader as another user")
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o755)
        root = Path(folder) / "store"
        store = sharedrec.open(root, create=True)
        publish_tagged(store, 0)
        for path in [root, *root.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        reader = subprocess.Popen(
            [sys.executable, "-c", UNPRIVILEGED_READER, str(root), str(Path(__file__).parents[1])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert reader.stdout is not None and reader.stderr is not None
        assert reader.stdout.readline().strip() == "ready", reader.stderr.read()
        # A new version with a file the reader may not read; verify="full" reads every file.
        v1 = publish_tagged(store, 1, make_current=False)
        for path in (root / "versions" / v1).rglob("*"):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        locked = _chunk(root, v1)
        locked.chmod(0o600)
        store.set_current(v1)
        tally.scenarios += 1
        tally.faults_injected += 1
        out, err = reader.communicate("go\n", timeout=60)
        assert reader.returncode == 0, err
        result = json.loads(out.splitlines()[-1])
        assert result["first"][1] == 0
        kind, message = result["refresh"]
        assert kind == "PermissionError" and str(locked) in message
        assert result["after"] == [result["first"][0], 0]  # still serving v0, all answers right
