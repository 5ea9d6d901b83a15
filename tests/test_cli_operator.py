"""The command as an operator runs it: endpoints, creating a store, refs, probes, Ctrl-C."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

import sharedrec
from sharedrec.cli import _publish_interrupted

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

UNREACHABLE = "http://127.0.0.1:9"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sharedrec", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def ok(*args: str, env: dict[str, str] | None = None) -> str:
    result = run(*args, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def ranked(store: Path, offset: int, ref: str = "current") -> str:
    """Publish 20 keys whose lists start with ``offset``; the version id."""
    keys = np.arange(20)
    items = (keys[:, None] + offset + np.arange(3)).astype(np.int64)
    scores = np.tile([3.0, 2.0, 1.0], (20, 1))
    handle = sharedrec.open(store, create=True)
    return handle.publish_ranked("home", keys, items, scores, ref=ref)


def parquet(path: Path, n_users: int = 30) -> Path:
    users = np.repeat(np.arange(n_users), 3)
    items = np.tile([7, 8, 9], n_users)
    scores = np.tile([0.9, 0.5, 0.1], n_users)
    pq.write_table(pa.table({"user": users, "item": items, "score": scores}), path)
    return path


def test_an_endpoint_in_the_environment_leaves_a_local_store_alone(tmp_path: Path) -> None:
    # A pod that sets the variable for its S3 inputs also runs info, get and gc on EFS.
    env = {"SHAREDREC_ENDPOINT_URL": UNREACHABLE}
    store = tmp_path / "store"
    ok("init", str(store), env=env)
    out = ok("publish", str(store), str(parquet(tmp_path / "in.parquet")), "-c", "home", env=env)
    assert "with 30 keys" in out
    assert "home: 30 keys" in ok("info", str(store), env=env)
    assert json.loads(ok("get", str(store), "home", "4", env=env))["results"][0]["items"] == [7, 8, 9]
    assert "0 versions" in ok("gc", str(store), env=env)
    assert "ok: version" in ok("verify", str(store), env=env)
    assert ok("refs", str(store), "--endpoint-url", UNREACHABLE).startswith("current  ")


def test_inputs_and_store_take_their_own_endpoints(s3_server: str, tmp_path: Path) -> None:
    from conftest import S3_ENV, make_bucket, s3_client

    bucket = make_bucket(s3_server)
    parquet(tmp_path / "part-0.parquet")
    s3_client(s3_server).upload_file(str(tmp_path / "part-0.parquet"), bucket, "als/part-0.parquet")
    env = {
        **S3_ENV,
    }
    source = f"s3://{bucket}/als/"
    # The documented case: S3-compatible inputs into an EFS store, one --endpoint-url.
    efs = tmp_path / "efs"
    ok("publish", str(efs), source, "-c", "home", "--create", "--endpoint-url", s3_server, env=env)
    assert json.loads(ok("get", str(efs), "home", "3"))["results"][0]["items"] == [7, 8, 9]
    # Inputs on another service than the store: --input-endpoint-url is theirs.
    store = f"s3://{bucket}/recs"
    args = ("-c", "home", "--create", "--endpoint-url", s3_server, "--input-endpoint-url", s3_server)
    failing = run(
        "publish", str(tmp_path / "x"), source, *args[:3], "--input-endpoint-url", UNREACHABLE, env=env
    )
    assert failing.returncode == 1 and not (tmp_path / "x").exists()
    # One line that names the input and the endpoint, not a traceback (and no ~20 s of retries).
    assert f"cannot read input {source} at endpoint {UNREACHABLE}" in failing.stderr
    assert "Traceback" not in failing.stderr
    env["SHAREDREC_CACHE_DIR"] = str(tmp_path / "cache")
    ok("publish", store, source, *args, env=env)
    assert json.loads(ok("get", store, "home", "3", "--endpoint-url", s3_server, env=env))["results"][0][
        "items"
    ] == [7, 8, 9]


def test_a_mistyped_store_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    source = parquet(tmp_path / "in.parquet")
    typo = tmp_path / "recs-typo"
    result = run("publish", str(typo), str(source), "-c", "home")
    assert result.returncode == 1
    assert "check the path" in result.stderr
    assert f"sharedrec init {typo}" in result.stderr and "--create" in result.stderr
    assert not typo.exists()


def test_init_creates_once_then_says_so(tmp_path: Path) -> None:
    store = tmp_path / "a" / "store"
    assert "created an empty store" in ok("init", str(store))
    assert store.is_dir()
    again = ok("init", str(store))
    assert "already" in again and "no versions yet" in again and "nothing was changed" in again
    ok("publish", str(store), str(parquet(tmp_path / "in.parquet")), "-c", "home")
    assert "1 versions" in ok("init", str(store))


def test_a_failed_publish_create_leaves_nothing_behind(tmp_path: Path) -> None:
    store = tmp_path / "new" / "store"
    result = run("publish", str(store), str(tmp_path / "missing.parquet"), "-c", "home", "--create")
    assert result.returncode == 1 and "does not exist" in result.stderr
    assert not store.exists()
    # Refused by a guard-free check after files were written (unsorted lists): gone too.
    np.savez(tmp_path / "u.npz", keys=[1], items=[[1, 2]], scores=[[1.0, 2.0]])
    bad = run("publish", str(store), str(tmp_path / "u.npz"), "-c", "home", "--format", "npz", "--create")
    assert bad.returncode == 1 and not store.exists()
    # A store that was there stays, and so does a folder that existed before.
    store.mkdir(parents=True)
    again = run("publish", str(store), str(tmp_path / "missing.parquet"), "-c", "home", "--create")
    assert again.returncode == 1 and store.is_dir()


@pytest.mark.parametrize(
    "args",
    [
        ["info", "{s}"],
        ["refs", "{s}"],
        ["versions", "{s}"],
        ["manifest", "{s}"],
        ["get", "{s}", "home", "1"],
        ["verify", "{s}"],
        ["diff", "{s}", "current", "canary"],
        ["gc", "{s}"],
        ["rollback", "{s}"],
        ["set-current", "{s}", "v1"],
        ["promote", "{s}", "canary"],
        ["compact", "{s}"],
        ["ready", "{s}", "--reader-id", "pod-1"],
    ],
)
def test_no_other_command_creates_a_store(tmp_path: Path, args: list[str]) -> None:
    store = tmp_path / "nowhere"
    result = run(*(arg.format(s=store) for arg in args))
    assert result.returncode == 1, result.stdout
    assert "no store at" in result.stderr
    assert not store.exists()


def test_the_canary_workflow_runs_from_the_command_line(tmp_path: Path) -> None:
    store = tmp_path / "store"
    s = str(store)
    v1 = ranked(store, 100)
    v2 = ranked(store, 200, ref="canary")
    assert json.loads(ok("refs", s, "--json")) == {"current": v1, "canary": v2}
    assert ok("refs", s).splitlines() == [f"current  {v1}", f"canary  {v2}"]
    info = ok("info", s)
    assert f"refs: canary -> {v2}" in info and f"{v2}" in info and "(canary)" in info
    assert json.loads(ok("info", s, "--json"))["refs"] == {"current": v1, "canary": v2}
    listed = json.loads(ok("versions", s, "--json"))
    assert [(v["id"], v["refs"]) for v in listed] == [(v1, ["current"]), (v2, ["canary"])]
    assert "(canary)" in ok("versions", s).splitlines()[1]
    # Look at the canary, check it, compare it, then promote it.
    assert json.loads(ok("get", s, "home", "1", "--ref", "canary"))["results"][0]["items"] == [201, 202, 203]
    assert json.loads(ok("get", s, "home", "1"))["results"][0]["items"] == [101, 102, 103]
    assert f"version {v2}" in ok("verify", s, "--ref", "canary")
    assert json.loads(ok("manifest", s, "--ref", "canary"))["id"] == v2
    assert "home: +0 -0 ~20" in ok("diff", s, "current", "canary")
    assert ok("promote", s, "canary").strip() == f"current: {v2}"
    assert ok("rollback", s).strip() == f"live version: {v1}"
    # Each ref keeps its own history.
    assert ok("set-current", s, v1, "--ref", "canary").strip() == f"canary: {v1}"
    assert ok("rollback", s, "--ref", "canary").strip() == f"canary: {v2}"
    assert sharedrec.open(store, create=False).refs() == {"current": v1, "canary": v2}
    both = run("get", s, "home", "1", "--ref", "canary", "--version", v1)
    assert both.returncode == 2 and "not both" in both.stderr
    assert "not both" in run("verify", s, v1, "--ref", "canary").stderr
    unknown = run("verify", s, "--ref", "nope")
    assert unknown.returncode == 1 and "ref 'nope' names no version" in unknown.stderr


def test_json_times_are_iso_8601(tmp_path: Path) -> None:
    store = tmp_path / "store"
    ranked(store, 1)
    with sharedrec.open(store, create=False).reader(reader_id="pod-1"):
        data = json.loads(ok("info", str(store), "--json"))
    stamps = [
        data["versions"][0]["created_at"],
        data["readers"][0]["heartbeat"],
        data["readers"][0]["expires_at"],
    ]
    stamps.append(json.loads(ok("versions", str(store), "--json"))[0]["created_at"])
    for stamp in stamps:
        assert "T" in stamp and datetime.fromisoformat(stamp).tzinfo is not None, stamp


def test_debug_is_accepted_after_the_command(tmp_path: Path) -> None:
    result = run("info", str(tmp_path / "missing"), "--debug")
    assert "Traceback" in result.stderr and "StoreNotFound" in result.stderr
    assert "no such option" not in result.stderr


def test_ready_names_the_variable_it_needs(tmp_path: Path) -> None:
    ranked(tmp_path, 1)
    env = {k: v for k, v in os.environ.items() if k != "SHAREDREC_READER_ID"}
    result = subprocess.run(
        [sys.executable, "-m", "sharedrec", "ready", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 2
    assert "$SHAREDREC_READER_ID" in result.stderr and "--reader-id" in result.stderr


def test_ctrl_c_during_a_publish_says_nothing_was_published(tmp_path: Path) -> None:
    store = tmp_path / "store"
    live = ranked(store, 1)
    fifo = tmp_path / "recs.npz"
    os.mkfifo(fifo)  # the publish blocks reading it until the test writes
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sharedrec",
            "publish",
            str(store),
            str(fifo),
            "-c",
            "home",
            "--format",
            "npz",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        writer = _open_writer_when_read(fifo, proc)
        os.kill(proc.pid, signal.SIGINT)  # the publish is waiting for its input
        _, err = proc.communicate(timeout=60)
        os.close(writer)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted: nothing was published; the live version is unchanged" in err
    assert sharedrec.open(store, create=False).current() == live
    assert [v.id for v in sharedrec.open(store, create=False).versions()] == [live]


def test_ctrl_c_after_the_pointer_moved_names_the_live_version(tmp_path: Path) -> None:
    vid = ranked(tmp_path, 1)
    handle = sharedrec.open(tmp_path, create=False)
    assert _publish_interrupted(handle, "current", vid) == (
        f"interrupted after the publish finished: version {vid} is the live version"
    )
    assert "nothing was published; ref canary is unchanged" in _publish_interrupted(handle, "canary", "other")


def _open_writer_when_read(fifo: Path, proc: subprocess.Popen[str]) -> int:
    """Open the FIFO's write end once the publish has opened it for reading."""
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:  # ENXIO: no reader yet
            if exc.errno != errno.ENXIO or proc.poll() is not None:
                raise
            time.sleep(0.05)


