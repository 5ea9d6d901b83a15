"""The one schema of a store's JSON files: ``manifest.json``, pointers and leases.

Every file is a frozen record that parses itself (``Manifest.loads(data, where)``) and dumps
itself (``manifest.dumps()``). Readers and writers share these records; there is no pydantic
here, because a reader process needs a handful of fields of two small files to open a version
and importing pydantic would cost it more time (about 110 ms) and memory (about 13 MB) than
everything else it does at start-up.

Parsing is strict (no lax coercions such as ``"5"`` for an int) and adds the bounds a reader
relies on: shapes that agree with chunk shapes and with the listed files, so that a damaged or
hostile manifest cannot make a reader allocate without bound. A record built by a writer with
keyword arguments is checked by the same rules, so nothing a writer builds is unreadable, and
`dumps()` writes the bytes ``docs/format.md`` specifies (those the pydantic models of sharedrec
0.1.0 wrote, byte for byte).

A file whose ``format`` is of the same family with a higher number was written by a newer
sharedrec: `loads` raises `NewerFormat` for it before any other check (a newer format may
add fields), never `CorruptVersion`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any, ClassVar, Literal, TypeVar

from sharedrec.errors import CorruptVersion, InvalidInput, NewerFormat
from sharedrec.format.layout import (
    CHECKSUM,
    FORMAT,
    FORMAT_FIBONACCI,
    FORMAT_RAGGED,
    LEASE_FORMAT,
    MAX_PARTITIONS,
    MAX_WIDTH,
    NEWEST_FORMAT,
    PARTITION_HASHES,
    POINTER_FORMAT,
    POINTER_HISTORY,
    chunk_path,
)

__all__ = [
    "ArrayGeometry",
    "ArraySpec",
    "CollectionSpec",
    "FileEntry",
    "Lease",
    "Manifest",
    "NewerManifest",
    "PartSpec",
    "PartitionsSpec",
    "Pointer",
    "newer_format",
    "newer_message",
    "peek_newer_manifest",
    "validate_metadata",
]

_T = TypeVar("_T")
_R = TypeVar("_R", bound="_Record")


class ArrayGeometry:
    """Chunk arithmetic of an array: rows per chunk, chunk count and chunk size."""

    dtype: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]

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


class _Record:
    """A frozen record of named fields; class creation stays cheap (no dataclass machinery).

    ``_FIELDS`` lists the fields in the order they are written; ``_DEFAULTS`` those a writer
    may leave out. Built with keyword arguments (by a writer) a record is checked by the rules
    that parse it; parsers build it unchecked through `_make`, having checked the JSON.
    """

    __slots__: tuple[str, ...] = ()
    _FIELDS: ClassVar[tuple[str, ...]] = ()
    _DEFAULTS: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, **values: Any) -> None:
        self._fill(values)
        try:
            self._check()
        except _Bad as exc:
            raise InvalidInput(f"invalid {type(self).__name__}: {exc}") from None

    @classmethod
    def _make(cls: type[_R], **values: Any) -> _R:
        """A record of checked values: the parsers give every field (and a manifest its ``_raw``)."""
        record = cls.__new__(cls)
        for name, value in values.items():
            object.__setattr__(record, name, value)
        return record

    def _fill(self, values: dict[str, Any]) -> None:
        unknown = values.keys() - set(self._FIELDS)
        missing = [name for name in self._FIELDS if name not in values and name not in self._DEFAULTS]
        if unknown or missing:
            raise TypeError(
                f"{type(self).__name__} takes the fields {list(self._FIELDS)}: "
                f"unknown {sorted(unknown)}, missing {missing}"
            )
        for name in self._FIELDS:
            if name in values:
                object.__setattr__(self, name, values[name])
            else:  # a mutable default is copied: no two records share one
                value = self._DEFAULTS[name]
                object.__setattr__(self, name, value.copy() if isinstance(value, list | dict) else value)

    def _check(self) -> None:
        """Raise `_Bad` unless the record is what its parser accepts."""
        raise NotImplementedError

    def replace(self: _R, **changes: Any) -> _R:
        """A copy with some fields changed, checked like a new record."""
        return type(self)(**{**{name: getattr(self, name) for name in self._FIELDS}, **changes})

    def to_json(self) -> dict[str, Any]:
        """The record as the JSON object `dumps()` writes."""
        return {name: _plain(getattr(self, name)) for name in self._FIELDS}

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self._FIELDS)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._FIELDS)
        return f"{type(self).__name__}({fields})"

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self), {name: getattr(self, name) for name in self.__slots__})


def _rebuild(cls: type[_R], values: dict[str, Any]) -> _R:
    """Unpickle a record (its fields were checked when it was first built)."""
    return cls._make(**values)


class ArraySpec(_Record, ArrayGeometry):
    """One zarr array of a collection: what a reader needs to map its chunks."""

    __slots__ = ("chunks", "dtype", "shape")
    _FIELDS = ("dtype", "shape", "chunks")
    dtype: str
    """numpy dtype string, always little-endian, e.g. ``'<i4'``."""
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    """Chunk shape; chunks split the first axis only."""

    def _check(self) -> None:
        _array(self.to_json(), "ArraySpec", "")

    @classmethod
    def from_json(cls, data: object) -> ArraySpec:
        """Parse the JSON object of an array (as `to_json` gives it); raise ValueError."""
        return _array(data, "ArraySpec", "")


class PartSpec(_Record):
    """One partition of a partitioned collection: its own key index and arrays."""

    __slots__ = ("arrays", "count", "empty_lists", "key_fences", "max_length", "min_length", "path", "width")
    _FIELDS = ("path", "count", "key_fences", "width", "min_length", "max_length", "empty_lists", "arrays")
    _DEFAULTS: ClassVar[Mapping[str, Any]] = {"empty_lists": 0}
    path: str | None
    """Folder of the partition inside the collection's folder; None when it holds no key."""
    count: int
    """Number of keys in the partition."""
    key_fences: list[int]
    """First key (or key hash) of each chunk of its key array."""
    width: int
    """List capacity (ranked) or vector dimension of the partition."""
    min_length: int
    """Shortest list of the partition (ranked); width for vectors."""
    max_length: int
    """Longest list of the partition (ranked); width for vectors."""
    empty_lists: int
    """Keys of the partition whose list is empty."""
    arrays: dict[str, ArraySpec]
    """The partition's arrays; empty when count is 0."""

    def _check(self) -> None:
        _part(self.to_json(), "PartSpec")


class PartitionsSpec(_Record):
    """How a collection is split: partition ``hash(key) mod len(parts)`` holds a key."""

    __slots__ = ("hash", "parts")
    _FIELDS = ("hash", "parts")
    hash: Literal["fibonacci64", "splitmix64", "blake2b-64"]
    """For int64 keys fibonacci64 of the key (``sharedrec/4``), or splitmix64 (written before);
    blake2b-64 of its UTF-8 bytes for str keys."""
    parts: list[PartSpec]
    """Every partition, in partition order."""

    def _check(self) -> None:
        _partitions(self.to_json(), "PartitionsSpec")


