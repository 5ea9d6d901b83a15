"""Garbage collection against everything that moves a pointer, in real processes.

One process runs gc (``keep`` 0 or 1, ``grace=0``) in a tight loop while others publish
(without guards and with the default guards), roll back, set versions live and promote a
canary ref; a checker reads every pointer over and over and checks that the version it
names has its manifest and all its files, and answers as its tag says. Every operation
must end in success or a sharedrec error. And a version folder that is a symbolic link to
another store's data: gc and opening must never touch that data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import numpy as np
import pytest

import sharedrec
from sharedrec.errors import CorruptVersion, SharedrecError, VersionGone, VersionNotFound

from ._support import Tally, check_answers, publish_tagged

TESTS = str(Path(__file__).parents[1])
sys.path.insert(0, TESTS)
from conftest import make_bucket, s3_options  # noqa: E402

ROLE = textwrap.dedent(
    """
    import json, os, random, sys, time, traceback
    sys.path.insert(0, sys.argv[5])
    import numpy as np
    import sharedrec
    from sharedrec.errors import SharedrecError
    from sharedrec.read.reader import Reader
    from reliability._support import N_KEYS, check_answers, publish_tagged

    role, location, go, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    options = json.loads(sys.argv[6]) if len(sys.argv) > 6 else None
    store = sharedrec.open(location, storage_options=options, cache_dir=sys.argv[7] if options else None)
    backend = store._backend
    rng = random.Random(os.getpid())
    outcomes, raw, violations, extra = {}, [], [], {"confirmed": 0, "inconclusive": 0, "deleted": 0}

    def count(name):
        outcomes[name] = outcomes.get(name, 0) + 1

    def attempt(action):
        started = time.monotonic()
        try:
            action()
            count("ok")
        except SharedrecError as exc:
            gc_said = "garbage collection" in str(exc) or "removed while" in str(exc)
            count(type(exc).__name__ + (" (gc)" if gc_said else ""))
        except Exception as exc:
            raw.append(f"{type(exc).__name__}: {exc}: {traceback.format_exc()[-600:]}")
        extra["slowest"] = max(extra.get("slowest", 0.0), time.monotonic() - started)

    def gc():
        report = store.gc(keep=rng.choice([0, 1]), grace=rng.choice([0, 0, 0.5]))
        extra["deleted"] += len(report.deleted) + len(report.unfinished)

    tag = [int(role[-1]) * 100000 if role[-1].isdigit() else 0]

    def publish(guards):
        tag[0] += 1
        ref = "canary" if rng.random() < 0.2 else "current"
        publish_tagged(store, tag[0], guards=guards, ref=ref)

    def move():
        time.sleep(0.03)  # leaves publishes a chance to win their compare-and-swap
        action = rng.choice(["rollback", "set_current", "promote", "canary"])
        if action == "rollback":
            store.rollback()
        elif action == "promote":
            store.promote("canary")
        else:
            versions = store.versions()
            if versions:
                target = rng.choice(versions[-4:]).id
                store.set_current(target, ref="current" if action == "set_current" else "canary")

    def check():
        rows = np.array(rng.sample(range(N_KEYS), 12))
        for ref in ["current", *(n for n in backend.listdir("refs") if not n.startswith("."))]:
            path = "CURRENT" if ref == "current" else f"refs/{ref}"
            try:
                before = backend.read_bytes(path)
            except FileNotFoundError:
                continue
            version = json.loads(before)["version"]
            directory = f"versions/{version}"
            problem = None
            try:
                manifest = store.manifest(version)
                stored = dict(backend.walk_files(directory))
                missing = [p for p, e in manifest.files.items() if stored.get(p) != e.size]
                if missing:
                    problem = f"{len(missing)} files missing, e.g. {missing[0]}"
                else:
                    reader = Reader(store.open_version(version, "sizes", manifest=manifest))
                    if check_answers(reader, int(manifest.metadata["tag"]), rows):
                        problem = "wrong answers"
                    reader.close()
            except SharedrecError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            # Judged only when the pointer did not move meanwhile: it named the version throughout.
            if backend.read_bytes(path) != before:
                extra["inconclusive"] += 1
            elif problem:
                violations.append(f"{path} -> {version}: {problem}")
            else:
                extra["confirmed"] += 1

    step = {
        "gc": gc,
        "publish": lambda: publish([] if role == "publish0" else None),  # no guards, default guards
        "mover": move,
        "checker": check,
    }[role.rstrip("0123456789")]
    # imported before the race starts
    import zarr, sharedrec.write.draft, sharedrec.manage.gc, sharedrec.write.guards
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.005)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        attempt(step)
    print(json.dumps({"role": role, "outcomes": outcomes, "raw": raw[:5], "n_raw": len(raw),
                      "violations": violations[:5], "n_violations": len(violations), **extra}))
    """
)

ROLES = ["gc", "publish0", "publish1", "mover0", "checker"]


def _dead_leases(store: sharedrec.RecommendationStore, n: int) -> None:
    """Lease files of ``n`` readers that died long ago: a big fleet's, which gc reads one by one
    (it widens the moment between gc reading the pointers and deleting)."""
    expired = datetime.now(UTC) - timedelta(hours=1)
    for i in range(n):
        lease = {
            "reader_id": f"dead-{i}",
            "host": "gone",
            "pid": i,
            "version": "nothing",
            "versions": ["nothing"],
            "started_at": expired.isoformat(),
            "heartbeat": expired.isoformat(),
            "expires_at": expired.isoformat(),
        }
        store._backend.write_atomic(f"leases/dead-{i}.json", json.dumps(lease).encode())


def _race(
    tmp_path: Path, location: str, seconds: float, extra: list[str], roles: list[str] = ROLES
) -> dict[str, dict[str, object]]:
    """Run every role in its own process for ``seconds``; their reports by role."""
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", ROLE, role, location, str(go), str(seconds), TESTS, *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for role in roles
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            assert line == "ready", proc.communicate(timeout=30)[1]
        go.write_text("go")
        reports = {}
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            report = json.loads(out)
            reports[report["role"]] = report
        return reports
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()


def _judge(reports: dict[str, dict[str, object]], tally: Tally, *, slow: bool = False) -> None:
    """Check the race's reports; ``slow`` (a shared S3 test server) asks only for no harm."""
    summary = {role: (r["outcomes"], r["n_raw"], r.get("slowest")) for role, r in reports.items()}
    checker = reports["checker"]
    # Every outcome a success or a sharedrec error; no pointer ever named a broken version.
    broken = {role: r["raw"] for role, r in reports.items() if r["n_raw"]}
    assert not broken and checker["n_violations"] == 0, (broken, checker["violations"], summary)
    if slow:
        assert int(reports["gc"]["outcomes"]["ok"]) > 1, summary  # type: ignore[index]
    else:
        assert int(checker["confirmed"]) > 0, summary  # type: ignore[call-overload]
        assert int(reports["gc"]["deleted"]) > 0, summary  # type: ignore[call-overload]
    if "publish0" in reports and not slow:
        published = sum(
            int(cast(dict[str, int], reports[role]["outcomes"]).get("ok", 0))
            for role in ("publish0", "publish1")
        )
        assert published > 0, summary
    tally.scenarios += 1
    tally.faults_injected += sum(
        n
        for report in reports.values()
        for name, n in report["outcomes"].items()  # type: ignore[attr-defined]
        if name != "ok"
    )
    tally.answers_checked += int(checker["confirmed"]) * 25  # type: ignore[call-overload]


