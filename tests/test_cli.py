"""The ``sharedrec`` command, run as a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import sharedrec
from sharedrec.demo import make_dataset


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sharedrec", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    result = _run("demo", "--users", "3000", "--k", "20", "--root", str(tmp_path))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Generated 3,000 users x 20" in out
    assert "download-and-load" in out
    assert "the server (polling every 50 ms) moved to it" in out
    assert "store.rollback()" in out
    assert "kind: PersistentVolume" in out and "driver: efs.csi.aws.com" in out  # the EFS manifests
    assert "kind: HorizontalPodAutoscaler" in out and "kind: CronJob" in out
    store = sharedrec.open(tmp_path / "store", create=False)
    versions = store.versions()
    assert len(versions) == 2
    assert versions[0].current  # rolled back to the first version
    assert versions[0].collections == {"home": 3000}


def test_info_lists_versions(tmp_path: Path) -> None:
    store = sharedrec.open(tmp_path)
    vid = store.publish_vectors("emb", [1, 2], np.ones((2, 2), dtype=np.float32))
    result = _run("info", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert vid in result.stdout and "(live)" in result.stdout and "emb: 2 keys" in result.stdout


def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    result = _run("info", str(tmp_path / "missing"))
    assert result.returncode == 1
    assert result.stderr.startswith("error: no store at")
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_make_dataset_is_realistic() -> None:
    data = make_dataset(2000, k=50, n_items=5000, seed=1)
    assert data.items.shape == data.scores.shape == (2000, 50)
    assert len(np.unique(data.user_ids)) == 2000
    assert all(len(np.unique(row)) == 50 for row in data.items)  # distinct items per list
    assert (np.diff(data.scores, axis=1) <= 0).all()  # best first
    counts = np.bincount(data.items.ravel(), minlength=5000)
    top = np.sort(counts)[::-1]
    assert top[:50].sum() > 10 * top[-2500:].sum()  # popularity is heavily skewed


def test_ready_probe(tmp_path: Path) -> None:
    store = sharedrec.open(tmp_path)
    vid = store.publish_vectors("emb", [1, 2], np.ones((2, 2), dtype=np.float32))
    env_missing = _run("ready", str(tmp_path), "--reader-id", "pod-1")
    assert env_missing.returncode == 1 and "no lease" in env_missing.stderr
    with store.reader(reader_id="pod-1"):
        result = _run("ready", str(tmp_path), "--reader-id", "pod-1")
        assert result.returncode == 0, result.stderr
        assert f"pod-1 serves version {vid}" in result.stdout
    assert _run("ready", str(tmp_path), "--reader-id", "pod-1").returncode == 1  # closed: lease gone


STUCK_READER = """
import sys, time, sharedrec
reader = sharedrec.open(sys.argv[1], create=False).reader(reader_id="pod-2", lease_ttl=0.3)
print("ready", flush=True)
time.sleep(60)
"""


def test_ready_probe_fails_for_a_stuck_process(tmp_path: Path) -> None:
    store = sharedrec.open(tmp_path)
    store.publish_vectors("emb", [1, 2], np.ones((2, 2), dtype=np.float32))
    proc = subprocess.Popen(
        [sys.executable, "-c", STUCK_READER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        assert _run("ready", str(tmp_path), "--reader-id", "pod-2").returncode == 0
        os.kill(proc.pid, signal.SIGSTOP)  # stuck: no more heartbeats
        time.sleep(0.6)
        result = _run("ready", str(tmp_path), "--reader-id", "pod-2")
        assert result.returncode == 1 and "expired" in result.stderr
    finally:
        proc.kill()
        proc.wait()