class CollectionSpec(_Record):
    """A named table inside a version."""

    __slots__ = (
        "arrays",
        "count",
        "default_length",
        "delta",
        "empty_lists",
        "fallbacks",
        "key_fences",
        "key_hash",
        "key_type",
        "kind",
        "layout",
        "max_length",
        "min_length",
        "partitions",
        "removed",
        "serve_to_all",
        "width",
    )
    _FIELDS = (
        "kind",
        "key_type",
        "count",
        "key_hash",
        "key_fences",
        "width",
        "min_length",
        "max_length",
        "default_length",
        "empty_lists",
        "fallbacks",
        "serve_to_all",
        "delta",
        "removed",
        "arrays",
        "partitions",
        "layout",
    )
    _DEFAULTS: ClassVar[Mapping[str, Any]] = {
        "layout": "padded",
        "key_hash": None,
        "default_length": None,
        "empty_lists": 0,
        "fallbacks": [],
        "serve_to_all": False,
        "delta": False,
        "removed": 0,
        "partitions": None,
    }
    kind: Literal["ranked", "vectors"]
    key_type: Literal["int64", "str"]
    count: int
    """Number of keys."""
    key_hash: str | None
    """Hash of string keys (None for int64 keys)."""
    key_fences: list[int]
    """First sorted key (or key hash) of each chunk of the key array."""
    width: int
    """List capacity (ranked) or vector dimension."""
    min_length: int
    """Shortest list (ranked); width for vectors."""
    max_length: int
    """Longest list (ranked); width for vectors."""
    default_length: int | None
    """Length of the list served for unknown keys, if any."""
    empty_lists: int
    """Keys whose list is empty (ranked)."""
    fallbacks: list[str]
    """Ranked collections tried in order for an unknown key."""
    serve_to_all: bool
    """A ranked collection of one key whose list, as a fallback, serves every key (published
    with ``serve_to_all=True``; a collection that merely holds one key serves only it); written
    only when true."""
    delta: bool
    """The arrays hold only the keys added or changed since the same collection of the
    manifest's base (none when nothing changed); count and lengths describe the result."""
    removed: int
    """Delta: keys of the base removed (tombstones)."""
    arrays: dict[str, ArraySpec]
    partitions: PartitionsSpec | None
    """Absent for a collection stored whole; else its partitions, each with its own key index
    and arrays (``arrays`` then holds only the collection-wide default list)."""
    layout: Literal["padded", "ragged"]
    """How a ranked collection's lists are stored: ``padded`` (2-D ``items``/``scores`` of
    ``width`` columns and ``lengths``) or ``ragged`` (``offsets`` into 1-D ``items`` and
    ``scores``; written only then, in a ``sharedrec/3`` or newer manifest)."""

    def _check(self) -> None:
        _check_collection(_collection(self.to_json(), "CollectionSpec"), "CollectionSpec")

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        # A collection stored whole has no ``partitions`` field at all, and one that does not
        # serve its list to every key no ``serve_to_all``: the format of the collections that
        # use neither stays byte for byte what it always was.
        if self.partitions is None:
            del data["partitions"]
        if self.serve_to_all is False:
            del data["serve_to_all"]
        if self.layout == "padded":
            del data["layout"]
        return data


class FileEntry(_Record):
    """Size and checksum of one file of a version."""

    __slots__ = ("crc32", "size")
    _FIELDS = ("size", "crc32")
    size: int
    crc32: int

    def _check(self) -> None:
        _file(self.to_json(), "FileEntry")

    @classmethod
    def from_json(cls, data: object) -> FileEntry:
        """Parse the JSON object of a file entry (as `to_json` gives it); raise ValueError."""
        return _file(data, "FileEntry")


class Manifest(_Record):
    """``versions/<id>/manifest.json``: written last, its presence commits the version."""

    __slots__ = (
        "_raw",
        "base",
        "checks",
        "checksum",
        "collections",
        "created_at",
        "depth",
        "files",
        "format",
        "id",
        "metadata",
        "parent",
    )
    _FIELDS = (
        "format",
        "id",
        "parent",
        "base",
        "depth",
        "created_at",
        "metadata",
        "collections",
        "checksum",
        "checks",
        "files",
    )
    _DEFAULTS: ClassVar[Mapping[str, Any]] = {
        "format": FORMAT,
        "parent": None,
        "base": None,
        "depth": 0,
        "metadata": {},
        "checksum": CHECKSUM,
        "checks": {},
    }
    format: Literal["sharedrec/1", "sharedrec/2", "sharedrec/3", "sharedrec/4"]
    """``sharedrec/2`` (what sharedrec writes): chunk checksums listed per array (``chunks``);
    ``sharedrec/1``: every file listed in ``files``. Both read the same. ``sharedrec/3``:
    ``sharedrec/2`` with a collection stored ragged (written only then). ``sharedrec/4``:
    ``sharedrec/3`` with a collection of int64 keys split by ``fibonacci64`` (written only then)."""
    id: str
    parent: str | None
    base: str | None
    """A delta version: the version whose collections it updates."""
    depth: int
    """Deltas between this version and a full one."""
    created_at: datetime
    metadata: dict[str, Any]
    collections: dict[str, CollectionSpec]
    checksum: Literal["crc32"]
    checks: dict[str, Any]
    """Results of the publish guards, by guard name."""
    files: Mapping[str, FileEntry]
    """Every file of the version but the manifest, by path relative to it (in ``sharedrec/2``,
    the entries of chunk files are made from ``chunks`` when asked for)."""
    _raw: bytes | None

    def _fill(self, values: dict[str, Any]) -> None:
        object.__setattr__(self, "_raw", values.pop("_raw", None))
        collections = values.get("collections") or {}
        if "format" not in values:  # the oldest format that has what the version uses, which an
            # older sharedrec refuses as newer
            specs = collections.values()
            if any(spec.partitions is not None and spec.partitions.hash == "fibonacci64" for spec in specs):
                values = {**values, "format": FORMAT_FIBONACCI}
            elif any(spec.layout == "ragged" for spec in specs):
                values = {**values, "format": FORMAT_RAGGED}
        super()._fill(values)

    def _check(self) -> None:
        validate_json(self.metadata, "metadata")
        validate_json(self.checks, "checks")
        _manifest(self.to_json(), b"", geometry=False)

    @property
    def raw(self) -> bytes:
        """The bytes the manifest was read from (or, built by a writer, those it dumps to)."""
        if self._raw is None:
            object.__setattr__(self, "_raw", self.dumps())
        assert self._raw is not None
        return self._raw

    @property
    def data_bytes(self) -> int:
        """Total size of the version's files."""
        return sum(entry.size for entry in self.files.values())

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        if self.format == FORMAT_1:
            return data
        # sharedrec/2: the chunk files of each array as one list of checksums, before the
        # other files (a reader parses a few numbers per chunk, not an object per file).
        chunks, rest = _split_chunks(self.collections, self.files)
        files = data.pop("files")
        data["chunks"] = chunks
        data["files"] = {path: files[path] for path in rest}
        return data

    def dumps(self) -> bytes:
        """Serialise to the bytes written as ``manifest.json``."""
        return _dumps(self.to_json(), indent=1)

    def json_object(self) -> dict[str, Any]:
        """The manifest as the JSON object `dumps()` writes."""
        return self.to_json()

    @classmethod
    def loads(cls, data: bytes, where: str) -> Manifest:
        """Parse ``manifest.json`` bytes; ``where`` names the file in the error.

        Raises:
            CorruptVersion: The bytes are not a valid manifest.
            NewerFormat: A newer sharedrec wrote it (``format`` is ``sharedrec/2`` or above).
        """
        return _load(
            data, where, "republish the version or roll back", lambda raw: _manifest(raw, data), NEWEST_FORMAT
        )


