"""The single-key lookup of an int key once every chunk is mapped (`Whole.full`): one search
over every key, whole rows indexed by the global row. Every answer is checked against the
published rows, before the path is taken (chunks mapped one by one) and after, at chunk
boundaries, at both ends, outside the keys and the int64 range, with numpy keys, refused key
types, counters, ``k``, defaults, fallbacks, lengths, a damaged key chunk and a new version.
"""

from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from numpy.typing import NDArray

import sharedrec
from sharedrec.errors import CorruptVersion, InvalidInput, KeyNotFound, UnknownCollection
from sharedrec.read.collections import Chained, Partitioned, RankedList, Whole
from sharedrec.read.index import IntIndex
from sharedrec.read.mmap import MappedArray

from conftest import make_ranked

N = 5000
K = 8
CHUNK_BYTES = 4096
"""512 keys and 128 rows of 8 int32 items per chunk: 10 key chunks and 40 row chunks."""


class Published:
    """A collection's published rows by key."""

    def __init__(self, keys: NDArray[np.int64], items: NDArray[Any], scores: NDArray[Any]) -> None:
        self.keys, self.items, self.scores = keys, items, scores
        self.row = {int(key): i for i, key in enumerate(keys.tolist())}
        self.sorted = np.sort(keys)

    def check(self, reader: sharedrec.Reader, key: Any, k: int | None = None) -> None:
        """``key``'s list is exactly its published row (its first ``k`` entries)."""
        got = reader.get("home", key, k)
        row = self.row[int(key)]
        width = K if k is None else min(k, K)
        assert got.items.tolist() == self.items[row, :width].tolist(), key
        assert got.scores.tolist() == self.scores[row, :width].tolist(), key
        assert got.source == "home"
        assert not got.items.flags.writeable and not got.scores.flags.writeable

    def absent(self, count: int = 50) -> list[int]:
        """Keys between stored neighbours, and just outside both ends."""
        below = [int(key) - 1 for key in self.sorted[1:count].tolist() if int(key) - 1 not in self.row]
        return [int(self.sorted[0]) - 1, int(self.sorted[-1]) + 1, *below]


def _publish(root: Path, keys: NDArray[np.int64] | None = None, **options: Any) -> Published:
    data = make_ranked(N, K, seed=5)
    keys = data.keys if keys is None else keys  # type: ignore[assignment]
    assert keys is not None
    store = sharedrec.open(root, create=True)
    store.publish_ranked("home", keys, data.items, data.scores, chunk_bytes=CHUNK_BYTES, guards=[], **options)
    return Published(keys, data.items, data.scores)


def _whole(reader: sharedrec.Reader, name: str = "home") -> Whole:
    col = reader._v.ranked[name]  # noqa: SLF001 - the collection whose lookup path is checked
    assert type(col) is Whole
    return col


def _keys(col: Whole) -> MappedArray:
    assert isinstance(col.index, IntIndex)
    return col.index.array


def _warm(reader: sharedrec.Reader, published: Published) -> None:
    """Look up every key once: every chunk is mapped, and the lookup path is settled."""
    for key in published.keys.tolist():
        published.check(reader, key)
    assert _whole(reader).full is not None, "every chunk is mapped: lookups take the full path"


@pytest.fixture
def published(tmp_path: Path) -> Published:
    keys = make_ranked(N, K, seed=5).keys
    assert isinstance(keys, np.ndarray)
    keys = keys.copy()
    # Negative keys and both ends of the int64 range are keys like any other.
    keys[:4] = [-1, -(2**40), np.iinfo(np.int64).min, np.iinfo(np.int64).max]
    return _publish(tmp_path / "store", keys)


def test_every_key_before_and_after_the_full_path(tmp_path: Path, published: Published) -> None:
    reader = sharedrec.open(tmp_path / "store").reader()
    col = _whole(reader)
    assert col.full is None and col.whole is None and col.pending  # nothing mapped yet
    _warm(reader, published)  # checks every key while the chunks are mapped one by one
    assert col.whole is not None and not col.pending
    for key in published.keys.tolist():
        published.check(reader, key)


def test_chunk_boundaries_and_both_ends(tmp_path: Path, published: Published) -> None:
    reader = sharedrec.open(tmp_path / "store").reader()
    _warm(reader, published)
    col = _whole(reader)
    key_rows = _keys(col).rows_per_chunk
    edges = {0, N - 1}
    for step in (key_rows, col.rows_per_chunk):
        for start in range(step, N, step):
            edges |= {start - 1, start, start + 1}
    for position in sorted(edges):
        published.check(reader, int(published.sorted[position]))
    published.check(reader, int(np.iinfo(np.int64).min))
    published.check(reader, int(np.iinfo(np.int64).max))
    published.check(reader, -1)


