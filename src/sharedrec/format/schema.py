"""Read-side views of ``manifest.json`` and pointer files, parsed without pydantic.

A reader process needs a handful of fields of two small JSON files to open a version.
Importing pydantic and building its models would cost a reader more time (about 110 ms)
and memory (about 13 MB) than everything else it does at start-up, so the read path parses
those files here, with explicit type checks, into frozen views whose attribute names are
those of the pydantic models in `sharedrec.format.models`. Writers, `RecommendationStore.manifest()` and
`sharedrec.format.models` keep the pydantic models, which remain the schema. This parser accepts
a subset of what the models accept (no lax coercions such as ``"5"`` for an int) and adds
the bounds a reader relies on: shapes that agree with chunk shapes and with the listed
files, so a damaged or hostile manifest cannot make a reader allocate without bound.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from sharedrec.errors import CorruptVersion
from sharedrec.format.layout import MAX_PARTITIONS, MAX_WIDTH, POINTER_HISTORY, chunk_path

__all__ = [
    "ArrayGeometry",
    "ArrayView",
    "CollectionView",
    "FileView",
    "ManifestView",
    "PartView",
    "PartitionsView",
    "PointerView",
    "parse_manifest",
    "parse_pointer",
]

_T = TypeVar("_T")


class ArrayGeometry:
    """Chunk arithmetic shared by `ArrayView` and the pydantic ``ArraySpec``."""

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


class _View:
    """A record of named fields; class creation stays cheap (no dataclass machinery)."""

    __slots__: tuple[str, ...] = ()

    def __init__(self, **values: Any) -> None:
        if values.keys() != set(self.__slots__):
            raise TypeError(f"{type(self).__name__} takes exactly the fields {sorted(self.__slots__)}")
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__ if name != "raw")
        return f"{type(self).__name__}({fields})"


class ArrayView(_View, ArrayGeometry):
    """One array of a collection (see ``sharedrec.format.models.ArraySpec``)."""

    __slots__ = ("chunks", "dtype", "shape")
    dtype: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]


class PartView(_View):
    """One partition of a collection (see ``sharedrec.format.models.PartSpec``)."""

    __slots__ = ("arrays", "count", "empty_lists", "key_fences", "max_length", "min_length", "path", "width")
    path: str | None
    count: int
    key_fences: list[int]
    width: int
    min_length: int
    max_length: int
    empty_lists: int
    arrays: dict[str, ArrayView]


class PartitionsView(_View):
    """How a collection is split (see ``sharedrec.format.models.PartitionsSpec``)."""

    __slots__ = ("hash", "parts")
    hash: str
    parts: list[PartView]


class CollectionView(_View):
    """One collection of a version (see ``sharedrec.format.models.CollectionSpec``)."""

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
        "max_length",
        "min_length",
        "partitions",
        "removed",
        "serve_to_all",
        "width",
    )
    kind: str
    key_type: str
    count: int
    key_hash: str | None
    key_fences: list[int]
    width: int
    min_length: int
    max_length: int
    default_length: int | None
    empty_lists: int
    fallbacks: list[str]
    serve_to_all: bool
    delta: bool
    removed: int
    arrays: dict[str, ArrayView]
    partitions: PartitionsView | None


class FileView(_View):
    """Size and checksum of one file of a version."""

    __slots__ = ("crc32", "size")
    size: int
    crc32: int


class ManifestView(_View):
    """A parsed ``manifest.json`` (see ``sharedrec.format.models.Manifest``); ``raw`` is its bytes."""

    __slots__ = (
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
        "raw",
    )
    format: str
    id: str
    parent: str | None
    base: str | None
    depth: int
    created_at: datetime
    metadata: dict[str, Any]
    collections: dict[str, CollectionView]
    checksum: str
    checks: dict[str, Any]
    files: dict[str, FileView]
    raw: bytes

    @property
    def data_bytes(self) -> int:
        """Total size of the version's files."""
        return sum(entry.size for entry in self.files.values())


class PointerView(_View):
    """A parsed ``CURRENT`` or ``refs/<name>`` (see ``sharedrec.format.models.Pointer``)."""

    __slots__ = ("format", "manifest", "previous", "updated_at", "version")
    format: str
    version: str
    previous: list[str]
    updated_at: datetime
    manifest: ManifestView | None
    """Object stores: the manifest of ``version``, copied into the pointer."""


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
    "items": (("<i4", "<i8"), 2),
    "scores": (("<f4", "<f8"), 2),
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


