"""The hot path: lookups served from memory-mapped chunk files of one version.

Opening a reader reads ``CURRENT`` and ``manifest.json`` and nothing else; chunk files are
mapped the first time a lookup needs them. A lookup is a binary search over the mapped key
array and a slice of the mapped row: no zarr-python, no copies for single keys.
"""

from __future__ import annotations

import types
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from sharedrec._mmap import MappedArray
from sharedrec.errors import CorruptVersion, InvalidInput, KeyNotFound, UnknownCollection
from sharedrec.format import CollectionSpec, Manifest
from sharedrec.index import KEY_HASHES, IntIndex, StrIndex

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray

__all__ = ["RankedList", "Reader"]

_RANKED_ARRAYS = ("items", "scores", "lengths")
_ITEM_PAD = -1


class RankedList:
    """One key's list: ``items`` and ``scores`` are read-only numpy views, best first."""

    __slots__ = ("items", "scores")

    def __init__(self, items: NDArray[Any], scores: NDArray[Any]) -> None:
        self.items = items
        self.scores = scores

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[tuple[int, float]]:
        """Iterate ``(item, score)`` pairs as Python numbers."""
        return zip(self.items.tolist(), self.scores.tolist(), strict=True)

    def __repr__(self) -> str:
        return f"RankedList(items={self.items!r}, scores={self.scores!r})"


Index = IntIndex | StrIndex


class _Ranked:
    __slots__ = (
        "default",
        "index",
        "items",
        "lengths",
        "name",
        "rows_per_chunk",
        "scores",
        "spec",
        "uniform",
    )

    def __init__(self, name: str, spec: CollectionSpec, index: Index, arrays: dict[str, MappedArray]):
        self.name = name
        self.spec = spec
        self.index = index
        self.items = arrays["items"]
        self.scores = arrays["scores"]
        self.lengths = arrays["lengths"]
        self.rows_per_chunk = self.items.rows_per_chunk
        # When every list has the same length the lengths array need not be read at all.
        self.uniform = spec.max_length if spec.min_length == spec.max_length else -1
        self.default: RankedList | None = None
        if spec.default_length is not None:
            n = spec.default_length
            self.default = RankedList(
                arrays["default_items"].chunk(0)[:n], arrays["default_scores"].chunk(0)[:n]
            )


class _Vectors:
    __slots__ = ("index", "name", "spec", "vectors")

    def __init__(self, name: str, spec: CollectionSpec, index: Index, arrays: dict[str, MappedArray]):
        self.name = name
        self.spec = spec
        self.index = index
        self.vectors = arrays["vectors"]


