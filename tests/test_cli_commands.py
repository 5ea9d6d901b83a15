"""Every `sharedrec` command through its real entry point, and ingestion of pipeline outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

import sharedrec
from sharedrec.integrations import ingest

if TYPE_CHECKING:
    import pyarrow

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
feather = pytest.importorskip("pyarrow.feather")
pacsv = pytest.importorskip("pyarrow.csv")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sharedrec", *args], capture_output=True, text=True, timeout=300
    )


def long_table(
    n_users: int = 60, rows_per_user: int = 25, seed: int = 0, str_users: bool = False
) -> pyarrow.Table:
    """Shuffled (user, item, score) rows, as a Spark ALS job writes them."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users) * 13 + 5, rows_per_user)
    items = np.concatenate([rng.choice(10_000, rows_per_user, replace=False) for _ in range(n_users)])
    scores = rng.random(len(users))
    order = rng.permutation(len(users))
    user_col = [f"u{u}" for u in users[order]] if str_users else users[order]
    return pa.table({"user": user_col, "item": items[order].astype(np.int32), "score": scores[order]})


def expected_top(table: pyarrow.Table, user: object, k: int, by_rank: bool = False) -> list[int]:
    data = table.to_pydict()
    rows = [i for i, u in enumerate(data["user"]) if u == user]
    key = (lambda i: data["rank"][i]) if by_rank else (lambda i: -data["score"][i])
    return [int(data["item"][i]) for i in sorted(rows, key=key)[:k]]


def get_items(store: Path, collection: str, key: str, *extra: str) -> list[int]:
    result = run("get", str(store), collection, key, *extra)
    assert result.returncode == 0, result.stderr
    (hit,) = json.loads(result.stdout)["results"]
    return list(hit["items"])


def test_parquet_long_format_round_trip(tmp_path: Path) -> None:
    table = long_table()
    (tmp_path / "out").mkdir()
    pq.write_table(table.slice(0, 700), tmp_path / "out" / "part-0.parquet")
    pq.write_table(table.slice(700), tmp_path / "out" / "part-1.parquet")
    (tmp_path / "out" / "_SUCCESS").write_text("")
    store = tmp_path / "store"
    result = run(
        "publish",
        str(store),
        str(tmp_path / "out"),
        "-c",
        "home",
        "--top-k",
        "10",
        "-m",
        "model=als",
        "--create",
    )
    assert result.returncode == 0, result.stderr
    assert "with 60 keys" in result.stdout
    for user in (5, 18, 5 + 13 * 59):
        assert get_items(store, "home", str(user)) == expected_top(table, user, 10)
    assert sharedrec.open(store).reader(lease=False).metadata == {"model": "als"}
    # The same output again as a delta: nothing changed, so no list is written.
    again = run("publish", str(store), str(tmp_path / "out"), "-c", "home", "--top-k", "10", "--delta", "-q")
    assert again.returncode == 0, again.stderr
    handle = sharedrec.open(store)
    manifest = handle.manifest(handle.current() or "")
    assert manifest.base is not None and "keys" not in manifest.collections["home"].arrays
    assert get_items(store, "home", "18") == expected_top(table, 18, 10)


def test_rank_column_csv_and_feather(tmp_path: Path) -> None:
    table = long_table(n_users=20, rows_per_user=8, seed=3, str_users=True)
    # Rank 0 is the best score of each user, as pipelines write it.
    data = table.to_pydict()
    rank = np.zeros(table.num_rows, dtype=np.int64)
    for user in set(data["user"]):
        rows = sorted((i for i, u in enumerate(data["user"]) if u == user), key=lambda i: -data["score"][i])
        rank[rows] = np.arange(len(rows))
    table = table.append_column("rank", pa.array(rank))
    pacsv.write_csv(table, tmp_path / "recs.csv")
    feather.write_feather(table, tmp_path / "recs.feather")
    for name in ("recs.csv", "recs.feather"):
        store = tmp_path / f"store-{name}"
        result = run(
            "publish", str(store), str(tmp_path / name), "-c", "home", "--rank-col", "rank", "-q", "--create"
        )
        assert result.returncode == 0, result.stderr
        assert get_items(store, "home", "u18", "-k", "3") == expected_top(table, "u18", 3, by_rank=True)
    # A rank that contradicts the scores is refused, not silently reordered.
    shuffled = table.set_column(3, "rank", pa.array(np.random.default_rng(1).permutation(table.num_rows)))
    feather.write_feather(shuffled, tmp_path / "bad.feather")
    result = run(
        "publish",
        str(tmp_path / "s2"),
        str(tmp_path / "bad.feather"),
        "-c",
        "home",
        "--rank-col",
        "rank",
        "--create",
    )
    assert result.returncode == 1 and "descending score order" in result.stderr


