"""Two-phase publishing: worker tasks write partitions, the driver commits them.

A batch job that runs on many machines (Spark, Dask, or plain processes) publishes one
version without any process holding all of it:

1. The driver calls `RecommendationStore.begin_publish()`, which reserves the version folder and returns a
   `PublishHandle`: a small value that pickles and serialises to JSON, to ship to workers.
2. Each worker task writes the partitions it owns straight to the store with
   `PublishHandle.write_ranked()` / `PublishHandle.write_vectors()`, into a folder named
   after the partition and a random attempt id, and returns a `PartitionReceipt`: counts,
   array shapes, and the size and CRC-32 of every file it wrote.
3. The driver calls `RecommendationStore.commit_publish()` with every receipt. It checks that each
   partition of each collection is there exactly once (a partition written by several
   attempts of a retried task keeps one attempt; the others' files are deleted), that the
   files are in the store with the sizes the receipts state, runs the publish guards,
   writes the manifest and moves the pointer.

Nothing is visible before the manifest is written: a job that dies before the commit
leaves an unfinished version folder, which garbage collection removes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
import zlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypedDict

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field, JsonValue, PlainSerializer, PlainValidator, ValidationError

from sharedrec.errors import CorruptVersion, InvalidInput, PublishRejected
from sharedrec.format.layout import (
    MANIFEST,
    MAX_PARTITIONS,
    VERSIONS,
    new_version_id,
    ref_path,
    validate_collection_name,
    validate_version_id,
)
from sharedrec.format.schema import (
    ArraySpec,
    CollectionSpec,
    FileEntry,
    Manifest,
    PartitionsSpec,
    PartSpec,
    validate_metadata,
)
from sharedrec.read import index
from sharedrec.write import validate as _validate
from sharedrec.write.arrays import chunk_sizes, write_ranked_rows, write_vector_rows
from sharedrec.write.commit import checksums, commit, now, publish_lease
from sharedrec.write.guards import DEFAULT_GUARDS, GuardLike, as_guard
from sharedrec.write.hold import remove_lease, write_lease
from sharedrec.write.staging import Staging

if TYPE_CHECKING:
    from sharedrec.backends.base import Backend
    from sharedrec.read.root import StoreRoot

__all__ = [
    "MAX_PARTITIONS",
    "PartitionReceipt",
    "PublishHandle",
    "abort_publish",
    "begin_publish",
    "commit_publish",
    "partition_of",
    "resolve_receipts",
]

log = logging.getLogger("sharedrec")

_ATTEMPT = re.compile(r"^[0-9a-f]{8}$")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# The schema's records as fields of a receipt: checked by their own rules, written as their JSON.
_ArraySpec = Annotated[
    ArraySpec,
    PlainValidator(lambda value: value if isinstance(value, ArraySpec) else ArraySpec.from_json(value)),
    PlainSerializer(lambda record: record.to_json()),
]
_FileEntry = Annotated[
    FileEntry,
    PlainValidator(lambda value: value if isinstance(value, FileEntry) else FileEntry.from_json(value)),
    PlainSerializer(lambda record: record.to_json()),
]


def partition_of(keys: ArrayLike, partitions: int) -> NDArray[np.intp]:
    """The partition of every key when a publish begun now splits a collection into ``partitions``.

    int64 keys go to partition ``fibonacci64(key)`` (their 64 bits times 0x9E3779B97F4A7C15
    modulo 2**64, times ``partitions``, shifted right by 64), str keys to
    ``blake2b-64(UTF-8 bytes) mod partitions`` (see the on-disk format). Use it to route
    rows to the task that writes their partition; `PublishHandle.partition_of` routes as its
    publish does.

    Raises:
        InvalidInput: The keys are not all integers or all str, or ``partitions`` is out of range.
    """
    return _route(keys, partitions, index.DEFAULT_INT_PARTITION_HASH)


def _route(keys: ArrayLike, partitions: int, int_hash: str) -> NDArray[np.intp]:
    _check_partitions(partitions)
    if isinstance(keys, str | bytes):
        raise InvalidInput(f"keys must be a sequence of keys, not a single {type(keys).__name__}")
    if _is_empty(keys):
        return np.empty(0, dtype=np.intp)
    return _partitions_of(_validate.normalize_keys("partition_of", keys, unique=False), partitions, int_hash)


def _partitions_of(keys: _validate.Keys, partitions: int, int_hash: str) -> NDArray[np.intp]:
    if keys.ints is not None:
        return index.partitions_of(keys.ints, partitions, int_hash)
    assert keys.encoded is not None
    return index.partitions_of(keys.encoded, partitions, index.PARTITION_STR_HASH)


def _check_partitions(partitions: object) -> int:
    if (
        not isinstance(partitions, int)
        or isinstance(partitions, bool)
        or not 1 <= partitions <= MAX_PARTITIONS
    ):
        raise InvalidInput(f"partitions must be an int from 1 to {MAX_PARTITIONS}; got {partitions!r}")
    return partitions


class PartitionReceipt(_Model):
    """What a worker wrote for one partition of one collection: returned to the driver.

    Small (a few hundred bytes plus one entry per file); pickles and serialises to JSON
    (`dumps()` / `loads()`).
    """

    format: Literal["sharedrec-receipt/1"] = "sharedrec-receipt/1"
    version: str = Field(description="the version being published")
    collection: str
    partition: int = Field(ge=0)
    partitions: int = Field(ge=1, le=MAX_PARTITIONS, description="partitions of the collection")
    attempt: str = Field(description="random id of the task attempt that wrote the files")
    kind: Literal["ranked", "vectors"]
    key_type: Literal["int64", "str"] | None = Field(description="None for an empty partition")
    path: str | None = Field(description="the partition's folder in the collection; None when empty")
    count: int = Field(ge=0)
    key_fences: list[int]
    key_hash: str | None = Field(
        default=None, description="hash of str keys; None for int64 keys, or blake2b-64 (older receipts)"
    )
    partition_hash: Literal["fibonacci64", "splitmix64"] | None = Field(
        default=None,
        description="how the task routed int64 keys; None for other keys, or splitmix64 (older receipts)",
    )
    width: int = Field(ge=1)
    min_length: int = Field(ge=0)
    max_length: int = Field(ge=0)
    empty_lists: int = Field(ge=0)
    arrays: dict[str, _ArraySpec]
    files: dict[str, _FileEntry] = Field(description="size and CRC-32 of every file, by path in the folder")

    def dumps(self) -> str:
        """The receipt as JSON."""
        return self.model_dump_json()

    @classmethod
    def loads(cls, data: str | bytes) -> PartitionReceipt:
        """Parse a receipt from JSON.

        Raises:
            InvalidInput: The text is not a receipt.
        """
        return _receipt(data)


class PublishHandle(_Model):
    """A version being published by many tasks; from `RecommendationStore.begin_publish()`.

    Ship it to workers as it is (it pickles) or as JSON (`dumps()` / `loads()`). It
    carries the store's location and ``storage_options``, so treat it like them.
    """

    format: Literal["sharedrec-draft/1"] = "sharedrec-draft/1"
    location: str = Field(description="the store: a path all workers see, or an object-store URL")
    storage_options: dict[str, JsonValue] | None = Field(default=None, repr=False)  # credentials
    version_id: str
    partitions: int = Field(ge=1, le=MAX_PARTITIONS)
    chunk_bytes: int = Field(ge=1024, le=1 << 30)
    huge_up_to: int | None = Field(
        default=None,
        ge=1024,
        le=1 << 30,
        description="row arrays in chunks of whole 2 MiB pages up to this size (a file-system store "
        "with the default chunk_bytes), as a single-process publish writes them",
    )
    partition_hash: Literal["fibonacci64", "splitmix64"] = Field(
        default="splitmix64",
        description="how int64 keys are routed to partitions (handles from before fibonacci64 name none)",
    )
    ref: str = Field(description="the pointer the commit moves")
    parent_pointer: str | None = Field(description="the pointer's bytes when the publish began")
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    started_at: datetime

    def dumps(self) -> str:
        """The handle as JSON."""
        return self.model_dump_json()

    @classmethod
    def loads(cls, data: str | bytes) -> PublishHandle:
        """Parse a handle from JSON.

        Raises:
            InvalidInput: The text is not a handle.
        """
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise InvalidInput(f"not a sharedrec publish handle: {_first_error(exc)}") from None

    def partition_of(self, keys: ArrayLike) -> NDArray[np.intp]:
        """The partition of every key in this publish (see `partition_of()`)."""
        return _route(keys, self.partitions, self.partition_hash)

    def write_ranked(
        self,
        collection: str,
        partition: int,
        keys: ArrayLike,
        items: ArrayLike,
        scores: ArrayLike,
        *,
        lengths: ArrayLike | None = None,
        pad: int | None = None,
        sort: bool = False,
        top_k: int | None = None,
    ) -> PartitionReceipt:
        """Write one whole partition of a ranked collection; on a worker.

        Takes the arguments of `Draft.add_ranked()` for the keys of one partition (every
        key must belong to ``partition``; none may appear twice). An empty ``keys`` writes
        an empty partition. Each call writes a new attempt folder, so a retried task never
        mixes its files with an earlier attempt's.

        Returns:
            The receipt to hand to `RecommendationStore.commit_publish()`.

        Raises:
            InvalidInput: Bad input, or a key that belongs to another partition.
            PublishRejected: The version was already committed or abandoned.
        """
        where = self._check_target(collection, partition)
        if _is_empty(keys):
            return self._empty(collection, partition, "ranked")
        key_data = _validate.normalize_keys(where, keys)
        self._check_keys(where, key_data, partition)
        ranked = _validate.normalize_ranked(
            where, key_data, items, scores, lengths=lengths, pad=pad, sort=sort, top_k=top_k
        )
        width = ranked.items.shape[1]

        def write(group: Any) -> tuple[dict[str, ArraySpec], list[int]]:
            arrays, fences, _ = write_ranked_rows(
                group, key_data, ranked, self.chunk_bytes, huge_up_to=self.huge_up_to, joined=True
            )
            return arrays, fences

        return self._write(
            collection,
            partition,
            "ranked",
            key_data,
            write,
            width=width,
            min_length=int(ranked.lengths.min()),
            max_length=int(ranked.lengths.max()),
            empty_lists=int(np.count_nonzero(ranked.lengths == 0)),
        )

    def write_vectors(
        self, collection: str, partition: int, keys: ArrayLike, vectors: ArrayLike
    ) -> PartitionReceipt:
        """Write one whole partition of a vectors collection; on a worker.

        As `write_ranked()`, with the arguments of `Draft.add_vectors()`.
        """
        where = self._check_target(collection, partition)
        if _is_empty(keys):
            return self._empty(collection, partition, "vectors")
        key_data = _validate.normalize_keys(where, keys)
        self._check_keys(where, key_data, partition)
        array = _validate.normalize_vectors(where, key_data, vectors)
        dim = array.shape[1]

        def write(group: Any) -> tuple[dict[str, ArraySpec], list[int]]:
            arrays, fences, _ = write_vector_rows(
                group, key_data, array, self.chunk_bytes, huge_up_to=self.huge_up_to, joined=True
            )
            return arrays, fences

        return self._write(
            collection, partition, "vectors", key_data, write, width=dim, min_length=dim, max_length=dim
        )

    # -- writing ---------------------------------------------------------------------------

    def _check_target(self, collection: str, partition: int) -> str:
        validate_collection_name(collection)
        if (
            not isinstance(partition, int | np.integer)
            or isinstance(partition, bool)
            or not 0 <= partition < self.partitions
        ):
            raise InvalidInput(
                f"partition must be an int from 0 to {self.partitions - 1} (the handle's partitions); "
                f"got {partition!r}"
            )
        return f"{collection}[partition {int(partition)}]"

    def _check_keys(self, where: str, keys: _validate.Keys, partition: int) -> None:
        owners = _partitions_of(keys, self.partitions, self.partition_hash)
        wrong = np.flatnonzero(owners != partition)
        if wrong.size:
            row = int(wrong[0])
            raise InvalidInput(
                f"collection {where}: {keys.describe(row)} (input row {row}) belongs to partition "
                f"{int(owners[row])} of {self.partitions}, not {partition}; route rows with "
                "handle.partition_of(keys)"
            )

    def _empty(self, collection: str, partition: int, kind: Literal["ranked", "vectors"]) -> PartitionReceipt:
        return PartitionReceipt(
            version=self.version_id,
            collection=collection,
            partition=int(partition),
            partitions=self.partitions,
            attempt=os.urandom(4).hex(),
            kind=kind,
            key_type=None,
            path=None,
            count=0,
            key_fences=[],
            width=1,
            min_length=0,
            max_length=0,
            empty_lists=0,
            arrays={},
            files={},
        )

    def _write(
        self,
        collection: str,
        partition: int,
        kind: Literal["ranked", "vectors"],
        keys: _validate.Keys,
        write: Any,
        *,
        width: int,
        min_length: int,
        max_length: int,
        empty_lists: int = 0,
    ) -> PartitionReceipt:
        import zarr

        backend = _backend(self.location, self.storage_options)
        version_dir = f"{VERSIONS}/{self.version_id}"
        if backend.exists(f"{version_dir}/{MANIFEST}"):
            raise PublishRejected(f"version {self.version_id} is already committed; begin a new publish")
        if not backend.exists(version_dir):
            raise PublishRejected(
                f"version {self.version_id} is not being published in {self.location} (aborted, or "
                "removed by garbage collection as an unfinished publish): begin a new publish"
            )
        attempt = os.urandom(4).hex()
        folder = f"part-{int(partition):05d}-{attempt}"
        target = f"{version_dir}/{collection}/{folder}"
        stage = Staging(backend, target)
        try:
            group = zarr.open_group(
                store=stage.local.zarr_store(target),
                mode="w-",
                attributes={"sharedrec_partition": int(partition)},
            )
            arrays, fences = write(group)
            stage.local.sync_tree(target)
            files = checksums(stage.local, target)
            stage.upload(files)
        except BaseException:
            stage.discard()
            raise
        finally:
            stage.release()
        return PartitionReceipt(
            version=self.version_id,
            collection=collection,
            partition=int(partition),
            partitions=self.partitions,
            attempt=attempt,
            kind=kind,
            key_type=keys.kind,
            path=folder,
            count=len(keys),
            key_fences=fences,
            key_hash=index.DEFAULT_KEY_HASH if keys.kind == "str" else None,  # what write_keys() used
            partition_hash=self.partition_hash if keys.kind == "int64" else None,
            width=width,
            min_length=min_length,
            max_length=max_length,
            empty_lists=empty_lists,
            arrays=arrays,
            files=files,
        )


# -- driver side ---------------------------------------------------------------------------


def _receipt(raw: object) -> PartitionReceipt:
    if isinstance(raw, PartitionReceipt):
        return raw
    try:
        if isinstance(raw, str | bytes):
            return PartitionReceipt.model_validate_json(raw)
        if isinstance(raw, Mapping):
            return PartitionReceipt.model_validate(raw)
    except ValidationError as exc:
        raise InvalidInput(f"not a sharedrec partition receipt: {_first_error(exc)}") from None
    raise InvalidInput(
        f"a receipt must be a PartitionReceipt, its JSON or its dict; got {type(raw).__name__}"
    )


def resolve_receipts(
    handle: PublishHandle, receipts: Iterable[object]
) -> tuple[dict[str, list[PartitionReceipt]], list[PartitionReceipt]]:
    """Check receipts and keep one per partition.

    Returns ``({collection: [receipt of partition 0, 1, ...]}, [receipts not kept])``.
    Receipts of the same partition from several attempts must describe the same content
    (a deterministic task wrote it twice); the one with the smallest attempt id is kept.

    Raises:
        InvalidInput: A receipt of another version, an unknown partition, two receipts of
            one partition with different content, a missing partition, or collections whose
            partitions disagree on kind, key type or dtypes.
    """
    chosen: dict[str, dict[int, PartitionReceipt]] = {}
    dropped: list[PartitionReceipt] = []
    for raw in receipts:
        receipt = _receipt(raw)
        where = f"receipt of {receipt.collection!r} partition {receipt.partition} (attempt {receipt.attempt})"
        if receipt.version != handle.version_id:
            raise InvalidInput(
                f"{where} is for version {receipt.version}, not {handle.version_id}: it comes from "
                "another publish; pass only the receipts of this handle's tasks"
            )
        if receipt.partitions != handle.partitions or receipt.partition >= handle.partitions:
            raise InvalidInput(
                f"{where} names partition {receipt.partition} of {receipt.partitions}; this publish "
                f"has {handle.partitions} partitions"
            )
        validate_collection_name(receipt.collection)
        if receipt.key_type == "int64" and _routed_by(receipt) != handle.partition_hash:
            raise InvalidInput(
                f"{where} routed its keys by {_routed_by(receipt)}, this publish routes them by "
                f"{handle.partition_hash}: the task ran another version of sharedrec, and readers "
                "would look its keys up in other partitions; write every partition with the driver's version"
            )
        if not _ATTEMPT.match(receipt.attempt) or (
            receipt.path is not None and receipt.path != f"part-{receipt.partition:05d}-{receipt.attempt}"
        ):
            raise InvalidInput(f"{where} names folder {receipt.path!r}, which its writer would not use")
        parts = chosen.setdefault(receipt.collection, {})
        other = parts.get(receipt.partition)
        if other is None:
            parts[receipt.partition] = receipt
            continue
        if other.attempt == receipt.attempt:
            if other != receipt:
                raise InvalidInput(f"{where} was given twice with different contents")
            continue
        if (other.count, other.files) != (receipt.count, receipt.files):
            raise InvalidInput(
                f"partition {receipt.partition} of {receipt.collection!r} has two receipts with different "
                f"contents (attempts {other.attempt} and {receipt.attempt}: {other.count:,} and "
                f"{receipt.count:,} keys); the task that wrote it is not deterministic, so sharedrec "
                "cannot tell which is right: pass one receipt per partition"
            )
        keep, drop = sorted((other, receipt), key=lambda r: r.attempt)
        parts[receipt.partition] = keep
        dropped.append(drop)
    if not chosen:
        raise InvalidInput(f"no receipts for version {handle.version_id}: nothing to publish")
    result: dict[str, list[PartitionReceipt]] = {}
    for collection, parts in sorted(chosen.items()):
        missing = [p for p in range(handle.partitions) if p not in parts]
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
            raise InvalidInput(
                f"collection {collection!r} lacks the receipts of {len(missing)} of its "
                f"{handle.partitions} partitions ({shown}); every partition must be written, empty "
                "ones included (write_ranked/write_vectors with no keys)"
            )
        ordered = [parts[p] for p in range(handle.partitions)]
        _check_alike(collection, ordered)
        result[collection] = ordered
    return result, dropped


def _check_alike(collection: str, parts: list[PartitionReceipt]) -> None:
    first = parts[0]
    written = [part for part in parts if part.count]
    if not written:
        raise InvalidInput(f"collection {collection!r} holds no key in any partition: nothing to publish")
    model = written[0]
    for part in parts:
        if part.kind != first.kind:
            raise InvalidInput(
                f"collection {collection!r}: partition {part.partition} holds {part.kind}, "
                f"partition {first.partition} holds {first.kind}"
            )
    value_arrays = ("items", "scores") if model.kind == "ranked" else ("vectors",)
    for part in written:
        if part.key_type != model.key_type:
            raise InvalidInput(
                f"collection {collection!r}: partition {part.partition} has {part.key_type} keys, "
                f"partition {model.partition} has {model.key_type} keys"
            )
        if _key_hash(part) != _key_hash(model):
            raise InvalidInput(
                f"collection {collection!r}: partition {part.partition} hashes its keys with "
                f"{_key_hash(part)}, partition {model.partition} with {_key_hash(model)}: the tasks "
                "ran different versions of sharedrec; write every partition with the driver's version"
            )
        for array in value_arrays:
            if part.arrays[array].dtype != model.arrays[array].dtype:
                raise InvalidInput(
                    f"collection {collection!r}: partition {part.partition} stores {array} as "
                    f"{part.arrays[array].dtype}, partition {model.partition} as "
                    f"{model.arrays[array].dtype}; give every task the same dtypes"
                )
        if model.kind == "vectors" and part.width != model.width:
            raise InvalidInput(
                f"collection {collection!r}: partition {part.partition} has vectors of dimension "
                f"{part.width}, partition {model.partition} of {model.width}"
            )


def _key_hash(part: PartitionReceipt) -> str | None:
    """The hash of a partition's str keys (receipts from before xxh3-64 name none: blake2b-64)."""
    if part.key_type != "str":
        return None
    return part.key_hash or "blake2b-64"


