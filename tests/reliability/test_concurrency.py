"""Concurrency: two writers racing, and four reader processes in a steady lookup loop while
the live version switches 50 times. Every answer is checked against its version's tag."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import sharedrec

from ._support import Tally, publish_tagged

pytestmark = pytest.mark.slow
TESTS = str(Path(__file__).parents[1])

WRITER = textwrap.dedent(
    """
    import json, os, sys, time
    sys.path.insert(0, sys.argv[4])
    import sharedrec
    from sharedrec.errors import ConcurrentPublishError
    from reliability._support import publish_tagged

    root, first, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    store = sharedrec.open(root)
    while not os.path.exists(go):
        time.sleep(0.001)
    won, lost, other = [], [], []
    for tag in range(first, first + 15):
        try:
            won.append(publish_tagged(store, tag))
        except ConcurrentPublishError as exc:
            lost.append([tag, str(exc)])
        except Exception as exc:
            other.append(f"{type(exc).__name__}: {exc}")
    print(json.dumps({"won": won, "lost": lost, "other": other}))
    """
)


def test_two_writers_racing(tmp_path: Path, tally: Tally) -> None:
    root = tmp_path / "store"
    store = sharedrec.open(root, create=True)
    publish_tagged(store, 0)
    go = tmp_path / "go"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), str(first), str(go), TESTS],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for first in (100, 200)
    ]
    time.sleep(1.0)  # both writers imported and waiting; the race starts at once
    go.write_text("go")
    results = []
    for proc in writers:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    tally.scenarios += 1
    won = [v for r in results for v in r["won"]]
    lost = [entry for r in results for entry in r["lost"]]
    tally.faults_injected += len(lost)  # each lost race is a conflict handled
    assert all(r["other"] == [] for r in results), [r["other"] for r in results]
    assert len(won) + len(lost) == 30
    assert won, "no publish went through"
    # No update was lost: every winning publish is live or in the pointer's history, in order.
    pointer = json.loads((root / "CURRENT").read_bytes())
    history = [pointer["version"], *pointer["previous"]]
    assert sorted(won) == sorted(v for v in history if v in set(won))
    for message in (m for _, m in lost):
        assert "another writer made version" in message and "stays live" in message
    # Losers are complete but not live; all versions verify.
    listed = {v.id: v for v in store.versions()}
    assert len(listed) == 31
    for version in listed:
        assert store.verify(version).ok
    reader = store.reader(lease=False)
    tag = reader.metadata["tag"]
    assert reader.version == pointer["version"] and tag in range(100, 215)


FOLLOWER = textwrap.dedent(
    """
    import json, select, sys, time
    sys.path.insert(0, sys.argv[2])
    import numpy as np
    import sharedrec
    from sharedrec.errors import VersionGone
    from reliability._support import KEYS, N_KEYS, TAG, tagged_items

    reader = sharedrec.open(sys.argv[1], create=False).reader(refresh_interval=0.05, lease_ttl=30)
    rng = np.random.default_rng()
    seen, bad, errors, answers = set(), [], [], 0
    print("ready", flush=True)
    while not select.select([sys.stdin], [], [], 0)[0]:
        rows = rng.integers(0, N_KEYS, size=16)
        try:
            items, _, found = reader.get_many("home", KEYS[rows])
            recs = reader.get("home", int(KEYS[rows[0]]))
            vec = reader.vector("emb", int(KEYS[rows[0]]))
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        tag = int(items[0, 0] // TAG)
        answers += 3
        ok = found.all() and np.array_equal(items, tagged_items(tag)[rows])
        tag_one = int(recs.items[0] // TAG)
        ok_one = np.array_equal(recs.items, tagged_items(tag_one)[rows[0]])
        ok_vec = float(vec[0]) == vec.mean() and int(vec[0]) == vec[0]
        if not (ok and ok_one and ok_vec):
            bad.append([tag, tag_one, float(vec[0])])
        seen.add(tag)
        time.sleep(0.0005)  # a steady load that leaves the writer some of the two cores
    stats = reader.stats()
    reader.close()
    print(json.dumps({"seen": sorted(seen), "bad": bad[:5], "wrong": len(bad), "errors": errors[:5],
                      "n_errors": len(errors), "answers": answers, "switches": stats.switches,
                      "refresh_failures": stats.refresh_failures}))
    """
)


def test_four_reader_processes_through_50_switches(tmp_path: Path, tally: Tally) -> None:
    root = tmp_path / "store"
    store = sharedrec.open(root, create=True)
    publish_tagged(store, 0)
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", FOLLOWER, str(root), TESTS],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for proc in readers:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    published = [0]
    for tag in range(1, 51):
        publish_tagged(store, tag)  # 50 switches of the live version
        published.append(tag)
        store.gc(keep=4, grace=0)  # old versions go while readers run; leases protect theirs
        time.sleep(0.03)
    results = []
    for proc in readers:
        out, err = proc.communicate("stop\n", timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    tally.scenarios += 1
    tally.faults_injected += 50  # version switches under load
    for result in results:
        tally.answers_checked += result["answers"]
        tally.wrong_answers += result["wrong"]
    for result in results:
        assert result["wrong"] == 0, result["bad"]
        assert result["n_errors"] == 0, result["errors"]
        assert result["refresh_failures"] == 0
        assert set(result["seen"]) <= set(published)
        assert result["switches"] >= 10 and len(result["seen"]) >= 10, result
        assert result["answers"] > 300
