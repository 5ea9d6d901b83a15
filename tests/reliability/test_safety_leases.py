"""Leases under real operations: several processes of one pod, readers opened before a fork,
and a process frozen past its lease while garbage collection deleted its version."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

import sharedrec
from sharedrec.errors import VersionGone
from sharedrec.read.collections import Whole

from ._support import KEYS, N_KEYS, Tally, fork_while_held, publish_tagged, tagged_items

TESTS = str(Path(__file__).parents[1])


def lease_files(root: Path) -> dict[str, dict[str, Any]]:
    """Every lease file of a store, by file name."""
    folder = root / "leases"
    if not folder.is_dir():
        return {}
    found = {}
    for path in folder.iterdir():
        if path.suffix == ".json" and not path.name.startswith("."):
            try:
                found[path.name] = json.loads(path.read_text())
            except (FileNotFoundError, ValueError):
                continue  # replaced or being written meanwhile
    return found


def wait_for(condition: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


# -- processes of one pod share SHAREDREC_READER_ID ------------------------------------------

POD_WORKER = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[2])
    import numpy as np
    import sharedrec
    from reliability._support import KEYS, N_KEYS, tagged_items

    reader = sharedrec.open(sys.argv[1], create=False).reader(refresh_interval=None, lease_ttl=30)
    print(json.dumps({"pid": __import__("os").getpid(), "version": reader.version}), flush=True)
    for line in sys.stdin:
        if line.strip() == "close":
            reader.close()
            print("closed", flush=True)
        elif line.strip() == "read":
            wrong, error = 0, None
            try:
                for row in range(N_KEYS):
                    items = reader.get("home", int(KEYS[row])).items
                    wrong += not np.array_equal(items, tagged_items(0)[row])
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            print(json.dumps({"wrong": wrong, "error": error, "version": reader.version}), flush=True)
        else:
            break
    """
)


def test_processes_sharing_a_reader_id_each_hold_a_lease(tmp_path: Path, tally: Tally) -> None:
    root = tmp_path / "store"
    store = sharedrec.open(root, create=True)
    v_a = publish_tagged(store, 0)
    env = {**os.environ, "SHAREDREC_READER_ID": "recs-api-7f9c", "SHAREDREC_LEASE_DIR": ""}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", POD_WORKER, str(root), TESTS],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    try:
        opened = []
        for proc in workers:
            assert proc.stdout is not None
            opened.append(json.loads(proc.stdout.readline()))
        assert [o["version"] for o in opened] == [v_a, v_a]
        leases, fleet = lease_files(root), store.leases()  # checked below, after the harm
        publish_tagged(store, 1)  # CURRENT moves to B; the workers stay on A
        first, second = workers
        assert first.stdin is not None and first.stdout is not None
        first.stdin.write("close\n")
        first.stdin.flush()
        assert first.stdout.readline().strip() == "closed"
        left = lease_files(root)
        report = store.gc(keep=0, grace=0)
        assert second.stdin is not None and second.stdout is not None
        second.stdin.write("read\n")
        second.stdin.flush()
        result = json.loads(second.stdout.readline())
        tally.scenarios += 1
        tally.answers_checked += N_KEYS
        tally.wrong_answers += result["wrong"]
        assert result == {"wrong": 0, "error": None, "version": v_a}, result
        assert v_a not in report.deleted and (root / "versions" / v_a / "manifest.json").is_file()
        assert "leased by reader recs-api-7f9c" in report.kept[v_a]
        assert [lease["version"] for lease in left.values()] == [v_a]  # the second worker's
    finally:
        for proc in workers:
            proc.kill()
            proc.communicate()
    # Two lease files, one per process; both name the pod, and the fleet view groups them.
    assert len(leases) == 2, leases
    assert {lease["reader_id"] for lease in leases.values()} == {"recs-api-7f9c"}
    assert sorted(lease["pid"] for lease in leases.values()) == sorted(o["pid"] for o in opened)
    assert [(info.reader_id, info.pid) for info in fleet] == sorted(
        ("recs-api-7f9c", o["pid"]) for o in opened
    )
    assert len({info.process for info in fleet}) == 2


