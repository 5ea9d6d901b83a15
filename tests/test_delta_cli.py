"""Delta publishes from the command line, run as a real process: a change of input format
stays a delta, and a full write says why, once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import sharedrec


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sharedrec", *args], capture_output=True, text=True, timeout=300
    )


def _lists(path: Path, users: list[int] | list[str], items: np.ndarray, scores: np.ndarray) -> None:
    """Spark's list format: int32 and float32 lists, one row per user."""
    table = pa.table(
        {
            "user": users,
            "items": pa.array(items.tolist(), pa.list_(pa.int32())),
            "scores": pa.array(scores.tolist(), pa.list_(pa.float32())),
        }
    )
    pq.write_table(table, path)


def _long(path: Path, users: list[int] | list[str], items: np.ndarray, scores: np.ndarray) -> None:
    """The same lists as one row per (user, item, score), in int64 and float64."""
    k = items.shape[1]
    table = pa.table(
        {
            "user": [user for user in users for _ in range(k)],
            "item": pa.array(items.ravel().astype(np.int64)),
            "score": pa.array(scores.ravel().astype(np.float64)),
        }
    )
    pq.write_table(table, path)


def _data(n: int) -> tuple[list[int], np.ndarray, np.ndarray]:
    users = list(range(n))
    items = (np.arange(n)[:, None] * 10 + np.arange(3)).astype(np.int32)
    scores = np.tile(np.array([0.75, 0.5, 0.25], dtype=np.float32), (n, 1))
    return users, items, scores


def test_lists_then_long_rows_publish_a_delta_of_the_changes(tmp_path: Path) -> None:
    users, items, scores = _data(1000)
    _lists(tmp_path / "day1.parquet", users, items, scores)
    store = str(tmp_path / "store")
    first = _run(
        "publish", store, str(tmp_path / "day1.parquet"), "-c", "home", "--format", "lists", "--create"
    )
    assert first.returncode == 0, first.stderr
    items[:100] += 7  # 100 users get new lists
    _long(tmp_path / "day2.parquet", users, items, scores)
    second = _run("publish", store, str(tmp_path / "day2.parquet"), "-c", "home", "--delta")
    assert second.returncode == 0, second.stderr
    assert "written in full" not in second.stderr
    assert "written as a delta: 0 added, 100 changed, 0 removed" in second.stdout, second.stdout
    opened = sharedrec.open(store)
    live = opened.current()
    assert live is not None
    home = opened.manifest(live).collections["home"]
    assert home.delta and home.count == 1000
    assert home.arrays["keys"].shape == (100,)  # the 100 changes, not every row
    with opened.reader(lease=False) as reader:
        got, _, found = reader.get_many("home", users)
        assert found.all()
        np.testing.assert_array_equal(got, items)


def test_a_full_write_in_a_delta_publish_is_said_once(tmp_path: Path) -> None:
    users, items, scores = _data(50)
    _lists(tmp_path / "ints.parquet", users, items, scores)
    _lists(tmp_path / "strs.parquet", [f"u{user}" for user in users], items, scores)
    store = str(tmp_path / "store")
    assert (
        _run(
            "publish", store, str(tmp_path / "ints.parquet"), "-c", "home", "--format", "lists", "--create"
        ).returncode
        == 0
    )
    done = _run(
        "publish",
        store,
        str(tmp_path / "strs.parquet"),
        "-c",
        "home",
        "--format",
        "lists",
        "--delta",
        "--no-guards",
    )
    assert done.returncode == 0, done.stderr
    message = "collection 'home' is written in full, not as a delta: its keys are str; the base's are int64"
    assert done.stderr.count(message) == 1, done.stderr