def test_on_s3_a_publish_creates_only_when_asked_and_a_failed_one_leaves_nothing(
    s3_server: str, tmp_path: Path
) -> None:
    from conftest import S3_ENV, make_bucket, s3_client

    bucket = make_bucket(s3_server)
    env = {
        **S3_ENV,
        "SHAREDREC_ENDPOINT_URL": s3_server,
        "SHAREDREC_CACHE_DIR": str(tmp_path / "cache"),
    }
    client = s3_client(s3_server)

    def objects() -> list[str]:
        return [item["Key"] for item in client.list_objects_v2(Bucket=bucket).get("Contents", [])]

    source = str(parquet(tmp_path / "part-0.parquet"))
    store = f"s3://{bucket}/recs"
    refused = run("publish", store, source, "-c", "home", env=env)
    assert refused.returncode == 1 and "sharedrec init" in refused.stderr, refused.stderr
    assert "create=True" not in refused.stderr
    failed = run("publish", store, str(tmp_path / "missing.parquet"), "-c", "home", "--create", env=env)
    assert failed.returncode == 1
    assert objects() == []  # not even the marker of the store it had begun
    ok("publish", store, source, "-c", "home", "--create", env=env)
    assert "recs/CURRENT" in objects()
    assert json.loads(ok("get", store, "home", "3", env=env))["results"][0]["items"] == [7, 8, 9]
