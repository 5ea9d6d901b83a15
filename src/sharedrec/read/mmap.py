"""Memory-mapped access to the row chunks of one zarr array, without zarr-python.

A chunk file of an uncompressed little-endian zarr v3 array is the C-order bytes of the
chunk, so it can be mapped and viewed as a numpy array directly. Chunks are mapped on
first use; nothing is read when the array is opened. When a chunk is first mapped its size
is checked against the manifest, and for the arrays of a key index (small, and deciding
which row a key is) its CRC32 too.

When every chunk file is a whole number of pages (sharedrec sizes chunks so), the chunks
of an array are mapped back to back into one reserved span of address space, so the whole
array is one numpy view and a batch lookup is one fancy index, as over a single file.
Parts of the span whose chunk is not mapped yet are never touched: every access maps
the chunks it needs first.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import math
import mmap
import os
import sys
import threading
import weakref
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from sharedrec.errors import CorruptVersion, SharedrecError, VersionGone
from sharedrec.format.layout import MANIFEST, chunk_path

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from sharedrec.format.schema import ArrayGeometry

__all__ = [
    "PAGE",
    "Checksummed",
    "ChunkSource",
    "Joint",
    "LocalFolder",
    "MappedArray",
    "RowPlan",
    "huge_page_step",
    "plan_rows",
]

PAGE = mmap.PAGESIZE
"""Chunk files whose size is a multiple of this can be mapped back to back."""


class ChunkSource(Protocol):
    """Where the chunk files of one version can be found on this machine."""

    def local_file(self, relpath: str) -> str:
        """A local path of the file ``relpath`` of the version (fetching it if needed)."""
        ...


class Checksummed(Protocol):
    """A manifest's entry for one file: its CRC32."""

    @property
    def crc32(self) -> int:
        """CRC32 of the file's bytes."""
        ...


class LocalFolder:
    """A version folder on a POSIX path (local disk, EFS/NFS mount): files are used in place."""

    __slots__ = ("root",)

    def __init__(self, root: str) -> None:
        self.root = root

    def local_file(self, relpath: str) -> str:
        """``root/relpath``."""
        return os.path.join(self.root, relpath)


def _missing_chunk(source: ChunkSource, path: str) -> SharedrecError:
    """The error for a chunk file that is not there.

    Garbage collection deletes a version's manifest first: a version folder without one was
    deleted under the reader (`VersionGone`: a following reader moves to the live version),
    while a missing chunk beside a manifest is damage.
    """
    if isinstance(source, LocalFolder) and not os.path.exists(os.path.join(source.root, MANIFEST)):
        version = os.path.basename(os.path.normpath(source.root))
        return VersionGone(
            f"chunk file {path} is gone: version {version} was deleted (garbage-collected) while "
            "this reader used it, e.g. after its lease expired while the process was paused; "
            "open a reader on a version that exists (store.versions())"
        )
    return CorruptVersion(
        f"chunk file {path} is missing: the version is damaged; roll back (store.rollback()) or republish it"
    )


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