class Pointer(_Record):
    """``CURRENT`` or ``refs/<name>``: which version is live, and which were live before it."""

    __slots__ = ("format", "manifest", "previous", "updated_at", "version")
    _FIELDS = ("format", "version", "previous", "updated_at", "manifest")
    _DEFAULTS: ClassVar[Mapping[str, Any]] = {"format": POINTER_FORMAT, "previous": [], "manifest": None}
    format: Literal["sharedrec-pointer/1"]
    version: str
    previous: list[str]
    """Previously live versions, newest first."""
    updated_at: datetime
    manifest: Manifest | None
    """Object stores: the manifest of ``version``, copied into the pointer so that a reader
    opens it with one request (the pointer's) instead of two."""

    def _check(self) -> None:
        if self.manifest is not None and not isinstance(self.manifest, Manifest):
            raise _Bad(f"manifest must be a Manifest, not {type(self.manifest).__name__}")
        _pointer({**self.to_json(), "manifest": None})
        if self.manifest is not None and self.manifest.id != self.version:
            raise _Bad(
                f"the manifest copied into the pointer is version {self.manifest.id!r}, not {self.version!r}"
            )

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        if self.manifest is not None:
            data["manifest"] = json.loads(self.manifest.raw)  # as it was read, unchanged
        return data

    def dumps(self) -> bytes:
        """Serialise to the bytes written as ``CURRENT``."""
        return _dumps(self.to_json(), indent=None)

    @classmethod
    def loads(cls, data: bytes, where: str) -> Pointer:
        """Parse ``CURRENT`` (or ``refs/<name>``) bytes; ``where`` names the file in the error.

        Raises:
            CorruptVersion: The bytes are not a valid pointer.
            NewerFormat: A newer sharedrec wrote it, or the manifest it carries.
        """
        return _load(
            data, where, "point it at a good version with store.set_current()", _pointer, POINTER_FORMAT
        )


class Lease(_Record):
    """``leases/<reader-id>.json``: a reader's promise that it still maps some versions."""

    __slots__ = (
        "expires_at",
        "format",
        "heartbeat",
        "host",
        "pid",
        "reader_id",
        "started_at",
        "version",
        "versions",
        "warming",
    )
    _FIELDS = (
        "format",
        "reader_id",
        "host",
        "pid",
        "version",
        "versions",
        "started_at",
        "heartbeat",
        "expires_at",
        "warming",
    )
    _DEFAULTS: ClassVar[Mapping[str, Any]] = {"format": LEASE_FORMAT, "warming": False}
    format: Literal["sharedrec-lease/1"]
    reader_id: str
    host: str
    pid: int
    version: str
    """The version the reader serves."""
    versions: list[str]
    """Every version the reader may still touch: the live one, and one it just left while
    lookups in flight finish."""
    started_at: datetime
    heartbeat: datetime
    expires_at: datetime
    """GC may ignore the lease after this moment."""
    warming: bool
    """The reader is still prefetching (`prefetch`): `sharedrec ready` waits for it; written
    only while true."""

    def _check(self) -> None:
        _lease(self.to_json())

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        if self.warming is False:  # only then: a lease without it reads the same to an older sharedrec
            del data["warming"]
        return data

    def dumps(self) -> bytes:
        """Serialise to the bytes of the lease file."""
        # No float in a lease: the C encoder writes what `_dumps` would, in a fraction of the
        # time (a reader writes its lease when it opens, and at every heartbeat).
        return json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def loads(cls, data: bytes, where: str) -> Lease:
        """Parse lease file bytes; ``where`` names the file in the error.

        Raises:
            CorruptVersion: The bytes are not a valid lease.
            NewerFormat: A newer sharedrec wrote it.
        """
        return _load(
            data, where, "delete the file; its reader rewrites it at the next heartbeat", _lease, LEASE_FORMAT
        )


# -- JSON values ----------------------------------------------------------------------------


def validate_metadata(metadata: object) -> dict[str, Any]:
    """Return a copy of ``metadata`` if it is a JSON object, else raise `InvalidInput`."""
    if metadata is None:
        return {}
    try:
        return validate_json(metadata, "")
    except _Bad as exc:
        raise InvalidInput(
            f"metadata must be JSON: str keys and str/int/float/bool/None/list/dict values; {exc}. "
            "Convert numpy scalars with .item()"
        ) from None


def validate_json(value: object, field: str) -> dict[str, Any]:
    """A copy of ``value`` if it is a JSON object (str keys, JSON values), else raise `_Bad`."""
    if not isinstance(value, dict):
        raise _Bad(f"{field or 'the value'} is {type(value).__name__} (Input should be a valid dictionary)")
    copied = _json_value(value, field)
    assert isinstance(copied, dict)
    return copied


def _json_value(value: object, where: str) -> object:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):  # numpy's float64 is a float; its float32 is not
        return float(value)
    if isinstance(value, list | tuple):
        return [_json_value(item, f"{where}.{i}" if where else str(i)) for i, item in enumerate(value)]
    if isinstance(value, dict):
        copied = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Bad(f"{where or 'the value'} has a key {key!r} of type {type(key).__name__}")
            copied[key] = _json_value(item, f"{where}.{key}" if where else key)
        return copied
    raise _Bad(f"{where or 'the value'} is {type(value).__name__} (not a JSON value)")


