"""Key -> row lookup over memory-mapped sorted arrays.

Rows of a collection are stored in key order, so finding a key is a binary search over the
mapped key array: no dict is built at open, and nothing is read until a key is looked up.

* int64 keys: ``keys`` holds the keys sorted ascending.
* str keys: ``key_hash`` holds a 64-bit hash of each key's UTF-8 bytes, sorted ascending;
  ``key_spans`` (start, stop) and ``key_bytes`` hold the key bytes themselves. A lookup
  compares every row whose hash matches against the stored bytes, so a hash collision can
  never return another key's data.

When the key array spans several chunks, the manifest lists the first key (or hash) of
every chunk (``key_fences``) and a lookup searches those first, then one chunk.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from sharedrec.format.keys import INT64_MAX, INT64_MIN, int_key, int_keys, str_key, str_keys
from sharedrec.read.mmap import MappedArray

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "DEFAULT_KEY_HASH",
    "KEY_HASHES",
    "IntIndex",
    "PartitionedIndex",
    "StrIndex",
    "decode_keys",
    "encode_keys",
    "hash_keys",
    "partition_hash",
    "partitions_of",
    "splitmix64",
]


_BLAKE2B: Any = None


def _blake2b_64(data: bytes) -> int:
    global _BLAKE2B
    if _BLAKE2B is None:  # imported on first use: int-keyed readers never need hashlib
        from hashlib import blake2b

        _BLAKE2B = blake2b
    return int.from_bytes(_BLAKE2B(data, digest_size=8).digest(), "little")


KEY_HASHES: dict[str, Callable[[bytes], int]] = {"blake2b-64": _blake2b_64}
"""Hash functions for string keys, by the name recorded in the manifest."""

DEFAULT_KEY_HASH = "blake2b-64"


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
    function = KEY_HASHES[name]
    return np.fromiter((function(key) for key in keys), dtype=np.uint64, count=len(keys))


class _Sorted:
    """Binary search over a sorted 1-D mapped array split into chunks."""

    __slots__ = ("_array", "_fences", "_n", "_rpc", "_views")

    def __init__(self, array: MappedArray, fences: list[int]) -> None:
        self._array = array
        self._n = array.n_rows
        self._rpc = array.rows_per_chunk
        self._fences = fences if len(fences) > 1 else None
        self._views: list[NDArray[np.generic] | None] = [None] * array.n_chunks

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
            # Searching in sorted order walks the mapped pages in order: far fewer cache misses.
            order = np.argsort(values)
            out = np.empty(len(values), dtype=np.intp)
            out[order] = self._lower_bounds(values[order])
            return out
        return self._lower_bounds(values)

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

    def all_values(self) -> NDArray[np.generic]:
        """The whole array, as one copy."""
        return np.concatenate([self._valid(c) for c in range(self._array.n_chunks)])

    def value(self, row: int) -> object:
        return self._array.row(row)

    def values(self, rows: NDArray[np.intp]) -> NDArray[np.generic]:
        out = np.empty(len(rows), dtype=self._array.dtype)
        self._array.take(rows, out)
        return out


class IntIndex:
    """Rows of int64 keys."""

    __slots__ = ("_n", "_sorted")
    key_type = "int64"

    def __init__(self, keys: MappedArray, fences: list[int]) -> None:
        self._sorted = _Sorted(keys, fences)
        self._n = keys.n_rows

    def find(self, key: object) -> int:
        """The row of ``key``, or -1 when it is absent (see `sharedrec.format.keys`)."""
        if type(key) is not int:  # the common case first: a plain int needs no conversion
            key = int_key(key)
        # numpy would compare a value outside int64 as a float, equal to a stored neighbour.
        if INT64_MIN <= key <= INT64_MAX:
            return self._sorted.find(key)
        return -1

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
        rows = self._sorted.lower_bounds(query)
        inside = rows < self._n
        hit = np.zeros(len(query), dtype=bool)
        hit[inside] = self._sorted.values(rows[inside]) == query[inside]
        if outside is not None:
            hit &= ~outside
        return np.where(hit, rows, -1)


class StrIndex:
    """Rows of string keys, through a verified 64-bit hash."""

    __slots__ = ("_bytes", "_hash", "_n", "_sorted", "_spans")
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
        self._spans = spans
        self._bytes = key_bytes
        self._n = hashes.n_rows
        self._hash = KEY_HASHES[hash_name]

    def find(self, key: object) -> int:
        """The row of ``key``, or -1 when it is absent (see `sharedrec.format.keys`)."""
        data = str_key(key)
        if data is None:
            return -1
        digest = self._hash(data)
        row = self._sorted.lower_bound(np.uint64(digest))
        # Every row with the same hash is a candidate; only equal bytes are a match.
        while row < self._n and self._sorted.value(row) == digest:
            start, stop = self._spans.row(row).tolist()
            if self._bytes.span(start, stop).tobytes() == data:
                return row
            row += 1
        return -1

    def all_keys(self) -> list[str]:
        """Every key, in stored (hash) order: reads and decodes the whole key index."""
        return decode_keys(self._spans, self._bytes, self._n)

    def key_at(self, row: int) -> str:
        """The key stored at ``row`` (rows are in hash order)."""
        start, stop = self._spans.row(row).tolist()
        return self._bytes.span(start, stop).tobytes().decode()

    def find_many(self, keys: object) -> NDArray[np.intp]:
        """Rows of ``keys`` (-1 where absent), hashed one by one and searched at once."""
        listed, encoded = str_keys(keys)
        digests = np.fromiter(
            (self._hash(data) if data is not None else 0 for data in encoded),
            dtype=np.uint64,
            count=len(encoded),
        )
        rows = self._sorted.lower_bounds(digests)
        out = np.full(len(rows), -1, dtype=np.intp)
        searched = rows < self._n
        if None in encoded:  # keys with no UTF-8 form were never stored
            searched &= np.fromiter((data is not None for data in encoded), dtype=bool, count=len(encoded))
        candidates = np.flatnonzero(searched)
        same = self._sorted.values(rows[candidates]) == digests[candidates]
        candidates = candidates[same]
        spans = np.empty((len(candidates), 2), dtype=np.int64)
        self._spans.take(rows[candidates], spans)
        span = self._bytes.span
        for position, (start, stop) in zip(candidates.tolist(), spans.tolist(), strict=True):
            data = encoded[position]
            assert data is not None
            if stop - start == len(data) and span(start, stop).tobytes() == data:
                out[position] = rows[position]
            else:  # another key with the same hash comes first: search the run of equal hashes
                out[position] = self.find(listed[position])
        return out


# -- partitions ------------------------------------------------------------------------------

_MASK64 = (1 << 64) - 1
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB


def splitmix64(value: int) -> int:
    """The SplitMix64 finaliser of a 64-bit value (an int64 key taken as its two's complement)."""
    z = value & _MASK64
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK64
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK64
    return z ^ (z >> 31)


def _splitmix64_array(values: NDArray[np.int64]) -> NDArray[np.uint64]:
    z = values.astype(np.int64, copy=False).view(np.uint64).copy()
    z ^= z >> np.uint64(30)
    z *= np.uint64(_MIX1)  # unsigned multiplication wraps modulo 2**64, as the function needs
    z ^= z >> np.uint64(27)
    z *= np.uint64(_MIX2)
    z ^= z >> np.uint64(31)
    return z


def partition_hash(key_type: str) -> str:
    """The name of the hash that assigns keys of ``key_type`` to partitions."""
    return "splitmix64" if key_type == "int64" else DEFAULT_KEY_HASH


def partitions_of(keys: NDArray[np.int64] | Sequence[bytes], n_parts: int) -> NDArray[np.intp]:
    """The partition of every key: int64 keys (an array) or UTF-8 encoded str keys (bytes).

    ``splitmix64(key) mod n_parts`` for int64 keys, ``blake2b-64(key bytes) mod n_parts``
    for str keys: what `PartitionedIndex` computes for one key, for a whole batch.
    """
    if isinstance(keys, np.ndarray):
        return (_splitmix64_array(keys) % np.uint64(n_parts)).astype(np.intp)
    return (hash_keys(keys, DEFAULT_KEY_HASH) % np.uint64(n_parts)).astype(np.intp)


class PartitionedIndex:
    """Rows of a collection split into partitions, each with its own index.

    A key lives in partition ``hash(key) mod P``; global row numbers count the rows of
    partition 0, then those of partition 1, and so on. ``parts[p]`` is None for a
    partition that holds no key.
    """

    __slots__ = ("_offsets", "_starts", "key_type", "n_parts", "parts")

    def __init__(self, key_type: str, parts: list[IntIndex | StrIndex | None], counts: list[int]) -> None:
        self.key_type = key_type
        self.parts = parts
        self.n_parts = len(parts)
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
            # splitmix64(), inlined: this runs on every lookup of a partitioned collection.
            z = key & _MASK64
            z = ((z ^ (z >> 30)) * _MIX1) & _MASK64
            z = ((z ^ (z >> 27)) * _MIX2) & _MASK64
            return (z ^ (z >> 31)) % self.n_parts
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
            parts = partitions_of(query, self.n_parts)
            select: Callable[[NDArray[np.intp]], Any] = query.__getitem__
        else:
            text, encoded = str_keys(keys)
            never = None
            if None in encoded:
                never = np.fromiter((data is None for data in encoded), dtype=bool, count=len(encoded))
            parts = partitions_of([data or b"" for data in encoded], self.n_parts)

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
