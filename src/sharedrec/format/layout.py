"""Names and paths of a store's layout: constants and validators that need no pydantic.

Everything here is used on the read path, which stays free of pydantic so that a reader
process starts fast.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime

from sharedrec.errors import InvalidInput

__all__ = [
    "CATALOG",
    "CATALOG_FORMAT",
    "CHECKSUM",
    "CHUNK_TARGET_BYTES",
    "CURRENT",
    "FORMAT",
    "FORMAT_FIBONACCI",
    "FORMAT_RAGGED",
    "GC_MARK",
    "LEASES",
    "LEASE_FORMAT",
    "MANIFEST",
    "MAX_CHAIN",
    "MAX_PARTITIONS",
    "MAX_WIDTH",
    "NEWEST_FORMAT",
    "PARTITION_HASHES",
    "POINTER_FORMAT",
    "POINTER_HISTORY",
    "RAGGED_MIN_WASTE",
    "RAGGED_WASTE",
    "REFS",
    "VERSIONS",
    "chunk_path",
    "new_version_id",
    "ref_path",
    "validate_collection_name",
    "validate_version_id",
]

FORMAT = "sharedrec/2"
"""The manifest format sharedrec writes when no collection is stored ragged."""
FORMAT_RAGGED = "sharedrec/3"
"""The manifest format of a version with a ragged collection (``layout: "ragged"``): an older
sharedrec refuses such a version as newer instead of reading its flat arrays as rows."""
FORMAT_FIBONACCI = "sharedrec/4"
"""The manifest format of a version with a collection of int64 keys split into partitions by
``fibonacci64`` (with or without a ragged collection): an older sharedrec refuses such a
version as newer instead of looking its keys up in the wrong partitions."""
NEWEST_FORMAT = FORMAT_FIBONACCI
"""The newest manifest format this sharedrec reads."""
PARTITION_HASHES = {"int64": ("fibonacci64", "splitmix64"), "str": ("blake2b-64",)}
"""The hashes that may split a collection of each key type into partitions, by the name its
manifest records; the first is the one publishes begun now use (``splitmix64`` split int64
keys before ``fibonacci64``, which costs a lookup less)."""
POINTER_FORMAT = "sharedrec-pointer/1"
LEASE_FORMAT = "sharedrec-lease/1"
CURRENT = "CURRENT"
REFS = "refs"
VERSIONS = "versions"
LEASES = "leases"
MANIFEST = "manifest.json"
CATALOG = "catalog.json"
"""Beside ``CURRENT``: a summary of every committed version's manifest (`sharedrec.format.catalog`),
a cache that listing and garbage collection check against the folders listed."""
CATALOG_FORMAT = "sharedrec-catalog/1"
GC_MARK = ".gc"
"""Written into a version folder by garbage collection before it deletes the version: a
version carrying it is condemned, and nothing may make it live or start reading it."""
PROBE = ".sharedrec-probe"
"""Prefix of the scratch objects with which an object-store backend tests the server's
conditional writes (``<root>/.sharedrec-probe-<unix seconds>-<random>``, deleted at once);
one left by a killed writer is removed by garbage collection after the grace period, judged
by the time in its name."""
CHECKSUM = "crc32"

CHUNK_TARGET_BYTES = 4 * 1024 * 1024
"""Aim for chunk files of about this size: large enough for few S3 requests, small enough
that a lookup never pulls much through a lazy cache."""
HUGE_PAGE_CHUNK_MAX_BYTES = 64 * 1024 * 1024
"""On a store on a file system, with the default ``chunk_bytes``, the row arrays of a large
collection are chunked in whole 2 MiB pages up to this size when the default chunks are not
whole 2 MiB pages (see `sharedrec.write.arrays.chunk_rows`): a kernel that keeps large
folios in its page cache then maps them with huge pages, a TLB miss less per row read.
Object stores keep `CHUNK_TARGET_BYTES`: their readers download a chunk whole."""
HUGE_PAGE_CHUNK_MAX_PADDING = 1 / 16
"""... provided the last chunk's padding is at most this share of the rows."""
KEY_CHUNK_TARGET_BYTES = 512 * 1024
"""Key-index chunks are smaller: a reader checksums a key chunk whole the first time it maps
it, so this bounds what a first lookup reads (one 1 MiB NFS read, one small S3 GET)."""

RAGGED_WASTE = 1.5
"""A ranked collection is stored ragged (offsets and flat items) when its padded rows would
hold more than this many cells per item of its lists (``n_keys * longest > 1.5 * sum of
lengths``) and the padding would take at least `RAGGED_MIN_WASTE` bytes; else padded, which
serves a lookup with one read less."""
RAGGED_MIN_WASTE = 1024 * 1024
"""Padding smaller than this (items and scores together) is kept: it costs less than a
chunk file, and a padded collection keeps the fastest lookups."""

POINTER_HISTORY = 32
"""How many previously live versions ``CURRENT`` remembers for `rollback()`."""

# The limits of the format: readers refuse a manifest past any of them, writers refuse to
# publish one, so that nothing a writer accepts can be unreadable.

MAX_WIDTH = (1 << 24) - 1
"""The longest list (ranked) or widest vector a collection may hold."""

MAX_CHAIN = 256
"""The most deltas a chain may stack on its full version (``max_chain`` of a publish)."""

MAX_PARTITIONS = 100_000
"""The most partitions a collection may be split into (their folders have five digits)."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def validate_collection_name(name: object) -> str:
    """Return ``name`` if it is a valid collection name, else raise `InvalidInput`."""
    if isinstance(name, str) and name.lower().endswith(".json"):
        raise InvalidInput(
            f"invalid collection name {name!r}: names ending in .json are reserved for metadata"
        )
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise InvalidInput(
            f"invalid collection name {name!r}: use 1-128 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit (no path separators, no '..')"
        )
    return name


def ref_path(ref: str) -> str:
    """Where a named pointer lives: ``CURRENT`` for ``"current"``, else ``refs/<name>``."""
    if ref == "current":
        return CURRENT
    if not isinstance(ref, str) or not _NAME.fullmatch(ref) or ".." in ref or ref.lower() == "current":
        raise InvalidInput(
            f"invalid ref name {ref!r}: use 1-128 letters, digits, '_', '-' or '.', starting with a "
            "letter or digit ('current' is the live pointer, CURRENT)"
        )
    return f"{REFS}/{ref}"


def validate_version_id(version_id: object) -> str:
    """Return ``version_id`` if it is a valid version id, else raise `InvalidInput`."""
    if not isinstance(version_id, str) or not _NAME.fullmatch(version_id) or ".." in version_id:
        raise InvalidInput(
            f"invalid version id {version_id!r}: use 1-128 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    return version_id


def new_version_id(now: datetime | None = None) -> str:
    """A fresh version id that sorts by creation time: ``20261129T024815123456Z-1a2b3c``."""
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%S%fZ") + "-" + os.urandom(3).hex()


def chunk_path(array_path: str, chunk_index: int, ndim: int) -> str:
    """The zarr v3 key (default encoding, ``/`` separator) of a row chunk of an array."""
    return f"{array_path}/c/{chunk_index}" + "/0" * (ndim - 1)