def test_two_readers_of_one_process_hold_two_leases(tmp_path: Path, tally: Tally) -> None:
    store = sharedrec.open(tmp_path / "store", create=True)
    v_a = publish_tagged(store, 0)
    one = store.reader(reader_id="pod-x", refresh_interval=None)
    two = store.reader(reader_id="pod-x", refresh_interval=None)
    assert len(lease_files(tmp_path / "store")) == 2
    assert [info.pid for info in store.leases()] == [os.getpid(), os.getpid()]
    publish_tagged(store, 1)
    one.close()
    assert [lease["version"] for lease in lease_files(tmp_path / "store").values()] == [v_a]
    assert v_a not in store.gc(keep=0, grace=0).deleted
    tally.scenarios += 1
    assert np.array_equal(two.get("home", int(KEYS[-1])).items, tagged_items(0)[-1])
    two.close()
    assert lease_files(tmp_path / "store") == {}


def test_lease_is_written_before_the_version_is_mapped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tally: Tally
) -> None:
    # gc may condemn a version no lease names: a reader must name it before mapping it.
    root = tmp_path / "store"
    store = sharedrec.open(root, create=True)
    v_a = publish_tagged(store, 0)
    real = store.open_version
    seen: list[tuple[str, list[str]]] = []

    def open_version(version_id: str, *args: Any, **kwargs: Any) -> Any:
        seen.append((version_id, [lease["version"] for lease in lease_files(root).values()]))
        return real(version_id, *args, **kwargs)

    monkeypatch.setattr(store, "open_version", open_version)
    with store.reader(reader_id="pod-o", refresh_interval=None):
        pass
    with store.reader(version=v_a, reader_id="pod-p"):
        pass
    tally.scenarios += 1
    assert seen == [(v_a, [v_a]), (v_a, [v_a])]
    assert lease_files(root) == {}