def _routed_by(part: PartitionReceipt) -> str:
    """The hash a partition of int64 keys was routed by (receipts from before fibonacci64 name none)."""
    return part.partition_hash or "splitmix64"


def collection_spec(parts: list[PartitionReceipt]) -> CollectionSpec:
    """The manifest entry of a collection made of these partitions (in partition order)."""
    written = [part for part in parts if part.count]
    model = written[0]
    key_type = model.key_type
    assert key_type is not None
    return CollectionSpec(
        kind=model.kind,
        key_type=key_type,
        count=sum(part.count for part in parts),
        key_hash=_key_hash(model),
        key_fences=[],
        width=max(part.width for part in written),
        min_length=min(part.min_length for part in written),
        max_length=max(part.max_length for part in written),
        empty_lists=sum(part.empty_lists for part in parts),
        arrays={},
        partitions=PartitionsSpec(
            hash=_routed_by(model) if key_type == "int64" else index.PARTITION_STR_HASH,
            parts=[
                PartSpec(
                    path=part.path,
                    count=part.count,
                    key_fences=part.key_fences,
                    width=part.width,
                    min_length=part.min_length,
                    max_length=part.max_length,
                    empty_lists=part.empty_lists,
                    arrays=part.arrays,
                )
                for part in parts
            ],
        ),
    )