@pytest.mark.slow
def test_gc_in_a_tight_loop_never_deletes_what_a_pointer_names(tmp_path: Path, tally: Tally) -> None:
    root = tmp_path / "store"
    store = sharedrec.open(root, create=True)
    publish_tagged(store, 1)
    _dead_leases(store, 100)
    reports = _race(tmp_path, str(root), 4.0, [])
    _judge(reports, tally)
    # Afterwards every pointer names a complete version.
    for version in store.refs().values():
        assert store.verify(version).ok


@pytest.mark.slow
def test_rollbacks_and_promotes_racing_gc_over_many_versions(tmp_path: Path, tally: Tally) -> None:
    root = tmp_path / "store"
    store = sharedrec.open(root, create=True)
    for tag in range(1, 13):
        publish_tagged(store, tag, ref="canary" if tag % 3 == 0 else "current")
    _dead_leases(store, 300)
    reports = _race(tmp_path, str(root), 2.0, [], ["gc", "mover0", "mover1", "checker"])
    _judge(reports, tally)
    for version in store.refs().values():
        assert store.verify(version).ok


@pytest.mark.slow
def test_gc_in_a_tight_loop_on_s3(s3_server: str, tmp_path: Path, tally: Tally) -> None:
    location = f"s3://{make_bucket(s3_server)}/recs"
    options = s3_options(s3_server)
    store = sharedrec.open(location, storage_options=options, cache_dir=tmp_path / "cache", create=True)
    publish_tagged(store, 1)
    reports = _race(tmp_path, location, 4.0, [json.dumps(options), str(tmp_path / "cache")])
    _judge(reports, tally, slow=True)
    for version in store.refs().values():
        assert store.verify(version).ok


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_symlinked_version_folder_never_leads_gc_into_another_store(tmp_path: Path, tally: Tally) -> None:
    a = sharedrec.open(tmp_path / "a", create=True)
    b = sharedrec.open(tmp_path / "b", create=True)
    theirs = publish_tagged(b, 7)
    publish_tagged(b, 8)
    unfinished_b = tmp_path / "b" / "versions" / "20200101T000000000000Z-b0b0b0"
    (unfinished_b / "home").mkdir(parents=True)
    (unfinished_b / "home" / "zarr.json").write_text("{}")
    old = time.time() - 7200
    for path in (unfinished_b, unfinished_b / "home", unfinished_b / "home" / "zarr.json"):
        os.utime(path, (old, old))
    before = _tree(tmp_path / "b")
    mine = [publish_tagged(a, tag) for tag in (1, 2)]
    # Store A's versions/: a link to B's committed version (same id), and one to B's
    # unfinished folder; both are old enough for gc and named by nothing in A.
    (tmp_path / "a" / "versions" / theirs).symlink_to(tmp_path / "b" / "versions" / theirs)
    (tmp_path / "a" / "versions" / unfinished_b.name).symlink_to(unfinished_b)
    report = a.gc(keep=0, grace=0)
    assert report.deleted == [mine[0]], report
    for name in (theirs, unfinished_b.name):
        assert "symbolic link" in report.kept[name], report.kept
    assert _tree(tmp_path / "b") == before  # not one byte of B touched
    with pytest.raises(CorruptVersion, match="symbolic link"):
        a.open_version(theirs)
    with pytest.raises(CorruptVersion, match="symbolic link"):
        a.reader(version=theirs, lease=False)
    with pytest.raises(CorruptVersion, match="symbolic link"):
        a.set_current(theirs)  # no pointer of A names it
    assert a.current() == mine[1]
    # Deleting through the link is refused; the link itself can go.
    with pytest.raises(SharedrecError, match="symbolic link"):
        a._backend.remove_tree(f"versions/{theirs}/manifest.json")
    a._backend.remove_tree(f"versions/{theirs}")
    assert not (tmp_path / "a" / "versions" / theirs).exists()
    assert _tree(tmp_path / "b") == before
    assert b.verify(theirs).ok
    reader = b.reader(version=theirs, lease=False)
    assert int(np.asarray(reader.get("home", 3).items)[0]) // 1_000_000 == 7
    tally.scenarios += 1
    tally.faults_injected += 2