def _plain(value: object) -> Any:
    """A field's value as JSON: records as objects, tuples as lists, times in ISO 8601."""
    if isinstance(value, _Record):
        return value.to_json()
    if isinstance(value, datetime):
        text = value.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    if isinstance(value, dict | _FileTable):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _float(value: float) -> str:
    """A float as pydantic writes it (Rust's ryu): ``1e-7``, ``0.000025``, ``1e+16``, null for NaN."""
    if value != value or value in (float("inf"), float("-inf")):
        return "null"
    text = repr(value)
    if "e" not in text:
        return text
    mantissa, exponent = text.split("e")
    power = int(exponent)
    if power == -5:
        sign = "-" if mantissa.startswith("-") else ""
        return f"{sign}0.0000{mantissa.lstrip('-').replace('.', '')}"
    return f"{mantissa}e{'+' if power > 0 else '-'}{abs(power)}"


def _dumps(value: object, indent: int | None) -> bytes:
    """JSON as the pydantic models of sharedrec 0.1.0 wrote it: UTF-8, fields in order."""
    out: list[str] = []
    _emit(value, indent, 0, out)
    return "".join(out).encode()


def _emit(value: object, indent: int | None, depth: int, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True or value is False:
        out.append("true" if value else "false")
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, int):
        out.append(str(int(value)))
    elif isinstance(value, float):
        out.append(_float(value))
    elif isinstance(value, dict | list | tuple):
        items = list(value.items()) if isinstance(value, dict) else list(value)
        opening, closing = ("{", "}") if isinstance(value, dict) else ("[", "]")
        if not items:
            out.append(opening + closing)
            return
        inner = "" if indent is None else "\n" + " " * (indent * (depth + 1))
        out.append(opening)
        for i, item in enumerate(items):
            out.append(("," if i else "") + inner)
            if isinstance(value, dict):
                key, item = item
                out.append(json.dumps(key, ensure_ascii=False) + (":" if indent is None else ": "))
            _emit(item, indent, depth + 1, out)
        out.append(("" if indent is None else "\n" + " " * (indent * depth)) + closing)
    else:
        raise TypeError(f"{type(value).__name__} is not a JSON value")


# -- checks ---------------------------------------------------------------------------------


class _Bad(ValueError):
    """A field that does not fit; the message names it."""


def _int(value: object, field: str, low: int = 0, high: int | None = None) -> int:
    # bool is an int subclass, and JSON true is not a count.
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Bad(f"{field} must be an integer, not {type(value).__name__}")
    if value < low or (high is not None and value >= high):
        raise _Bad(f"{field} is out of range ({value})")
    return value


def _bool(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f"{field} must be true or false, not {type(value).__name__}")
    return value


