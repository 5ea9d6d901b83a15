"""sharedrec: share precomputed recommendations through one volume.

Batch jobs publish immutable versions (ranked lists, embeddings) to a store on local
disk or a mounted EFS/NFS volume; services open the live version in constant time and
answer lookups from memory-mapped chunks.

Example:
    >>> import sharedrec  # doctest: +SKIP
    >>> store = sharedrec.open("/mnt/recs")
    >>> store.publish_ranked("home", keys=users, items=items, scores=scores)
    >>> store.reader().get("home", 42, k=10).items
"""

from __future__ import annotations

from sharedrec.errors import (
    ConcurrentPublishError,
    CorruptVersion,
    InvalidInput,
    KeyNotFound,
    PublishRejected,
    SharedrecError,
    StoreNotFound,
    UnknownCollection,
    UnsupportedLocation,
    VersionNotFound,
)
from sharedrec.manage.integrity import VerifyReport
from sharedrec.read.reader import RankedList, Reader, ReaderStats
from sharedrec.store import RecommendationStore, VersionInfo, open

__version__ = "0.1.0"

__all__ = [
    "CollectionSpec",
    "ConcurrentPublishError",
    "CorruptVersion",
    "Draft",
    "GCReport",
    "InvalidInput",
    "KeyNotFound",
    "LeaseInfo",
    "Manifest",
    "PartitionReceipt",
    "PublishHandle",
    "PublishRejected",
    "RankedList",
    "Reader",
    "ReaderStats",
    "RecommendationStore",
    "SharedrecError",
    "StoreNotFound",
    "UnknownCollection",
    "UnsupportedLocation",
    "VerifyReport",
    "VersionInfo",
    "VersionNotFound",
    "__version__",
    "open",
    "partition_of",
]


def __getattr__(name: str) -> object:
    # The writing side (and zarr behind it) loads only when a process publishes: a reader
    # process never imports pydantic nor zarr.
    if name in ("CollectionSpec", "Manifest"):
        from sharedrec.format import schema as format

        return getattr(format, name)
    if name == "Draft":
        from sharedrec.write.draft import Draft

        return Draft
    if name in ("PartitionReceipt", "PublishHandle", "partition_of"):
        from sharedrec.write import distributed

        return getattr(distributed, name)
    if name == "GCReport":
        from sharedrec.manage.gc import GCReport

        return GCReport
    if name == "LeaseInfo":
        from sharedrec.read.leases import LeaseInfo

        return LeaseInfo
    raise AttributeError(f"module 'sharedrec' has no attribute {name!r}")
