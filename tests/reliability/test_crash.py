"""Crash consistency: a publishing process SIGKILLed at every fault point of a publish.

After each kill the store must open at exactly the old version (killed before ``CURRENT``
was renamed into place) or the new one (killed after), ``verify`` must pass, and every
answer must be that version's. The next publish starts from whatever the kill left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import sharedrec

from ._support import Tally, check_answers, publish_tagged

CHILD = Path(__file__).with_name("_crash_child.py")


class Publisher:
    """The fork server of _crash_child.py: one killable publishing process per request."""

    def __init__(self) -> None:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def publish(self, **request: Any) -> dict[str, int]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the fork server died"
        return json.loads(line)  # type: ignore[no-any-return]

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def publisher() -> Iterator[Publisher]:
    server = Publisher()
    yield server
    server.close()


def census(publisher: Publisher, tmp_path: Path, root: str, tag: int, **extra: Any) -> list[str]:
    """Every fault point of one full publish, in order."""
    events = tmp_path / f"events-{tag}.json"
    assert publisher.publish(root=root, tag=tag, kill_at=-1, events=str(events), **extra) == {"code": 0}
    return json.loads(events.read_text())  # type: ignore[no-any-return]


def kill_everywhere(
    publisher: Publisher,
    store: sharedrec.RecommendationStore,
    root: str,
    points: list[str],
    pointer_write: str,
    tally: Tally,
    **extra: Any,
) -> dict[str, int]:
    """Kill a publish at each of ``points``' positions; check the store after each kill."""
    boundary = points.index(pointer_write)  # killed at or before it: the old version stays
    outcomes = {"old": 0, "new": 0}
    live_tag = store.reader(lease=False, refresh_interval=None).metadata["tag"]
    for index, point in enumerate(points):
        if point == "published":
            continue
        tag = live_tag + 1
        old = store.current()
        answer = publisher.publish(root=root, tag=tag, kill_at=index, events=None, **extra)
        assert answer == {"signal": signal.SIGKILL}, f"not killed at {point}: {answer}"
        tally.faults_injected += 1
        tally.scenarios += 1
        current = store.current()
        expect_new = index > boundary
        reader = store.reader(lease=False, refresh_interval=None)
        got_tag = reader.metadata["tag"]
        if expect_new:
            assert current != old and got_tag == tag, f"killed after {point}: the new version is not live"
            outcomes["new"] += 1
            live_tag = tag
        else:
            if current != old or got_tag != live_tag:
                tally.data_lost += 1
            assert current == old and got_tag == live_tag, f"killed at {point}: the live version moved"
            outcomes["old"] += 1
        report = store.verify()
        assert report.ok and report.files > 0
        assert check_answers(reader, got_tag) == 0, f"wrong answers after a kill at {point}"
        reader.close()
    return outcomes


@pytest.mark.slow
def test_local_publish_killed_at_every_fault_point(
    publisher: Publisher, tmp_path: Path, tally: Tally
) -> None:
    root = str(tmp_path / "store")
    store = sharedrec.open(root, create=True)
    publish_tagged(store, 0)
    points = census(publisher, tmp_path, root, 1)
    # Every kind of step is covered: each chunk file, the fsyncs, the manifest, the pointer.
    for step in ("before chunk", "during chunk", "after chunk", "before sync_tree", "before write_atomic"):
        assert any(point.startswith(step) for point in points), step
    assert "before rename of manifest.json" in points and "after rename of CURRENT" in points
    # Every step after the chunks, and chunk steps at a stride that is prime to 3 so that
    # before, during and after all occur, spread over every array.
    chunk_steps = [i for i, point in enumerate(points) if "chunk" in point]
    chosen = set(chunk_steps[:: max(1, len(chunk_steps) // 29) | 1]) | {chunk_steps[-1]}
    chosen |= {i for i, point in enumerate(points) if "chunk" not in point}
    selected = [point if i in chosen else "published" for i, point in enumerate(points)]
    assert {p.split(" ")[0] for p in selected if "chunk" in p} == {"before", "during", "after"}
    outcomes = kill_everywhere(publisher, store, root, selected, "before rename of CURRENT", tally)
    manifest_at = points.index("after rename of manifest.json")
    # The publish leases its draft before it creates the folder: a kill then leaves no folder.
    folder_at = next(i for i, point in enumerate(points) if "leases/" not in point)
    leased_only = sum(1 for i in chosen if i < folder_at)
    unfinished = sum(1 for i in chosen if folder_at <= i < manifest_at)
    kept = sum(1 for i in chosen if manifest_at <= i <= points.index("before rename of CURRENT"))
    assert outcomes == {
        "old": leased_only + unfinished + kept,
        "new": len(chosen) - leased_only - unfinished - kept - 1,
    }
    # A kill after the manifest was written leaves a complete version that is not live; a
    # kill before leaves an unfinished folder, invisible and garbage-collected...
    versions = store.versions()
    assert len(versions) == 2 + kept + outcomes["new"]  # with the first and the census publish
    # A killed publish's lease keeps its folder from gc until the lease expires (a minute):
    # remove those leases, as time would. On a busy machine the first kills' leases may have
    # expired already: gc may take those folders, never one whose lease still holds.
    drafts = [json.loads(lease.read_text()) for lease in (Path(root) / "leases").glob("draft-*.json")]
    first = store.gc(keep=100, grace=0)
    after = datetime.now(UTC)
    held = {lease["version"] for lease in drafts if datetime.fromisoformat(lease["expires_at"]) > after}
    assert len(drafts) >= unfinished
    assert not set(first.unfinished) & held, "gc took the folder of a publish whose lease holds"
    for lease in (Path(root) / "leases").glob("draft-*.json"):
        lease.unlink()
    report = store.gc(keep=100, grace=0)
    assert len(first.unfinished) + len(report.unfinished) == unfinished
    assert sorted(os.listdir(Path(root) / "versions")) == sorted(v.id for v in versions)
    # ...and the store stays writable.
    publish_tagged(store, 999)
    assert check_answers(store.reader(lease=False), 999) == 0


@pytest.mark.slow
def test_s3_publish_killed_at_every_object(
    publisher: Publisher, s3_server: str, tmp_path: Path, tally: Tally
) -> None:
    from conftest import make_bucket, s3_options

    root = f"s3://{make_bucket(s3_server)}/recs"
    options = s3_options(s3_server)
    store = sharedrec.open(root, storage_options=options, cache_dir=tmp_path / "cache", create=True)
    publish_tagged(store, 0)
    s3 = {"options": options, "cache": str(tmp_path / "writer-cache")}
    points = census(publisher, tmp_path, root, 1, s3=s3)
    assert "before PUT versions" not in points  # keys are named in full
    pointer = next(p for p in points if p == "before PUT CURRENT")
    data_puts = [i for i, p in enumerate(points) if p.startswith("before PUT versions/")]
    # Every PUT of the pointer and manifest, and the first, a middle and the last data upload.
    chosen = sorted({*data_puts[:2], data_puts[len(data_puts) // 2], data_puts[-2], data_puts[-1]})
    chosen += [i for i, p in enumerate(points) if "manifest.json" in p or "CURRENT" in p]
    selected = [p if i in chosen else "published" for i, p in enumerate(points)]

    outcomes = kill_everywhere(publisher, store, root, selected, pointer, tally, s3=s3)
    assert outcomes["old"] >= 6 and outcomes["new"] >= 1, outcomes
