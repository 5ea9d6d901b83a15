"""Key -> row lookup over memory-mapped sorted arrays.

Rows of a collection are stored in key order, so finding a key is a binary search over the
mapped key array: no dict is built at open, and nothing is read until a key is looked up.

* int64 keys: ``keys`` holds the keys sorted ascending.
* str keys: ``key_hash`` holds a 64-bit hash of each key's UTF-8 bytes, sorted ascending;
  ``key_spans`` (start, stop) and ``key_bytes`` hold the key bytes themselves. A lookup
  compares every row whose hash matches against the stored bytes, so a hash collision can
  never return another key's data. The manifest names the hash (``key_hash``): xxh3-64 for
  collections written now, blake2b-64 for those written before (both are read).

When the key array spans several chunks, the manifest lists the first key (or hash) of
every chunk (``key_fences``) and a lookup searches those first, then one chunk.
"""

from __future__ import annotations

import itertools
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from sharedrec.format.keys import INT64_MAX, INT64_MIN, int_key, int_keys, str_key, str_keys
from sharedrec.format.layout import PARTITION_HASHES
from sharedrec.read.mmap import MappedArray, renew_lock_after_fork

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "DEFAULT_INT_PARTITION_HASH",
    "DEFAULT_KEY_HASH",
    "FIBONACCI",
    "INT_PARTITION_HASHES",
    "KEY_BLOCK",
    "KEY_HASHES",
    "PARTITION_STR_HASH",
    "IntIndex",
    "PartitionedIndex",
    "StrIndex",
    "decode_keys",
    "encode_keys",
    "fibonacci64",
    "hash_keys",
    "key_hash_function",
    "partitions_of",
    "rows_in_blocks",
    "splitmix64",
]


_BLAKE2B: Any = None


def _blake2b_64(data: bytes) -> int:
    """The first 8 bytes of blake2b(data) as a little-endian unsigned integer."""
    global _BLAKE2B
    if _BLAKE2B is None:  # imported on first use: int-keyed readers never need it
        try:  # the module hashlib wraps; hashlib itself loads OpenSSL, ten times the import time
            from _blake2 import blake2b
        except ImportError:  # pragma: no cover - an interpreter without the module
            from hashlib import blake2b
        _BLAKE2B = blake2b
    return int.from_bytes(_BLAKE2B(data, digest_size=8).digest(), "little")


def _xxh3_function() -> Callable[[bytes], int]:
    from xxhash import xxh3_64_intdigest  # imported on first use: about 0.7 ms

    return xxh3_64_intdigest


def _xxh3_64(data: bytes) -> int:
    """XXH3-64 of ``data`` with seed 0, as an unsigned integer."""
    return _xxh3_function()(data)


KEY_HASHES: dict[str, Callable[[bytes], int]] = {"blake2b-64": _blake2b_64, "xxh3-64": _xxh3_64}
"""Hash functions for string keys, by the name recorded in the manifest."""

DEFAULT_KEY_HASH = "xxh3-64"
"""The hash new collections use; collections written with another still open (``key_hash``)."""

PARTITION_STR_HASH = PARTITION_HASHES["str"][0]
"""The hash that assigns str keys to partitions (part of the format: writers route by it)."""


def key_hash_function(name: str) -> Callable[[bytes], int]:
    """The function behind the key hash ``name`` of `KEY_HASHES`: for xxh3-64 the compiled one
    itself, with no Python wrapper to call on every lookup."""
    function = KEY_HASHES[name]
    return _xxh3_function() if function is _xxh3_64 else function


def encode_keys(keys: Sequence[bytes]) -> tuple[NDArray[np.int64], NDArray[np.uint8]]:
    """UTF-8 keys as stored: ``(start, stop)`` spans into one byte array (a NUL when empty)."""
    sizes = np.fromiter((len(key) for key in keys), dtype=np.int64, count=len(keys))
    stops = np.cumsum(sizes)
    spans = np.stack([stops - sizes, stops], axis=1)
    return spans, np.frombuffer(b"".join(keys) or b"\0", dtype=np.uint8)


def decode_keys(spans: MappedArray, key_bytes: MappedArray, n: int) -> list[str]:
    """The first ``n`` keys stored by `encode_keys()`, read from mapped arrays."""
    if not n:
        return []
    pairs = np.concatenate([spans.chunk(c) for c in range(spans.n_chunks)])[:n]
    blob = key_bytes.span(0, int(pairs[:, 1].max())).tobytes()
    return [blob[start:stop].decode() for start, stop in pairs.tolist()]


