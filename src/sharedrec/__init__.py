"""sharedrec: share precomputed recommendations through one volume.

Batch jobs publish immutable versions (ranked lists, embeddings) to a store on local
disk or a mounted EFS/NFS volume; services open the live version in constant time and
answer lookups from memory-mapped chunks.

Example:
    >>> import sharedrec  # doctest: +SKIP
    >>> store = sharedrec.open("/mnt/recs")
    >>> store.publish_ranked("home", keys=users, items=items, scores=scores)
    >>> store.reader().get("home", 42, k=10).items

Everything public is importable from here and listed in ``__all__``; the packages below
(``format``, ``read``, ``write``, ``manage``) are internal. The public modules besides this
one are `sharedrec.errors`, `sharedrec.metrics`, `sharedrec.integrations.ingest`,
`sharedrec.integrations.spark`, `sharedrec.integrations.dask`, `sharedrec.k8s` and
`sharedrec.testing.netvolume`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sharedrec.errors import (
    ConcurrentPublishError,
    CorruptVersion,
    InvalidInput,
    KeyNotFound,
    NewerFormat,
    PublishRejected,
    SharedrecError,
    StoreNotFound,
    UnknownCollection,
    UnsupportedLocation,
    VersionGone,
    VersionNotFound,
)

# Names that load on first use, and the module that holds each: every name but the
# exceptions. The writing side (and zarr behind it) loads only when a process publishes, so
# a reader process never imports it, nor pydantic; and a process that only needs the
# exceptions or a submodule (the readiness probe, `sharedrec ready`) loads no numpy.
# Keep this the only table of lazily loaded names.
_LAZY: dict[str, str] = {
    "open": "sharedrec.store",
    "RecommendationStore": "sharedrec.store",
    "CollectionSpec": "sharedrec.format.schema",
    "Lease": "sharedrec.format.schema",
    "Manifest": "sharedrec.format.schema",
    "Pointer": "sharedrec.format.schema",
    "VersionInfo": "sharedrec.manage.versions",
    "VerifyReport": "sharedrec.read.checks",
    "ReaderOptions": "sharedrec.read.options",
    "RankedList": "sharedrec.read.reader",
    "Reader": "sharedrec.read.reader",
    "ReaderStats": "sharedrec.read.stats",
    "StoreOptions": "sharedrec.read.options",
    "Draft": "sharedrec.write.draft",
    "PublishOptions": "sharedrec.write.draft",
    "PublishRankedOptions": "sharedrec.write.draft",
    "BeginOptions": "sharedrec.write.distributed",
    "PartitionReceipt": "sharedrec.write.distributed",
    "PublishHandle": "sharedrec.write.distributed",
    "partition_of": "sharedrec.write.distributed",
    "CheckResult": "sharedrec.write.guards",
    "DEFAULT_GUARDS": "sharedrec.write.guards",
    "Guard": "sharedrec.write.guards",
    "ListSimilarity": "sharedrec.write.guards",
    "MaxEmptyLists": "sharedrec.write.guards",
    "MaxShrink": "sharedrec.write.guards",
    "MinKeys": "sharedrec.write.guards",
    "CollectionDiff": "sharedrec.manage.diff",
    "VersionDiff": "sharedrec.manage.diff",
    "GCReport": "sharedrec.manage.gc",
    "LeaseInfo": "sharedrec.manage.leases",
}

if TYPE_CHECKING:  # what the table above loads, for type checkers and the API docs
    from sharedrec.format.schema import CollectionSpec, Lease, Manifest, Pointer
    from sharedrec.manage.diff import CollectionDiff, VersionDiff
    from sharedrec.manage.gc import GCReport
    from sharedrec.manage.leases import LeaseInfo
    from sharedrec.manage.versions import VersionInfo
    from sharedrec.read.checks import VerifyReport
    from sharedrec.read.options import ReaderOptions, StoreOptions
    from sharedrec.read.reader import RankedList, Reader
    from sharedrec.read.stats import ReaderStats
    from sharedrec.store import RecommendationStore, open
    from sharedrec.write.distributed import BeginOptions, PartitionReceipt, PublishHandle, partition_of
    from sharedrec.write.draft import Draft, PublishOptions, PublishRankedOptions
    from sharedrec.write.guards import (
        DEFAULT_GUARDS,
        CheckResult,
        Guard,
        ListSimilarity,
        MaxEmptyLists,
        MaxShrink,
        MinKeys,
    )

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_GUARDS",
    "BeginOptions",
    "CheckResult",
    "CollectionDiff",
    "CollectionSpec",
    "ConcurrentPublishError",
    "CorruptVersion",
    "Draft",
    "GCReport",
    "Guard",
    "InvalidInput",
    "KeyNotFound",
    "Lease",
    "LeaseInfo",
    "ListSimilarity",
    "Manifest",
    "MaxEmptyLists",
    "MaxShrink",
    "MinKeys",
    "NewerFormat",
    "PartitionReceipt",
    "Pointer",
    "PublishHandle",
    "PublishOptions",
    "PublishRankedOptions",
    "PublishRejected",
    "RankedList",
    "Reader",
    "ReaderOptions",
    "ReaderStats",
    "RecommendationStore",
    "SharedrecError",
    "StoreNotFound",
    "StoreOptions",
    "UnknownCollection",
    "UnsupportedLocation",
    "VerifyReport",
    "VersionDiff",
    "VersionGone",
    "VersionInfo",
    "VersionNotFound",
    "__version__",
    "open",
    "partition_of",
]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sharedrec' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access skips this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