def group_metadata(collections: Mapping[str, str], version_id: str) -> dict[str, bytes]:
    """The ``zarr.json`` of the version's root group and of each collection's group, as zarr writes them."""
    import zarr
    from zarr.storage import LocalStore

    with tempfile.TemporaryDirectory(prefix="sharedrec-groups-") as folder:
        attributes = {"sharedrec": {"format": "sharedrec/1", "version": version_id}}
        root = zarr.open_group(store=LocalStore(folder), mode="w-", attributes=attributes)
        for name, kind in collections.items():
            root.create_group(name, attributes={"sharedrec_kind": kind})
        paths = ["zarr.json", *(f"{name}/zarr.json" for name in collections)]
        return {path: open(os.path.join(folder, path), "rb").read() for path in paths}


class BeginOptions(TypedDict, total=False):
    """The options of `RecommendationStore.begin_publish` (keyword arguments, all optional)."""

    metadata: dict[str, JsonValue] | None
    """JSON facts to keep in the manifest."""
    version_id: str | None
    """Choose the id (default: a time-sortable id)."""
    chunk_bytes: int | None
    """Target size of a chunk file (default: 4 MiB, and on a store on a file system large row
    arrays in chunks of whole 2 MiB pages, up to 64 MiB, as a single-process publish writes them)."""
    ref: str
    """The pointer `RecommendationStore.commit_publish` moves, and whose version guards
    compare with (default ``"current"``)."""
    lease_ttl: float
    """Seconds garbage collection leaves the unfinished version alone, however old its files
    (default 24 h): a lease (``leases/publish-<id>.json``) written now and removed by
    `RecommendationStore.commit_publish` or `RecommendationStore.abort_publish`. A job that
    may take longer must pass more."""