def test_bounded_memory_buckets_give_the_same_answer(tmp_path: Path) -> None:
    table = long_table(n_users=300, rows_per_user=30, seed=7)
    pq.write_table(table, tmp_path / "a.parquet")
    whole = ingest.read_long([tmp_path / "a.parquet"], top_k=5)
    split = ingest.read_long([tmp_path / "a.parquet"], top_k=5, bucket_bytes=4096)  # many spill buckets
    order_a, order_b = np.argsort(whole.keys), np.argsort(split.keys)
    np.testing.assert_array_equal(np.asarray(whole.keys)[order_a], np.asarray(split.keys)[order_b])
    np.testing.assert_array_equal(whole.items[order_a], split.items[order_b])
    assert whole.rows_read == split.rows_read == 9000


def test_lists_vectors_and_npz(tmp_path: Path) -> None:
    lists = pa.table(
        {
            "user": [1, 2, 3],
            "items": [[7, 8, 9], [4], []],
            "scores": [[0.9, 0.5, 0.1], [1.0], []],
        }
    )
    pq.write_table(lists, tmp_path / "lists.parquet")
    store = tmp_path / "store"
    assert (
        run(
            "publish",
            str(store),
            str(tmp_path / "lists.parquet"),
            "-c",
            "home",
            "--format",
            "lists",
            "--create",
        ).returncode
        == 0
    )
    assert get_items(store, "home", "1") == [7, 8, 9]
    assert get_items(store, "home", "3") == []
    vectors = pa.table({"user": ["a", "b"], "vector": [[0.5, 1.5], [2.0, 3.0]]})
    pq.write_table(vectors, tmp_path / "emb.parquet")
    emb_store = tmp_path / "emb"
    assert (
        run(
            "publish",
            str(emb_store),
            str(tmp_path / "emb.parquet"),
            "-c",
            "emb",
            "--format",
            "vectors",
            "--create",
        ).returncode
        == 0
    )
    result = run("get", str(emb_store), "emb", "b")
    assert json.loads(result.stdout)["results"][0]["vector"] == [2.0, 3.0]
    np.savez(
        tmp_path / "recs.npz",
        keys=np.array([10, 20]),
        items=np.array([[1, 2], [3, 4]]),
        scores=np.array([[2.0, 1.0], [2.0, 1.0]]),
    )
    npz_store = tmp_path / "npz"
    assert (
        run(
            "publish", str(npz_store), str(tmp_path / "recs.npz"), "-c", "home", "--format", "npz", "--create"
        ).returncode
        == 0
    )
    assert get_items(npz_store, "home", "20") == [3, 4]