def _array(raw: object, field: str, name: str) -> ArrayView:
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
    return ArrayView(dtype=dtype, shape=shape, chunks=chunks)


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
)


def _arrays(raw: object, field: str) -> dict[str, ArrayView]:
    return {
        _name(name, field): _array(spec, f"{field}.{name}", name) for name, spec in _dict(raw, field).items()
    }


_PER_KEY = ("key_spans", "items", "scores", "lengths", "vectors")
"""Arrays that hold one row per key, in the order of the key array."""


def _check_rows(arrays: dict[str, ArrayView], fences: list[int], count: int | None, field: str) -> None:
    """The arrays of a key index and its rows agree: as many rows, and one fence per key chunk.

    ``count`` is the number of keys the arrays must hold (None for a delta, whose arrays
    hold only the keys it changed).
    """
    key = "keys" if "keys" in arrays else "key_hash"
    spec = arrays.get(key)
    if spec is None:
        present = [name for name in _PER_KEY if name in arrays]
        if present:
            raise _Bad(f"{field}.arrays holds {present} but no key array")
        return
    rows = spec.shape[0]
    if count is not None and rows != count:
        raise _Bad(f"{field}.arrays.{key} holds {rows} keys, but count is {count}")
    for name in _PER_KEY:
        other = arrays.get(name)
        if other is not None and other.shape[0] != rows:
            raise _Bad(f"{field}.arrays.{name} has {other.shape[0]} rows for {rows} keys")
    if len(fences) != spec.n_chunks:
        raise _Bad(f"{field}.key_fences lists {len(fences)} fences for {spec.n_chunks} chunks of keys")


def _check_lengths(obj: CollectionView | PartView, field: str) -> None:
    if not obj.min_length <= obj.max_length <= obj.width:
        raise _Bad(f"{field}: lengths {obj.min_length}..{obj.max_length} do not fit the width {obj.width}")


_PART_REQUIRED = ("path", "count", "key_fences", "width", "min_length", "max_length", "arrays")


def _part(raw: object, field: str) -> PartView:
    obj = _fields(raw, field, _PART_REQUIRED, ("empty_lists",))
    path = _optional(_str)(obj["path"], f"{field}.path")
    if path is not None and (not path or path[0] in "._" or "/" in path or ".." in path):
        raise _Bad(f"{field}.path {path!r} is not a folder name")
    arrays = _arrays(obj["arrays"], f"{field}.arrays")
    width = _int(obj["width"], f"{field}.width", 1, MAX_WIDTH + 1)
    _check_width(arrays, width, field)
    return PartView(
        path=path,
        count=_int(obj["count"], f"{field}.count"),
        key_fences=_list(obj["key_fences"], f"{field}.key_fences", lambda v, f: _int(v, f, -(2**63), 2**64)),
        width=width,
        min_length=_int(obj["min_length"], f"{field}.min_length"),
        max_length=_int(obj["max_length"], f"{field}.max_length"),
        empty_lists=_int(obj.get("empty_lists", 0), f"{field}.empty_lists"),
        arrays=arrays,
    )


def _check_width(arrays: dict[str, ArrayView], width: int, field: str) -> None:
    """Rows of items, scores and vectors are ``width`` wide, as the collection says."""
    for row_array in ("items", "scores", "vectors"):
        spec = arrays.get(row_array)
        if spec is not None and spec.shape[1:] != (width,):
            raise _Bad(f"{field}.width is {width} but its {row_array} array has shape {list(spec.shape)}")


def _partitions(raw: object, field: str) -> PartitionsView | None:
    if raw is None:
        return None
    obj = _fields(raw, field, ("hash", "parts"), ())
    if isinstance(obj["parts"], list) and len(obj["parts"]) > MAX_PARTITIONS:
        raise _Bad(f"{field}.parts lists {len(obj['parts'])} partitions, at most {MAX_PARTITIONS}")
    parts = _list(obj["parts"], f"{field}.parts", _part)
    if not parts:
        raise _Bad(f"{field}.parts must list at least one partition")
    return PartitionsView(
        hash=_literal(obj["hash"], f"{field}.hash", "splitmix64", "blake2b-64"), parts=parts
    )