def test_reader_whose_version_is_missing_leaves_no_lease(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = sharedrec.open(root, create=True)
    publish_tagged(store, 0)
    with pytest.raises(sharedrec.errors.VersionNotFound):
        store.reader(version="no-such-version", reader_id="pod-m")
    assert lease_files(root) == {}


# -- a reader opened before fork() -------------------------------------------------------------

_FORKED: dict[str, Any] = {}


def _forked_child(conn: Connection, root: str) -> None:
    reader: sharedrec.Reader = _FORKED["reader"]
    try:
        wanted = conn.recv()  # the new version is live
        switched = wait_for(lambda: reader.version == wanted, timeout=5.0)
        mine = {}
        if switched:
            wait_for(
                lambda: any(
                    lease["pid"] == os.getpid() and lease["version"] == wanted
                    for lease in lease_files(Path(root)).values()
                )
            )
            mine = {n: v for n, v in lease_files(Path(root)).items() if v["pid"] == os.getpid()}
        items = reader.get("home", int(KEYS[5])).items.tolist()
        version = reader.version
        reader.close()
        conn.send(
            {
                "switched": switched,
                "version": version,
                "items": items,
                "mine": mine,
                "after_close": lease_files(Path(root)),
            }
        )
    except Exception as exc:
        conn.send({"error": f"{type(exc).__name__}: {exc}"})


def test_reader_opened_before_fork_follows_in_the_child(tmp_path: Path, tally: Tally) -> None:
    root = tmp_path / "store"
    store = sharedrec.open(root, create=True)
    v_a = publish_tagged(store, 0)
    reader = store.reader(reader_id="pod-f", refresh_interval=0.05, lease_ttl=30)
    parent_lease = lease_files(root)
    assert [lease["pid"] for lease in parent_lease.values()] == [os.getpid()]
    (parent_name,) = parent_lease
    _FORKED["reader"] = reader
    ours, theirs = multiprocessing.Pipe()
    try:
        child = multiprocessing.get_context("fork").Process(target=_forked_child, args=(theirs, str(root)))
        child.start()
        v_b = publish_tagged(store, 1)  # after the fork: the child must notice by itself
        ours.send(v_b)
        assert ours.poll(20), "the forked child did not answer"
        result = ours.recv()
        child.join(10)
    finally:
        _FORKED.clear()
    tally.scenarios += 1
    assert "error" not in result, result
    assert result["switched"], f"the child still serves {result['version']}, not {v_b}"
    assert result["items"] == tagged_items(1)[5].tolist()
    ((child_name, child_lease),) = result["mine"].items()
    assert child_name != parent_name and child_lease["version"] == v_b
    assert child_lease["reader_id"] == "pod-f"
    # The child's close() removed its own lease only.
    assert parent_name in result["after_close"] and child_name not in result["after_close"]
    assert wait_for(lambda: reader.version == v_b)
    assert lease_files(root)[parent_name]["pid"] == os.getpid()
    assert np.array_equal(reader.get("home", int(KEYS[5])).items, tagged_items(1)[5])
    assert v_a != v_b
    reader.close()
    assert lease_files(root) == {}


def test_fork_while_another_thread_maps_a_chunk(tmp_path: Path, tally: Tally) -> None:
    store = sharedrec.open(tmp_path / "store", create=True)
    items = np.arange(5000 * 8, dtype=np.int64).reshape(5000, 8)
    with store.publish(chunk_bytes=4096, guards=[], progress=False) as draft:  # whole pages
        draft.add_ranked(
            "home", np.arange(5000), items, np.tile(np.linspace(1, 0.1, 8, dtype=np.float32), (5000, 1))
        )
    reader = store.reader(refresh_interval=None, lease=False)
    assert reader.get("home", 0).items.tolist() == items[0].tolist()
    # A thread of the parent is inside a chunk map (holds the array's lock) when fork() runs;
    # the child looks up a key in a chunk the parent never mapped.
    array_lock = cast(Whole, reader._v.ranked["home"]).items._lock
    answered, result = fork_while_held(array_lock, lambda: reader.get("home", 4999).items.tolist(), 5)
    tally.scenarios += 1
    assert answered, "the forked child blocked on a lock its parent's thread held at fork()"
    assert result == items[4999].tolist()
    reader.close()


# -- a process frozen past its lease ----------------------------------------------------------

FROZEN = textwrap.dedent(
    """
    import json, logging, sys
    sys.path.insert(0, sys.argv[3])
    import numpy as np
    import sharedrec
    from reliability._support import KEYS, N_KEYS, tagged_items

    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    store = sharedrec.open(sys.argv[1], create=False)
    mode = sys.argv[2]
    if mode == "pinned":
        reader = store.reader(version=store.current(), lease_ttl=0.5)
    else:
        interval = None if mode == "manual" else 60.0
        reader = store.reader(refresh_interval=interval, lease_ttl=0.5)
    print(reader.version, flush=True)
    sys.stdin.readline()  # frozen meanwhile, then continued
    wrong, error = 0, None
    try:
        for row in range(N_KEYS):
            items = reader.get("home", int(KEYS[row])).items
            wrong += not np.array_equal(items, tagged_items(1)[row])
    except Exception as exc:
        error = [type(exc).__name__, str(exc)]
    print(json.dumps({"wrong": wrong, "error": error, "version": reader.version}), flush=True)
    reader.close()
    """
)


@pytest.mark.parametrize("mode", ["manual", "following", "pinned"])
def test_reader_frozen_past_its_lease_recovers(tmp_path: Path, mode: str, tally: Tally) -> None:
    root = tmp_path / "store"
    store = sharedrec.open(root, create=True)
    v_a = publish_tagged(store, 0)
    proc = subprocess.Popen(
        [sys.executable, "-c", FROZEN, str(root), mode, TESTS],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SHAREDREC_LEASE_DIR": "", "SHAREDREC_READER_ID": "pod-z"},
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == v_a
        os.kill(proc.pid, signal.SIGSTOP)  # a long GC pause, a stopped container
        time.sleep(1.0)  # past the 0.5 s lease
        v_b = publish_tagged(store, 1)
        report = store.gc(keep=0, grace=0)
        assert report.deleted == [v_a]
        os.kill(proc.pid, signal.SIGCONT)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        result = json.loads(proc.stdout.readline())
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    tally.scenarios += 1
    tally.faults_injected += 1
    if mode == "pinned":
        assert result["error"] is not None and result["error"][0] == VersionGone.__name__, result
        message = result["error"][1]
        assert v_a in message and "deleted" in message and "damaged" not in message
        return
    tally.answers_checked += N_KEYS
    tally.wrong_answers += result["wrong"]
    assert result == {"wrong": 0, "error": None, "version": v_b}
    assert f"version {v_a} was garbage-collected while this reader was paused" in err, err
    assert f"switched to {v_b}" in err and "lease expired" in err


# -- the fleet view and the readiness probe over a pod's processes -------------------------------


def _cli(*args: str) -> tuple[int, str]:
    """Run the command line in this process: its exit code, and its output or error."""
    from click.testing import CliRunner

    from sharedrec.cli import cli

    result = CliRunner().invoke(cli, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return 1, str(result.exception)
    return result.exit_code, result.output


def test_readiness_and_fleet_view_over_a_pods_processes(tmp_path: Path, tally: Tally) -> None:
    root = tmp_path / "store"
    store = sharedrec.open(root, create=True)
    version = publish_tagged(store, 0)
    # A worker of the pod killed an hour ago left its expired lease behind.
    (root / "leases").mkdir(exist_ok=True)
    stale = {
        "reader_id": "pod-r",
        "host": "h",
        "pid": 4242,
        "version": version,
        "versions": [version],
        "started_at": "2026-01-01T00:00:00Z",
        "heartbeat": "2026-01-01T00:00:00Z",
        "expires_at": "2026-01-01T00:01:00Z",
    }
    (root / "leases" / "pod-r.4242-abcdef.json").write_text(json.dumps(stale))
    other = store.reader(reader_id="pod-r.x", refresh_interval=None)  # an id that starts alike
    code, said = _cli("ready", str(root), "--reader-id", "pod-r")
    assert code == 1 and "expired" in said, said
    one = store.reader(reader_id="pod-r", refresh_interval=None)
    two = store.reader(reader_id="pod-r", refresh_interval=None)
    code, said = _cli("ready", str(root), "--reader-id", "pod-r")
    assert code == 0, said
    assert f"pod-r serves version {version}" in said and "2 processes" in said
    fleet = store.leases()
    assert [info.reader_id for info in fleet] == ["pod-r", "pod-r", "pod-r", "pod-r.x"]
    assert fleet[0].process == "4242-abcdef" and not fleet[0].live
    assert {info.process for info in fleet[1:3]} == {one._lease.process, two._lease.process}  # type: ignore[union-attr]
    code, said = _cli("info", str(root))
    lines = [line for line in said.splitlines() if line.startswith("  pod-r")]
    assert code == 0 and len(lines) == 4 and f"pid {os.getpid()}" in lines[1] and "EXPIRED" in lines[0], said
    one.close()
    two.close()
    other.close()
    tally.scenarios += 1
    code, said = _cli("ready", str(root), "--reader-id", "pod-r")
    assert code == 1 and "expired" in said
    (root / "leases" / "pod-r.4242-abcdef.json").unlink()
    code, said = _cli("ready", str(root), "--reader-id", "pod-r")
    assert code == 1 and "no lease" in said


def test_files_of_killed_processes_do_not_pile_up(tmp_path: Path, tally: Tally) -> None:
    root = tmp_path / "store"
    store = sharedrec.open(root, create=True)
    version = publish_tagged(store, 0)
    (root / "leases").mkdir(exist_ok=True)
    long_ago, lately = (
        "2026-01-01T00:00:00Z",
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 5)),
    )

    def left_behind(name: str, reader_id: str, expired: str) -> None:
        lease = {"reader_id": reader_id, "host": "h", "pid": 7, "version": version, "versions": [version]}
        lease.update(started_at=long_ago, heartbeat=long_ago, expires_at=expired)
        (root / "leases" / name).write_text(json.dumps(lease))

    left_behind("pod-k.7-aaaaaa.json", "pod-k", long_ago)  # killed long ago: removed
    left_behind("pod-k.8-bbbbbb.json", "pod-k", lately)  # expired seconds ago: may come back
    left_behind("pod-k.x.9-cccccc.json", "pod-k.x", long_ago)  # another pod's
    with store.reader(reader_id="pod-k", lease_ttl=0.3, refresh_interval=None):
        assert wait_for(lambda: not (root / "leases" / "pod-k.7-aaaaaa.json").exists())
        names = sorted(lease_files(root))
    tally.scenarios += 1
    assert len(names) == 3 and {"pod-k.8-bbbbbb.json", "pod-k.x.9-cccccc.json"} < set(names)