def begin_publish(
    root: StoreRoot,
    *,
    partitions: int,
    metadata: dict[str, JsonValue] | None = None,
    version_id: str | None = None,
    chunk_bytes: int | None = None,
    ref: str = "current",
    lease_ttl: float = 24 * 3600.0,
) -> PublishHandle:
    """Reserve a version for worker tasks to write (see `RecommendationStore.begin_publish`)."""
    _check_partitions(partitions)
    if not isinstance(lease_ttl, int | float) or isinstance(lease_ttl, bool) or not lease_ttl > 0:
        raise InvalidInput(f"lease_ttl must be positive seconds; got {lease_ttl!r}")
    backend = root.backend
    chunk_bytes, huge_up_to = chunk_sizes(chunk_bytes, backend)  # as a single-process publish's
    vid = validate_version_id(version_id) if version_id is not None else new_version_id()
    metadata = validate_metadata(metadata)
    storage_options = root.storage_options
    options = validate_metadata(dict(storage_options)) if storage_options else None
    _, raw = root.read_pointer(ref)
    # Its commit normally moves the pointer: a store that would refuse that refuses now,
    # before the tasks write anything.
    backend.check_swaps(ref_path(ref))
    directory = f"{VERSIONS}/{vid}"
    if backend.exists(directory):
        raise InvalidInput(f"version {vid!r} already exists in {root.location}")
    handle = PublishHandle(
        location=root.location,
        storage_options=options,
        version_id=vid,
        partitions=partitions,
        chunk_bytes=chunk_bytes,
        huge_up_to=huge_up_to,
        partition_hash=index.DEFAULT_INT_PARTITION_HASH,
        ref=ref,
        parent_pointer=raw.decode() if raw is not None else None,
        metadata=metadata,
        started_at=now(),
    )
    # Leased before the folder exists: a collector that sees the folder sees the lease.
    write_lease(backend, publish_lease(vid), vid, [], float(lease_ttl))
    # The root group's metadata reserves the folder: workers check it is there.
    backend.write_atomic(f"{directory}/zarr.json", group_metadata({}, vid)["zarr.json"])
    return handle