def hash_keys(keys: Sequence[bytes], name: str) -> NDArray[np.uint64]:
    """Hash encoded keys with the named function (publishing and batch lookups)."""
    return np.fromiter(map(key_hash_function(name), keys), dtype=np.uint64, count=len(keys))


KEY_BLOCK = 16
"""Keys per block of a batch lookup: one key in 16 is kept in memory, the sample."""
_BLOCK = KEY_BLOCK
_BLOCK_SHIFT = _BLOCK.bit_length() - 1
_UNSAMPLED = -2


class _Sorted:
    """Binary search over a sorted 1-D mapped array split into chunks.

    A batch of exact lookups (`find_sorted`) searches a sample of the array held in
    memory, every `_BLOCK`-th value, for each value's block, then compares the block's
    values with it, the whole batch at once: where a binary search over the mapped array
    takes a dependent cache miss per step, this takes one read of a block per value. The
    sample of a chunk is taken when a batch first needs it (the chunk is mapped and
    checked then, as for any lookup); until then its entries hold the chunk's fence.
    """

    __slots__ = (
        "__weakref__",
        "_array",
        "_blocks",
        "_fences",
        "_lock",
        "_n",
        "_rpc",
        "_sample",
        "_sampled",
        "_unsampled",
        "_views",
    )

    def __init__(self, array: MappedArray, fences: list[int]) -> None:
        self._array = array
        self._n = array.n_rows
        self._rpc = array.rows_per_chunk
        self._fences = fences if len(fences) > 1 else None
        self._views: list[NDArray[np.generic] | None] = [None] * array.n_chunks
        self._blocks: NDArray[np.generic] | None = None
        self._sample: NDArray[np.generic] | None = None
        self._sampled: list[bool] = []
        self._unsampled = -1
        """Chunks whose sample is not taken yet; -1 before the first batch, `_UNSAMPLED` when
        the array cannot be read as blocks."""
        self._lock = threading.Lock()

    def renew_lock(self) -> None:
        """A new lock, in a forked child (see `renew_lock_after_fork`)."""
        self._lock = threading.Lock()

    @property
    def array(self) -> MappedArray:
        """The mapped array searched."""
        return self._array

    @property
    def sampled(self) -> bool:
        """Whether every chunk is sampled (and so mapped)."""
        return self._unsampled == 0

    def _valid(self, chunk: int) -> NDArray[np.generic]:
        view = self._views[chunk]
        if view is None:
            # The last chunk file is written full size; rows past the end are padding.
            valid = min(self._rpc, self._n - chunk * self._rpc)
            view = self._views[chunk] = self._array.chunk(chunk)[:valid]
        return view

    def find(self, value: Any) -> int:
        """The global row holding ``value`` in an array of unique values, or -1."""
        if self._fences is None:
            chunk = 0
        else:
            chunk = bisect_right(self._fences, value) - 1
            if chunk < 0:
                return -1
        view = self._valid(chunk)
        position = int(view.searchsorted(value))
        if position < len(view) and view[position] == value:
            return chunk * self._rpc + position
        return -1

    def lower_bound(self, value: Any) -> int:
        """The first global row whose value is >= ``value`` (``n`` if none)."""
        if self._fences is None:
            return int(self._valid(0).searchsorted(value))
        # The last chunk starting below ``value``: a run of equal values may begin in its tail.
        chunk = bisect_left(self._fences, value) - 1
        if chunk < 0:
            return 0
        position = int(self._valid(chunk).searchsorted(value))
        return chunk * self._rpc + position

    def lower_bounds(self, values: NDArray[np.generic]) -> NDArray[np.intp]:
        """Vectorised `lower_bound()`."""
        if len(values) > 64:
            # Searching in sorted order walks the mapped pages in order: far fewer cache misses,
            # and the values of each chunk are one slice.
            order = np.argsort(values)
            out = np.empty(len(values), dtype=np.intp)
            out[order] = self._sorted_lower_bounds(values[order])
            return out
        return self._lower_bounds(values)

    def _sorted_lower_bounds(self, values: NDArray[np.generic]) -> NDArray[np.intp]:
        """`lower_bounds()` of ascending ``values``."""
        if self._fences is None:
            return self._valid(0).searchsorted(values)
        # Chunk c takes the values in (fence c, fence c+1]; chunk 0 also those below fence 1.
        fences = np.asarray(self._fences[1:], dtype=values.dtype)
        bounds = [0, *np.searchsorted(values, fences, "right").tolist(), len(values)]
        out = np.empty(len(values), dtype=np.intp)
        for chunk, (start, stop) in enumerate(itertools.pairwise(bounds)):
            if stop > start:
                out[start:stop] = self._valid(chunk).searchsorted(values[start:stop])
                out[start:stop] += chunk * self._rpc
        return out

    def _lower_bounds(self, values: NDArray[np.generic]) -> NDArray[np.intp]:
        if self._fences is None:
            return self._valid(0).searchsorted(values)
        chunks = np.searchsorted(np.asarray(self._fences, dtype=values.dtype), values, "left")
        chunks = np.maximum(chunks - 1, 0)
        out = np.empty(len(values), dtype=np.intp)
        for chunk in np.flatnonzero(np.bincount(chunks)).tolist():  # np.unique imports numpy.ma
            where = np.flatnonzero(chunks == chunk)
            out[where] = chunk * self._rpc + self._valid(chunk).searchsorted(values[where])
        return out

    def find_sorted(self, values: NDArray[np.generic]) -> NDArray[np.intp]:
        """The global rows holding ascending ``values`` in an array of unique values (-1 where
        absent): a row is returned only where the stored value equals the one asked for."""
        searched = self.blocks_of(values)
        if searched is None:  # chunks not mapped back to back: search chunk by chunk
            rows = self._sorted_lower_bounds(values)
            inside = rows < self._n
            hit = np.zeros(len(values), dtype=bool)
            hit[inside] = self.values(rows[inside]) == values[inside]
            return np.where(hit, rows, -1)
        blocks, block = searched
        return rows_in_blocks(blocks.take(block, axis=0), block, values, self._n)

    def blocks_of(self, values: NDArray[np.generic]) -> tuple[NDArray[np.generic], NDArray[np.intp]] | None:
        """``(blocks, block)``: the array as rows of `_BLOCK` values (``blocks[b]`` holds rows
        ``b * _BLOCK`` on) and the block each of ``values`` would be in, whose chunks are
        mapped; or None when the chunks are not mapped back to back.

        Ascending ``values`` are searched fastest (the sample is read in order).
        """
        if self._unsampled == 0:  # every chunk sampled: the sample no longer changes
            assert self._sample is not None
            assert self._blocks is not None
            return self._blocks, self._sample[1:].searchsorted(values, "right")
        blocks = self._start_blocks() if self._unsampled != _UNSAMPLED else None
        if blocks is None:
            return None
        return blocks, self._block_of(values)

    def sampled_blocks(self, values: NDArray[np.generic]) -> NDArray[np.intp] | None:
        """The block of each of ``values`` (see `blocks_of`) once every chunk is sampled (and
        mapped), else None."""
        if self._unsampled:
            return None
        assert self._sample is not None
        return self._sample[1:].searchsorted(values, "right")

    def _start_blocks(self) -> NDArray[np.generic] | None:
        """The array as rows of `_BLOCK` values, its sample started; None if it cannot be."""
        if self._unsampled < 0:
            whole = self._array.contiguous()
            blocks = -(-self._n // _BLOCK)
            fences = self._fences
            several = self._array.n_chunks > 1
            if whole is not None and not several and 0 < len(whole) < blocks * _BLOCK:
                # One chunk whose rows do not fill whole blocks: its keys copied into blocks,
                # the last padded with the last key (at most one chunk in the reader's memory).
                padded = np.empty(blocks * _BLOCK, dtype=whole.dtype)
                padded[: self._n] = whole[: self._n]
                padded[self._n :] = whole[self._n - 1]
                whole = padded
            if (
                whole is None
                or not self._n
                or len(whole) < blocks * _BLOCK
                or (several and self._rpc % _BLOCK)
                or (fences is not None and len(fences) != self._array.n_chunks)
            ):
                self._unsampled = _UNSAMPLED
                return None
            with self._lock:
                if self._unsampled < 0:
                    renew_lock_after_fork(self)
                    per_chunk = -(-self._rpc // _BLOCK)
                    self._sample = np.repeat(np.asarray(fences or [0], dtype=whole.dtype), per_chunk)[:blocks]
                    self._sampled = [False] * self._array.n_chunks
                    self._blocks = whole[: len(whole) // _BLOCK * _BLOCK].reshape(-1, _BLOCK)
                    self._unsampled = self._array.n_chunks
        return self._blocks

    def _block_of(self, values: NDArray[np.generic]) -> NDArray[np.intp]:
        """The block of every value: the last whose first value is at most the value."""
        # A chunk's entries change while its sample is taken: search and take under the lock.
        with self._lock:
            per_chunk = -(-self._rpc // _BLOCK)
            while True:
                block = self._search_sample(values)
                chunks = (block // per_chunk).tolist()
                todo = {chunk for chunk in chunks if not self._sampled[chunk]}
                if not todo:
                    return block
                for chunk in sorted(todo):
                    self._take_sample(chunk)

    def _search_sample(self, values: NDArray[np.generic]) -> NDArray[np.intp]:
        # The sample without its first entry: values below the second block's first value,
        # including those below the first (never found), are in block 0.
        assert self._sample is not None
        return self._sample[1:].searchsorted(values, "right")

    def _take_sample(self, chunk: int) -> None:
        assert self._sample is not None
        first = chunk * -(-self._rpc // _BLOCK)
        taken = self._valid(chunk)[::_BLOCK]  # maps and checks the chunk
        self._sample[first : first + len(taken)] = taken
        self._sampled[chunk] = True
        self._unsampled -= 1

    def all_values(self) -> NDArray[np.generic]:
        """The whole array, as one copy."""
        return np.concatenate([self._valid(c) for c in range(self._array.n_chunks)])

    def value(self, row: int) -> object:
        return self._array.row(row)

    def values(self, rows: NDArray[np.intp]) -> NDArray[np.generic]:
        out = np.empty(len(rows), dtype=self._array.dtype)
        self._array.take(rows, out)
        return out


def rows_in_blocks(
    stored: NDArray[np.generic], block: NDArray[np.intp], values: NDArray[np.generic], limit: Any
) -> NDArray[np.intp]:
    """The row of every value in its block (-1 where absent), from the blocks' stored values.

    ``stored[i]`` holds the values of block ``block[i]`` (see `_Sorted.blocks_of`); a row is
    returned only where the stored value equals ``values[i]``, and below ``limit`` (the rows
    of the array: its last chunk's padding past them holds no key). ``limit`` is a number or
    one per value.
    """
    # Stored values are unique, but the padding past the last may repeat one of them: the
    # matches past ``limit`` are dropped before the others are placed.
    equal = np.flatnonzero(stored == values[:, None])
    at = equal >> _BLOCK_SHIFT
    found = block[at] << _BLOCK_SHIFT
    found += equal & (_BLOCK - 1)
    rows = np.full(len(values), -1, dtype=np.intp)
    inside = found < (limit if np.isscalar(limit) else limit[at])
    if inside.all():
        rows[at] = found
    else:
        rows[at[inside]] = found[inside]
    return rows


_NO_INTS: memoryview[int] = memoryview(b"").cast("q")


class IntIndex:
    """Rows of int64 keys."""

    __slots__ = ("_ints", "_n", "_pending", "_sorted", "_whole")
    key_type = "int64"

    def __init__(self, keys: MappedArray, fences: list[int]) -> None:
        self._sorted = _Sorted(keys, fences)
        self._n = keys.n_rows
        self._whole: NDArray[np.int64] | None = None
        """Every key as one view, once every key chunk is mapped (and its checksum checked)."""
        self._ints: memoryview[int] = _NO_INTS
        """``_whole`` read as Python ints: comparing one costs no numpy scalar."""
        self._pending = keys.joinable and keys.dtype == np.dtype("=i8")
        """Whether ``_whole`` may still be set (the key chunks are mapped back to back)."""

    def find(self, key: object) -> int:
        """The row of ``key``, or -1 when it is absent (see `sharedrec.format.keys`)."""
        if type(key) is not int:  # the common case first: a plain int needs no conversion
            key = int_key(key)
        # numpy would compare a value outside int64 as a float, equal to a stored neighbour.
        if INT64_MIN <= key <= INT64_MAX:
            whole = self._whole
            if whole is not None:  # one search over every key: no fences, no chunk arithmetic
                row = int(whole.searchsorted(key))
                return row if row < self._n and self._ints[row] == key else -1
            row = self._sorted.find(key)
            if self._pending and self._sorted.array.whole is not None:
                self._join()
            return row
        return -1

    def complete_keys(self) -> tuple[NDArray[np.int64], memoryview[int]] | None:
        """Every key as one view and as Python ints, once every key chunk is mapped (and
        checked), else None: see `Whole.full`."""
        whole = self._whole
        if whole is None and self._pending and self._sorted.array.whole is not None:
            self._join()
            whole = self._whole
        return None if whole is None else (whole, self._ints)

    @property
    def may_complete(self) -> bool:
        """Whether `complete_keys` answers, now or once every key chunk is mapped."""
        return self._whole is not None or self._pending

    def _join(self) -> None:
        """Set ``_whole`` once the last key chunk is mapped (each is checked when mapped)."""
        whole = self._sorted.array.whole
        assert whole is not None
        valid = whole[: self._n]  # the last chunk's padding past the keys holds no key
        self._ints = valid.data.cast("B").cast("q")
        self._whole = valid  # type: ignore[assignment]
        self._pending = False

    def all_keys(self) -> NDArray[np.int64]:
        """Every key, in stored (sorted) order: reads the whole key array."""
        return self._sorted.all_values().astype(np.int64, copy=False)

    def key_at(self, row: int) -> int:
        """The key stored at ``row`` (keys are in sorted order)."""
        value: Any = self._sorted.value(row)
        return int(value)

    def find_many(self, keys: object) -> NDArray[np.intp]:
        """Rows of ``keys`` (-1 where absent)."""
        query, outside = int_keys(keys)
        order = np.argsort(query)
        rows = np.empty(len(query), dtype=np.intp)
        rows[order] = self._sorted.find_sorted(query[order])
        if outside is not None:  # their entries in ``query`` stand for no key
            rows[outside] = -1
        return rows

    def find_sorted(self, query: NDArray[np.int64]) -> NDArray[np.intp]:
        """Rows of ascending int64 keys, read by `int_keys` (-1 where absent)."""
        return self._sorted.find_sorted(query)

    def blocks_of(self, query: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.intp]] | None:
        """The key array as blocks, and the block of each int64 key: see `rows_in_blocks`.

        None when the key chunks are not mapped back to back (use `find_sorted`).
        """
        return self._sorted.blocks_of(query)  # type: ignore[return-value]

    def sampled_blocks(self, query: NDArray[np.int64]) -> NDArray[np.intp] | None:
        """The block of each int64 key once the whole key array is sampled, else None (then
        `blocks_of` samples what it needs)."""
        return self._sorted.sampled_blocks(query)

    @property
    def n_rows(self) -> int:
        """How many keys the index holds."""
        return self._n

    @property
    def sampled(self) -> bool:
        """Whether every key chunk is sampled (and so mapped): see `sampled_blocks`."""
        return self._sorted.sampled

    @property
    def array(self) -> MappedArray:
        """The mapped array of the sorted keys."""
        return self._sorted.array


_NATIVE = np.dtype("<u8").isnative
"""Whether the stored little-endian integers can be read through memoryviews as they are."""


def _ints(array: NDArray[np.generic], code: Literal["Q", "q"]) -> memoryview[int]:
    """A flat memoryview of the integers of a C-contiguous array: ``view[i]`` is a Python int.

    Indexing one costs a tenth of indexing the array (no numpy scalar).
    """
    native = array if _NATIVE else array.astype(array.dtype.newbyteorder("="))
    return native.data.cast("B").cast(code)


class StrIndex:
    """Rows of string keys, through a verified 64-bit hash.

    A single lookup reads the hashes, spans and key bytes through memoryviews of the mapped
    chunks, made once per chunk: Python ints and bytes, no numpy call. A batch is hashed key
    by key, searched at once, and its short keys compared with the stored bytes at once.
    """

    __slots__ = (
        "_byte_rpc",
        "_byte_views",
        "_bytes",
        "_fences",
        "_hash",
        "_hash_name",
        "_hash_views",
        "_hashes",
        "_n",
        "_rpc",
        "_sorted",
        "_span_rpc",
        "_span_views",
        "_spans",
    )
    key_type = "str"

    def __init__(
        self,
        hashes: MappedArray,
        spans: MappedArray,
        key_bytes: MappedArray,
        fences: list[int],
        hash_name: str,
    ) -> None:
        self._sorted = _Sorted(hashes, fences)
        self._hashes = hashes
        self._spans = spans
        self._bytes = key_bytes
        self._n = hashes.n_rows
        self._rpc = hashes.rows_per_chunk
        self._span_rpc = spans.rows_per_chunk
        self._byte_rpc = key_bytes.rows_per_chunk
        self._fences = fences if len(fences) > 1 else None
        self._hash_views: list[memoryview[int] | None] = [None] * hashes.n_chunks
        self._span_views: list[memoryview[int] | None] = [None] * spans.n_chunks
        self._byte_views: list[memoryview[int] | None] = [None] * key_bytes.n_chunks
        self._hash_name = hash_name
        self._hash: Callable[[bytes], int] = self._first_hash

    def _first_hash(self, data: bytes) -> int:
        # Resolved on the first lookup, not at open: the hash's module is imported only then.
        self._hash = key_hash_function(self._hash_name)
        return self._hash(data)

    def _hasher(self) -> Callable[[bytes], int]:
        if self._hash == self._first_hash:
            self._hash = key_hash_function(self._hash_name)
        return self._hash

    def find(self, key: object) -> int:
        """The row of ``key``, or -1 when it is absent (see `sharedrec.format.keys`)."""
        if type(key) is str:  # the common case first: no call to check the type
            try:
                data = key.encode()
            except UnicodeEncodeError:  # a lone surrogate: never stored
                return -1
        else:
            maybe = str_key(key)
            if maybe is None:
                return -1
            data = maybe
        digest = self._hash(data)
        # The last chunk starting below the hash: a run of equal hashes may begin in its tail.
        if self._fences is None:
            chunk = 0
        else:
            chunk = bisect_left(self._fences, digest) - 1
            if chunk < 0:
                chunk = 0
        hashes = self._hash_views[chunk]
        if hashes is None:
            hashes = self._hash_view(chunk)
        position = bisect_left(hashes, digest)
        row = chunk * self._rpc + position
        if position < len(hashes):
            if hashes[position] != digest:
                return -1
            # The key bytes of the row, inlined: this runs on every lookup.
            span_chunk, offset = divmod(row, self._span_rpc)
            spans = self._span_views[span_chunk]
            if spans is None:
                spans = self._span_view(span_chunk)
            start = spans[2 * offset]
            size = len(data)
            if spans[2 * offset + 1] - start == size:
                byte_chunk, first = divmod(start, self._byte_rpc)
                if not size:  # the empty key (its span may start past the last byte)
                    return row
                if first + size <= self._byte_rpc:
                    blob = self._byte_views[byte_chunk]
                    if blob is None:
                        blob = self._byte_view(byte_chunk)
                    if blob[first : first + size] == data:
                        return row
                elif self._bytes.span(start, start + size).tobytes() == data:  # across chunks
                    return row
            row += 1
        # Another key with the same hash, or a run of equal hashes starting in the next chunk.
        return self._scan(row, digest, data)

    def _scan(self, row: int, digest: int, data: bytes) -> int:
        """The row from ``row`` on, among those hashed ``digest``, whose key bytes are ``data``."""
        while row < self._n:
            chunk, position = divmod(row, self._rpc)
            hashes = self._hash_views[chunk]
            if hashes is None:
                hashes = self._hash_view(chunk)
            if hashes[position] != digest:
                return -1
            if self._key_bytes(row) == data:
                return row
            row += 1
        return -1

    def _hash_view(self, chunk: int) -> memoryview[int]:
        valid = min(self._rpc, self._n - chunk * self._rpc)  # rows past the end are padding
        view = self._hash_views[chunk] = _ints(self._hashes.chunk(chunk)[:valid], "Q")
        return view

    def _span_view(self, chunk: int) -> memoryview[int]:
        view = self._span_views[chunk] = _ints(self._spans.chunk(chunk), "q")
        return view

    def _byte_view(self, chunk: int) -> memoryview[int]:
        view = self._byte_views[chunk] = self._bytes.chunk(chunk).data.cast("B")
        return view

    def _key_bytes(self, row: int) -> bytes:
        start, stop = self._spans.row(row).tolist()
        return self._bytes.span(start, stop).tobytes()

    def all_keys(self) -> list[str]:
        """Every key, in stored (hash) order: reads and decodes the whole key index."""
        return decode_keys(self._spans, self._bytes, self._n)

    def key_at(self, row: int) -> str:
        """The key stored at ``row`` (rows are in hash order)."""
        return self._key_bytes(row).decode()

    def find_many(self, keys: object) -> NDArray[np.intp]:
        """Rows of ``keys`` (-1 where absent): hashed one by one, searched and compared at once."""
        listed, encoded = str_keys(keys)
        hashed: list[bytes] = encoded  # type: ignore[assignment]  # None is replaced below
        never = None
        if None in encoded:  # keys with no UTF-8 form were never stored
            never = np.fromiter((data is None for data in encoded), dtype=bool, count=len(encoded))
            hashed = [data or b"" for data in encoded]
        digests = np.fromiter(map(self._hasher(), hashed), dtype=np.uint64, count=len(hashed))
        rows = self._sorted.lower_bounds(digests)
        out = np.full(len(rows), -1, dtype=np.intp)
        searched = rows < self._n
        if never is not None:
            searched &= ~never
        candidates = np.flatnonzero(searched)
        candidates = candidates[self._sorted.values(rows[candidates]) == digests[candidates]]
        at = rows[candidates]
        equal = self._equal_many(at, [hashed[i] for i in candidates.tolist()])
        out[candidates[equal]] = at[equal]
        # Another key with the same hash comes first: search the run of equal hashes.
        for position in candidates[~equal].tolist():
            out[position] = self.find(listed[position])
        return out

    def _equal_many(self, rows: NDArray[np.intp], queries: list[bytes]) -> NDArray[np.bool_]:
        """Whether the key stored at each of ``rows`` is the matching query's bytes.

        The queries are joined into one byte array and compared with the stored bytes of the
        rows gathered in the same layout, byte for byte, for the whole batch at once.
        """
        spans = np.empty((len(rows), 2), dtype=np.int64)
        self._spans.take(rows, spans)
        sizes = np.fromiter(map(len, queries), dtype=np.int64, count=len(queries))
        equal: NDArray[np.bool_] = spans[:, 1] - spans[:, 0] == sizes
        if not equal.all():  # only keys of the same size are compared (and lie in the bytes)
            queries = [query for query, same in zip(queries, equal.tolist(), strict=True) if same]
            sizes, spans = sizes[equal], spans[equal]
        total = int(sizes.sum())
        if total:
            joined = np.frombuffer(b"".join(queries), dtype=np.uint8)
            offsets = np.cumsum(sizes) - sizes  # where each query starts in ``joined``
            index = np.repeat(spans[:, 0] - offsets, sizes) + np.arange(total)
            stored = np.empty(total, dtype=np.uint8)
            self._bytes.take(index, stored)
            differ = np.flatnonzero(stored != joined)
            if len(differ):
                compared = np.flatnonzero(equal)
                equal[compared[np.searchsorted(offsets, differ, "right") - 1]] = False
        return equal


# -- partitions ------------------------------------------------------------------------------

_MASK64 = (1 << 64) - 1
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
FIBONACCI = 0x9E3779B97F4A7C15
"""2**64 divided by the golden ratio, odd: the multiplier of `fibonacci64`."""

INT_PARTITION_HASHES = PARTITION_HASHES["int64"]
"""The hashes that assign int64 keys to partitions, by the name the manifest records."""
DEFAULT_INT_PARTITION_HASH = INT_PARTITION_HASHES[0]
"""The one publishes begun now use; collections split by splitmix64 (written before) still open."""


def splitmix64(value: int) -> int:
    """The SplitMix64 finaliser of a 64-bit value (an int64 key taken as its two's complement)."""
    z = value & _MASK64
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK64
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK64
    return z ^ (z >> 31)


def fibonacci64(value: int, n_parts: int) -> int:
    """The partition of an int64 key by ``fibonacci64``: the key's 64 bits times `FIBONACCI`
    modulo 2**64, scaled to ``n_parts`` by its high bits (``z * n_parts >> 64``).

    Every bit of the key reaches the high bits of the product, which pick the partition, so
    sequential, strided and random ids spread evenly. In Python it costs a lookup a third of
    what `splitmix64` does. The same partition is ``(key * (FIBONACCI * n_parts) >> 64) %
    n_parts``: the product's bits from 64 on are the key's wraps of 2**64 times ``n_parts``
    (a multiple of it) plus this partition.
    """
    return ((value * FIBONACCI) & _MASK64) * n_parts >> 64


def _splitmix64_array(values: NDArray[np.int64]) -> NDArray[np.uint64]:
    z = values.astype(np.int64, copy=False).view(np.uint64).copy()
    z ^= z >> np.uint64(30)
    z *= np.uint64(_MIX1)  # unsigned multiplication wraps modulo 2**64, as the function needs
    z ^= z >> np.uint64(27)
    z *= np.uint64(_MIX2)
    z ^= z >> np.uint64(31)
    return z


def _fibonacci64_array(values: NDArray[np.int64], n_parts: int) -> NDArray[np.uint64]:
    z = values.astype(np.int64, copy=False).view(np.uint64) * np.uint64(FIBONACCI)  # wraps
    # The high 64 bits of z * n_parts (n_parts < 2**32), from z's two halves.
    n = np.uint64(n_parts)
    low = ((z & np.uint64(0xFFFFFFFF)) * n) >> np.uint64(32)
    return ((z >> np.uint64(32)) * n + low) >> np.uint64(32)


def partitions_of(keys: NDArray[np.int64] | Sequence[bytes], n_parts: int, hash: str) -> NDArray[np.intp]:
    """The partition of every key: int64 keys (an array) or UTF-8 encoded str keys (bytes).

    ``hash`` names the int64 keys' hash (`INT_PARTITION_HASHES`): ``fibonacci64`` (see
    `fibonacci64`) or ``splitmix64(key) mod n_parts``. str keys go to
    ``blake2b-64(key bytes) mod n_parts``. What `PartitionedIndex` computes for one key, for
    a whole batch.
    """
    if isinstance(keys, np.ndarray):
        if hash == "fibonacci64":
            return _fibonacci64_array(keys, n_parts).astype(np.intp)
        assert hash == "splitmix64", hash
        return (_splitmix64_array(keys) % np.uint64(n_parts)).astype(np.intp)
    return (hash_keys(keys, PARTITION_STR_HASH) % np.uint64(n_parts)).astype(np.intp)


class PartitionedIndex:
    """Rows of a collection split into partitions, each with its own index.

    A key lives in the partition its hash picks (`partitions_of`); global rows count the rows of
    partition 0, then those of partition 1, and so on. ``parts[p]`` is None for a
    partition that holds no key.
    """

    __slots__ = ("_offsets", "_starts", "hash", "key_type", "n_parts", "parts", "spread")

    def __init__(
        self, key_type: str, parts: list[IntIndex | StrIndex | None], counts: list[int], hash: str
    ) -> None:
        self.key_type = key_type
        self.parts = parts
        self.n_parts = len(parts)
        self.hash = hash
        """The partition hash the manifest names (``fibonacci64`` or ``splitmix64`` for int64 keys)."""
        self.spread = FIBONACCI * self.n_parts if key_type == "int64" and hash == "fibonacci64" else 0
        """When int64 keys are split by ``fibonacci64``: `FIBONACCI` times the partition count,
        and a key's partition is ``(key * spread >> 64) % n_parts`` (`fibonacci64` in one
        operation less, which the short path of `Reader.get` computes inline); else 0."""
        self._offsets = [0, *np.cumsum(counts).tolist()]
        self._starts = np.asarray(self._offsets[:-1], dtype=np.int64)

    def partition(self, key: object) -> int:
        """The partition ``key`` belongs to (raises `InvalidInput` for a key of the wrong type).

        A key that can never be stored (outside int64, or a str with no UTF-8 form) gets some
        partition, whose index then does not find it.
        """
        if self.key_type == "int64":
            if type(key) is not int:  # the common case first: a plain int needs no checks
                key = int_key(key)
            if self.spread:
                return (key * self.spread >> 64) % self.n_parts
            return splitmix64(key) % self.n_parts
        data = str_key(key)
        return _blake2b_64(data) % self.n_parts if data is not None else 0

    def locate(self, row: int) -> tuple[int, int]:
        """``(partition, row within it)`` of a global row."""
        part = bisect_right(self._offsets, row) - 1
        return part, row - self._offsets[part]

    def find(self, key: object) -> int:
        """The global row of ``key``, or -1 when it is absent."""
        part = self.partition(key)
        index = self.parts[part]
        row = index.find(key) if index is not None else -1
        return row + self._offsets[part] if row >= 0 else -1

    def groups(self, keys: object) -> tuple[int, list[tuple[int, NDArray[np.intp], Any]]]:
        """Split a batch of keys by partition: ``(n, [(partition, positions, keys), ...])``.

        Only partitions that hold keys and are asked for appear; ``positions`` index the batch.
        Keys that can never be stored (outside int64, or a str with no UTF-8 form) are in no group.
        """
        never: NDArray[np.bool_] | None
        if self.key_type == "int64":
            query, never = int_keys(keys)
            parts = partitions_of(query, self.n_parts, self.hash)
            select: Callable[[NDArray[np.intp]], Any] = query.__getitem__
        else:
            text, encoded = str_keys(keys)
            never = None
            if None in encoded:
                never = np.fromiter((data is None for data in encoded), dtype=bool, count=len(encoded))
            parts = partitions_of([data or b"" for data in encoded], self.n_parts, self.hash)

            def select(where: NDArray[np.intp]) -> Any:
                return [text[i] for i in where.tolist()]

        if never is not None:
            parts[never] = self.n_parts  # one more group, after the last partition, never served
        order = np.argsort(parts, kind="stable")
        bounds = np.cumsum(np.bincount(parts, minlength=self.n_parts)).tolist()[: self.n_parts]
        out = []
        start = 0
        for part, stop in enumerate(bounds):
            if stop > start and self.parts[part] is not None:
                where = order[start:stop]
                out.append((part, where, select(where)))
            start = stop
        return len(parts), out

    def find_many(self, keys: object) -> NDArray[np.intp]:
        """Global rows of ``keys`` (-1 where absent)."""
        n, groups = self.groups(keys)
        rows = np.full(n, -1, dtype=np.intp)
        for part, where, sub in groups:
            index = self.parts[part]
            assert index is not None
            local = index.find_many(sub)
            rows[where] = np.where(local >= 0, local + self._offsets[part], -1)
        return rows

    def key_at(self, row: int) -> int | str:
        """The key stored at a global row."""
        part, local = self.locate(row)
        index = self.parts[part]
        assert index is not None, "an empty partition holds no row"
        return index.key_at(local)

    def all_keys(self) -> NDArray[np.int64] | list[str]:
        """Every key, partition after partition."""
        keys = [index.all_keys() for index in self.parts if index is not None]
        if self.key_type == "int64":
            return np.concatenate(keys) if keys else np.empty(0, dtype=np.int64)
        return [key for part in keys for key in part]