def _str(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise _Bad(f"{field} must be a string, not {type(value).__name__}")
    return value


def _optional(check: Callable[[object, str], _T]) -> Callable[[object, str], _T | None]:
    def run(value: object, field: str) -> _T | None:
        return None if value is None else check(value, field)

    return run


def _list(value: object, field: str, item: Callable[[object, str], _T]) -> list[_T]:
    if not isinstance(value, list):
        raise _Bad(f"{field} must be a list, not {type(value).__name__}")
    return [item(entry, f"{field}[{i}]") for i, entry in enumerate(value)]


def _dict(value: object, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(f"{field} must be an object, not {type(value).__name__}")
    return value


def _literal(value: object, field: str, *allowed: str) -> str:
    if value not in allowed:
        raise _Bad(f"{field} must be one of {list(allowed)}, not {value!r}")
    return str(value)


def _datetime(value: object, field: str) -> datetime:
    try:
        return datetime.fromisoformat(_str(value, field))
    except ValueError:
        raise _Bad(f"{field} is not an ISO 8601 date and time ({value!r})") from None


_SAFE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")

_ROLES: dict[str, tuple[tuple[str, ...], int]] = {
    "keys": (("<i8",), 1),
    "key_hash": (("<u8",), 1),
    "key_spans": (("<i8",), 2),
    "key_bytes": (("|u1",), 1),
    "items": (("<i4", "<i8"), 0),  # 2-D padded, 1-D ragged: checked with the collection's layout
    "scores": (("<f4", "<f8"), 0),
    "offsets": (("<i8",), 1),
    "lengths": (("<i4",), 1),
    "vectors": (("<f2", "<f4", "<f8"), 2),
    "default_items": (("<i4", "<i8"), 1),
    "default_scores": (("<f4", "<f8"), 1),
    "removed": (("<i8",), 1),
    "removed_spans": (("<i8",), 2),
    "removed_bytes": (("|u1",), 1),
}
"""The dtypes and dimensions sharedrec writes, by array name: what a reader can map."""
_ANY_DTYPE = tuple(sorted({dtype for dtypes, _ in _ROLES.values() for dtype in dtypes}))


def _name(value: object, field: str) -> str:
    """A collection or array name: one path component that stays inside its folder."""
    name = _str(value, field)
    if not _SAFE.fullmatch(name) or ".." in name:
        raise _Bad(f"{field} {name!r} is not a valid name: a name must not lead outside the version folder")
    return name


def _path(value: object, field: str) -> str:
    """A file path relative to the version folder: safe names joined by '/'."""
    path = _str(value, field)
    for part in path.split("/"):
        _name(part, f"{field} {path!r}: part")
    return path


def _fields(raw: object, field: str, required: tuple[str, ...], optional: tuple[str, ...]) -> dict[str, Any]:
    """``raw`` as an object holding every required key and no key outside both sets."""
    obj = _dict(raw, field)
    missing = [name for name in required if name not in obj]
    if missing:
        raise _Bad(f"{field} lacks {missing}")
    extra = sorted(set(obj) - set(required) - set(optional))
    if extra:
        raise _Bad(f"{field} has unknown fields {extra}")
    return obj


def _array(raw: object, field: str, name: str) -> ArraySpec:
    obj = _fields(raw, field, ("dtype", "shape", "chunks"), ())
    dtype = _str(obj["dtype"], f"{field}.dtype")
    # Only what sharedrec writes: anything else (``<i3``, ``<u0``, ``|b8``) would fail later,
    # in numpy, with an error that names no file.
    allowed, ndim = _ROLES.get(name, (_ANY_DTYPE, 0))
    if dtype not in allowed:
        raise _Bad(f"{field}.dtype {dtype!r} is not one of the dtypes of such an array ({list(allowed)})")
    shape = tuple(_list(obj["shape"], f"{field}.shape", _int))
    chunks = tuple(_list(obj["chunks"], f"{field}.chunks", lambda v, f: _int(v, f, 1)))
    if not shape or len(chunks) != len(shape) or chunks[1:] != shape[1:]:
        raise _Bad(f"{field}: chunks {list(chunks)} must split the rows of shape {list(shape)} only")
    if (ndim and len(shape) != ndim) or (name.endswith("_spans") and shape[1:] != (2,)):
        raise _Bad(f"{field} has shape {list(shape)}, which is not the shape of such an array")
    return ArraySpec._make(dtype=dtype, shape=shape, chunks=chunks)


_COLLECTION_REQUIRED = (
    "kind",
    "key_type",
    "count",
    "key_fences",
    "width",
    "min_length",
    "max_length",
    "arrays",
)
_COLLECTION_OPTIONAL = (
    "key_hash",
    "default_length",
    "empty_lists",
    "fallbacks",
    "serve_to_all",
    "delta",
    "removed",
    "partitions",
    "layout",
)


def _arrays(raw: object, field: str) -> dict[str, ArraySpec]:
    return {
        _name(name, field): _array(spec, f"{field}.{name}", name) for name, spec in _dict(raw, field).items()
    }


_PER_KEY = ("key_spans", "items", "scores", "lengths", "vectors")
"""Arrays that hold one row per key, in the order of the key array."""


def _check_rows(arrays: dict[str, ArraySpec], fences: list[int], count: int | None, field: str) -> None:
    """The arrays of a key index and its rows agree: as many rows, and one fence per key chunk.

    ``count`` is the number of keys the arrays must hold (None for a delta, whose arrays
    hold only the keys it changed).
    """
    key = "keys" if "keys" in arrays else "key_hash"
    spec = arrays.get(key)
    offsets = arrays.get("offsets")
    # Ragged: offsets hold one more row than the keys, and items and scores are flat.
    per_key = _PER_KEY if offsets is None else ("key_spans", "lengths", "vectors")
    if spec is None:
        present = [name for name in _PER_KEY if name in arrays] + (["offsets"] if offsets else [])
        if present:
            raise _Bad(f"{field}.arrays holds {present} but no key array")
        return
    rows = spec.shape[0]
    if count is not None and rows != count:
        raise _Bad(f"{field}.arrays.{key} holds {rows} keys, but count is {count}")
    for name in per_key:
        other = arrays.get(name)
        if other is not None and other.shape[0] != rows:
            raise _Bad(f"{field}.arrays.{name} has {other.shape[0]} rows for {rows} keys")
    if offsets is not None and offsets.shape[0] != rows + 1:
        raise _Bad(f"{field}.arrays.offsets has {offsets.shape[0]} rows for {rows} keys (needs {rows + 1})")
    if len(fences) != spec.n_chunks:
        raise _Bad(f"{field}.key_fences lists {len(fences)} fences for {spec.n_chunks} chunks of keys")


def _check_lengths(obj: CollectionSpec | PartSpec, field: str) -> None:
    if not obj.min_length <= obj.max_length <= obj.width:
        raise _Bad(f"{field}: lengths {obj.min_length}..{obj.max_length} do not fit the width {obj.width}")


_PART_REQUIRED = ("path", "count", "key_fences", "width", "min_length", "max_length", "arrays")


def _part(raw: object, field: str) -> PartSpec:
    obj = _fields(raw, field, _PART_REQUIRED, ("empty_lists",))
    path = _optional(_str)(obj["path"], f"{field}.path")
    if path is not None and (not path or path[0] in "._" or "/" in path or ".." in path):
        raise _Bad(f"{field}.path {path!r} is not a folder name")
    arrays = _arrays(obj["arrays"], f"{field}.arrays")
    width = _int(obj["width"], f"{field}.width", 1, MAX_WIDTH + 1)
    _check_width(arrays, width, field)
    return PartSpec._make(
        path=path,
        count=_int(obj["count"], f"{field}.count"),
        key_fences=_list(obj["key_fences"], f"{field}.key_fences", lambda v, f: _int(v, f, -(2**63), 2**64)),
        width=width,
        min_length=_int(obj["min_length"], f"{field}.min_length"),
        max_length=_int(obj["max_length"], f"{field}.max_length"),
        empty_lists=_int(obj.get("empty_lists", 0), f"{field}.empty_lists"),
        arrays=arrays,
    )


def _check_width(arrays: dict[str, ArraySpec], width: int, field: str) -> None:
    """Rows of items, scores and vectors are ``width`` wide, as the collection says."""
    for row_array in ("items", "scores", "vectors"):
        spec = arrays.get(row_array)
        if spec is not None and spec.shape[1:] != (width,):
            raise _Bad(f"{field}.width is {width} but its {row_array} array has shape {list(spec.shape)}")


def _partitions(raw: object, field: str) -> PartitionsSpec | None:
    if raw is None:
        return None
    obj = _fields(raw, field, ("hash", "parts"), ())
    if isinstance(obj["parts"], list) and len(obj["parts"]) > MAX_PARTITIONS:
        raise _Bad(f"{field}.parts lists {len(obj['parts'])} partitions, at most {MAX_PARTITIONS}")
    parts = _list(obj["parts"], f"{field}.parts", _part)
    if not parts:
        raise _Bad(f"{field}.parts must list at least one partition")
    return PartitionsSpec._make(
        hash=_literal(obj["hash"], f"{field}.hash", "fibonacci64", "splitmix64", "blake2b-64"), parts=parts
    )


def _collection(raw: object, field: str) -> CollectionSpec:
    obj = _fields(raw, field, _COLLECTION_REQUIRED, _COLLECTION_OPTIONAL)
    arrays = _arrays(obj["arrays"], f"{field}.arrays")
    width = _int(obj["width"], f"{field}.width", 1, MAX_WIDTH + 1)
    layout = _literal(obj.get("layout", "padded"), f"{field}.layout", "padded", "ragged")
    if layout == "padded":
        _check_width(arrays, width, field)
    else:
        _check_ragged(arrays, field)
    kind = _literal(obj["kind"], f"{field}.kind", "ranked", "vectors")
    count = _int(obj["count"], f"{field}.count", 1)
    serve_to_all = _bool(obj.get("serve_to_all", False), f"{field}.serve_to_all")
    if serve_to_all and (kind != "ranked" or count != 1):
        raise _Bad(
            f"{field}.serve_to_all is true for a {kind} collection of {count} keys; only a ranked "
            "collection of one key serves its list to every key"
        )
    return CollectionSpec._make(
        kind=kind,
        key_type=_literal(obj["key_type"], f"{field}.key_type", "int64", "str"),
        count=count,
        key_hash=_optional(_str)(obj.get("key_hash"), f"{field}.key_hash"),
        key_fences=_list(obj["key_fences"], f"{field}.key_fences", lambda v, f: _int(v, f, -(2**63), 2**64)),
        width=width,
        min_length=_int(obj["min_length"], f"{field}.min_length"),
        max_length=_int(obj["max_length"], f"{field}.max_length"),
        default_length=_optional(_int)(obj.get("default_length"), f"{field}.default_length"),
        empty_lists=_int(obj.get("empty_lists", 0), f"{field}.empty_lists"),
        fallbacks=_list(obj.get("fallbacks", []), f"{field}.fallbacks", _str),
        serve_to_all=serve_to_all,
        delta=_bool(obj.get("delta", False), f"{field}.delta"),
        removed=_int(obj.get("removed", 0), f"{field}.removed"),
        arrays=arrays,
        partitions=_partitions(obj.get("partitions"), f"{field}.partitions"),
        layout=layout,
    )


def _check_ragged(arrays: dict[str, ArraySpec], field: str) -> None:
    """A ragged collection's lists: 1-D ``items`` and ``scores`` chunked alike, no ``lengths``
    or ``vectors`` (``offsets`` holds one more row than the keys: see `_check_rows`)."""
    items, scores = arrays.get("items"), arrays.get("scores")
    if "lengths" in arrays or "vectors" in arrays:
        raise _Bad(f"{field}.layout is ragged but it has a lengths or vectors array")
    if items is None and scores is None and "offsets" not in arrays:
        return  # a delta that only removed keys
    if items is None or scores is None or "offsets" not in arrays:
        raise _Bad(f"{field}.layout is ragged but it lacks offsets, items or scores")
    if len(items.shape) != 1 or items.shape != scores.shape or items.chunks != scores.chunks:
        raise _Bad(
            f"{field}.layout is ragged but items {list(items.shape)} (chunks {list(items.chunks)}) "
            f"and scores {list(scores.shape)} (chunks {list(scores.chunks)}) are not 1-D arrays "
            "chunked alike"
        )


def _check_collection(spec: CollectionSpec, field: str) -> None:
    """What the reader relies on beyond types: rows, defaults and partitions that agree."""
    _check_lengths(spec, field)
    if spec.partitions is None:
        _check_rows(spec.arrays, spec.key_fences, None if spec.delta else spec.count, field)
    else:
        hashes = PARTITION_HASHES[spec.key_type]
        if spec.partitions.hash not in hashes:
            raise _Bad(
                f"{field}.partitions.hash is {spec.partitions.hash}, but {spec.key_type} keys are split "
                f"by {' or '.join(hashes)}"
            )
        parts = spec.partitions.parts
        for number, part in enumerate(parts):
            if part.count:
                where = f"{field}.partitions.parts[{number}]"
                _check_rows(part.arrays, part.key_fences, part.count, where)
                _check_lengths(part, where)
        if sum(part.count for part in parts) != spec.count:
            raise _Bad(
                f"{field}: its partitions hold {sum(p.count for p in parts)} keys, count is {spec.count}"
            )
        # A batch lookup sizes its output by the collection's width: no partition is wider.
        widest = max(part.width for part in parts if part.count)
        if widest != spec.width:
            raise _Bad(f"{field}.width is {spec.width} but its widest partition is {widest} wide")
    if spec.default_length is not None:
        if spec.default_length > spec.width:
            raise _Bad(f"{field}.default_length {spec.default_length} exceeds the width {spec.width}")
        for name in ("default_items", "default_scores"):
            array = spec.arrays.get(name)
            if array is None or array.shape[0] < spec.default_length:
                held = "no" if array is None else f"a {array.shape[0]}-row"
                raise _Bad(
                    f"{field}.default_length is {spec.default_length} but the collection has "
                    f"{held} {name} array"
                )
    if spec.removed:
        name = "removed" if spec.key_type == "int64" else "removed_spans"
        array = spec.arrays.get(name)
        if array is None or array.shape[0] != spec.removed:
            raise _Bad(f"{field}.removed is {spec.removed} but its {name} array does not hold as many keys")


def _file(raw: object, field: str) -> FileEntry:
    obj = _fields(raw, field, ("size", "crc32"), ())
    return FileEntry._make(
        size=_int(obj["size"], f"{field}.size"), crc32=_int(obj["crc32"], f"{field}.crc32", 0, 2**32)
    )


_SAFE_PATH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}(?:/[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})*")
"""What `_path` accepts, in one match: safe names joined by '/' (a part cannot start with '.',
so ``..`` anywhere in the path lies inside one part)."""


def _files(raw: object) -> dict[str, FileEntry]:
    """The ``files`` of a manifest: what `_path` and `_file` accept, entry by entry.

    A manifest lists every chunk file (hundreds to thousands), and a reader parses it on
    every open: the usual entry is checked by one regular expression and a few type tests,
    and only one that fails them goes through `_path` and `_file`, for their messages.
    """
    files: dict[str, FileEntry] = {}
    make = FileEntry.__new__
    for path, entry in _dict(raw, "files").items():
        if (
            type(path) is str
            and _SAFE_PATH.fullmatch(path)
            and ".." not in path
            and type(entry) is dict
            and len(entry) == 2
            and type(size := entry.get("size")) is int
            and type(crc := entry.get("crc32")) is int
            and size >= 0
            and 0 <= crc < 2**32
        ):
            record = make(FileEntry)
            object.__setattr__(record, "size", size)
            object.__setattr__(record, "crc32", crc)
            files[path] = record
        else:  # the path first, as the checks always ran
            checked = _path(path, "files")
            files[checked] = _file(entry, f"files.{path}")
    return files


_MANIFEST_REQUIRED = ("id", "created_at", "collections", "files")
_MANIFEST_OPTIONAL = ("format", "parent", "base", "depth", "metadata", "checksum", "checks", "chunks")
FORMAT_1 = "sharedrec/1"
_READ_FORMATS = (FORMAT_1, FORMAT, FORMAT_RAGGED, FORMAT_FIBONACCI)
"""The manifest formats this sharedrec reads (it writes `FORMAT`)."""


def _chunked_arrays(collections: Mapping[str, CollectionSpec]) -> dict[str, ArraySpec]:
    """Every array of a version by its path in the folder (``<collection>[/<part>]/<array>``)."""
    found: dict[str, ArraySpec] = {}
    for name, collection in collections.items():
        for array, spec in collection.arrays.items():
            found[f"{name}/{array}"] = spec
        if collection.partitions is not None:
            for part in collection.partitions.parts:
                for array, spec in part.arrays.items():
                    found[f"{name}/{part.path}/{array}"] = spec
    return found


def _split_chunks(
    collections: Mapping[str, CollectionSpec], files: Mapping[str, FileEntry]
) -> tuple[dict[str, list[int]], list[str]]:
    """``chunks`` of a ``sharedrec/2`` manifest, and the paths ``files`` still lists.

    An array whose chunk files are all listed, each of the size its geometry implies (what
    sharedrec writes), has its checksums in ``chunks``; any other file stays in ``files``.
    """
    chunks: dict[str, list[int]] = {}
    listed: set[str] = set()
    for path, spec in _chunked_arrays(collections).items():
        nbytes, suffix = spec.chunk_nbytes, "/0" * (len(spec.shape) - 1)
        paths = [f"{path}/c/{chunk}{suffix}" for chunk in range(spec.n_chunks)]
        entries = [files.get(chunk) for chunk in paths]
        if all(entry is not None and entry.size == nbytes for entry in entries):
            chunks[path] = [entry.crc32 for entry in entries if entry is not None]
            listed.update(paths)
    return chunks, [path for path in files if path not in listed]


class _FileTable(Mapping[str, FileEntry]):
    """``files`` of a ``sharedrec/2`` manifest: the files it lists, and an entry for every
    chunk of an array in ``chunks``, made when asked for (a reader asks for a few)."""

    def __init__(
        self, files: dict[str, FileEntry], chunks: dict[str, list[int]], arrays: dict[str, ArraySpec]
    ):
        self._files = files
        self._chunks = chunks
        self._arrays = arrays
        self._all: dict[str, FileEntry] | None = None

    def __getitem__(self, path: str) -> FileEntry:
        found = self._files.get(path)
        if found is not None:
            return found
        array, separator, chunk = path.rpartition("/c/")
        crcs = self._chunks.get(array) if separator else None
        if crcs is not None:
            spec = self._arrays[array]
            number, _, suffix = chunk.partition("/")
            if (
                number.isascii()
                and number.isdigit()
                and number == str(int(number))
                and int(number) < len(crcs)
                and suffix == "/".join("0" * (len(spec.shape) - 1))
            ):
                return FileEntry._make(size=spec.chunk_nbytes, crc32=crcs[int(number)])
        raise KeyError(path)

    def _every(self) -> dict[str, FileEntry]:
        if self._all is None:
            every = dict(self._files)
            for array, crcs in self._chunks.items():
                spec = self._arrays[array]
                nbytes, suffix = spec.chunk_nbytes, "/0" * (len(spec.shape) - 1)
                for number, crc in enumerate(crcs):
                    every[f"{array}/c/{number}{suffix}"] = FileEntry._make(size=nbytes, crc32=crc)
            self._all = dict(sorted(every.items()))
        return self._all

    def __iter__(self) -> Iterator[str]:
        return iter(self._every())

    def __len__(self) -> int:
        return len(self._files) + sum(len(crcs) for crcs in self._chunks.values())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} files)"