def commit_publish(
    root: StoreRoot,
    handle: PublishHandle,
    receipts: Sequence[object],
    *,
    guards: Sequence[GuardLike] | None,
    force: bool,
    make_current: bool,
) -> str:
    """Commit a version from its tasks' receipts (see `RecommendationStore.commit_publish`)."""
    from sharedrec.format.schema import Pointer
    from sharedrec.read.version import open_version

    if not isinstance(handle, PublishHandle):
        raise InvalidInput(
            f"handle must be the PublishHandle of begin_publish(); got {type(handle).__name__}"
        )
    if handle.location != root.location:
        raise InvalidInput(f"the handle publishes to {handle.location}, not to this store ({root.location})")
    backend = root.backend
    vid = handle.version_id
    directory = f"{VERSIONS}/{vid}"
    if backend.exists(f"{directory}/{MANIFEST}"):
        raise PublishRejected(f"version {vid} is already committed")
    collections, dropped = resolve_receipts(handle, receipts)
    files = _settle_partitions(backend, directory, collections)
    for receipt in dropped:
        log.info("version %s: dropped attempt %s of %s", vid, receipt.attempt, receipt.collection)
    for path, data in group_metadata(
        {name: parts[0].kind for name, parts in collections.items()}, vid
    ).items():
        backend.write_atomic(f"{directory}/{path}", data)
        files[path] = FileEntry(size=len(data), crc32=zlib.crc32(data))
    raw = handle.parent_pointer.encode() if handle.parent_pointer is not None else None
    parent = Pointer.loads(raw, f"the pointer read by begin_publish ({handle.ref})") if raw else None
    manifest = Manifest(
        id=vid,
        parent=parent.version if parent else None,
        created_at=now(),
        metadata=handle.metadata,
        collections={name: collection_spec(parts) for name, parts in collections.items()},
        files=dict(sorted(files.items())),
    )
    written = False

    def committed() -> None:
        nonlocal written
        written = True

    try:
        commit(
            backend,
            manifest,
            guards=[as_guard(guard) for guard in (DEFAULT_GUARDS if guards is None else guards)],
            force=force,
            new=lambda view: open_version(root, vid, "lazy", manifest=view),
            root=root,
            parent=parent,
            parent_raw=raw,
            pointer_path=ref_path(handle.ref) if make_current else None,
            committed=committed,
        )
    finally:
        # Committed: the lease has done its work. (A commit that failed earlier keeps it,
        # so that the publish can still be committed or aborted.)
        if written:
            remove_lease(backend, publish_lease(vid))
    return vid