def test_absent_keys_and_keys_outside_int64_miss(tmp_path: Path, published: Published) -> None:
    reader = sharedrec.open(tmp_path / "store").reader()
    _warm(reader, published)
    before = reader.stats()
    absent = [*published.absent(), 2**63, -(2**63) - 1, 2**70, -(2**70)]
    for key in absent:
        with pytest.raises(KeyNotFound, match="is not in collection 'home'"):
            reader.get("home", key)
    after = reader.stats()
    assert after.lookups - before.lookups == len(absent)
    assert after.misses - before.misses == len(absent)


def test_a_key_equal_to_the_padding_is_found_only_where_stored(tmp_path: Path) -> None:
    # The last key chunk is written full size: whatever its padding holds past the last key is
    # no key. Small keys make a stored 0 (a common padding) a real key at row 0 only.
    keys = np.arange(N, dtype=np.int64) * 3
    published = _publish(tmp_path / "store", keys)
    reader = sharedrec.open(tmp_path / "store").reader()
    _warm(reader, published)
    array = _keys(_whole(reader))
    whole = array.whole
    assert whole is not None and len(whole) > N  # there is padding past the keys
    for value in set(whole[N:].tolist()):
        if value in published.row:
            published.check(reader, value)
        else:
            with pytest.raises(KeyNotFound):
                reader.get("home", value)
    published.check(reader, 0)
    published.check(reader, int(keys[-1]))
    with pytest.raises(KeyNotFound):
        reader.get("home", int(keys[-1]) + 1)


def test_numpy_keys_find_the_same_rows(tmp_path: Path, published: Published) -> None:
    reader = sharedrec.open(tmp_path / "store").reader()
    _warm(reader, published)
    for key in published.keys[:200]:
        published.check(reader, key)  # np.int64
        published.check(reader, np.int64(key))
    published.check(reader, np.uint64(np.iinfo(np.int64).max))
    with pytest.raises(KeyNotFound):
        reader.get("home", cast(Any, np.uint64(2**64 - 1)))


@pytest.mark.parametrize("key", [True, False, np.bool_(True), 1.0, float(2**40), "12", b"12", None])
def test_other_key_types_are_refused_on_the_full_path(tmp_path: Path, published: Published, key: Any) -> None:
    reader = sharedrec.open(tmp_path / "store").reader()
    _warm(reader, published)
    with pytest.raises(InvalidInput, match="this collection has int64 keys"):
        reader.get("home", key)


def test_k_on_the_full_path(tmp_path: Path, published: Published) -> None:
    reader = sharedrec.open(tmp_path / "store").reader()
    _warm(reader, published)
    for key in published.keys[:50].tolist():
        for k in (0, 1, 3, K, K + 5):
            published.check(reader, key, k)
    key = int(published.keys[0])
    with pytest.raises(InvalidInput, match="k must be a non-negative int"):
        reader.get("home", key, -1)
    with pytest.raises(InvalidInput, match="k must be a non-negative int"):
        reader.get("home", key, True)


def test_counters_on_the_full_path(tmp_path: Path, published: Published) -> None:
    reader = sharedrec.open(tmp_path / "store").reader()
    _warm(reader, published)
    before = reader.stats()
    for key in published.keys[:30].tolist():
        reader.get("home", key)
    with pytest.raises(KeyNotFound):
        reader.get("home", published.absent()[0])
    after = reader.stats()
    assert (after.lookups - before.lookups, after.misses - before.misses) == (31, 1)


def test_default_list_for_a_missing_key_on_the_full_path(tmp_path: Path) -> None:
    default = (np.array([7, 8, 9], np.int32), np.array([0.9, 0.8, 0.7], np.float32))
    published = _publish(tmp_path / "store", default=default)
    reader = sharedrec.open(tmp_path / "store").reader()
    _warm(reader, published)
    absent = published.absent(5)
    for key in absent:
        got = reader.get("home", key)
        assert got.items.tolist() == [7, 8, 9]
        assert got.source == "home/default"
    assert reader.stats().misses == len(absent)


def test_fallback_collection_for_a_missing_key_on_the_full_path(tmp_path: Path) -> None:
    data = make_ranked(N, K, seed=5)
    other = make_ranked(300, K, seed=6)
    store = sharedrec.open(tmp_path / "store", create=True)
    with store.publish(chunk_bytes=CHUNK_BYTES, guards=[]) as draft:
        draft.add_ranked("popular", other.keys, other.items, other.scores)
        draft.add_ranked("home", data.keys, data.items, data.scores, fallbacks=["popular"])
    published = Published(cast(NDArray[np.int64], data.keys), data.items, data.scores)
    reader = store.reader()
    _warm(reader, published)
    got = reader.get("home", published.absent()[0], fallback_keys={"popular": int(other.keys[7])})
    assert got.source == "popular"
    assert got.items.tolist() == other.items[7].tolist()