def _collection(raw: object, field: str) -> CollectionView:
    obj = _fields(raw, field, _COLLECTION_REQUIRED, _COLLECTION_OPTIONAL)
    arrays = _arrays(obj["arrays"], f"{field}.arrays")
    width = _int(obj["width"], f"{field}.width", 1, MAX_WIDTH + 1)
    _check_width(arrays, width, field)
    kind = _literal(obj["kind"], f"{field}.kind", "ranked", "vectors")
    count = _int(obj["count"], f"{field}.count", 1)
    serve_to_all = _bool(obj.get("serve_to_all", False), f"{field}.serve_to_all")
    if serve_to_all and (kind != "ranked" or count != 1):
        raise _Bad(
            f"{field}.serve_to_all is true for a {kind} collection of {count} keys; only a ranked "
            "collection of one key serves its list to every key"
        )
    return CollectionView(
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
    )


def _check_collection(spec: CollectionView, field: str) -> None:
    """What the reader relies on beyond types: rows, defaults and partitions that agree."""
    _check_lengths(spec, field)
    if spec.partitions is None:
        _check_rows(spec.arrays, spec.key_fences, None if spec.delta else spec.count, field)
    else:
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


def _file(raw: object, field: str) -> FileView:
    obj = _fields(raw, field, ("size", "crc32"), ())
    return FileView(
        size=_int(obj["size"], f"{field}.size"), crc32=_int(obj["crc32"], f"{field}.crc32", 0, 2**32)
    )


_MANIFEST_REQUIRED = ("id", "created_at", "collections", "files")
_MANIFEST_OPTIONAL = ("format", "parent", "base", "depth", "metadata", "checksum", "checks")


def _manifest(raw: object, data: bytes) -> ManifestView:
    obj = _fields(raw, "the manifest", _MANIFEST_REQUIRED, _MANIFEST_OPTIONAL)
    files = {
        _path(path, "files"): _file(entry, f"files.{path}")
        for path, entry in _dict(obj["files"], "files").items()
    }
    collections = {
        _name(name, "collections"): _collection(spec, f"collections.{name}")
        for name, spec in _dict(obj["collections"], "collections").items()
    }
    for name, collection in collections.items():
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
    return ManifestView(
        format=_literal(obj.get("format", "sharedrec/1"), "format", "sharedrec/1"),
        id=_str(obj["id"], "id"),
        parent=_optional(_str)(obj.get("parent"), "parent"),
        base=_optional(_str)(obj.get("base"), "base"),
        depth=_int(obj.get("depth", 0), "depth"),
        created_at=_datetime(obj["created_at"], "created_at"),
        metadata=_dict(obj.get("metadata", {}), "metadata"),
        collections=collections,
        checksum=_literal(obj.get("checksum", "crc32"), "checksum", "crc32"),
        checks=_dict(obj.get("checks", {}), "checks"),
        files=files,
        raw=data,
    )


def _pointer(raw: object) -> PointerView:
    obj = _fields(raw, "the pointer", ("version", "updated_at"), ("format", "previous", "manifest"))
    previous = _list(obj.get("previous", []), "previous", _str)
    if len(previous) > POINTER_HISTORY:
        raise _Bad(f"previous lists {len(previous)} versions, at most {POINTER_HISTORY}")
    return PointerView(
        format=_literal(obj.get("format", "sharedrec-pointer/1"), "format", "sharedrec-pointer/1"),
        version=_str(obj["version"], "version"),
        previous=previous,
        updated_at=_datetime(obj["updated_at"], "updated_at"),
        manifest=_inline_manifest(obj.get("manifest"), obj["version"]),
    )


def _inline_manifest(raw: object, version: object) -> ManifestView | None:
    if raw is None:
        return None
    manifest = _manifest(raw, json.dumps(raw).encode())
    if manifest.id != version:
        raise _Bad(f"the manifest copied into the pointer is version {manifest.id!r}, not {version!r}")
    return manifest


def _load(data: bytes, where: str, fix: str, build: Callable[[object], _T]) -> _T:
    try:
        return build(json.loads(data))
    except (ValueError, RecursionError) as exc:  # _Bad, JSON and Unicode errors are ValueErrors
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CorruptVersion(f"{where} is truncated or invalid ({reason}); {fix}") from None


def parse_manifest(data: bytes, where: str) -> ManifestView:
    """Parse ``manifest.json`` bytes; ``where`` names the file in the error.

    Raises:
        CorruptVersion: The bytes are not a valid manifest.
    """
    return _load(data, where, "republish the version or roll back", lambda raw: _manifest(raw, data))


def parse_pointer(data: bytes, where: str) -> PointerView:
    """Parse ``CURRENT`` (or ``refs/<name>``) bytes; ``where`` names the file in the error.

    Raises:
        CorruptVersion: The bytes are not a valid pointer.
    """
    return _load(data, where, "point it at a good version with store.set_current()", _pointer)