def abort_publish(root: StoreRoot, handle: PublishHandle) -> None:
    """Remove what the tasks of an uncommitted publish wrote (see `RecommendationStore.abort_publish`)."""
    directory = f"{VERSIONS}/{handle.version_id}"
    if root.backend.exists(f"{directory}/{MANIFEST}"):
        raise PublishRejected(f"version {handle.version_id} is committed; it is not aborted")
    root.backend.remove_tree(directory)
    remove_lease(root.backend, publish_lease(handle.version_id))


def _settle_partitions(
    backend: Backend, directory: str, collections: dict[str, list[PartitionReceipt]]
) -> dict[str, FileEntry]:
    """Check the kept partitions' files, delete every other attempt; the kept files."""
    present = dict(backend.walk_files(directory))
    files: dict[str, FileEntry] = {}
    kept: set[str] = set()
    for name, parts in collections.items():
        for receipt in parts:
            if receipt.path is None:
                continue
            kept.add(f"{name}/{receipt.path}")
            for path, entry in receipt.files.items():
                full = f"{name}/{receipt.path}/{path}"
                if present.get(full) != entry.size:
                    found = present.get(full)
                    raise CorruptVersion(
                        f"{backend.location}/{directory}/{full} "
                        + ("is missing" if found is None else f"has {found} bytes, not {entry.size}")
                        + f": partition {receipt.partition} of {name!r} (attempt {receipt.attempt}) is "
                        "damaged or was removed; re-run its task and commit again, or abort"
                    )
                files[full] = entry
    stale: set[str] = set()
    for path in present:
        pieces = path.split("/")
        if len(pieces) < 3 or pieces[0].startswith("."):
            continue  # the root's and the collections' zarr.json, temporary files
        if pieces[0] not in collections:
            raise InvalidInput(
                f"{backend.location}/{directory}/{pieces[0]}/ holds partitions written for collection "
                f"{pieces[0]!r}, but no receipt names it: pass its receipts too, or abort the publish"
            )
        folder = f"{pieces[0]}/{pieces[1]}"
        if folder not in kept:
            stale.add(folder)
    for folder in sorted(stale):
        log.info("removing %s/%s: an attempt no receipt kept", directory, folder)
        backend.remove_tree(f"{directory}/{folder}")
    return files


# -- helpers -------------------------------------------------------------------------------

_BACKENDS: dict[str, Backend] = {}
_BACKENDS_LOCK = threading.Lock()


def _backend(location: str, storage_options: Mapping[str, Any] | None) -> Backend:
    """One backend per store and process: a worker writing many partitions connects once."""
    from sharedrec.backends import backend_for

    key = json.dumps([location, storage_options], sort_keys=True)
    with _BACKENDS_LOCK:
        backend = _BACKENDS.get(key)
        if backend is None:
            backend = _BACKENDS[key] = backend_for(
                location, create=False, storage_options=dict(storage_options) if storage_options else None
            )
        return backend


def _is_empty(keys: object) -> bool:
    return hasattr(keys, "__len__") and not isinstance(keys, str | bytes) and len(keys) == 0


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where or 'the value'}: {first['msg']}"
