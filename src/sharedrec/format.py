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
import re
import secrets
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter, ValidationError

from sharedrec.errors import CorruptVersion, InvalidInput

__all__ = [
    "CHUNK_TARGET_BYTES",
    "FORMAT",
    "ArraySpec",
    "CollectionSpec",
    "FileEntry",
    "Lease",
    "Manifest",
    "Pointer",
    "chunk_path",
    "new_version_id",
    "ref_path",
    "validate_collection_name",
    "validate_metadata",
    "validate_version_id",
]

FORMAT = "sharedrec/1"
POINTER_FORMAT = "sharedrec-pointer/1"
CURRENT = "CURRENT"
REFS = "refs"
VERSIONS = "versions"
LEASES = "leases"
MANIFEST = "manifest.json"
CHECKSUM = "crc32"

CHUNK_TARGET_BYTES = 4 * 1024 * 1024
"""Aim for chunk files of about this size: large enough for few S3 requests, small enough
that a lookup never pulls much through a lazy cache."""

POINTER_HISTORY = 32
"""How many previously live versions ``CURRENT`` remembers for `rollback()`."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def validate_collection_name(name: object) -> str:
    """Return ``name`` if it is a valid collection name, else raise `InvalidInput`."""
    if isinstance(name, str) and name.lower().endswith(".json"):
        raise InvalidInput(
            f"invalid collection name {name!r}: names ending in .json are reserved for metadata"
        )
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise InvalidInput(
            f"invalid collection name {name!r}: use 1-128 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit (no path separators, no '..')"
        )
    return name


def ref_path(ref: str) -> str:
    """Where a named pointer lives: ``CURRENT`` for ``"current"``, else ``refs/<name>``."""
    if ref == "current":
        return CURRENT
    if not isinstance(ref, str) or not _NAME.match(ref) or ".." in ref or ref.lower() == "current":
        raise InvalidInput(
            f"invalid ref name {ref!r}: use 1-128 letters, digits, '_', '-' or '.', starting with a "
            "letter or digit ('current' is the live pointer, CURRENT)"
        )
    return f"{REFS}/{ref}"


def validate_version_id(version_id: object) -> str:
    """Return ``version_id`` if it is a valid version id, else raise `InvalidInput`."""
    if not isinstance(version_id, str) or not _NAME.match(version_id) or ".." in version_id:
        raise InvalidInput(
            f"invalid version id {version_id!r}: use 1-128 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    return version_id


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


def new_version_id(now: datetime | None = None) -> str:
    """A fresh version id that sorts by creation time: ``20261129T024815123456Z-1a2b3c``."""
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(3)


def chunk_path(array_path: str, chunk_index: int, ndim: int) -> str:
    """The zarr v3 key (default encoding, ``/`` separator) of a row chunk of an array."""
    return f"{array_path}/c/{chunk_index}" + "/0" * (ndim - 1)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ArraySpec(_Model):
    """One zarr array of a collection: what a reader needs to map its chunks."""

    dtype: str = Field(description="numpy dtype string, always little-endian, e.g. '<i4'")
    shape: tuple[int, ...]
    chunks: tuple[int, ...] = Field(description="chunk shape; chunks split the first axis only")

    @property
    def rows_per_chunk(self) -> int:
        """Rows of the first axis held by one chunk file."""
        return self.chunks[0]

    @property
    def n_chunks(self) -> int:
        """Number of chunk files of the array."""
        return max(1, -(-self.shape[0] // self.chunks[0]))

    @property
    def chunk_nbytes(self) -> int:
        """Size in bytes of every chunk file (edge chunks are written full size)."""
        size = int(self.dtype[2:]) if self.dtype[1] in "iuf" else 1
        for extent in self.chunks:
            size *= extent
        return size


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
    arrays: dict[str, ArraySpec]


class FileEntry(_Model):
    """Size and checksum of one file of a version."""

    size: int = Field(ge=0)
    crc32: int = Field(ge=0, lt=2**32)


class Manifest(_Model):
    """``versions/<id>/manifest.json``: written last, its presence commits the version."""

    format: Literal["sharedrec/1"] = "sharedrec/1"
    id: str
    parent: str | None = None
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
        return self.model_dump_json(indent=1).encode()

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