def test_lists_of_varying_length_take_the_whole_rows_without_full(tmp_path: Path) -> None:
    data = make_ranked(N, K, seed=5)
    lengths = np.random.default_rng(1).integers(0, K + 1, N)
    store = sharedrec.open(tmp_path / "store", create=True)
    store.publish_ranked("home", data.keys, data.items, data.scores, lengths=lengths, chunk_bytes=CHUNK_BYTES)
    reader = store.reader()
    col = _whole(reader)
    if col.lengths is None:
        pytest.skip("the lengths were stored ragged, not padded")
    for _ in range(2):  # the second pass on the whole rows
        for i, key in enumerate(cast(NDArray[np.int64], data.keys).tolist()):
            got = reader.get("home", key)
            assert got.items.tolist() == data.items[i, : lengths[i]].tolist()
            assert got.scores.tolist() == data.scores[i, : lengths[i]].tolist()
    assert col.whole is not None and col.full is None and not col.pending


def test_a_damaged_key_chunk_is_refused_and_the_full_path_never_taken(
    tmp_path: Path, published: Published
) -> None:
    store_root = tmp_path / "store"
    chunks = sorted((store_root / "versions").glob("*/home/keys/c/*"), key=lambda p: int(p.name))
    last = chunks[-1]
    data = bytearray(last.read_bytes())
    data[0] ^= 0x01  # the first key of the last chunk: same size, another key
    last.write_bytes(bytes(data))
    reader = sharedrec.open(store_root).reader()
    col = _whole(reader)
    first_of_last = (len(chunks) - 1) * _keys(col).rows_per_chunk
    for key in published.sorted[:first_of_last].tolist():
        published.check(reader, key)
    for key in published.sorted[first_of_last:][:3].tolist():
        with pytest.raises(CorruptVersion, match=r"has crc32 \w+, the manifest says"):
            reader.get("home", key)
    assert col.full is None  # a chunk not mapped: never one search over every key
    published.check(reader, int(published.sorted[0]))


def test_a_new_version_is_served_after_the_full_path(tmp_path: Path, published: Published) -> None:
    store = sharedrec.open(tmp_path / "store")
    reader = store.reader(refresh_interval=None)
    _warm(reader, published)
    newer = make_ranked(N, K, seed=9)
    store.publish_ranked("home", newer.keys, newer.items, newer.scores, chunk_bytes=CHUNK_BYTES, guards=[])
    assert reader.refresh()
    republished = Published(cast(NDArray[np.int64], newer.keys), newer.items, newer.scores)
    assert _whole(reader).full is None
    _warm(reader, republished)
    gone = next(key for key in published.keys.tolist() if key not in republished.row)
    with pytest.raises(KeyNotFound):
        reader.get("home", gone)


def test_the_list_from_the_full_path_is_a_whole_ranked_list(tmp_path: Path, published: Published) -> None:
    reader = sharedrec.open(tmp_path / "store").reader()
    _warm(reader, published)
    key = int(published.keys[3])
    row = published.row[key]
    for k in (None, 2):
        got = reader.get("home", key, k)
        assert isinstance(got, RankedList)
        copied = pickle.loads(pickle.dumps(got))  # a plain RankedList, with copies of the arrays
        assert type(copied) is RankedList and copy.copy(got).source == copied.source == "home"
        np.testing.assert_array_equal(copied.items, got.items)
        np.testing.assert_array_equal(copied.scores, got.scores)
        width = K if k is None else k
        assert len(got) == width
        assert list(got) == list(
            zip(published.items[row, :width].tolist(), published.scores[row, :width].tolist(), strict=True)
        )
        assert got.head(1).items.tolist() == [published.items[row, 0]]
        assert repr(got).startswith("RankedList(items=array(") and "source='home'" in repr(got)