def test_management_commands(tmp_path: Path) -> None:
    store = tmp_path / "store"
    handle = sharedrec.open(store, create=True)
    keys = np.arange(50)
    v1 = handle.publish_ranked("home", keys, np.ones((50, 3), dtype=int), np.ones((50, 3)))
    v2 = handle.publish_ranked("home", keys, np.ones((50, 3), dtype=int) * 2, np.ones((50, 3)))
    text = run("info", str(store)).stdout
    assert f"live version: {v2}" in text and "home: 50 keys" in text
    data = json.loads(run("info", str(store), "--json").stdout)
    assert data["current"] == v2 and len(data["versions"]) == 2
    assert "ok: version" in run("verify", str(store)).stdout
    dry = run("gc", str(store), "--keep", "0", "--grace", "0s", "--dry-run")
    assert f"would delete version {v1}" in dry.stdout
    assert run("rollback", str(store)).stdout.strip() == f"live version: {v1}"
    assert run("set-current", str(store), v2).stdout.strip() == f"live version: {v2}"
    assert f"deleted version {v1}" in run("gc", str(store), "--keep", "0", "--grace", "0").stdout
    v3 = handle.publish_ranked("home", keys, np.ones((50, 3), dtype=int) * 3, np.ones((50, 3)), ref="canary")
    assert handle.current() == v2
    assert run("promote", str(store), "canary").stdout.strip() == f"current: {v3}"
    assert handle.current() == v3
    missing = run("get", str(store), "home", "999")
    assert json.loads(missing.stdout)["results"] == [{"key": 999, "found": False}]
    assert run("compact", str(store)).stdout.strip() == f"current: {v3} (already a full version)"
    v4 = handle.publish_ranked("home", keys, np.ones((50, 3), dtype=int) * 4, np.ones((50, 3)), delta=True)
    assert handle.manifest(v4).base == v3
    out = run("compact", str(store), "--quiet").stdout.strip()
    v5 = handle.current()
    assert out == f"current: {v5} (was {v4})" and handle.manifest(v5 or "").base is None
    assert json.loads(run("get", str(store), "home", "7").stdout)["results"][0]["items"] == [4, 4, 4]


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("none", ["publish", "{store}", "{tmp}/nope.parquet", "-c", "home"], "does not exist"),
        (
            "parquet",
            ["publish", "{store}", "{tmp}/in.parquet", "-c", "home", "--item-col", "product"],
            "the item column 'product' is not in the input",
        ),
        (
            "badtypes",
            ["publish", "{store}", "{tmp}/in.parquet", "-c", "home"],
            "the item column must hold integers",
        ),
        (
            "duplicates",
            ["publish", "{store}", "{tmp}/in.parquet", "-c", "home", "--format", "lists"],
            "duplicates",
        ),
        ("text", ["publish", "{store}", "{tmp}/in.txt", "-c", "home"], "inputs must all be one of"),
        ("none", ["get", "{tmp}/nostore", "home", "1"], "no store at"),
        (
            "none",
            [
                "publish",
                "s3://bucket/recs",
                "{tmp}/x.parquet",
                "-c",
                "home",
                "--endpoint-url",
                "http://127.0.0.1:9",
            ],
            "cannot reach s3://bucket/recs",
        ),
        ("none", ["gc", "{tmp}/store", "--grace", "soon"], "not a duration"),
    ],
)
def test_errors_are_one_line(tmp_path: Path, setup: str, args: list[str], message: str) -> None:
    if setup == "parquet":
        pq.write_table(long_table(5, 3), tmp_path / "in.parquet")
    elif setup == "badtypes":
        pq.write_table(pa.table({"user": [1], "item": ["sku-1"], "score": [1.0]}), tmp_path / "in.parquet")
    elif setup == "duplicates":
        pq.write_table(
            pa.table({"user": [1, 1], "items": [[1], [2]], "scores": [[1.0], [1.0]]}), tmp_path / "in.parquet"
        )
    elif setup == "text":
        (tmp_path / "in.txt").write_text("user,item,score\n")
    (tmp_path / "store").mkdir(exist_ok=True)
    # A publish may create its store: these errors are about the inputs.
    argv = [a.format(store=tmp_path / "out-store", tmp=tmp_path) for a in args]
    if argv[0] == "publish":
        argv.append("--create")
    result = run(*argv)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_publish_from_s3_inputs_to_an_s3_store(s3_server: str, tmp_path: Path) -> None:
    import os

    from conftest import S3_ENV, make_bucket, s3_client

    bucket = make_bucket(s3_server)
    table = long_table(n_users=30, rows_per_user=12, seed=9)
    pq.write_table(table, tmp_path / "part-0.parquet")
    client = s3_client(s3_server)
    client.upload_file(str(tmp_path / "part-0.parquet"), bucket, "als/output/part-0.parquet")
    env = {
        **os.environ,
        **S3_ENV,
        "SHAREDREC_ENDPOINT_URL": s3_server,
        "SHAREDREC_CACHE_DIR": str(tmp_path / "cache"),
    }
    store = f"s3://{bucket}/recs"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sharedrec",
            "publish",
            store,
            f"s3://{bucket}/als/output/",
            "-c",
            "home",
            "--top-k",
            "5",
            "--create",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    got = subprocess.run(
        [sys.executable, "-m", "sharedrec", "get", store, "home", "18"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["results"][0]["items"] == expected_top(table, 18, 5)
