"""Reading pipeline outputs (`sharedrec.integrations.ingest`): duplicates, ties, dtypes,
progress and the messages that name the file, the column and the rows at fault."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

import sharedrec
from sharedrec import _progress
from sharedrec.integrations import ingest
from sharedrec.write.validate import normalize_keys, normalize_ranked

if TYPE_CHECKING:
    import pyarrow

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pacsv = pytest.importorskip("pyarrow.csv")


def write(path: Path, **columns: object) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


class Clock:
    """A clock that moves only when told: progress rules tested without timing anything."""

    def __init__(self, step: float = 0.0) -> None:  # step: seconds added at every reading
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


# Duplicates (user, item) ---------------------------------------------------------------


def test_duplicate_long_rows_are_refused_with_count_files_and_the_fix(tmp_path: Path) -> None:
    a = write(
        tmp_path / "a.parquet", user=[1, 1, 2, 2, 2], item=[7, 8, 3, 3, 4], score=[0.9, 0.8, 0.7, 0.5, 0.1]
    )
    b = write(tmp_path / "b.parquet", user=[1, 3], item=[7, 5], score=[0.95, 0.3])
    with pytest.raises(sharedrec.InvalidInput) as caught:
        ingest.read_long([tmp_path], top_k=5)
    message = str(caught.value)
    assert "2 duplicate (user, item) rows" in message
    # The file of the best-ranked row (kept with dedupe=True) comes first.
    assert f"user 1 item 7 (in {b} and {a})" in message
    assert f"user 2 item 3 (twice in {a})" in message
    assert "dedupe=True" in message


def test_dedupe_keeps_each_pairs_best_ranked_row(tmp_path: Path) -> None:
    write(tmp_path / "a.parquet", user=[1, 1, 2, 2, 2], item=[7, 8, 3, 3, 4], score=[0.9, 0.8, 0.2, 0.5, 0.1])
    write(tmp_path / "b.parquet", user=[1, 3], item=[7, 5], score=[0.95, 0.3])
    ranked = ingest.read_long([tmp_path], top_k=5, dedupe=True)
    got = {int(k): ranked.items[i, : ranked.lengths[i]].tolist() for i, k in enumerate(ranked.keys)}
    assert got == {1: [7, 8], 2: [3, 4], 3: [5]}
    row = list(ranked.keys).index(2)
    assert ranked.scores[row, 0] == 0.5  # user 2's item 3 twice: the higher score stays
    assert ranked.scores[list(ranked.keys).index(1), 0] == 0.95
    assert ranked.duplicates_dropped == 2 and ranked.rows_read == 7


def test_duplicates_are_found_across_spill_buckets_and_with_string_users(tmp_path: Path) -> None:
    users = [f"u{i}" for i in range(300) for _ in range(3)]
    items = [i % 3 for i in range(900)]
    items[5] = items[4]  # user u1 gets item 1 twice
    write(tmp_path / "a.parquet", user=users, item=items, score=np.linspace(1, 0, 900))
    with pytest.raises(sharedrec.InvalidInput, match=r"1 duplicate \(user, item\) rows.*user 'u1' item 1"):
        ingest.read_long([tmp_path], bucket_bytes=1024)
    ranked = ingest.read_long([tmp_path], bucket_bytes=1024, dedupe=True)
    assert ranked.duplicates_dropped == 1 and int(ranked.lengths.sum()) == 899


def test_lists_with_a_repeated_item_are_refused_or_deduplicated(tmp_path: Path) -> None:
    path = write(
        tmp_path / "lists.parquet",
        user=[1, 2],
        items=[[5, 6, 5, 7], [1, 2]],
        scores=[[0.9, 0.8, 0.7, 0.6], [1.0, 0.5]],
    )
    with pytest.raises(sharedrec.InvalidInput) as caught:
        ingest.read_lists([path])
    assert "1 duplicate (user, item) list entries" in str(caught.value)
    assert f"user 1 item 5 (twice in {path})" in str(caught.value)
    assert "dedupe=True" in str(caught.value)
    ranked = ingest.read_lists([path], dedupe=True)
    assert ranked.items[0].tolist() == [5, 6, 7] and ranked.lengths.tolist() == [3, 2]
    assert ranked.scores[0].tolist() == pytest.approx([0.9, 0.8, 0.6])
    assert ranked.duplicates_dropped == 1


# Ties -----------------------------------------------------------------------------------


def tied_rows(seed: int) -> pyarrow.Table:
    """Every user has runs of equal scores; rows shuffled by ``seed``."""
    users = np.repeat(np.arange(40, dtype=np.int64), 12)
    items = np.tile(np.arange(100, 112, dtype=np.int32), 40)
    scores = np.tile(np.repeat(np.array([0.9, 0.5, 0.5, 0.1], dtype=np.float32), 3), 40)
    order = np.random.default_rng(seed).permutation(len(users))
    return pa.table({"user": users[order], "item": items[order], "score": scores[order]})


def test_ties_are_broken_by_item_id_whatever_the_file_order(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    for folder, seed in ((one, 1), (two, 2)):
        folder.mkdir()
        table = tied_rows(seed)
        pq.write_table(table.slice(0, 200), folder / "part-0.parquet")
        pq.write_table(table.slice(200), folder / "part-1.parquet")
    first = ingest.read_long([one], top_k=5)
    second = ingest.read_long([two], top_k=5, bucket_bytes=2048)
    assert first.items.tobytes() == second.items.tobytes()
    assert first.scores.tobytes() == second.scores.tobytes()
    assert first.items[0].tolist() == [100, 101, 102, 103, 104]  # 0.9 x3, then 0.5 ties by id


def test_ties_with_a_rank_column_are_broken_by_item_id(tmp_path: Path) -> None:
    write(tmp_path / "a.csv.parquet", user=[1, 1, 1], item=[9, 4, 6], score=[0.5, 0.5, 0.5], rank=[0, 0, 1])
    ranked = ingest.read_long([tmp_path / "a.csv.parquet"], rank_col="rank")
    assert ranked.items[0].tolist() == [4, 9, 6]


def test_tied_entries_of_a_list_are_ordered_by_item_id(tmp_path: Path) -> None:
    a = write(tmp_path / "a.parquet", user=[1], items=[[8, 3, 5, 1]], scores=[[0.9, 0.4, 0.4, 0.4]])
    b = write(tmp_path / "b.parquet", user=[1], items=[[8, 5, 1, 3]], scores=[[0.9, 0.4, 0.4, 0.4]])
    first, second = ingest.read_lists([a]), ingest.read_lists([b])
    assert first.items.tobytes() == second.items.tobytes()
    assert first.items[0].tolist() == [8, 1, 3, 5]
    # Ties decide which items make the cut.
    assert ingest.read_lists([b], top_k=2).items[0].tolist() == [8, 1]


def test_sort_true_breaks_ties_by_item_id() -> None:
    keys = normalize_keys("home", [1, 2])
    items = np.array([[5, 3, 9, 1], [2, 7, 4, 0]], dtype=np.int32)
    scores = np.array([[0.1, 0.5, 0.5, 0.9], [0.3, 0.3, 0.3, 0.3]], dtype=np.float32)
    swapped = normalize_ranked(
        "home", keys, items[:, ::-1], scores[:, ::-1], lengths=None, pad=None, sort=True, top_k=None
    )
    ranked = normalize_ranked("home", keys, items, scores, lengths=None, pad=None, sort=True, top_k=None)
    assert ranked.items.tolist() == [[1, 3, 9, 5], [0, 2, 4, 7]]
    assert ranked.items.tobytes() == swapped.items.tobytes()
    # Padding stays at the end when lists are shorter than the row.
    short = normalize_ranked(
        "home", keys, items, scores, lengths=np.array([3, 2]), pad=None, sort=True, top_k=None
    )
    assert short.items.tolist() == [[3, 9, 5], [2, 7, -1]]


# Dtypes -----------------------------------------------------------------------------------


def test_list_columns_of_int32_and_float32_keep_their_dtypes(tmp_path: Path) -> None:
    table = pa.table(
        {
            "user": pa.array([1, 2], type=pa.int64()),
            "items": pa.array([[3, 1], [2]], type=pa.list_(pa.int32())),
            "scores": pa.array([[0.5, 0.25], [1.0]], type=pa.list_(pa.float32())),
        }
    )
    pq.write_table(table, tmp_path / "spark-lists.parquet")
    ranked = ingest.read_lists([tmp_path / "spark-lists.parquet"])
    assert (ranked.items.dtype, ranked.scores.dtype) == (np.dtype(np.int32), np.dtype(np.float32))
    store = sharedrec.open(tmp_path / "store", create=True)
    store.publish_ranked(
        "home", ranked.keys, ranked.items, ranked.scores, lengths=ranked.lengths, progress=False
    )
    with store.reader(lease=False) as reader:
        hit = reader.get("home", 1)
        assert (hit.items.dtype, hit.scores.dtype) == (np.dtype(np.int32), np.dtype(np.float32))


@pytest.mark.parametrize(
    ("item_type", "score_type", "expected"),
    [
        (pa.int32(), pa.float32(), (np.int32, np.float32)),
        (pa.int64(), pa.float64(), (np.int64, np.float64)),
        (pa.int16(), pa.float16(), (np.int32, np.float32)),
        (pa.int64(), pa.float32(), (np.int64, np.float32)),
    ],
)
def test_every_format_keeps_the_input_dtypes(
    tmp_path: Path, item_type: object, score_type: object, expected: tuple[type, type]
) -> None:
    half = score_type == pa.float16()
    scores: list[object] = [np.float16(0.5), np.float16(0.25)] if half else [0.5, 0.25]
    long = pa.table(
        {
            "user": pa.array([1, 1], type=pa.int64()),
            "item": pa.array([4, 2], type=item_type),
            "score": pa.array(scores, type=score_type),
        }
    )
    lists = pa.table(
        {
            "user": pa.array([1], type=pa.int64()),
            "items": pa.array([[4, 2]], type=pa.list_(item_type)),
            "scores": pa.array([scores], type=pa.list_(score_type)),
        }
    )
    pq.write_table(long, tmp_path / "long.parquet")
    pq.write_table(lists, tmp_path / "lists.parquet")
    from_long = ingest.read_long([tmp_path / "long.parquet"])
    from_lists = ingest.read_lists([tmp_path / "lists.parquet"])
    for ranked in (from_long, from_lists):
        assert ranked.items.dtype == np.dtype(expected[0])
        assert ranked.scores.dtype == np.dtype(expected[1])
    assert from_long.items.tobytes() == from_lists.items.tobytes()


def test_vectors_keep_their_float_dtype(tmp_path: Path) -> None:
    for value_type, dtype in ((pa.float32(), np.float32), (pa.float64(), np.float64)):
        table = pa.table(
            {"user": [1, 2], "vector": pa.array([[1.0, 2.0], [3.0, 4.0]], type=pa.list_(value_type, 2))}
        )
        pq.write_table(table, tmp_path / "emb.parquet")
        _, vectors = ingest.read_vectors([tmp_path / "emb.parquet"])
        assert vectors.dtype == dtype and vectors.tolist() == [[1.0, 2.0], [3.0, 4.0]]


# Progress ---------------------------------------------------------------------------------


def test_a_short_step_prints_nothing_and_a_long_one_shows_its_progress(
    capsys: pytest.CaptureFixture[str],
) -> None:
    clock = Clock()
    plain = _progress.Reporter(True, plain=True, now=clock)
    with plain.task("verify v1", 1000) as task:
        for _ in range(4):
            clock.now += 0.1  # done in 0.4 s: under QUIET_SECONDS
            task.advance(250)
    assert capsys.readouterr().err == ""
    clock.now = 0.0
    with plain.task("read 4 files", 4_000_000) as task:
        for _ in range(4):
            clock.now += 0.3
            task.advance(1_000_000)
    # Shown from 0.6 s on, when half is done: the quarters passed are summed up in one line.
    assert capsys.readouterr().err.splitlines() == [
        "read 4 files: 50% of 4.0 MB in 0.6 s",
        "read 4 files: 75% in 0.9 s",
        "read 4 files: 100% in 1.2 s",
    ]
    # A long step that reports only at its end still shows its end.
    clock.now = 0.0
    with plain.task("group rows by user", 10) as task:
        clock.now = 3.0
        task.advance(10)
    assert capsys.readouterr().err.splitlines() == ["group rows by user: 100% of 0.0 MB in 3.0 s"]


def test_verify_of_a_tiny_version_prints_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_progress, "clock", Clock(step=0.001))
    store = sharedrec.open(tmp_path / "store", create=True)
    store.publish_ranked("home", [1, 2], [[1, 2], [3, 4]], [[1.0, 0.5], [1.0, 0.5]], progress=False)
    capsys.readouterr()
    report = store.verify(progress="plain")
    assert report.files > 0
    assert capsys.readouterr().err == ""


def test_reading_many_files_reports_reading_and_grouping(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_progress, "clock", Clock(step=1.0))  # every step runs "long"
    table = tied_rows(0)
    for part in range(3):
        pq.write_table(table.slice(part * 160, 160), tmp_path / f"part-{part}.parquet")
    ingest.read_long([tmp_path], progress="plain")
    err = capsys.readouterr().err
    assert "read 3 files: " in err and "read 3 files: 100% in" in err
    assert "group rows by user: 100% of" in err
    ingest.read_long([tmp_path])  # off by default
    ingest.read_lists([write(tmp_path.parent / "l.parquet", user=[1], items=[[1]], scores=[[1.0]])])
    assert capsys.readouterr().err == ""


def test_lists_and_vectors_report_reading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_progress, "clock", Clock(step=1.0))
    lists = write(tmp_path / "l.parquet", user=[1], items=[[1]], scores=[[1.0]])
    vectors = write(tmp_path / "v.parquet", user=[1], vector=[[1.0, 2.0]])
    ingest.read_lists([lists], progress="plain")
    ingest.read_vectors([vectors], progress="plain")
    assert capsys.readouterr().err.count("read 1 file: 100% in") == 2


# Errors that name the file, the column and the rows ---------------------------------------


def test_mixed_int_and_string_user_ids_name_both_files(tmp_path: Path) -> None:
    a = write(tmp_path / "part-0.parquet", user=[1, 2], item=[1, 2], score=[0.5, 0.4])
    b = write(tmp_path / "part-1.parquet", user=["x99", "x100"], item=[1, 2], score=[0.5, 0.4])
    with pytest.raises(sharedrec.InvalidInput) as caught:
        ingest.read_long([tmp_path])
    message = str(caught.value)
    assert f"integer ids in {a}" in message and f"string ids in {b}" in message
    assert "'user'" in message and "one type in every file" in message
    # CSV types are inferred per file: the same check names the file.
    pacsv.write_csv(pa.table({"user": [1], "item": [1], "score": [0.5]}), tmp_path / "part-0.csv")
    pacsv.write_csv(pa.table({"user": ["x99"], "item": [1], "score": [0.5]}), tmp_path / "part-1.csv")
    with pytest.raises(sharedrec.InvalidInput, match=r"string ids in \S*part-1\.csv"):
        ingest.read_long([tmp_path / "part-0.csv", tmp_path / "part-1.csv"])


def test_all_missing_columns_are_reported_at_once_with_the_file_and_its_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "a.parquet", user=[1], product=[2], rating=[0.5])
    with pytest.raises(sharedrec.InvalidInput) as caught:
        ingest.read_long([path], rank_col="rank")
    message = str(caught.value)
    assert (
        "the item column 'item' and the score column 'score' and the rank column 'rank' are not in" in message
    )
    assert str(path) in message and "['user', 'product', 'rating']" in message
    assert "item_col=, score_col=, rank_col=" in message
    # A later file that lacks a column is named, not the first one.
    write(tmp_path / "b.parquet", user=[1], item=[2], score=[0.5])
    c = write(tmp_path / "c.parquet", user=[1], item=[2])
    with pytest.raises(
        sharedrec.InvalidInput, match=re.escape(f"the score column 'score' is not in the input {c}")
    ):
        ingest.read_long([tmp_path / "b.parquet", c])
    with pytest.raises(sharedrec.InvalidInput, match="the vector column 'emb' is not in"):
        ingest.read_vectors([c], vector_col="emb")


def test_missing_values_name_the_file_the_column_and_the_rows(tmp_path: Path) -> None:
    write(tmp_path / "a.parquet", user=[1, 2, 3], item=[1, 2, 3], score=[0.5, 0.4, 0.3])
    b = write(
        tmp_path / "b.parquet",
        user=[1, 2, 3, 4, 5, 6],
        item=[1, 2, 3, 4, 5, 6],
        score=[0.5, None, 0.3, None, 0.1, None],
    )
    with pytest.raises(sharedrec.InvalidInput) as caught:
        ingest.read_long([tmp_path])
    message = str(caught.value)
    assert f"{b}: the score column 'score' has 3 missing values (rows 1, 3, 5" in message
    assert "fill or drop them" in message
    lists = write(
        tmp_path.parent / "lists.parquet",
        user=[1, 2, 3],
        items=[[1], [2, None], [None]],
        scores=[[1.0], [1.0, 0.5], [0.2]],
    )
    with pytest.raises(
        sharedrec.InvalidInput, match=r"the item column 'items' has 2 missing values \(rows 1, 2,"
    ):
        ingest.read_lists([lists])
    users = write(tmp_path.parent / "users.parquet", user=["a", None], item=[1, 2], score=[0.5, 0.5])
    with pytest.raises(
        sharedrec.InvalidInput, match=r"users.parquet: the user column 'user' has 1 missing value \(row 1,"
    ):
        ingest.read_long([users])


def test_wrong_types_and_unequal_lists_name_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "a.parquet", user=[1], item=["sku-1"], score=[1.0])
    with pytest.raises(
        sharedrec.InvalidInput,
        match=re.escape(f"{path}: the item column must hold integers; it holds string"),
    ):
        ingest.read_long([path])
    lists = write(tmp_path / "l.parquet", user=[1, 2], items=[[1, 2], [3]], scores=[[1.0, 0.5], [1.0, 0.1]])
    with pytest.raises(
        sharedrec.InvalidInput,
        match=re.escape(f"{lists}: every list of items needs one score per item; 1 lists do not (row 1,"),
    ):
        ingest.read_lists([lists])
    nan = write(tmp_path / "n.parquet", user=[1, 2], item=[1, 2], score=[1.0, float("nan")])
    with pytest.raises(
        sharedrec.InvalidInput,
        match=re.escape(f"{nan}: the score column holds NaN or infinite values (row 1,"),
    ):
        ingest.read_long([nan])
