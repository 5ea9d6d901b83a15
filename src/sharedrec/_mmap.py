"""Memory-mapped access to the row chunks of one zarr array, without zarr-python.

A chunk file of an uncompressed little-endian zarr v3 array is the C-order bytes of the
chunk, so it can be mapped and viewed as a numpy array directly. Chunks are mapped on
first use; nothing is read when the array is opened.
"""

from __future__ import annotations

import itertools
import mmap
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from sharedrec._layout import chunk_path
from sharedrec.errors import CorruptVersion

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from sharedrec._spec import ArrayGeometry

__all__ = ["ChunkSource", "LocalFolder", "MappedArray", "RowPlan", "plan_rows"]


class ChunkSource(Protocol):
    """Where the chunk files of one version can be found on this machine."""

    def local_file(self, relpath: str) -> str:
        """A local path of the file ``relpath`` of the version (fetching it if needed)."""
        ...


class LocalFolder:
    """A version folder on a POSIX path (local disk, EFS/NFS mount): files are used in place."""

    __slots__ = ("root",)

    def __init__(self, root: str) -> None:
        self.root = root

    def local_file(self, relpath: str) -> str:
        """``root/relpath``."""
        return os.path.join(self.root, relpath)


@dataclass(frozen=True)
class RowPlan:
    """Rows grouped by chunk, computed once and used for every array chunked alike.

    ``order`` lists the positions of ``rows`` sorted by chunk; ``groups`` holds, per chunk
    touched, ``(chunk, start, stop, rows within the chunk)`` for ``order[start:stop]``.
    """

    count: int
    order: NDArray[np.intp] | None
    groups: list[tuple[int, int, int, NDArray[np.intp]]]


def plan_rows(rows: NDArray[np.intp], rows_per_chunk: int) -> RowPlan:
    """Group global rows by chunk."""
    if len(rows) == 0:
        return RowPlan(0, None, [])
    chunks = rows // rows_per_chunk
    first, last = int(chunks.min()), int(chunks.max())
    if first == last:
        return RowPlan(len(rows), None, [(first, 0, len(rows), rows - first * rows_per_chunk)])
    order = np.argsort(chunks, kind="stable")
    sorted_chunks = chunks[order]
    local = rows[order] - sorted_chunks * rows_per_chunk
    bounds = [0, *(np.flatnonzero(np.diff(sorted_chunks)) + 1).tolist(), len(rows)]
    groups = [
        (int(sorted_chunks[start]), start, stop, local[start:stop])
        for start, stop in itertools.pairwise(bounds)
    ]
    return RowPlan(len(rows), order, groups)


class MappedArray:
    """Row access to one array of a version on a POSIX path."""

    __slots__ = (
        "_chunk_nbytes",
        "_chunk_shape",
        "_chunks",
        "_ndim",
        "_path",
        "_source",
        "dtype",
        "n_chunks",
        "n_rows",
        "rows_per_chunk",
    )

    def __init__(self, source: ChunkSource, path: str, spec: ArrayGeometry) -> None:
        self._source = source
        self._path = path
        self.dtype = np.dtype(spec.dtype)
        self._ndim = len(spec.shape)
        self._chunk_shape = spec.chunks
        self._chunk_nbytes = spec.chunk_nbytes
        self.n_rows = spec.shape[0]
        self.rows_per_chunk = spec.rows_per_chunk
        self.n_chunks = spec.n_chunks
        self._chunks: list[NDArray[np.generic] | None] = [None] * spec.n_chunks

    def chunk(self, index: int) -> NDArray[np.generic]:
        """The whole chunk ``index`` as a read-only array view of the mapped file."""
        array = self._chunks[index]
        if array is None:
            array = self._map(index)
        return array

    def row(self, row: int) -> NDArray[np.generic]:
        """Row ``row`` (a scalar for 1-D arrays) as a view."""
        chunk, offset = divmod(row, self.rows_per_chunk)
        return self.chunk(chunk)[offset]  # type: ignore[no-any-return]

    def take(self, plan: RowPlan, out: NDArray[np.generic]) -> None:
        """Copy the rows of ``plan`` into ``out`` (the leading columns of 2-D rows)."""
        width = () if out.ndim == 1 else (slice(0, out.shape[1]),)
        if plan.order is None:
            for chunk, _, _, local in plan.groups:
                out[...] = self.chunk(chunk)[(local, *width)]
            return
        # Gather chunk by chunk into a buffer in chunk order, then place every row at once.
        buffer = np.empty_like(out)
        for chunk, start, stop, local in plan.groups:
            buffer[start:stop] = self.chunk(chunk)[(local, *width)]
        out[plan.order] = buffer

    def span(self, start: int, stop: int) -> NDArray[np.generic]:
        """Elements ``start:stop`` of a 1-D array, copied only when they cross chunks."""
        if start >= stop:
            return self.chunk(0)[:0]
        first, offset = divmod(start, self.rows_per_chunk)
        end = offset + (stop - start)
        if end <= self.rows_per_chunk:
            return self.chunk(first)[offset:end]
        parts = []
        while start < stop:
            chunk, offset = divmod(start, self.rows_per_chunk)
            take = min(stop - start, self.rows_per_chunk - offset)
            parts.append(self.chunk(chunk)[offset : offset + take])
            start += take
        return np.concatenate(parts)

    def _map(self, index: int) -> NDArray[np.generic]:
        path = self._source.local_file(chunk_path(self._path, index, self._ndim))
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise CorruptVersion(
                f"chunk file {path} is missing: the version is damaged; "
                "roll back (store.rollback()) or republish it"
            ) from None
        try:
            size = os.fstat(fd).st_size
            if size != self._chunk_nbytes:
                raise CorruptVersion(
                    f"chunk file {path} has {size} bytes, the manifest says "
                    f"{self._chunk_nbytes}: the version is damaged; roll back or republish it"
                )
            mapped = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        # Lookups touch one row of a chunk; read-ahead would only pull pages nobody asked for.
        mapped.madvise(mmap.MADV_RANDOM)
        array = np.frombuffer(mapped, dtype=self.dtype).reshape(self._chunk_shape)
        self._chunks[index] = array
        return array