COLLECTOR = textwrap.dedent(
    """
    import json, os, shutil, sys, time
    root, version, decision = sys.argv[1:4]
    folder = os.path.join(root, "versions", version)
    # What gc does to a version it chose: mark it, read pointers and leases (a while, for a
    # big fleet), then delete it (manifest first) or unmark it.
    with open(os.path.join(folder, ".gc"), "w") as f:
        json.dump({"gc": "other-process", "at": time.time()}, f)
    print("marked", flush=True)
    time.sleep(0.4)
    if decision == "delete":
        os.unlink(os.path.join(folder, "manifest.json"))
        shutil.rmtree(folder)
    else:
        os.unlink(os.path.join(folder, ".gc"))
    """
)


def _collector(root: Path, version: str, decision: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", COLLECTOR, str(root), version, decision], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "marked"
    return proc


def test_readers_and_movers_never_use_a_version_gc_condemned(tmp_path: Path, tally: Tally) -> None:
    root = tmp_path / "store"
    store = sharedrec.open(root, create=True)
    old, live = publish_tagged(store, 1), publish_tagged(store, 2)
    # Marked, then deleted: opening and set_current wait for the decision, then refuse.
    proc = _collector(root, old, "delete")
    with pytest.raises(VersionGone, match="garbage collection"):
        store.open_version(old)
    assert proc.wait(timeout=30) == 0
    assert store.current() == live
    proc = _collector(root, live, "keep")  # marked, then kept (gc saw the pointer): served
    reader = sharedrec.Reader(store.open_version(live, "sizes"))
    assert check_answers(reader, 2) == 0
    assert proc.wait(timeout=30) == 0
    spare = publish_tagged(store, 3, make_current=False)
    proc = _collector(root, spare, "delete")
    with pytest.raises(VersionNotFound):
        store.set_current(spare)
    assert proc.wait(timeout=30) == 0
    assert store.current() == live and store.verify(live).ok
    # A mark left by a collector that died long ago is removed from a version in use.
    mark = root / "versions" / live / ".gc"
    mark.write_text(json.dumps({"gc": "dead", "at": time.time() - 3600}))
    store.gc(keep=0, grace=0)
    assert not mark.exists() and store.current() == live
    tally.scenarios += 1
    tally.faults_injected += 3


def test_a_publish_from_many_tasks_is_leased_until_commit_or_abort(tmp_path: Path, tally: Tally) -> None:
    store = sharedrec.open(tmp_path / "store", create=True)
    publish_tagged(store, 1)
    handle = store.begin_publish(partitions=2)
    report = store.gc(keep=0, grace=0)  # the folder is old enough, but leased
    assert "a publish is writing it" in report.kept[handle.version_id]
    leases = tmp_path / "store" / "leases"
    assert (leases / f"publish-{handle.version_id}.json").exists()
    keys = np.arange(100, dtype=np.int64)
    owners = handle.partition_of(keys)
    receipts = []
    for part in range(2):
        k = keys[owners == part]
        receipts.append(
            handle.write_ranked("home", part, k, np.zeros((len(k), 2), np.int32), np.ones((len(k), 2)))
        )
        assert "a publish is writing it" in store.gc(keep=0, grace=0).kept[handle.version_id]
    assert store.commit_publish(handle, receipts, guards=[]) == store.current()
    assert not (leases / f"publish-{handle.version_id}.json").exists()
    other = store.begin_publish(partitions=2)
    store.abort_publish(other)
    assert not (leases / f"publish-{other.version_id}.json").exists()
    assert other.version_id not in store._backend.listdir("versions")
    tally.scenarios += 1