def _chunks(raw: object, arrays: dict[str, ArraySpec], files: dict[str, FileEntry]) -> dict[str, list[int]]:
    """``chunks`` of a ``sharedrec/2`` manifest: one CRC-32 per chunk file of each array named."""
    chunks: dict[str, list[int]] = {}
    for path, crcs in _dict(raw, "chunks").items():
        spec = arrays.get(path)
        if spec is None:
            raise _Bad(f"chunks names {path!r}, which is no array of the manifest's collections")
        if not isinstance(crcs, list) or len(crcs) != spec.n_chunks:
            held = f"{len(crcs)} checksums" if isinstance(crcs, list) else type(crcs).__name__
            raise _Bad(
                f"chunks.{path} must list {spec.n_chunks} checksums, one per chunk file; it holds {held}"
            )
        # In C, not a Python step per chunk: every checksum an int (not a bool), all in range.
        if set(map(type, crcs)) != {int} or min(crcs) < 0 or max(crcs) >= 2**32:
            bad = next(crc for crc in crcs if not (type(crc) is int and 0 <= crc < 2**32))
            raise _Bad(f"chunks.{path} holds {bad!r}, not a CRC-32 (an integer from 0 to 2**32 - 1)")
        chunks[path] = crcs
    for listed in files:
        array, separator, _ = listed.rpartition("/c/")
        if separator and array in chunks:
            raise _Bad(f"files lists {listed!r}, whose checksum chunks.{array} already gives")
    return chunks