class Reader:
    """Serves lookups from one version of a store.

    Create one with :meth:`sharedrec.Store.reader`; it is safe to share between threads.
    Returned arrays of single-key lookups are read-only views into the mapped files and
    stay valid after the reader is closed.
    """

    def __init__(self, manifest: Manifest, version_root: str) -> None:
        self._manifest = manifest
        self._root = version_root
        self._ranked: dict[str, _Ranked] = {}
        self._vectors: dict[str, _Vectors] = {}
        for name, spec in manifest.collections.items():
            arrays = {
                array: MappedArray(version_root, f"{name}/{array}", array_spec)
                for array, array_spec in spec.arrays.items()
            }
            index = _open_index(name, spec, arrays, version_root)
            if spec.kind == "ranked":
                _require(name, spec, _RANKED_ARRAYS, version_root)
                self._ranked[name] = _Ranked(name, spec, index, arrays)
            else:
                _require(name, spec, ("vectors",), version_root)
                self._vectors[name] = _Vectors(name, spec, index, arrays)

    # -- what is open ----------------------------------------------------------------------

    @property
    def version(self) -> str:
        """The id of the version this reader serves."""
        return self._manifest.id

    @property
    def manifest(self) -> Manifest:
        """The manifest of the version this reader serves."""
        return self._manifest

    @property
    def metadata(self) -> Mapping[str, Any]:
        """The metadata given at publish time."""
        return self._manifest.metadata

    @property
    def collections(self) -> Mapping[str, CollectionSpec]:
        """The collections of the version, by name."""
        return self._manifest.collections

    # -- ranked lists ----------------------------------------------------------------------

    def get(self, collection: str, key: int | str, k: int | None = None) -> RankedList:
        """The ranked list of ``key``, best first, at most ``k`` long.

        Args:
            collection: A ranked collection of the version.
            key: An int (int64 collections) or str (str collections).
            k: Return at most this many items (default: the whole list).

        Returns:
            A :class:`RankedList` whose ``items`` and ``scores`` are views of mapped memory.

        Raises:
            KeyNotFound: A ``KeyError``: the key is absent and the collection has no default.
            UnknownCollection: The version has no ranked collection of that name.
            CorruptVersion: A chunk file is missing or has the wrong size.
        """
        col = self._ranked.get(collection)
        if col is None:
            raise self._unknown(collection, "ranked")
        row = col.index.find(key)
        if row < 0:
            return self._missing(col, key, k)
        n = col.uniform if col.uniform >= 0 else int(col.lengths.row(row))
        if k is not None and k < n:
            n = _check_k(k)
        chunk, offset = divmod(row, col.rows_per_chunk)
        return RankedList(col.items.chunk(chunk)[offset, :n], col.scores.chunk(chunk)[offset, :n])

    def get_many(
        self, collection: str, keys: ArrayLike, k: int | None = None
    ) -> tuple[NDArray[Any], NDArray[Any], NDArray[np.bool_]]:
        """The lists of many keys at once, as padded 2-D arrays.

        Args:
            collection: A ranked collection of the version.
            keys: A 1-D sequence of keys.
            k: Columns of the result (default: the collection's longest list).

        Returns:
            ``(items, scores, found)``: ``items`` and ``scores`` have one row per key, padded
            with -1 and NaN past each list's end; ``found[i]`` is False for a key that is not
            in the collection, whose row holds the default list if there is one, else padding.
        """
        col = self._ranked.get(collection)
        if col is None:
            raise self._unknown(collection, "ranked")
        rows = col.index.find_many(keys)
        width = col.spec.width if k is None else min(_check_k(k), col.spec.width)
        items = np.full((len(rows), width), _ITEM_PAD, dtype=col.items.dtype)
        scores = np.full((len(rows), width), np.nan, dtype=col.scores.dtype)
        found = rows >= 0
        hit = np.flatnonzero(found)
        _gather(col.items, rows, hit, items)
        _gather(col.scores, rows, hit, scores)
        if col.default is not None and hit.size < len(rows):
            miss = ~found
            n = min(width, len(col.default))
            items[miss, :n] = col.default.items[:n]
            scores[miss, :n] = col.default.scores[:n]
        return items, scores, found

    # -- vectors ---------------------------------------------------------------------------

    def vector(self, collection: str, key: int | str) -> NDArray[Any]:
        """The vector of ``key`` as a read-only view.

        Raises:
            KeyNotFound: A ``KeyError``: the key is absent.
            UnknownCollection: The version has no vectors collection of that name.
        """
        col = self._vectors.get(collection)
        if col is None:
            raise self._unknown(collection, "vectors")
        row = col.index.find(key)
        if row < 0:
            raise KeyNotFound(f"key {key!r} is not in collection {collection!r} of version {self.version}")
        return col.vectors.row(row)

    def vectors(self, collection: str, keys: ArrayLike) -> tuple[NDArray[Any], NDArray[np.bool_]]:
        """The vectors of many keys: ``(array of shape (len(keys), dim), found)``.

        Rows of keys that are not in the collection are NaN.
        """
        col = self._vectors.get(collection)
        if col is None:
            raise self._unknown(collection, "vectors")
        rows = col.index.find_many(keys)
        out = np.full((len(rows), col.spec.width), np.nan, dtype=col.vectors.dtype)
        found = rows >= 0
        _gather(col.vectors, rows, np.flatnonzero(found), out)
        return out, found

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Drop this reader's mappings (views already returned stay valid)."""
        self._ranked = {}
        self._vectors = {}

    def __enter__(self) -> Reader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Reader(version={self.version!r}, collections={sorted(self.collections)})"

    # -- errors ----------------------------------------------------------------------------

    def _missing(self, col: _Ranked, key: object, k: int | None) -> RankedList:
        if col.default is None:
            raise KeyNotFound(
                f"key {key!r} is not in collection {col.name!r} of version {self.version} "
                "(publish it with default=(items, scores) to serve a list for unknown keys)"
            )
        if k is None or k >= len(col.default):
            return col.default
        n = _check_k(k)
        return RankedList(col.default.items[:n], col.default.scores[:n])

    def _unknown(self, collection: str, kind: str) -> UnknownCollection:
        if not self._ranked and not self._vectors:
            return UnknownCollection("this reader is closed")
        have = sorted(name for name, spec in self.collections.items() if spec.kind == kind)
        other = self.collections.get(collection)
        if other is not None:
            return UnknownCollection(
                f"collection {collection!r} of version {self.version} holds {other.kind}, "
                f"not {kind}; {kind} collections: {have}"
            )
        return UnknownCollection(
            f"version {self.version} has no {kind} collection {collection!r}; it has {have}"
        )


def _gather(array: MappedArray, rows: NDArray[np.intp], hit: NDArray[np.intp], out: NDArray[Any]) -> None:
    """Copy the rows of the keys that were found into their places in ``out``."""
    if hit.size == len(rows):
        array.take(rows, out)
    elif hit.size:
        gathered = np.empty((hit.size, *out.shape[1:]), dtype=out.dtype)
        array.take(rows[hit], gathered)
        out[hit] = gathered


def _check_k(k: int) -> int:
    if not isinstance(k, int | np.integer) or k < 0:
        raise InvalidInput(f"k must be a non-negative int; got {k!r}")
    return int(k)


def _require(name: str, spec: CollectionSpec, needed: tuple[str, ...], root: str) -> None:
    missing = [array for array in needed if array not in spec.arrays]
    if missing:
        raise CorruptVersion(
            f"collection {name!r} in {root}/manifest.json lacks arrays {missing}; "
            "republish the version or roll back"
        )


def _open_index(name: str, spec: CollectionSpec, arrays: dict[str, MappedArray], where: str) -> Index:
    if spec.key_type == "int64":
        _require(name, spec, ("keys",), where)
        return IntIndex(arrays["keys"], spec.key_fences)
    _require(name, spec, ("key_hash", "key_spans", "key_bytes"), where)
    if spec.key_hash not in KEY_HASHES:
        raise CorruptVersion(
            f"collection {name!r} hashes its keys with {spec.key_hash!r}, which this version of "
            f"sharedrec does not know ({sorted(KEY_HASHES)}); upgrade sharedrec"
        )
    return StrIndex(
        arrays["key_hash"], arrays["key_spans"], arrays["key_bytes"], spec.key_fences, spec.key_hash
    )
