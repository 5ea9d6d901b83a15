"""Batch lookups (`Reader.get_many`) of int keys, on every path a batch can take, checked
against a dict over the published rows: the key blocks found through the in-memory sample of
a key array mapped back to back, the chunk-by-chunk search of one that is not, and the
partitions of a collection mapped into one span (or looked up one by one when they cannot be).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from numpy.typing import NDArray

import sharedrec
from sharedrec.errors import CorruptVersion, InvalidInput
from sharedrec.read.collections import Partitioned, Whole
from sharedrec.read.index import IntIndex

from conftest import make_ranked

K = 4
N = 5000


class Rows:
    """The published rows by key, and what a batch should answer."""

    def __init__(self, keys: NDArray[np.int64], items: NDArray[Any], scores: NDArray[Any]) -> None:
        self.keys, self.items, self.scores = keys, items, scores
        self.row = {int(key): i for i, key in enumerate(keys.tolist())}

    def check(self, reader: sharedrec.Reader, query: Any, k: int | None = None) -> NDArray[np.bool_]:
        items, scores, found = reader.get_many("home", query, k=k)
        width = K if k is None else min(k, K)
        listed = [int(key) for key in query]
        assert items.shape == scores.shape == (len(listed), width)
        want = [key in self.row for key in listed]
        assert found.tolist() == want
        for i, key in enumerate(listed):
            if want[i]:
                assert items[i].tolist() == self.items[self.row[key], :width].tolist(), key
                assert scores[i].tolist() == self.scores[self.row[key], :width].tolist(), key
            else:
                assert (items[i] == -1).all()
                assert np.isnan(scores[i]).all()
        return found


def _publish(store: sharedrec.RecommendationStore, keys: NDArray[np.int64], chunk_bytes: int) -> Rows:
    data = make_ranked(len(keys), K, seed=3)
    store.publish_ranked("home", keys, data.items, data.scores, chunk_bytes=chunk_bytes, guards=[])
    return Rows(keys, data.items, data.scores)


def _index(reader: sharedrec.Reader) -> IntIndex:
    return cast(IntIndex, cast(Whole, reader._v.ranked["home"]).index)


def _unsampled(index: IntIndex) -> int:
    """Key chunks not sampled yet; -2 when the key array is searched chunk by chunk."""
    return index._sorted._unsampled


@pytest.fixture
def blocks_store(store: sharedrec.RecommendationStore) -> tuple[sharedrec.RecommendationStore, Rows]:
    """Keys in 10 chunks of 512, mapped back to back: batches go through the key sample."""
    keys = make_ranked(N, 1, seed=9).keys
    return store, _publish(store, cast(NDArray[np.int64], keys), 4096)


def _batches(rows: Rows, seed: int) -> list[Any]:
    rng = np.random.default_rng(seed)
    keys = rows.keys
    present = keys[rng.integers(0, len(keys), 300)]
    ordered = np.sort(keys)
    return [
        present,  # unsorted
        np.sort(present),
        np.r_[present[:50], present[:50], present[:10]],  # duplicates
        keys,  # every key
        np.r_[present[:40] + 1, present[:40] - 1],  # mostly absent neighbours
        ordered[::512],  # the first key of every chunk (the fences)
        ordered[511::512],  # the last key of every chunk
        np.r_[ordered[0] - 1, ordered[-1] + 1, -(2**63), 2**63 - 1, 0],  # outside the stored range
        present.astype(np.uint64),
        present.tolist(),  # Python ints
        present[:20].astype(object),
    ]


def test_batches_through_the_key_sample(blocks_store: tuple[sharedrec.RecommendationStore, Rows]) -> None:
    store, rows = blocks_store
    with store.reader(lease=False) as reader:
        for batch in _batches(rows, seed=1):
            rows.check(reader, batch)
            rows.check(reader, batch, k=2)
        assert _unsampled(_index(reader)) == 0  # every key chunk sampled: the sample path ran


def test_small_ints_and_empty_and_all_missing(
    blocks_store: tuple[sharedrec.RecommendationStore, Rows],
) -> None:
    store, rows = blocks_store
    with store.reader(lease=False) as reader:
        small = np.array([1, 2, 3, -4], dtype=np.int32)
        assert rows.check(reader, small).tolist() == [False] * 4
        items, scores, found = reader.get_many("home", np.array([], dtype=np.int64))
        assert items.shape == scores.shape == (0, K) and found.shape == (0,)
        assert reader.get_many("home", [])[0].shape == (0, K)
        absent = np.setdiff1d(np.arange(1, 2000, dtype=np.int64), rows.keys)
        assert not rows.check(reader, absent).any()


def test_empty_batch_on_a_fresh_reader(blocks_store: tuple[sharedrec.RecommendationStore, Rows]) -> None:
    """The first batch of a reader is empty: no chunk of the scores is mapped yet, and the
    batch must not need one (it failed an assertion in the copy)."""
    store, _ = blocks_store
    with store.reader(lease=False) as reader:
        items, scores, found = reader.get_many("home", np.array([], dtype=np.int64))
        assert items.shape == scores.shape == (0, K) and found.shape == (0,)


def test_uint64_beyond_int64_matches_nothing(
    blocks_store: tuple[sharedrec.RecommendationStore, Rows],
) -> None:
    """A value outside int64 was never stored: no row, whatever it wraps to."""
    store, rows = blocks_store
    key = int(rows.keys[7])
    with store.reader(lease=False) as reader:
        wrapped = np.array([key + 2**64 - 2**64, 2**64 - 1, 2**63], dtype=np.uint64)
        _, _, found = reader.get_many("home", wrapped)
        assert found.tolist() == [True, False, False]
        _, _, found = reader.get_many("home", [key, key + 2**64, -(2**63) - 1])
        assert found.tolist() == [True, False, False]


def test_keys_of_other_types_are_refused(blocks_store: tuple[sharedrec.RecommendationStore, Rows]) -> None:
    store, rows = blocks_store
    with store.reader(lease=False) as reader:
        for bad in (["a"], [1.5], np.array([1.0, 2.0]), [True], np.array([True]), "12"):
            with pytest.raises(InvalidInput, match="int"):
                reader.get_many("home", bad)
        with pytest.raises(InvalidInput, match="1-D"):
            reader.get_many("home", rows.keys[:4].reshape(2, 2))


def test_sample_taken_chunk_by_chunk(blocks_store: tuple[sharedrec.RecommendationStore, Rows]) -> None:
    """A batch samples only the key chunks it needs; keys of other chunks (whose sample still
    holds the chunk's first key) are found by later batches."""
    store, rows = blocks_store
    ordered = np.sort(rows.keys)
    with store.reader(lease=False) as reader:
        rows.check(reader, ordered[1024:1100])  # chunk 2 only
        assert _unsampled(_index(reader)) == 9
        rows.check(reader, np.r_[ordered[4000:4010], ordered[1500:1510] + 1, ordered[600:610]])
        assert 0 < _unsampled(_index(reader)) < 9
        rows.check(reader, ordered[::7])
        assert _unsampled(_index(reader)) == 0


def test_batches_in_threads_while_the_sample_is_taken(
    blocks_store: tuple[sharedrec.RecommendationStore, Rows],
) -> None:
    """Threads sampling chunks at the same time never miss a key that is there."""
    store, rows = blocks_store
    failures: list[BaseException] = []
    with store.reader(lease=False) as reader:
        start = threading.Barrier(4)

        def work(seed: int) -> None:
            try:
                start.wait()
                for batch in _batches(rows, seed)[:5]:
                    rows.check(reader, batch)
            except BaseException as exc:  # reported by the main thread
                failures.append(exc)

        threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not failures, failures[0]


def test_key_chunks_not_back_to_back_are_searched_chunk_by_chunk(
    store: sharedrec.RecommendationStore,
) -> None:
    """Chunk files that are not whole pages are mapped one by one: no sample, same answers."""
    rows = _publish(store, cast(NDArray[np.int64], make_ranked(700, 1, seed=4).keys), 1032)
    with store.reader(lease=False) as reader:
        for batch in _batches(rows, seed=2):
            rows.check(reader, batch)
        assert _unsampled(_index(reader)) == -2


@pytest.mark.parametrize("n", [16 * 30, 16 * 30 + 5])
def test_one_key_chunk(store: sharedrec.RecommendationStore, n: int) -> None:
    """A key array of one chunk: read as blocks (copied into whole blocks when its rows do not
    fill them)."""
    rows = _publish(store, cast(NDArray[np.int64], make_ranked(n, 1, seed=6).keys), 1 << 20)
    with store.reader(lease=False) as reader:
        for batch in _batches(rows, seed=3):
            rows.check(reader, batch)
        assert _unsampled(_index(reader)) == 0


def test_padding_of_the_last_chunk_is_no_key(store: sharedrec.RecommendationStore) -> None:
    """The last key chunk is written full size: its padding past the last key (the array's
    fill value, -1) lies in the last block searched, and must never match a key that was not
    published."""
    keys = -np.arange(1, 1030, dtype=np.int64)[::-1] * 3 - 2  # 1,029 keys up to -5: 3 chunks of 512
    rows = _publish(store, keys, 4096)
    with store.reader(lease=False) as reader:
        assert rows.check(reader, [-1, 0, int(keys[-1]), 1]).tolist() == [False, False, True, False]
        assert _unsampled(_index(reader)) >= 0


def test_padding_equal_to_the_last_key(store: sharedrec.RecommendationStore) -> None:
    """The padding (-1) repeats the last key, -1, in the last block: the key is still found,
    at its own row (the padding's match used to overwrite it, then was dropped)."""
    keys = -np.arange(1, 1030, dtype=np.int64)[::-1]  # -1029 .. -1
    rows = _publish(store, keys, 4096)
    with store.reader(lease=False) as reader:
        assert rows.check(reader, [-1, -2, int(keys[0]), 0]).tolist() == [True, True, True, False]
        assert _unsampled(_index(reader)) >= 0


def test_corrupt_key_chunk_in_a_batch(blocks_store: tuple[sharedrec.RecommendationStore, Rows]) -> None:
    store, rows = blocks_store
    version = store.current()
    assert version is not None
    chunk = Path(store.location) / "versions" / version / "home" / "keys" / "c" / "3"
    data = bytearray(chunk.read_bytes())
    data[100] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with store.reader(lease=False) as reader:
        rows.check(reader, np.sort(rows.keys)[:100])  # chunk 0: still served
        with pytest.raises(CorruptVersion, match="c/3"):
            reader.get_many("home", np.sort(rows.keys)[1536:1600])


# -- partitions ---------------------------------------------------------------------------


def _publish_parts(
    store: sharedrec.RecommendationStore, n: int, *, empty: int | None = None, seed: int = 0
) -> Rows:
    data = make_ranked(n, K, seed=seed)
    keys, items, scores = cast(NDArray[np.int64], data.keys), data.items, data.scores
    handle = store.begin_publish(partitions=8, chunk_bytes=4096)
    owners = handle.partition_of(keys)
    if empty is not None:  # no key in that partition
        keep = owners != empty
        keys, owners, items, scores = keys[keep], owners[keep], items[keep], scores[keep]
    receipts = []
    for part in range(8):
        where = np.flatnonzero(owners == part)
        receipts.append(handle.write_ranked("home", part, keys[where], items[where], scores[where]))
    store.commit_publish(handle, receipts, guards=[])
    return Rows(keys, items, scores)


def _collection(reader: sharedrec.Reader) -> Partitioned:
    return cast(Partitioned, reader._v.ranked["home"])


def test_partitions_in_one_span(store: sharedrec.RecommendationStore) -> None:
    """About 1,000 keys a partition: rows in 4 chunks, keys in 2; one span per row array."""
    rows = _publish_parts(store, 8000)
    with store.reader(lease=False) as reader:
        collection = _collection(reader)
        assert collection.joints is not None
        assert collection.key_joint is not None
        owners = sharedrec.partition_of(rows.keys, 8)
        rows.check(reader, rows.keys[owners == 2][:50])  # one partition: searched on its own
        assert not collection.keys_sampled
        for batch in _batches(rows, seed=4):
            rows.check(reader, batch)
            rows.check(reader, batch, k=3)
        assert collection.keys_sampled  # every key chunk sampled: the span searched the rest
        rows.check(reader, [int(rows.keys[0]), 2**64 - 1, -(2**63) - 5])
        rows.check(reader, [2**64 - 1])
        assert reader.get_many("home", np.array([], dtype=np.int64))[0].shape == (0, K)
        # a single-key get reads the same rows through the span
        key = int(rows.keys[123])
        assert reader.get("home", key).items.tolist() == rows.items[123].tolist()


def test_partitions_with_one_key_chunk_each(store: sharedrec.RecommendationStore) -> None:
    """About 400 keys a partition: rows in 2 chunks (one span), keys in one chunk each, most
    of them not a whole number of blocks (copied into blocks), searched partition by partition."""
    rows = _publish_parts(store, 3200, seed=1)
    with store.reader(lease=False) as reader:
        assert _collection(reader).joints is not None
        assert _collection(reader).key_joint is None  # one key chunk each: not back to back
        for batch in _batches(rows, seed=5):
            rows.check(reader, batch)
        parts = [part for part in _collection(reader).parts if part is not None]
        assert {_unsampled(cast(IntIndex, part.index)) for part in parts} == {0}


def test_partitions_with_an_empty_one(store: sharedrec.RecommendationStore) -> None:
    rows = _publish_parts(store, 8000, empty=3, seed=2)
    with store.reader(lease=False) as reader:
        collection = _collection(reader)
        assert collection.parts[3] is None
        assert collection.joints is not None
        for batch in _batches(rows, seed=6):
            rows.check(reader, batch)
        assert collection.keys_sampled
        # keys whose partition (the empty one) holds none, in a batch with keys it holds
        others = np.arange(-(10**6), 10**6, 997, dtype=np.int64)
        unheld = others[sharedrec.partition_of(others, 8) == 3]
        assert not rows.check(reader, np.r_[unheld, rows.keys[:5]])[: len(unheld)].any()


def test_small_partitions_share_a_span_too(store: sharedrec.RecommendationStore) -> None:
    """About 50 keys a partition: each partition's rows are one chunk of whole pages, which
    a reader maps into the span of all partitions as it would several."""
    rows = _publish_parts(store, 400, seed=3)
    with store.reader(lease=False) as reader:
        collection = _collection(reader)
        assert collection.joints is not None
        assert all(part is None or part.rows[0].n_chunks == 1 for part in collection.parts)
        for batch in _batches(rows, seed=7):
            rows.check(reader, batch)


def test_partitions_of_chunks_that_are_not_whole_pages_are_looked_up_one_by_one(
    store: sharedrec.RecommendationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Partitions of one chunk file that is not a whole number of pages (as an older
    sharedrec wrote them) cannot share a span: each is looked up on its own."""
    from sharedrec.write.arrays import write_ranked_rows

    def older(*args: Any, **kwargs: Any) -> Any:
        return write_ranked_rows(*args, **{**kwargs, "joined": False})

    monkeypatch.setattr("sharedrec.write.distributed.write_ranked_rows", older)
    rows = _publish_parts(store, 400, seed=3)
    with store.reader(lease=False) as reader:
        assert _collection(reader).joints is None
        for batch in _batches(rows, seed=7):
            rows.check(reader, batch)
