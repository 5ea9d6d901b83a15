"""Memory-mapped access to the row chunks of one zarr array, without zarr-python.

A chunk file of an uncompressed little-endian zarr v3 array is the C-order bytes of the
chunk, so it can be mapped and viewed as a numpy array directly. Chunks are mapped on
first use; nothing is read when the array is opened.
"""

from __future__ import annotations

import mmap
import os
from typing import TYPE_CHECKING

import numpy as np

from sharedrec.errors import CorruptVersion
from sharedrec.format import ArraySpec, chunk_path

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["MappedArray", "RowPlan", "plan_rows"]

RowPlan = list[tuple[int, "NDArray[np.intp] | slice", "NDArray[np.intp]"]]
"""Rows grouped by chunk: ``(chunk, positions in the output, rows within the chunk)``."""


def plan_rows(rows: NDArray[np.intp], rows_per_chunk: int) -> RowPlan:
    """Group global rows by chunk once, to gather them from every array chunked alike."""
    if len(rows) == 0:
        return []
    chunks = rows // rows_per_chunk
    first, last = int(chunks.min()), int(chunks.max())
    if first == last:
        return [(first, slice(None), rows - first * rows_per_chunk)]
    order = np.argsort(chunks, kind="stable")
    bounds = np.flatnonzero(np.diff(chunks[order])) + 1
    plan: RowPlan = []
    for where in np.split(order, bounds):
        chunk = int(chunks[where[0]])
        plan.append((chunk, where, rows[where] - chunk * rows_per_chunk))
    return plan


class MappedArray:
    """Row access to one array of a version on a POSIX path."""

    __slots__ = (
        "_chunk_nbytes",
        "_chunk_shape",
        "_chunks",
        "_ndim",
        "_path",
        "_root",
        "dtype",
        "n_chunks",
        "n_rows",
        "rows_per_chunk",
    )

    def __init__(self, root: str, path: str, spec: ArraySpec) -> None:
        self._root = root
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
        columns = () if out.ndim == 1 else (slice(0, out.shape[1]),)
        for chunk, where, local in plan:
            out[where] = self.chunk(chunk)[(local, *columns)]

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
        path = os.path.join(self._root, chunk_path(self._path, index, self._ndim))
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