class _Region:
    """A span of reserved address space into which chunk files are mapped back to back.

    numpy views made from it (`__array_interface__`) keep it alive; the span is unmapped
    when the last one goes.
    """

    __slots__ = ("address", "size")

    def __init__(self, size: int) -> None:
        self.address = 0  # nothing to unmap if the reservation fails
        self.size = size
        libc = _libc()
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE
        # A span of 2 MiB or more starts on a 2 MiB boundary: chunk files whose size is a
        # multiple of 2 MiB then start on one too, and a kernel can map them with huge pages.
        slack = _HUGE_PAGE if size >= _HUGE_PAGE else 0
        address = libc.mmap(None, size + slack, 0, flags, -1, 0)  # PROT_NONE: reserved, not usable
        if address is None or address == _MAP_FAILED:
            raise OSError(ctypes.get_errno(), f"cannot reserve {size} bytes of address space")
        if slack:
            start = -(-address // _HUGE_PAGE) * _HUGE_PAGE
            if start > address:
                libc.munmap(address, start - address)
            if address + slack > start:
                libc.munmap(start + size, address + slack - start)
            address = start
        self.address = address

    def map_file(self, fd: int, offset: int, size: int) -> None:
        """Map ``size`` bytes of the file ``fd`` read-only at ``offset`` in the span."""
        libc = _libc()
        target = self.address + offset
        got = libc.mmap(target, size, mmap.PROT_READ, mmap.MAP_SHARED | _MAP_FIXED, fd, 0)
        if got != target:
            raise OSError(ctypes.get_errno(), "cannot map a chunk file into its reserved span")
        # Lookups touch one row of a chunk; read-ahead would only pull pages nobody asked for.
        libc.madvise(target, size, mmap.MADV_RANDOM)

    @property
    def __array_interface__(self) -> dict[str, object]:
        return {"shape": (self.size,), "typestr": "|u1", "data": (self.address, True), "version": 3}

    def __del__(self) -> None:
        if self.address:
            _libc().munmap(self.address, self.size)


def huge_page_step(row_bytes: Sequence[int]) -> int:
    """Rows of each size in ``row_bytes`` such that every multiple of them is a multiple of
    2 MiB in bytes, for each (see `Joint`); 1 when that takes more than 64 MiB of one size,
    address space not worth reserving between two arrays."""
    step = math.lcm(*(_HUGE_PAGE // math.gcd(size, _HUGE_PAGE) for size in row_bytes))
    return step if step * max(row_bytes) <= _MAX_ALIGNMENT_GAP else 1


_MAX_ALIGNMENT_GAP = 64 << 20
_MAP_FIXED = 0x10  # the same value on Linux and macOS
_HUGE_PAGE = 2 << 20
_MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000 if sys.platform == "linux" else 0)
_MAP_FAILED = ctypes.c_void_p(-1).value
_LIBC: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL:
    global _LIBC
    if _LIBC is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int64,
        ]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        _LIBC = libc
    return _LIBC


_REGIONS = sys.platform in ("linux", "darwin") and ctypes.sizeof(ctypes.c_void_p) == 8
"""Whether chunks can be mapped back to back here (64-bit Linux or macOS)."""


class MappedArray:
    """Row access to one array of a version on a POSIX path."""

    __slots__ = (
        "__weakref__",
        "_chunk_nbytes",
        "_chunk_shape",
        "_chunks",
        "_files",
        "_joint",
        "_lock",
        "_mapped",
        "_ndim",
        "_path",
        "_region",
        "_source",
        "_unmapped",
        "_whole",
        "backed",
        "dtype",
        "n_chunks",
        "n_rows",
        "on_map",
        "rows_per_chunk",
        "whole",
    )

    def __init__(
        self,
        source: ChunkSource,
        path: str,
        spec: ArrayGeometry,
        files: Mapping[str, Checksummed] | None = None,
    ) -> None:
        self._source = source
        # With the manifest's entries, each chunk's CRC32 is checked when it is first mapped:
        # for the arrays that decide which row a key is, where a flipped bit that keeps the
        # size would serve another key's data. Once per chunk per process, never per lookup.
        self._files = files
        self.backed = False
        """Whether a chunk is mapped: a file of the size the manifest declares exists."""
        self.on_map: Callable[[NDArray[np.generic]], str | None] | None = None
        """Checks a chunk's rows (not the padding past the last) when it is first mapped:
        a problem found, or None."""
        self._path = path
        self.dtype = np.dtype(spec.dtype)
        self._ndim = len(spec.shape)
        self._chunk_shape = spec.chunks
        self._chunk_nbytes = spec.chunk_nbytes
        self.n_rows = spec.shape[0]
        self.rows_per_chunk = spec.rows_per_chunk
        self.n_chunks = spec.n_chunks
        self._chunks: list[NDArray[np.generic] | None] = [None] * spec.n_chunks
        # Back to back needs several chunks, each a whole number of pages.
        contiguous = _REGIONS and self.n_chunks > 1 and self._chunk_nbytes % PAGE == 0
        self._mapped: NDArray[np.bool_] | None = np.zeros(self.n_chunks, bool) if contiguous else None
        self._unmapped = self.n_chunks
        """Chunks not mapped yet: once none is left, a batch skips looking for them."""
        self._region: _Region | None = None
        self._joint: tuple[Joint, int] | None = None
        """The span shared with other arrays this one is mapped into, and its first row there."""
        self._whole: NDArray[np.generic] | None = None
        self.whole: NDArray[np.generic] | None = None
        """The whole array as one view, set when its last chunk is mapped (and so checked):
        a single-key lookup indexes it with a global row, no chunk arithmetic. Always None
        when there are several chunks not mapped back to back. Rows past ``n_rows`` are the
        last chunk's padding."""
        self._lock = threading.Lock()

    @property
    def n_cols(self) -> int:
        """Columns of a 2-D array (1 for a 1-D one)."""
        return self._chunk_shape[1] if self._ndim > 1 else 1

    def renew_lock(self) -> None:
        """A new lock, in a forked child (see `renew_lock_after_fork`)."""
        self._lock = threading.Lock()

    def chunk(self, index: int) -> NDArray[np.generic]:
        """The whole chunk ``index`` as a read-only array view of the mapped file."""
        array = self._chunks[index]
        if array is None:
            array = self._map(index)
        return array

    def back(self, row: int = 0) -> None:
        """Map the chunk of ``row`` unless a chunk is mapped already.

        Its file's size is checked then, so rows as wide as the manifest declares are
        held by a real file: call this before sizing an allocation by that width.
        """
        if not self.backed:
            self.chunk(row // self.rows_per_chunk)

    def contiguous(self) -> NDArray[np.generic] | None:
        """The whole array as one view, rows of every chunk in order, or None when the chunks
        are not mapped back to back (and there are several).

        Only rows of mapped chunks may be read: map a chunk (`chunk`) before reading its
        rows. The rows past ``n_rows`` are the last chunk's padding.
        """
        if self._mapped is None:
            return self.chunk(0) if self.n_chunks == 1 else None
        if self._whole is None:
            self.chunk(0)
        return self._whole

    def row(self, row: int) -> NDArray[np.generic]:
        """Row ``row`` (a scalar for 1-D arrays) as a view."""
        chunk, offset = divmod(row, self.rows_per_chunk)
        return self.chunk(chunk)[offset]  # type: ignore[no-any-return]

    def take(
        self, rows: NDArray[np.intp], out: NDArray[np.generic], plan: RowPlan | None = None
    ) -> RowPlan | None:
        """Copy ``rows`` (global row numbers) into ``out`` (the leading columns of 2-D rows).

        Returns the `RowPlan` built for chunk-by-chunk copying, if one was needed, so that
        arrays chunked alike can reuse it (pass it as ``plan``).
        """
        if not len(rows):  # nothing to copy, and maybe no chunk mapped to copy from
            return plan
        if self._mapped is not None:
            self.map_rows(rows)
        whole = self.contiguous()  # chunks mapped back to back, or the one chunk
        if whole is not None:
            if out.ndim == 1 or out.shape[1] == whole.shape[1]:
                np.take(whole, rows, axis=0, out=out, mode="clip")  # rows are in range: no clipping
            else:
                out[...] = whole[rows, : out.shape[1]]
            return plan
        plan = plan or plan_rows(rows, self.rows_per_chunk)
        width = () if out.ndim == 1 else (slice(0, out.shape[1]),)
        if plan.order is None:
            for chunk, _, _, local in plan.groups:
                out[...] = self.chunk(chunk)[(local, *width)]
            return plan
        # Gather chunk by chunk into a buffer in chunk order, then place every row at once.
        buffer = np.empty_like(out)
        for chunk, start, stop, local in plan.groups:
            buffer[start:stop] = self.chunk(chunk)[(local, *width)]
        out[plan.order] = buffer
        return plan

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
        relpath = chunk_path(self._path, index, self._ndim)
        path = self._source.local_file(relpath)
        for attempt in (1, 2):
            fd = self._open(relpath, path)
            try:
                size = os.fstat(fd).st_size
                if size != self._chunk_nbytes:
                    raise CorruptVersion(
                        f"chunk file {path} has {size} bytes, the manifest says "
                        f"{self._chunk_nbytes}: the version is damaged; roll back or republish it"
                    )
                problem = self._checksum(fd, relpath)
                if problem is None:
                    if self._mapped is not None:
                        return self._map_into_region(fd, index, path)
                    mapped = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
                    break
            finally:
                os.close(fd)
            if attempt == 1 and not isinstance(self._source, LocalFolder):
                # A damaged copy in a node's cache: drop it, so that it is fetched again (and
                # checked on arrival) instead of being trusted by this or any later process.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                path = self._source.local_file(relpath)
                continue
            raise CorruptVersion(
                f"chunk file {path} {problem}: the version is damaged; roll back or republish it"
            )
        # Lookups touch one row of a chunk; read-ahead would only pull pages nobody asked for.
        mapped.madvise(mmap.MADV_RANDOM)
        array = np.frombuffer(mapped, dtype=self.dtype).reshape(self._chunk_shape)
        self._check_values(array, index, path)
        self._chunks[index] = array
        self.backed = True
        if self.n_chunks == 1:
            self.whole = array
        return array

    def _open(self, relpath: str, path: str) -> int:
        try:
            try:
                return os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                # A cache shared with other processes may have evicted the file between the
                # fetch and the open: fetch it once more (on a version folder, nothing changes).
                return os.open(self._source.local_file(relpath), os.O_RDONLY)
        except FileNotFoundError:
            raise _missing_chunk(self._source, path) from None

    def _checksum(self, fd: int, relpath: str) -> str | None:
        """Why the chunk file does not match its manifest entry's CRC32, or None."""
        if self._files is None:
            return None
        entry = self._files.get(relpath)
        if entry is None:
            return "is not listed in the manifest"
        # A mapping of its own, read front to back with read-ahead: the lookup mappings are
        # MADV_RANDOM, and would fault the chunk in one page at a time.
        with mmap.mmap(fd, self._chunk_nbytes, access=mmap.ACCESS_READ) as whole:
            whole.madvise(mmap.MADV_SEQUENTIAL)
            crc = zlib.crc32(whole)
        if crc != entry.crc32:
            return f"has crc32 {crc:08x}, the manifest says {entry.crc32:08x}"
        return None

    def _check_values(self, array: NDArray[np.generic], index: int, path: str) -> None:
        check = self.on_map
        rows = min(self.rows_per_chunk, self.n_rows - index * self.rows_per_chunk)
        problem = check(array[:rows]) if check is not None else None
        if problem is not None:
            raise CorruptVersion(
                f"chunk file {path} {problem}: the version is damaged; roll back or republish it"
            )

    def _map_into_region(self, fd: int, index: int, path: str) -> NDArray[np.generic]:
        assert self._mapped is not None
        with self._lock:
            if self._whole is None:
                rows = self.n_chunks * self.rows_per_chunk
                renew_lock_after_fork(self)
                if self._joint is not None:
                    joint, first = self._joint
                    self._region, whole = joint.region()
                    self._whole = whole[first : first + rows]
                else:
                    self._region = _Region(self.n_chunks * self._chunk_nbytes)
                    whole = np.asarray(self._region).view(self.dtype)
                    self._whole = whole.reshape((rows, *self._chunk_shape[1:]))
            assert self._region is not None
            start = index * self.rows_per_chunk
            array = self._whole[start : start + self.rows_per_chunk]
            if not self._mapped[index]:
                offset = self._joint[1] * self.row_nbytes if self._joint is not None else 0
                self._region.map_file(fd, offset + index * self._chunk_nbytes, self._chunk_nbytes)
                self._check_values(array, index, path)  # unmarked, the chunk is mapped and checked again
                self._mapped[index] = True
                self._unmapped -= 1
                if not self._unmapped:
                    self.whole = self._whole
            self._chunks[index] = array
            self.backed = True
            return array

    @property
    def row_shape(self) -> tuple[int, ...]:
        """The shape of one row (``()`` for a 1-D array)."""
        return tuple(self._chunk_shape[1:])

    @property
    def row_nbytes(self) -> int:
        """The bytes of one row."""
        return self._chunk_nbytes // self.rows_per_chunk

    def can_join(self, first: MappedArray) -> bool:
        """Whether this array can be mapped into one span with ``first`` (see `Joint`): its
        chunks are mapped back to back (or it has one, a whole number of pages), none is
        mapped yet, and its rows are ``first``'s."""
        return (
            (self._mapped is not None or (_REGIONS and self.n_chunks == 1 and self._chunk_nbytes % PAGE == 0))
            and not self.backed
            and self._joint is None
            and self.dtype == first.dtype
            and self.row_shape == first.row_shape
        )

    def join(self, joint: Joint, start: int) -> None:
        """Map this array into ``joint``'s span from row ``start`` on (see `can_join`)."""
        self._joint = (joint, start)
        if self._mapped is None:  # one chunk: mapped into the span as one of several would be
            self._mapped = np.zeros(1, bool)

    def span_view(self) -> tuple[_Region, NDArray[np.generic]]:
        """A new span for this array and the arrays joined to it, as one array view."""
        rows = self._joint[0].starts[-1] if self._joint is not None else self.n_chunks * self.rows_per_chunk
        region = _Region(rows * self.row_nbytes)
        whole = np.asarray(region).view(self.dtype)
        return region, whole.reshape((rows, *self._chunk_shape[1:]))

    def map_rows(self, rows: NDArray[np.intp]) -> None:
        """Map the chunks holding ``rows`` (valid row numbers) that are not mapped yet."""
        if self._mapped is None:
            for chunk in set((rows // self.rows_per_chunk).tolist()):
                self.chunk(chunk)
        elif self._unmapped:
            chunks = rows // self.rows_per_chunk
            for chunk in set(chunks[~self._mapped[chunks]].tolist()):
                self._map(chunk)

    @property
    def complete(self) -> bool:
        """Whether every chunk is mapped."""
        return self._unmapped == 0 if self._mapped is not None else all(c is not None for c in self._chunks)

    @property
    def joinable(self) -> bool:
        """Whether ``whole`` is set once every chunk is mapped: the chunks are mapped back
        to back, or there is one."""
        return self._mapped is not None or self.n_chunks == 1


class Joint:
    """Arrays of the same dtype and row shape (the partitions of one collection's items, say)
    mapped back to back into one span: row ``r`` of ``arrays[i]`` is row ``starts[i] + r``
    of the span, so a batch over all of them is one fancy index (`take`).

    Only arrays whose chunks are mapped back to back, none of them mapped yet, can be
    joined (`join`). The span is reserved when the first chunk is mapped.

    Every array of at least 2 MiB starts at a row that is a multiple of ``step``: given
    `huge_page_step` of the rows, on a 2 MiB boundary, so that its chunks of whole 2 MiB pages
    (or its one chunk) can be mapped with huge pages, as a lone array's are. The rows
    between two arrays are reserved address space, never mapped or read.
    """

    __slots__ = ("__weakref__", "_complete", "_lock", "_region", "_whole", "arrays", "starts")

    def __init__(self, arrays: list[MappedArray], step: int = 1) -> None:
        self.arrays = arrays
        starts = []
        end = 0
        for array in arrays:
            rows = array.n_chunks * array.rows_per_chunk
            if rows * array.row_nbytes >= _HUGE_PAGE:
                end += -end % step
            starts.append(end)
            end += rows
        starts.append(end)
        self.starts = starts
        """The first row of every array in the span, and the span's rows."""
        self._region: _Region | None = None
        self._whole: NDArray[np.generic] | None = None
        self._complete = False
        """Whether every chunk of every array is mapped: a batch need not look for any."""
        self._lock = threading.Lock()
        renew_lock_after_fork(self)

    @classmethod
    def join(cls, arrays: list[MappedArray], step: int = 1) -> Joint | None:
        """The arrays mapped into one span from now on, or None when they cannot all be (then
        none is); ``step``: see `Joint`."""
        if not arrays or not all(array.can_join(arrays[0]) for array in arrays):
            return None
        joint = cls(arrays, step)
        for array, start in zip(arrays, joint.starts, strict=False):
            array.join(joint, start)
        return joint

    def renew_lock(self) -> None:
        """A new lock, in a forked child (see `renew_lock_after_fork`)."""
        self._lock = threading.Lock()

    def region(self) -> tuple[_Region, NDArray[np.generic]]:
        """The span, reserved on first use, and the whole of it as one array view."""
        with self._lock:
            if self._region is None or self._whole is None:
                self._region, self._whole = self.arrays[0].span_view()
            return self._region, self._whole

    def take(self, rows: NDArray[np.intp], out: NDArray[np.generic]) -> None:
        """Copy rows of the span (``starts[i] + r`` for row ``r`` of ``arrays[i]``) into
        ``out`` (the leading columns of each row); the chunks holding them are mapped first."""
        if not self._complete:
            for number, array in enumerate(self.arrays):
                if not array.complete:
                    local = rows - self.starts[number]
                    array.map_rows(local[(local >= 0) & (local < array.n_rows)])
            self._complete = all(array.complete for array in self.arrays)
        _, whole = self.region()
        if out.shape[1:] == whole.shape[1:]:
            np.take(whole, rows, axis=0, out=out, mode="clip")  # rows are in range: no clipping
        else:
            out[...] = whole[rows, : out.shape[1]]


class _Locked(Protocol):
    def renew_lock(self) -> None:
        """Replace the object's lock with a new one (in a forked child)."""
        ...


_LOCKED: weakref.WeakSet[_Locked] = weakref.WeakSet()
"""Objects whose lock a forked child renews (see `renew_lock_after_fork`)."""


def renew_lock_after_fork(owner: _Locked) -> None:
    """Have ``owner`` renew its lock (`renew_lock`) in every child forked from now on.

    A thread of the parent may hold the lock at ``fork()``; it stays held in the child,
    where that thread no longer exists, and the child's next use of it would block forever.
    """
    _LOCKED.add(owner)


def _after_fork_in_child() -> None:
    for owner in list(_LOCKED):
        owner.renew_lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