def _manifest(raw: object, data: bytes | None, geometry: bool = True) -> Manifest:
    """Parse a manifest's JSON; ``data`` are its bytes (None when unknown).

    Without ``geometry`` the arrays are not checked against the listed files (a writer checks
    its own files, with errors of its own).
    """
    obj = _fields(raw, "the manifest", _MANIFEST_REQUIRED, _MANIFEST_OPTIONAL)
    format = _literal(obj.get("format", FORMAT_1), "format", *_READ_FORMATS)
    files = _files(obj["files"])
    collections = {
        _name(name, "collections"): _collection(spec, f"collections.{name}")
        for name, spec in _dict(obj["collections"], "collections").items()
    }
    table: Mapping[str, FileEntry] = files
    chunked: dict[str, list[int]] = {}
    if format == FORMAT_1:
        if "chunks" in obj:
            raise _Bad(f"chunks is a field of {FORMAT} manifests, not of {FORMAT_1} ones")
    else:
        by_path = _chunked_arrays(collections)
        chunked = _chunks(obj.get("chunks", {}), by_path, files)
        table = _FileTable(files, chunked, by_path)
    for name, collection in collections.items():
        if collection.layout == "ragged" and format not in (FORMAT_RAGGED, FORMAT_FIBONACCI):
            raise _Bad(
                f"collections.{name}.layout is ragged, which needs format {FORMAT_RAGGED} or newer, "
                f"not {format}"
            )
        fibonacci = collection.partitions is not None and collection.partitions.hash == "fibonacci64"
        if fibonacci and format != FORMAT_FIBONACCI:
            raise _Bad(
                f"collections.{name}.partitions.hash is fibonacci64, which needs format "
                f"{FORMAT_FIBONACCI}, not {format}"
            )
        if not geometry:
            _check_collection(collection, f"collections.{name}")
            continue
        arrays = [
            (f"collections.{name}.arrays.{a}", f"{name}/{a}", spec) for a, spec in collection.arrays.items()
        ]
        if collection.partitions is not None:
            arrays += [
                (f"collections.{name}.partitions.parts[{p}].arrays.{a}", f"{name}/{part.path}/{a}", spec)
                for p, part in enumerate(collection.partitions.parts)
                for a, spec in part.arrays.items()
            ]
        for where, path, spec in arrays:
            if path in chunked:  # one checksum per chunk, each of the size of the geometry
                continue
            # Every chunk is a listed file: a declared size cannot outgrow the manifest itself.
            if spec.n_chunks > len(files):
                raise _Bad(
                    f"{where} declares {spec.n_chunks} chunks but the manifest lists {len(files)} files"
                )
            # ...of the size its geometry implies, so that the sizes checked against the files
            # (at open, or when a chunk is mapped) bound every size declared here. (A chunk
            # missing from the list has its size checked when mapped; a key chunk is refused.)
            nbytes, ndim = spec.chunk_nbytes, len(spec.shape)
            prefix, suffix = f"{path}/c/", "/0" * (ndim - 1)  # chunk_path(), built once per array
            for chunk in range(spec.n_chunks):
                entry = files.get(f"{prefix}{chunk}{suffix}")
                if entry is not None and entry.size != nbytes:
                    raise _Bad(
                        f"{where}: chunk file {chunk_path(path, chunk, ndim)} is listed "
                        f"with {entry.size} bytes, the array needs {nbytes}"
                    )
        _check_collection(collection, f"collections.{name}")
    return Manifest._make(
        format=format,
        id=_str(obj["id"], "id"),
        parent=_optional(_str)(obj.get("parent"), "parent"),
        base=_optional(_str)(obj.get("base"), "base"),
        depth=_int(obj.get("depth", 0), "depth"),
        created_at=_datetime(obj["created_at"], "created_at"),
        metadata=_dict(obj.get("metadata", {}), "metadata"),
        collections=collections,
        checksum=_literal(obj.get("checksum", "crc32"), "checksum", "crc32"),
        checks=_dict(obj.get("checks", {}), "checks"),
        files=table,
        _raw=data,
    )


