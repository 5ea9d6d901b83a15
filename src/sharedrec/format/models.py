"""The on-disk layout of a store and the models of the files that describe it.

A store holds::

    <root>/CURRENT                      Pointer: the live version id (JSON)
    <root>/versions/<id>/               a plain zarr v3 group
    <root>/versions/<id>/manifest.json  Manifest, written last
    <root>/leases/<reader>.json         reader leases

Inside a version every collection is a zarr sub-group named after the collection, holding
uncompressed little-endian arrays whose chunks split rows only, so that one row is always
one contiguous run of bytes inside one chunk file. The manifest repeats what a reader
needs (dtypes, shapes, chunk shapes) so that opening a version costs two small reads.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter, ValidationError, model_validator

from sharedrec.errors import CorruptVersion, InvalidInput
from sharedrec.format.layout import (
    CHECKSUM,
    CHUNK_TARGET_BYTES,
    CURRENT,
    FORMAT,
    LEASE_FORMAT,
    LEASES,
    MANIFEST,
    MAX_CHAIN,
    MAX_PARTITIONS,
    MAX_WIDTH,
    POINTER_FORMAT,
    POINTER_HISTORY,
    REFS,
    VERSIONS,
    chunk_path,
    new_version_id,
    ref_path,
    validate_collection_name,
    validate_version_id,
)
from sharedrec.format.schema import ArrayGeometry

__all__ = [
    "CHECKSUM",
    "CHUNK_TARGET_BYTES",
    "CURRENT",
    "FORMAT",
    "LEASES",
    "LEASE_FORMAT",
    "MANIFEST",
    "MAX_CHAIN",
    "MAX_PARTITIONS",
    "MAX_WIDTH",
    "POINTER_FORMAT",
    "POINTER_HISTORY",
    "REFS",
    "VERSIONS",
    "ArraySpec",
    "CollectionSpec",
    "FileEntry",
    "Lease",
    "Manifest",
    "PartSpec",
    "PartitionsSpec",
    "Pointer",
    "chunk_path",
    "new_version_id",
    "ref_path",
    "validate_collection_name",
    "validate_metadata",
    "validate_version_id",
]


def validate_metadata(metadata: object) -> dict[str, JsonValue]:
    """Return a copy of ``metadata`` if it is a JSON object, else raise `InvalidInput`."""
    if metadata is None:
        return {}
    try:
        return TypeAdapter(dict[str, JsonValue]).validate_python(metadata)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"] if part not in ("dict", "list"))
        raise InvalidInput(
            f"metadata must be JSON: str keys and str/int/float/bool/None/list/dict values; "
            f"{where or 'the value'} is {type(first.get('input')).__name__} ({first['msg']}). "
            "Convert numpy scalars with .item()"
        ) from None


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ArraySpec(_Model, ArrayGeometry):
    """One zarr array of a collection: what a reader needs to map its chunks."""

    dtype: str = Field(description="numpy dtype string, always little-endian, e.g. '<i4'")
    shape: tuple[int, ...]
    chunks: tuple[int, ...] = Field(description="chunk shape; chunks split the first axis only")


class PartSpec(_Model):
    """One partition of a partitioned collection: its own key index and arrays."""

    path: str | None = Field(
        description="folder of the partition inside the collection's folder; null when it holds no key"
    )
    count: int = Field(ge=0, description="number of keys in the partition")
    key_fences: list[int] = Field(description="first key (or key hash) of each chunk of its key array")
    width: int = Field(ge=1, description="list capacity (ranked) or vector dimension of the partition")
    min_length: int = Field(ge=0, description="shortest list of the partition (ranked); width for vectors")
    max_length: int = Field(ge=0, description="longest list of the partition (ranked); width for vectors")
    empty_lists: int = Field(default=0, ge=0, description="keys of the partition whose list is empty")
    arrays: dict[str, ArraySpec] = Field(description="the partition's arrays; empty when count is 0")


class PartitionsSpec(_Model):
    """How a collection is split: partition ``hash(key) mod len(parts)`` holds a key."""

    hash: Literal["splitmix64", "blake2b-64"] = Field(
        description="splitmix64 of the key for int64 keys, blake2b-64 of its UTF-8 bytes for str keys"
    )
    parts: list[PartSpec] = Field(min_length=1, description="every partition, in partition order")


class CollectionSpec(_Model):
    """A named table inside a version."""

    kind: Literal["ranked", "vectors"]
    key_type: Literal["int64", "str"]
    count: int = Field(ge=1, description="number of keys")
    key_hash: str | None = Field(default=None, description="hash of string keys (None for int64 keys)")
    key_fences: list[int] = Field(description="first sorted key (or key hash) of each chunk of the key array")
    width: int = Field(ge=1, description="list capacity (ranked) or vector dimension")
    min_length: int = Field(ge=0, description="shortest list (ranked); width for vectors")
    max_length: int = Field(ge=0, description="longest list (ranked); width for vectors")
    default_length: int | None = Field(
        default=None, description="length of the list served for unknown keys, if any"
    )
    empty_lists: int = Field(default=0, ge=0, description="keys whose list is empty (ranked)")
    fallbacks: list[str] = Field(
        default_factory=list, description="ranked collections tried in order for an unknown key"
    )
    serve_to_all: bool = Field(
        default=False,
        description="a ranked collection of one key whose list, as a fallback, serves every key "
        "(published with serve_to_all=True; a collection that merely holds one key serves only it); "
        "written only when true",
    )
    delta: bool = Field(
        default=False,
        description="the arrays hold only the keys added or changed since the same collection of "
        "the manifest's base (none when nothing changed); count and lengths describe the result",
    )
    removed: int = Field(default=0, ge=0, description="delta: keys of the base removed (tombstones)")
    arrays: dict[str, ArraySpec]
    partitions: PartitionsSpec | None = Field(
        default=None,
        description="absent for a collection stored whole; else its partitions, each with its own key "
        "index and arrays (``arrays`` then holds only the collection-wide default list)",
    )

    @model_validator(mode="after")
    def _one_list_for_all(self) -> CollectionSpec:
        if self.serve_to_all and (self.kind != "ranked" or self.count != 1):
            raise ValueError(
                f"serve_to_all is true for a {self.kind} collection of {self.count} keys; "
                "only a ranked collection of one key serves its list to every key"
            )
        return self


class FileEntry(_Model):
    """Size and checksum of one file of a version."""

    size: int = Field(ge=0)
    crc32: int = Field(ge=0, lt=2**32)


class Manifest(_Model):
    """``versions/<id>/manifest.json``: written last, its presence commits the version."""

    format: Literal["sharedrec/1"] = "sharedrec/1"
    id: str
    parent: str | None = None
    base: str | None = Field(
        default=None, description="a delta version: the version whose collections it updates"
    )
    depth: int = Field(default=0, ge=0, description="deltas between this version and a full one")
    created_at: datetime
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    collections: dict[str, CollectionSpec]
    checksum: Literal["crc32"] = "crc32"
    checks: dict[str, JsonValue] = Field(
        default_factory=dict, description="results of the publish guards, by guard name"
    )
    files: dict[str, FileEntry] = Field(
        description="every file of the version but the manifest, by path relative to it"
    )

    @property
    def data_bytes(self) -> int:
        """Total size of the version's files."""
        return sum(entry.size for entry in self.files.values())

    def dumps(self) -> bytes:
        """Serialise to the bytes written as ``manifest.json``."""
        return self.model_dump_json(indent=1, exclude=self._unwritten()).encode()

    def json_object(self) -> dict[str, Any]:
        """The manifest as the JSON object `dumps()` writes."""
        data: dict[str, Any] = self.model_dump(mode="json", exclude=self._unwritten())
        return data

    def _unwritten(self) -> dict[str, Any]:
        # A collection stored whole has no ``partitions`` field at all, and one that does not
        # serve its list to every key no ``serve_to_all``: the format of the collections that
        # use neither stays byte for byte what it always was.
        unwritten: dict[str, set[str]] = {}
        for name, spec in self.collections.items():
            fields = {"partitions"} if spec.partitions is None else set()
            if not spec.serve_to_all:
                fields.add("serve_to_all")
            if fields:
                unwritten[name] = fields
        return {"collections": unwritten} if unwritten else {}

    @classmethod
    def loads(cls, data: bytes, where: str) -> Manifest:
        """Parse ``manifest.json`` bytes; ``where`` names the file in the error."""
        return _parse(cls, data, where, "republish the version or roll back")