def _check_twice(
    reader: sharedrec.Reader, published: Published, levels: list[Whole], full: list[Whole]
) -> None:
    """Every key, before and after the row arrays of every level are mapped whole, and once
    ``full`` (the stored collections an int key is searched in) take the short path: then
    absent keys, keys outside int64, numpy keys and keys of other types too."""
    for _ in range(2):
        for key in published.keys.tolist():
            published.check(reader, key)
            published.check(reader, key, 3)
    assert all(level.whole is not None for level in levels)
    assert all(stored.full is not None for stored in full), "every chunk is mapped: the short path is set"
    searched = []
    find = IntIndex.find

    def counted(index: IntIndex, key: object) -> int:
        searched.append(key)
        return find(index, key)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(IntIndex, "find", counted)
        for key in published.keys.tolist():
            published.check(reader, key)
    assert searched == [], "a key present in a whole stored collection takes the short path, not Index.find"
    for key in published.keys.tolist()[:200]:
        published.check(reader, np.int64(key))
        published.check(reader, key, 0)
        published.check(reader, key, K + 5)
    for key in [*published.absent(), 2**63, -(2**63) - 1, 2**70]:
        with pytest.raises(KeyNotFound):
            reader.get("home", key)
    for bad in (True, 1.0, "12", None):
        with pytest.raises(InvalidInput):
            reader.get("home", bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        reader.get("home", int(published.keys[0]), -1)


@pytest.mark.parametrize("hash", ["fibonacci64", "splitmix64"])
def test_partitions_index_their_whole_rows(tmp_path: Path, hash: str) -> None:
    """Partitions split by fibonacci64 (what a publish begun now uses) and by splitmix64 (a
    version written before): a present key is found in its partition without `Index.find`."""
    data = make_ranked(N, K, seed=5)
    keys = cast(NDArray[np.int64], data.keys)
    store = sharedrec.open(tmp_path / "store", create=True)
    handle = store.begin_publish(partitions=4, chunk_bytes=CHUNK_BYTES)
    assert handle.partition_hash == "fibonacci64"
    handle = handle.model_copy(update={"partition_hash": hash})  # as an older sharedrec began it
    owners = handle.partition_of(keys)
    receipts = []
    for part in range(4):
        where = np.flatnonzero(owners == part)
        receipts.append(handle.write_ranked("home", part, keys[where], data.items[where], data.scores[where]))
    version = store.commit_publish(handle, receipts, guards=[])
    manifest = store.manifest(version)
    partitions = manifest.collections["home"].partitions
    assert partitions is not None and partitions.hash == hash
    assert manifest.format == ("sharedrec/4" if hash == "fibonacci64" else "sharedrec/2")
    reader = store.reader()
    col = cast(Partitioned, reader._v.ranked["home"])  # noqa: SLF001 - its partitions are checked
    assert (col.index.spread != 0) == (hash == "fibonacci64")
    parts = [p for p in col.parts if p is not None]
    _check_twice(reader, Published(keys, data.items, data.scores), parts, parts)


def test_a_delta_chain_indexes_the_whole_rows_of_each_level(tmp_path: Path) -> None:
    data = make_ranked(N, K, seed=5)
    keys = cast(NDArray[np.int64], data.keys)
    store = sharedrec.open(tmp_path / "store", create=True)
    store.publish_ranked("home", keys, data.items, data.scores, chunk_bytes=CHUNK_BYTES, guards=[])
    items = data.items.copy()
    items[: N // 2] += 1  # half the lists change: the delta spans several chunks too
    store.publish_ranked("home", keys, items, data.scores, delta=True, chunk_bytes=CHUNK_BYTES, guards=[])
    reader = store.reader()
    chain = cast(Chained, reader._v.ranked["home"]).chain  # noqa: SLF001 - its levels are checked
    _check_twice(reader, Published(keys, items, data.scores), [chain.root, *chain.levels], [chain.root])


def test_a_closed_reader_refuses_after_the_full_path(tmp_path: Path, published: Published) -> None:
    reader = sharedrec.open(tmp_path / "store").reader()
    _warm(reader, published)
    kept = reader.get("home", int(published.keys[0]))
    reader.close()
    with pytest.raises(UnknownCollection, match="closed"):
        reader.get("home", int(published.keys[0]))
    assert kept.items.tolist() == published.items[0].tolist()  # views returned stay valid


def test_rows_mapped_whole_before_the_keys(tmp_path: Path) -> None:
    # One int32 item a row: 1,024 rows a chunk but 512 keys, so the rows are whole first and
    # the full path waits for the last key chunk.
    data = make_ranked(N, 1, seed=5)
    keys = cast(NDArray[np.int64], data.keys)
    store = sharedrec.open(tmp_path / "store", create=True)
    store.publish_ranked("home", keys, data.items, data.scores, chunk_bytes=CHUNK_BYTES, guards=[])
    reader = store.reader()
    col = _whole(reader)
    assert col.rows[0].n_chunks < _keys(col).n_chunks
    order = np.argsort(keys)
    per_chunk = _keys(col).rows_per_chunk
    last_chunk = order[(_keys(col).n_chunks - 1) * per_chunk :]
    for i in order[: len(order) - len(last_chunk)].tolist():  # every key chunk but the last
        assert reader.get("home", int(keys[i])).items.tolist() == data.items[i].tolist()
    assert col.whole is not None and col.full is None  # the rows are whole, the keys not yet
    for i in order.tolist():
        assert reader.get("home", int(keys[i])).items.tolist() == data.items[i].tolist()
    assert col.full is not None
    for i in order.tolist():
        assert reader.get("home", int(keys[i])).items.tolist() == data.items[i].tolist()
