"""Array writers: chunk sizing, and the key index and row arrays of a collection.

Every array is an uncompressed little-endian zarr v3 array whose chunks hold whole rows,
sized so that a chunk file is about ``chunk_bytes`` and, when it spans several, a whole
number of 4 KiB pages (readers map the chunks back to back).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from sharedrec.errors import InvalidInput
from sharedrec.format.layout import (
    CHUNK_TARGET_BYTES,
    HUGE_PAGE_CHUNK_MAX_BYTES,
    HUGE_PAGE_CHUNK_MAX_PADDING,
    KEY_CHUNK_TARGET_BYTES,
    RAGGED_MIN_WASTE,
    RAGGED_WASTE,
    VERSIONS,
)
from sharedrec.format.schema import ArraySpec
from sharedrec.read import index
from sharedrec.write import validate as _validate

if TYPE_CHECKING:
    from sharedrec.backends.base import Backend

__all__ = [
    "chunk_rows",
    "chunk_sizes",
    "pack_ragged",
    "ragged_pays",
    "write_array",
    "write_keys",
    "write_ranked_rows",
    "write_vector_rows",
]

_WRITE_BLOCK_BYTES = 64 * 1024 * 1024


def chunk_rows(
    row_bytes: int | Sequence[int],
    n_rows: int,
    chunk_bytes: int,
    *,
    huge_up_to: int | None = None,
    joined: bool = False,
) -> int:
    """Rows per chunk so that a chunk holds about ``chunk_bytes`` (at least one row).

    ``row_bytes`` may list the row sizes of several arrays chunked alike. When the rows
    take several chunks, the count is rounded down so that every chunk file of each array
    is a whole number of 2 MiB huge pages when a chunk holds enough rows for that, else of
    4 KiB pages (when it holds enough for that): readers map the chunks back to back and
    gather a batch with one fancy index, and a kernel whose page cache holds 2 MiB folios
    can then map whole chunks with 2 MiB pages (a TLB miss less per row read). With the
    default 4 MiB chunks that happens for rows of a power-of-two size; rows of 400 bytes
    need ``chunk_bytes`` of 50 MiB or more (131,072 rows).

    With ``huge_up_to`` (a store on a file system, with the default ``chunk_bytes``), rows
    that take several chunks which are not whole 2 MiB pages get larger chunks that are,
    of at most ``huge_up_to`` bytes, when the last one's padding is at most
    `HUGE_PAGE_CHUNK_MAX_PADDING` of the rows; or one chunk of every row when they fit in
    ``huge_up_to``. Otherwise the chunks stay as ``chunk_bytes`` makes them.

    ``joined``: the rows of one partition, which readers map back to back with the other
    partitions' (`sharedrec.read.mmap.Joint`). One chunk of every row is then a whole number
    of pages too, padded past the last row: of 2 MiB pages with ``huge_up_to`` when that is
    at most ``huge_up_to`` bytes and the padding at most `HUGE_PAGE_CHUNK_MAX_PADDING` of the
    rows, else of 4 KiB pages.
    """
    sizes = [max(1, row_bytes)] if isinstance(row_bytes, int) else [max(1, size) for size in row_bytes]
    widest = max(sizes)
    huge_step = math.lcm(*(_HUGE_PAGE_BYTES // math.gcd(size, _HUGE_PAGE_BYTES) for size in sizes))
    page_step = math.lcm(*(_PAGE_BYTES // math.gcd(size, _PAGE_BYTES) for size in sizes))

    def one_chunk() -> int:
        if not joined:
            return n_rows
        if huge_up_to is not None:
            padded = -(-n_rows // huge_step) * huge_step
            if padded * widest <= huge_up_to and padded - n_rows <= n_rows * HUGE_PAGE_CHUNK_MAX_PADDING:
                return padded
        return -(-n_rows // page_step) * page_step

    rows = max(1, min(n_rows, chunk_bytes // widest))
    if rows >= n_rows:
        return one_chunk()
    for step in (huge_step, page_step):
        if rows >= step:
            rows -= rows % step
            break
    if huge_up_to is not None and rows % huge_step:
        limit = max(1, huge_up_to // widest)
        if n_rows <= limit:
            return one_chunk()
        larger = limit - limit % huge_step
        if larger and -n_rows % larger <= n_rows * HUGE_PAGE_CHUNK_MAX_PADDING:
            return larger
    return rows


def chunk_sizes(chunk_bytes: int | None, backend: Backend) -> tuple[int, int | None]:
    """``(chunk_bytes, huge_up_to)`` of a publish to ``backend`` (see `chunk_rows`).

    On a file system, readers map the chunk files in place: by default, large row arrays may
    take chunks of whole 2 MiB pages, which a kernel can map with huge pages. Object-store
    readers download a chunk whole: they keep the target size, as does a size given.

    Raises:
        InvalidInput: ``chunk_bytes`` is not an int from 1 KiB to 1 GiB.
    """
    huge_up_to = None
    if chunk_bytes is None:
        chunk_bytes = CHUNK_TARGET_BYTES
        if backend.local_path(VERSIONS) is not None:
            huge_up_to = HUGE_PAGE_CHUNK_MAX_BYTES
    if not isinstance(chunk_bytes, int) or not 1024 <= chunk_bytes <= 1 << 30:
        raise InvalidInput(f"chunk_bytes must be an int from 1 KiB to 1 GiB; got {chunk_bytes!r}")
    return chunk_bytes, huge_up_to


_PAGE_BYTES = 4096
_HUGE_PAGE_BYTES = 2 << 20


def write_ranked_rows(
    group: Any,
    keys: _validate.Keys,
    ranked: _validate.Ranked,
    chunk_bytes: int,
    task: Any = None,
    *,
    allow_ragged: bool = False,
    huge_up_to: int | None = None,
    joined: bool = False,
) -> tuple[dict[str, ArraySpec], list[int], str | None]:
    """Write the key index and the lists of ranked rows; items and scores are chunked alike.

    With ``allow_ragged``, lists whose padding would waste space (`ragged_pays`) are written
    ragged (``offsets`` and flat ``items``/``scores``, see `pack_ragged`); the specs then
    hold ``offsets``. ``ranked`` may be padded or flat (`Ranked.offsets`); flat lists
    written padded are padded here. Returns the array specs, the key fences and the key hash name
    (``huge_up_to`` and ``joined``: see `chunk_rows`).
    """
    arrays, fences, key_hash, order = write_keys(group, keys, chunk_bytes)
    cell_bytes = ranked.items.itemsize + ranked.scores.itemsize
    if allow_ragged and ragged_pays(ranked.lengths, ranked.width, cell_bytes):
        arrays.update(_write_ragged(group, ranked, order, chunk_bytes, task))
        return arrays, fences, key_hash
    ranked = ranked.padded()  # lists in the flat form are padded only when stored padded
    width = ranked.width
    rows = chunk_rows(
        [width * ranked.items.itemsize, width * ranked.scores.itemsize],
        len(keys),
        chunk_bytes,
        huge_up_to=huge_up_to,
        joined=joined,
    )
    arrays["items"] = write_array(group, "items", ranked.items, order, rows, task, chunk_bytes)
    arrays["scores"] = write_array(group, "scores", ranked.scores, order, rows, task, chunk_bytes)
    arrays["lengths"] = write_array(group, "lengths", ranked.lengths, order, None, task, chunk_bytes)
    return arrays, fences, key_hash


def ragged_pays(lengths: NDArray[np.int32], width: int, cell_bytes: int) -> bool:
    """Whether padded rows would hold more than `RAGGED_WASTE` cells per item listed, and
    waste at least `RAGGED_MIN_WASTE` bytes (a small collection stays padded)."""
    total = int(lengths.sum(dtype=np.int64))
    cells = len(lengths) * width
    return total > 0 and cells > RAGGED_WASTE * total and (cells - total) * cell_bytes >= RAGGED_MIN_WASTE


def pack_ragged(
    lengths: NDArray[np.integer[Any]], itemsize: int, chunk_bytes: int
) -> tuple[NDArray[np.int64], NDArray[np.int64], int]:
    """Place lists one after the other in a flat space of chunks, none across a chunk's end.

    Returns ``(starts, offsets, chunk)``: where each list starts, the ``n + 1`` offsets the
    format stores (``offsets[i + 1]`` is where list ``i`` ends), and the elements per chunk.
    A chunk holds the whole data when it fits in ``chunk_bytes`` (at least the longest
    list); else it holds ``max(chunk_bytes // itemsize, 3 * longest)`` elements, so that the
    tail a list leaves unused when the next one starts a new chunk (shorter than the longest
    list) is at most a third of the chunk.
    """
    lengths = lengths.astype(np.int64)
    n = len(lengths)
    total = int(lengths.sum())
    longest = int(lengths.max()) if n else 0
    chunk = max(
        1, longest, total if total * itemsize <= chunk_bytes else max(chunk_bytes // itemsize, 3 * longest)
    )
    ends = np.cumsum(lengths)
    cum = np.concatenate([np.zeros(1, np.int64), ends])
    starts = np.empty(n, np.int64)
    row, base = 0, 0
    while row < n:  # one step per chunk: the rows that fit from ``row`` on
        stop = int(np.searchsorted(cum, cum[row] + chunk, side="right")) - 1
        stop = max(stop, row + 1)
        starts[row:stop] = base + cum[row:stop] - cum[row]
        row, base = stop, base + chunk
    offsets = np.concatenate([np.zeros(1, np.int64), starts + lengths])
    return starts, offsets, chunk


def _write_ragged(
    group: Any, ranked: _validate.Ranked, order: NDArray[np.intp] | None, chunk_bytes: int, task: Any
) -> dict[str, ArraySpec]:
    """Write ``offsets`` and flat ``items``/``scores`` of the lists, in key order."""
    items, scores = ranked.items, ranked.scores
    rows = np.arange(len(ranked.lengths)) if order is None else order
    lengths = ranked.lengths[rows].astype(np.int64)
    starts, offsets, chunk = pack_ragged(lengths, max(items.itemsize, scores.itemsize), chunk_bytes)
    # Cell by cell, in O(items listed): the padded input may be far larger than the data.
    columns = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    where = np.repeat(starts, lengths) + columns
    size = int(offsets[-1])
    flat_items = np.full(size, _validate.ITEM_PAD, dtype=items.dtype)
    flat_scores = np.full(size, np.nan, dtype=scores.dtype)
    if ranked.offsets is None:
        source_rows = np.repeat(rows, lengths)
        flat_items[where] = items[source_rows, columns]
        flat_scores[where] = scores[source_rows, columns]
    else:  # the flat form: list ``r`` at ``ranked.offsets[r]`` on
        source = np.repeat(ranked.offsets[:-1][rows], lengths) + columns
        flat_items[where] = items[source]
        flat_scores[where] = scores[source]
    return {
        "offsets": write_array(group, "offsets", offsets, None, None, None, KEY_CHUNK_TARGET_BYTES),
        "items": write_array(group, "items", flat_items, None, chunk, task, chunk_bytes),
        "scores": write_array(group, "scores", flat_scores, None, chunk, task, chunk_bytes),
    }


def write_vector_rows(
    group: Any,
    keys: _validate.Keys,
    vectors: NDArray[Any],
    chunk_bytes: int,
    task: Any = None,
    *,
    huge_up_to: int | None = None,
    joined: bool = False,
) -> tuple[dict[str, ArraySpec], list[int], str | None]:
    """Write the key index and the vectors of rows; returns specs, fences and hash name
    (``huge_up_to`` and ``joined``: see `chunk_rows`)."""
    arrays, fences, key_hash, order = write_keys(group, keys, chunk_bytes)
    rows = chunk_rows(
        vectors.shape[1] * vectors.itemsize, len(keys), chunk_bytes, huge_up_to=huge_up_to, joined=joined
    )
    arrays["vectors"] = write_array(group, "vectors", vectors, order, rows, task, chunk_bytes)
    return arrays, fences, key_hash


def write_keys(
    group: Any, keys: _validate.Keys, chunk_bytes: int
) -> tuple[dict[str, ArraySpec], list[int], str | None, NDArray[np.intp] | None]:
    """Write the key index.

    Returns its array specs, the fences, the hash name, and the order in which input
    rows must be written (None when they already are in key order).
    """
    arrays: dict[str, ArraySpec] = {}
    order: NDArray[np.intp] | None
    chunk_bytes = min(chunk_bytes, KEY_CHUNK_TARGET_BYTES)
    if keys.ints is not None:
        order = np.argsort(keys.ints, kind="stable")
        sorted_keys = keys.ints[order]
        if bool((order[1:] > order[:-1]).all()):  # already in key order: write rows as given
            order = None
        rows = chunk_rows(8, len(keys), chunk_bytes)
        arrays["keys"] = write_array(group, "keys", sorted_keys, None, rows, None, chunk_bytes)
        fences = sorted_keys[::rows].tolist()
        key_hash = None
    else:
        assert keys.encoded is not None
        key_hash = index.DEFAULT_KEY_HASH
        hashes = index.hash_keys(keys.encoded, key_hash)
        order = np.argsort(hashes, kind="stable")
        sorted_hashes = hashes[order]
        spans, blob = index.encode_keys([keys.encoded[i] for i in order.tolist()])
        rows = chunk_rows(8, len(keys), chunk_bytes)
        arrays["key_hash"] = write_array(group, "key_hash", sorted_hashes, None, rows, None, chunk_bytes)
        arrays["key_spans"] = write_array(group, "key_spans", spans, None, None, None, chunk_bytes)
        arrays["key_bytes"] = write_array(group, "key_bytes", blob, None, None, None, chunk_bytes)
        fences = sorted_hashes[::rows].tolist()
    return arrays, fences, key_hash, order


def write_array(
    group: Any,
    name: str,
    data: NDArray[Any],
    order: NDArray[np.intp] | None,
    rows: int | None,
    task: Any,
    chunk_bytes: int,
) -> ArraySpec:
    """Write ``data[order]`` as an uncompressed little-endian zarr array, every chunk."""
    from zarr.codecs import BytesCodec

    dtype = data.dtype.newbyteorder("<") if data.dtype.itemsize > 1 else data.dtype
    n = data.shape[0]
    row_bytes = int(np.prod(data.shape[1:], dtype=np.int64)) * dtype.itemsize
    rows = rows or chunk_rows(row_bytes, n, chunk_bytes)
    fill: Any = np.nan if dtype.kind == "f" else (_validate.ITEM_PAD if dtype.kind == "i" else 0)
    array = group.create_array(
        name,
        shape=data.shape,
        chunks=(rows, *data.shape[1:]),
        dtype=dtype,
        fill_value=fill,
        compressors=None,
        filters=None,
        serializer=BytesCodec(endian="little" if dtype.itemsize > 1 else None),
        config={"write_empty_chunks": True},
    )
    step = rows * max(1, _WRITE_BLOCK_BYTES // max(1, rows * row_bytes))
    for start in range(0, n, step):
        stop = min(n, start + step)
        # Rows are C-contiguous here (normalised on input), where np.take is the fastest gather.
        block = np.take(data, order[start:stop], axis=0) if order is not None else data[start:stop]
        array[start:stop] = block
        if task is not None:
            task.advance(block.nbytes)
    return ArraySpec(dtype=dtype.str, shape=tuple(data.shape), chunks=(rows, *data.shape[1:]))