def _pointer(raw: object) -> Pointer:
    obj = _fields(raw, "the pointer", ("version", "updated_at"), ("format", "previous", "manifest"))
    previous = _list(obj.get("previous", []), "previous", _str)
    if len(previous) > POINTER_HISTORY:
        raise _Bad(f"previous lists {len(previous)} versions, at most {POINTER_HISTORY}")
    return Pointer._make(
        format=_literal(obj.get("format", "sharedrec-pointer/1"), "format", "sharedrec-pointer/1"),
        version=_str(obj["version"], "version"),
        previous=previous,
        updated_at=_datetime(obj["updated_at"], "updated_at"),
        manifest=_inline_manifest(obj.get("manifest"), obj["version"]),
    )


def _inline_manifest(raw: object, version: object) -> Manifest | None:
    if raw is None:
        return None
    manifest = _manifest(raw, json.dumps(raw).encode())
    if manifest.id != version:
        raise _Bad(f"the manifest copied into the pointer is version {manifest.id!r}, not {version!r}")
    return manifest


def _lease(raw: object) -> Lease:
    required = ("reader_id", "host", "pid", "version", "versions", "started_at", "heartbeat", "expires_at")
    obj = _fields(raw, "the lease", required, ("format", "warming"))
    return Lease._make(
        format=_literal(obj.get("format", LEASE_FORMAT), "format", LEASE_FORMAT),
        reader_id=_str(obj["reader_id"], "reader_id"),
        host=_str(obj["host"], "host"),
        pid=_int(obj["pid"], "pid", -(2**63), 2**63),
        version=_str(obj["version"], "version"),
        versions=_list(obj["versions"], "versions", _str),
        started_at=_datetime(obj["started_at"], "started_at"),
        heartbeat=_datetime(obj["heartbeat"], "heartbeat"),
        expires_at=_datetime(obj["expires_at"], "expires_at"),
        warming=_bool(obj.get("warming", False), "warming"),
    )


def _load(data: bytes, where: str, fix: str, build: Callable[[object], _T], ours: str) -> _T:
    try:
        raw = json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSON and Unicode errors are ValueErrors
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CorruptVersion(f"{where} is truncated or invalid ({reason}); {fix}") from None
    # Before any strictness: a newer writer may add fields this sharedrec does not know, and
    # such a file is not damaged.
    _refuse_newer(raw, where, ours)
    if ours == POINTER_FORMAT and isinstance(raw, dict):  # the manifest copied into a pointer
        _refuse_newer(raw.get("manifest"), f"{where} (the manifest it carries)", NEWEST_FORMAT)
    try:
        return build(raw)
    except (ValueError, RecursionError) as exc:  # _Bad errors are ValueErrors
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CorruptVersion(f"{where} is truncated or invalid ({reason}); {fix}") from None


# -- newer formats --------------------------------------------------------------------------

_NUMBER = re.compile(r"[1-9][0-9]{0,8}")


def newer_format(raw: object, ours: str) -> str | None:
    """The ``format`` of the JSON object ``raw`` if a newer sharedrec wrote it, else None.

    Newer means the family of ``ours`` (``sharedrec``, ``sharedrec-pointer``,
    ``sharedrec-lease``) with a higher number: ``sharedrec/2`` is newer than ``sharedrec/1``;
    ``sharedrec/0``, ``other/2`` or ``sharedrec/x`` are not (they are invalid).
    """
    if not isinstance(raw, dict):
        return None
    found = raw.get("format")
    if not isinstance(found, str):
        return None
    family, _, number = found.rpartition("/")
    our_family, _, our_number = ours.rpartition("/")
    if family != our_family or not _NUMBER.fullmatch(number):
        return None
    return found if int(number) > int(our_number) else None


def newer_message(where: str, found: str, ours: str) -> str:
    """What `NewerFormat` says of the file ``where``, written in format ``found``."""
    return (
        f"{where}: written by a newer sharedrec (format {found}); this sharedrec reads {ours}: "
        "upgrade sharedrec (pip install -U sharedrec)"
    )


def _refuse_newer(raw: object, where: str, ours: str) -> None:
    found = newer_format(raw, ours)
    if found is not None:
        raise NewerFormat(newer_message(where, found, ours))


class NewerManifest:
    """What this sharedrec can still tell of a manifest a newer sharedrec wrote.

    Every format keeps ``format``, ``id``, ``created_at`` and ``base`` with their meaning
    in ``sharedrec/1`` (``docs/format.md``, *Format versions*), so that an older garbage
    collector keeps the bases of a newer delta version. Read as best it can: a field that
    is absent or of another type is None, and ``base_known`` is False when ``base`` is
    present but not a string or null.
    """

    __slots__ = ("base", "base_known", "created_at", "format", "id", "size_bytes")

    def __init__(
        self,
        format: str,
        id: str | None,
        created_at: datetime | None,
        base: str | None,
        base_known: bool,
        size_bytes: int,
    ) -> None:
        self.format = format
        self.id = id
        self.created_at = created_at
        self.base = base
        self.base_known = base_known
        self.size_bytes = size_bytes
        """The sizes listed in ``files``, if it is still listed as in ``sharedrec/1`` (else 0)."""


def peek_newer_manifest(data: bytes) -> NewerManifest | None:
    """The stable fields of ``manifest.json`` bytes a newer sharedrec wrote, else None."""
    try:
        raw = json.loads(data)
    except (ValueError, RecursionError):
        return None
    found = newer_format(raw, NEWEST_FORMAT)
    if found is None:
        return None
    assert isinstance(raw, dict)
    version = raw.get("id")
    try:
        created: datetime | None = _datetime(raw.get("created_at"), "created_at")
    except _Bad:
        created = None
    base = raw.get("base")
    files = raw.get("files")
    size = 0
    if isinstance(files, dict):
        size = sum(
            entry["size"]
            for entry in files.values()
            if isinstance(entry, dict) and type(entry.get("size")) is int and entry["size"] >= 0
        )
    return NewerManifest(
        format=found,
        id=version if isinstance(version, str) else None,
        created_at=created if created is not None and created.tzinfo is not None else None,
        base=base if isinstance(base, str) else None,
        base_known=base is None or isinstance(base, str),
        size_bytes=size,
    )