class Pointer(_Model):
    """``CURRENT``: which version is live, and which were live before it."""

    format: Literal["sharedrec-pointer/1"] = "sharedrec-pointer/1"
    version: str
    previous: Annotated[list[str], Field(max_length=POINTER_HISTORY)] = Field(
        default_factory=list, description="previously live versions, newest first"
    )
    updated_at: datetime
    manifest: dict[str, JsonValue] | None = Field(
        default=None,
        description="object stores: a copy of the manifest of `version`, so that a reader "
        "opens it with one request (the pointer's) instead of two",
    )

    def dumps(self) -> bytes:
        """Serialise to the bytes written as ``CURRENT``."""
        return self.model_dump_json().encode()

    @classmethod
    def loads(cls, data: bytes, where: str) -> Pointer:
        """Parse ``CURRENT`` bytes; ``where`` names the file in the error."""
        return _parse(cls, data, where, "point it at a good version with store.set_current()")


M = TypeVar("M", bound=BaseModel)


class Lease(_Model):
    """``leases/<reader-id>.json``: a reader's promise that it still maps some versions."""

    format: Literal["sharedrec-lease/1"] = "sharedrec-lease/1"
    reader_id: str
    host: str
    pid: int
    version: str = Field(description="the version the reader serves")
    versions: list[str] = Field(
        description="every version the reader may still touch: the live one, and one it just "
        "left while lookups in flight finish"
    )
    started_at: datetime
    heartbeat: datetime
    expires_at: datetime = Field(description="GC may ignore the lease after this moment")
    warming: bool = Field(
        default=False,
        description="the reader is still prefetching (`prefetch`): `sharedrec ready` waits for it; "
        "written only while true",
    )

    def dumps(self) -> bytes:
        """Serialise to the bytes of the lease file."""
        return self.model_dump_json().encode()

    @classmethod
    def loads(cls, data: bytes, where: str) -> Lease:
        """Parse lease file bytes; ``where`` names the file in the error."""
        return _parse(cls, data, where, "delete the file; its reader rewrites it at the next heartbeat")


def _parse(model: type[M], data: bytes, where: str, fix: str) -> M:
    try:
        raw: Any = json.loads(data)
        return model.model_validate(raw)
    except (ValueError, ValidationError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CorruptVersion(f"{where} is truncated or invalid ({reason}); {fix}") from None
