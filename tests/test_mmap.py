"""Chunk mapping: page-aligned chunks mapped back to back, and the per-chunk fallback."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from numpy.typing import NDArray

import sharedrec
from sharedrec.format.layout import HUGE_PAGE_CHUNK_MAX_BYTES
from sharedrec.read.collections import Partitioned, Whole
from sharedrec.write.arrays import chunk_rows

from conftest import RankedData, make_ranked


@pytest.mark.parametrize(
    ("row_bytes", "n_rows"),
    [
        (400, 10**6),
        ([400, 400], 10**6),
        ([800, 400], 10**6),
        (8, 10**6),
        (1, 10**8),
        (36, 10**6),
        (256, 10**5),
    ],
)
def test_chunks_of_several_are_whole_pages(row_bytes: int | list[int], n_rows: int) -> None:
    rows = chunk_rows(row_bytes, n_rows, 4 << 20)
    sizes = [row_bytes] if isinstance(row_bytes, int) else row_bytes
    assert 1 <= rows < n_rows
    for size in sizes:
        assert rows * size % 4096 == 0, (rows, size)
        assert rows * size <= 4 << 20
    assert rows * max(sizes) > (4 << 20) * 0.9  # rounding costs less than a tenth of the target


def test_chunk_rows_leaves_single_chunks_and_huge_rows_alone() -> None:
    assert chunk_rows(400, 1000, 4 << 20) == 1000  # one chunk: nothing to align
    assert chunk_rows(3 << 20, 10, 4 << 20) == 1  # one row per chunk cannot be page-aligned
    assert chunk_rows(36, 10**5, 4096) == 113  # alignment would need 1024 rows: not forced


@pytest.mark.parametrize(
    ("row_bytes", "chunk_bytes", "rows"),
    [
        (400, 64 << 20, 131072),  # 50 MiB: the largest whole number of 2 MiB pages under 64 MiB
        ([400, 400], 64 << 20, 131072),
        ([512, 256], 4 << 20, 8192),
        (512, 4 << 20, 8192),  # a power-of-two row: the default chunks are 2 MiB pages already
        (400, 4 << 20, 10240),  # 2 MiB pages would need 50 MiB chunks: whole 4 KiB pages instead
    ],
)
def test_chunks_are_whole_huge_pages_when_they_hold_enough_rows(
    row_bytes: int | list[int], chunk_bytes: int, rows: int
) -> None:
    assert chunk_rows(row_bytes, 10**8, chunk_bytes) == rows


@pytest.mark.parametrize(
    ("row_bytes", "n_rows", "rows"),
    [
        (400, 10**6, 131072),  # 50 MiB chunks: 8, the last one padded by 4.9% of the rows
        ([400, 400], 2 * 10**6, 131072),
        (400, 150_000, 150_000),  # 60 MB fit in one chunk of at most 64 MiB
        (400, 300_000, 10240),  # 3 chunks of 50 MiB would pad by 31%: the default chunks
        (512, 10**6, 8192),  # the default 4 MiB chunks are whole 2 MiB pages already
        (400, 5000, 5000),  # one chunk at the target size already
    ],
)
def test_file_system_stores_chunk_large_rows_in_whole_huge_pages(
    row_bytes: int | list[int], n_rows: int, rows: int
) -> None:
    assert chunk_rows(row_bytes, n_rows, 4 << 20, huge_up_to=64 << 20) == rows


def test_a_file_system_store_takes_huge_page_chunks_only_with_the_default_size(tmp_path: Path) -> None:
    """Rows of 12 bytes: the default 4 MiB chunks are not whole 2 MiB pages (that takes
    6 MiB), so a local store writes the 600,000 rows as one chunk of 7.2 MB; a chosen
    ``chunk_bytes``, even 4 MiB, is kept as it is (an object store's default is too, see
    `test_s3.py`)."""
    n = 600_000
    keys = np.arange(n, dtype=np.int64) * 3
    items = np.tile(np.arange(3, dtype=np.int32), (n, 1))
    scores = np.tile(np.array([0.3, 0.2, 0.1], dtype=np.float32), (n, 1))
    chunks = {}
    for name in ("default", "chosen"):
        store = sharedrec.open(tmp_path / name, create=True)
        if name == "default":
            version = store.publish_ranked("home", keys, items, scores, guards=[], progress=False)
        else:
            version = store.publish_ranked(
                "home", keys, items, scores, guards=[], progress=False, chunk_bytes=4 << 20
            )
        spec = store.manifest(version).collections["home"].arrays["items"]
        chunks[name] = spec.shape[0] // spec.chunks[0] + bool(spec.shape[0] % spec.chunks[0])
        with store.reader() as reader:
            assert reader.get("home", int(keys[-1])).items.tolist() == [0, 1, 2]
    assert chunks == {"default": 1, "chosen": 2}


def _wide_rows(n: int, seed: int) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.float32]]:
    """``n`` random keys and lists of 128 int32 items and float32 scores: rows of 512 bytes."""
    rng = np.random.default_rng(seed)
    keys = rng.choice(2**40, n, replace=False).astype(np.int64)
    items = rng.integers(0, 1000, (n, 128), dtype=np.int32)
    scores = np.sort(rng.random((n, 128), dtype=np.float32), axis=1)[:, ::-1].copy()
    return keys, items, scores


def _every_chunk_mapped(reader: sharedrec.Reader, keys: NDArray[np.int64]) -> object:
    """Look every key of ``home`` up once, so that every chunk is mapped; its collection."""
    for key in keys.tolist():
        reader.get("home", key)
    return reader._v.ranked["home"]


def _assert_on_huge_page_boundaries(views: tuple[NDArray[Any], ...]) -> None:
    for view in views:
        assert view.ctypes.data % (2 << 20) == 0


@pytest.mark.skipif(
    sys.platform not in ("linux", "darwin"), reason="chunks are mapped back to back on POSIX only"
)
def test_chunks_of_whole_huge_pages_are_mapped_on_huge_page_boundaries(tmp_path: Path) -> None:
    """A span of chunk files starts on a 2 MiB boundary, so chunks of whole 2 MiB pages do."""
    n = 20_000  # rows of 512 bytes: 4,096 a 2 MiB chunk, 5 chunks
    keys, items, scores = _wide_rows(n, seed=3)
    store = sharedrec.open(tmp_path / "store", create=True)
    store.publish_ranked("home", keys, items, scores, chunk_bytes=2 << 20, guards=[], progress=False)
    with store.reader() as reader:
        col = _every_chunk_mapped(reader, keys)
        assert isinstance(col, Whole) and col.whole is not None
        _assert_on_huge_page_boundaries(col.whole)
        for chunk in range(col.rows[0].n_chunks):
            assert col.rows[0].chunk(chunk).ctypes.data % (2 << 20) == 0
        row = int(np.flatnonzero(keys == keys[7])[0])
        np.testing.assert_array_equal(reader.get("home", int(keys[7])).items, items[row])


@pytest.mark.skipif(
    sys.platform not in ("linux", "darwin"), reason="chunks are mapped back to back on POSIX only"
)
def test_partitions_start_on_huge_page_boundaries_in_their_span(tmp_path: Path) -> None:
    """A partitioned publish on a file system chunks its rows as a single-process one does,
    and a reader maps every partition of 2 MiB or more from a 2 MiB boundary of the span a
    batch gathers from (the rows between two partitions are never mapped), so that each can
    be mapped with huge pages as a lone collection is."""
    n = 24_000  # rows of 512 bytes: about 6,000 rows (3 MB) a partition
    keys, items, scores = _wide_rows(n, seed=4)
    store = sharedrec.open(tmp_path / "store", create=True)
    chosen = store.begin_publish(partitions=4, chunk_bytes=4 << 20)
    assert chosen.huge_up_to is None  # a chunk size given is kept, as by a single-process publish
    store.abort_publish(chosen)
    handle = store.begin_publish(partitions=4)
    assert handle.huge_up_to == HUGE_PAGE_CHUNK_MAX_BYTES
    owners = handle.partition_of(keys)
    receipts = []
    for part in range(4):
        where = np.flatnonzero(owners == part)
        receipts.append(handle.write_ranked("home", part, keys[where], items[where], scores[where]))
    version = store.commit_publish(handle, receipts, guards=[])
    partitions = store.manifest(version).collections["home"].partitions
    assert partitions is not None
    for stored in partitions.parts:  # one chunk each, of whole pages: it can join the others' span
        spec = stored.arrays["items"]
        assert spec.chunks[0] >= stored.count and spec.chunks[0] * 512 % 4096 == 0
    with store.reader() as reader:
        col = _every_chunk_mapped(reader, keys)
        assert isinstance(col, Partitioned) and col.joints is not None
        for held in col.parts:
            assert held is not None and held.whole is not None and held.full is not None
            _assert_on_huge_page_boundaries(held.whole)
        for joint in col.joints:
            assert joint.starts[:4] == col.starts[:4].tolist()  # every array of a partition alike
        got, _, found = reader.get_many("home", keys)
        assert found.all()
        np.testing.assert_array_equal(got, items)
        for row in (0, 1, n // 2, n - 1):
            np.testing.assert_array_equal(reader.get("home", int(keys[row])).items, items[row])


def _publish(tmp_path: Path, data: RankedData, chunk_bytes: int) -> sharedrec.RecommendationStore:
    store = sharedrec.open(tmp_path / "store", create=True)
    with store.publish(chunk_bytes=chunk_bytes) as draft:
        draft.add_ranked("home", data.keys, data.items, data.scores, default=([1, 2], [0.5, 0.4]))
        draft.add_vectors("emb", data.keys, data.scores)
    return store


@pytest.mark.parametrize(
    ("chunk_bytes", "contiguous"),
    [(8192, True), (2048, False)],  # 32 bytes a row: 256 rows (aligned); 64 rows, 2 KiB (not)
    ids=["back-to-back", "per-chunk"],
)
def test_both_mappings_answer_alike(tmp_path: Path, chunk_bytes: int, contiguous: bool) -> None:
    data = make_ranked(3000, 8, seed=5)
    store = _publish(tmp_path, data, chunk_bytes)
    with store.reader(lease=False) as reader:
        items_array = cast(Whole, reader._v.ranked["home"]).items
        assert items_array.n_chunks > 5
        assert (items_array._mapped is not None) == contiguous
        rng = np.random.default_rng(0)
        rows = rng.integers(0, 3000, size=500)
        asked = np.concatenate([data.keys[rows], [-5, 123]])  # two absent keys
        items, scores, found = reader.get_many("home", asked, k=6)
        np.testing.assert_array_equal(found, [True] * 500 + [False, False])
        np.testing.assert_array_equal(items[:500], data.items[rows, :6])
        np.testing.assert_array_equal(scores[:500], data.scores[rows, :6])
        np.testing.assert_array_equal(items[500:, :2], [[1, 2], [1, 2]])
        vectors, found = reader.vectors("emb", asked)
        np.testing.assert_array_equal(vectors[:500], data.scores[rows])
        assert np.isnan(vectors[500:]).all()
        for row in rows[:50].tolist():
            np.testing.assert_array_equal(reader.get("home", int(data.keys[row])).items, data.items[row])


def test_back_to_back_maps_only_the_chunks_asked_for(tmp_path: Path) -> None:
    data = make_ranked(3000, 8, seed=6)
    store = _publish(tmp_path, data, 8192)
    with store.reader(lease=False) as reader:
        items = cast(Whole, reader._v.ranked["home"]).items
        assert items._mapped is not None and not items._mapped.any()
        order = np.argsort(data.keys)
        first_chunk_rows = order[: items.rows_per_chunk]  # input rows stored in chunk 0
        reader.get_many("home", data.keys[first_chunk_rows[:10]])
        assert items._mapped.tolist() == [True] + [False] * (items.n_chunks - 1)
        reader.get_many("home", data.keys)
        assert items._mapped.all()


def test_back_to_back_under_concurrent_first_use(tmp_path: Path) -> None:
    data = make_ranked(4000, 8, seed=7)
    store = _publish(tmp_path, data, 8192)
    reader = store.reader(lease=False)
    errors: list[str] = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(30):
            rows = rng.integers(0, 4000, size=64)
            items, _, found = reader.get_many("home", data.keys[rows])
            if not found.all() or not np.array_equal(items, data.items[rows]):
                errors.append(f"wrong rows for seed {seed}")

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    reader.close()
    assert errors == []


def test_views_outlive_the_reader(tmp_path: Path) -> None:
    """A list returned before close stays readable: the mapping goes with its last view.

    Runs in a child process, where a mapping released too early would crash the child,
    not the test session.
    """
    data = make_ranked(3000, 8, seed=8)
    _publish(tmp_path, data, 8192)
    key = int(data.keys[1234])
    script = (
        "import gc, json, sys, numpy as np, sharedrec\n"
        f"reader = sharedrec.open({str(tmp_path / 'store')!r}, create=False).reader(lease=False)\n"
        "assert reader._v.ranked['home'].items._mapped is not None\n"
        f"recs = reader.get('home', {key})\n"
        f"batch = reader.get_many('home', np.array([{key}]))[0]\n"
        "reader.close(); del reader; gc.collect()\n"
        "print(json.dumps([recs.items.tolist(), batch[0].tolist()]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    single, batch = json.loads(done.stdout)
    assert single == batch == data.items[1234].tolist()


def test_the_cache_never_evicts_the_file_it_just_fetched(tmp_path: Path) -> None:
    import zlib

    from sharedrec.read.cache import ChunkCache

    cache = ChunkCache(tmp_path / "cache", "s3://bucket/recs", max_bytes=100)  # smaller than a chunk
    data = [bytes([n]) * 300 for n in range(3)]
    for n, blob in enumerate(data):

        def download(blob: bytes = blob) -> bytes:
            return blob

        path = cache.fetch("v1", f"home/items/c/{n}/0", len(blob), zlib.crc32(blob), download)
        assert Path(path).read_bytes() == blob  # still there for the reader to map
    files = [path for path in (tmp_path / "cache").rglob("*") if path.is_file()]
    assert [path.parent.name for path in files] == ["2"]  # the older files were evicted
