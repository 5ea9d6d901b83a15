"""The version catalog, ``catalog.json`` beside ``CURRENT``: a summary of every committed version's
manifest, so that listing versions and garbage collection read one file, not every manifest.

The catalog is a cache, never the truth. A version is committed when its manifest exists;
the catalog only spares parsing it. Whoever reads the catalog also lists ``versions/`` (one
request) and trusts an entry only for a folder listed there, and on a file system only while
the manifest's size and modification time are those the entry noted (one ``stat``). A folder
without an entry (a publish by an older sharedrec, a crash between the manifest and the
catalog, a lost race) or with a stale one has its manifest read; an entry without a folder
(a version deleted) is ignored. Every entry
carries the CRC32 of the manifest it summarises, which garbage collection checks before it
deletes a version.

Writers change the catalog by compare-and-swap (the backend's `swap_pointer`, as for
``CURRENT``), merging into what the file holds at that moment, so two writers never lose
each other's entries: a publish adds its own version's entry; a listing or a garbage
collection adds the entries it had to read manifests for and drops those of folders gone;
garbage collection drops a version's entry before it deletes the version's manifest.
A write that fails (read-only credentials, a lost race, a server without conditional
writes) only leaves the catalog stale.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sharedrec.backends.base import PointerMoved
from sharedrec.errors import StoreNotFound
from sharedrec.format.layout import CATALOG, CATALOG_FORMAT, MANIFEST, VERSIONS

if TYPE_CHECKING:
    from sharedrec.backends.base import Backend
    from sharedrec.format.schema import Manifest

__all__ = [
    "Entry",
    "add_entry",
    "entry_of",
    "manifest_crc32",
    "manifest_stamp",
    "read_catalog",
    "update_catalog",
]

log = logging.getLogger("sharedrec")

CATALOG_PATH = CATALOG
_ATTEMPTS = 5
"""Compare-and-swap attempts before a writer leaves the catalog stale (others kept moving it)."""


@dataclass(frozen=True)
class Entry:
    """What the catalog says of one committed version: its manifest, summarised."""

    id: str
    created_at: datetime
    parent: str | None
    base: str | None
    metadata: dict[str, Any]
    collections: dict[str, int]
    """Number of keys of every collection."""
    size_bytes: int
    manifest_crc32: int
    """CRC32 of the manifest file's bytes: tells whether the folder still holds this version."""
    stamp: tuple[int, int] | None = None
    """Size and modification time (ns) of the manifest file, on a file system (None on an
    object store): a listing that finds other values reads the manifest again."""

    def to_json(self) -> dict[str, Any]:
        return {
            "created_at": self.created_at.isoformat().replace("+00:00", "Z"),
            "parent": self.parent,
            "base": self.base,
            "metadata": self.metadata,
            "collections": self.collections,
            "size_bytes": self.size_bytes,
            "manifest_crc32": self.manifest_crc32,
            "stamp": None if self.stamp is None else list(self.stamp),
        }

    @classmethod
    def from_json(cls, version: str, raw: dict[str, Any]) -> Entry:
        """Raises ValueError, KeyError or TypeError when ``raw`` is not an entry."""
        created = datetime.fromisoformat(raw["created_at"].replace("Z", "+00:00"))
        if created.tzinfo is None:
            raise ValueError("created_at has no time zone")
        parent, base, metadata, collections = raw["parent"], raw["base"], raw["metadata"], raw["collections"]
        size, crc, stamp = raw["size_bytes"], raw["manifest_crc32"], raw.get("stamp")
        if not (
            (parent is None or isinstance(parent, str))
            and (base is None or isinstance(base, str))
            and isinstance(metadata, dict)
            and isinstance(collections, dict)
            and all(isinstance(count, int) for count in collections.values())
            and isinstance(size, int)
            and isinstance(crc, int)
            and (stamp is None or (isinstance(stamp, list) and [type(v) for v in stamp] == [int, int]))
        ):
            raise TypeError(f"entry {version!r} has a field of the wrong type")
        when = created.astimezone(UTC)
        return cls(
            version,
            when,
            parent,
            base,
            metadata,
            collections,
            size,
            crc,
            None if stamp is None else (stamp[0], stamp[1]),
        )


def entry_of(manifest: Manifest, data: bytes, stamp: tuple[int, int] | None) -> Entry:
    """The catalog entry of a version, from its manifest, the manifest file's bytes and its
    `manifest_stamp` (taken before the bytes were read, or after they were written)."""
    return Entry(
        id=manifest.id,
        created_at=manifest.created_at,
        parent=manifest.parent,
        base=manifest.base,
        metadata=dict(manifest.metadata),
        collections={name: spec.count for name, spec in manifest.collections.items()},
        size_bytes=manifest.data_bytes,
        manifest_crc32=manifest_crc32(data),
        stamp=stamp,
    )


def manifest_stamp(backend: Backend, version: str) -> tuple[int, int] | None:
    """Size and modification time (ns) of a version's manifest on a file system; None on an
    object store, or when the manifest is missing.

    One ``stat`` a version, where parsing the manifest costs a thousand times more: a
    manifest damaged or replaced in place after its entry was written is read again. On an
    object store a manifest is never changed in place by sharedrec and is trusted as listed.
    """
    local = backend.local_path(f"{VERSIONS}/{version}/{MANIFEST}")
    if local is None:
        return None
    try:
        status = os.stat(local)
    except OSError:
        return None
    return status.st_size, status.st_mtime_ns


def manifest_crc32(data: bytes) -> int:
    """The checksum an `Entry` keeps of its manifest file."""
    return zlib.crc32(data)


def _parse(data: bytes | None, where: str) -> dict[str, Entry] | None:
    """The entries of catalog bytes; empty (with a log line) when they are damaged, None
    when a newer sharedrec wrote them (they are then neither used nor replaced)."""
    if data is None:
        return {}
    try:
        raw = json.loads(data)
        found = raw.get("format")
        if _newer(found):
            log.info("%s has format %s, of a newer sharedrec: listing reads every manifest", where, found)
            return None
        if found != CATALOG_FORMAT:
            raise ValueError(f"format {found!r} is not {CATALOG_FORMAT}")
        return {version: Entry.from_json(version, entry) for version, entry in raw["versions"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("%s is damaged (%s): it is ignored, and rewritten by the next listing", where, exc)
        return {}


def _newer(found: object) -> bool:
    """Whether a catalog's ``format`` is that of a newer sharedrec."""
    return isinstance(found, str) and found.startswith("sharedrec-catalog/") and found != CATALOG_FORMAT


def _read(backend: Backend) -> bytes | None:
    try:
        return backend.read_bytes(CATALOG_PATH)
    except StoreNotFound:  # the bucket or mount is missing, not the file
        raise
    except FileNotFoundError:
        return None


def read_catalog(backend: Backend) -> tuple[dict[str, Entry], bytes | None]:
    """The catalog's entries, and the bytes they were read from (for `update_catalog`).

    A missing, damaged or unknown catalog reads as empty: every version's manifest is read
    then, as in a store without one.
    """
    try:
        data = _read(backend)
    except StoreNotFound:
        raise
    except OSError as exc:  # a directory in its place, no permission: as if it were missing
        where = f"{backend.location}/{CATALOG_PATH}"
        log.warning("cannot read %s (%s): listing reads every manifest", where, exc)
        return {}, None
    return _parse(data, f"{backend.location}/{CATALOG_PATH}") or {}, data


def _dumps(entries: dict[str, Entry]) -> bytes:
    body = {version: entries[version].to_json() for version in sorted(entries)}
    return json.dumps({"format": CATALOG_FORMAT, "versions": body}, separators=(",", ":")).encode()


def update_catalog(
    backend: Backend,
    change: Callable[[dict[str, Entry]], dict[str, Entry] | None],
    seen: bytes | None = None,
    *,
    read: bool = True,
) -> bool:
    """Apply ``change`` to the catalog by compare-and-swap; whether it was written.

    ``change`` gets the entries the catalog holds now and returns the new entries, or None
    when nothing is to be written. ``seen`` are catalog bytes just read (``read=False``
    then trusts them and saves a read). Never raises: a catalog left stale is only slower.
    """

    def rewrite(data: bytes | None) -> bytes | None:
        now = _parse(data, f"{backend.location}/{CATALOG_PATH}")
        new = None if now is None else change(now)
        return None if new is None else _dumps(new)

    return _swap(backend, (lambda: _read(backend)) if read else (lambda: seen), rewrite)


def add_entry(backend: Backend, entry: Entry) -> bool:
    """Add (or replace) one version's entry by compare-and-swap, as a publish does; whether
    it was written. The other entries are carried over as they are, unparsed: a publish to
    a store of many versions pays for one JSON read and write, not for every entry.
    Never raises."""

    def rewrite(data: bytes | None) -> bytes | None:
        body: dict[str, Any] = {}
        if data is not None:
            try:
                raw = json.loads(data)
                found = raw.get("format") if isinstance(raw, dict) else None
                if _newer(found):
                    return None  # a newer sharedrec's: neither used nor replaced
                if found == CATALOG_FORMAT and isinstance(raw.get("versions"), dict):
                    body = raw["versions"]
            except ValueError:
                pass  # damaged: replaced by a catalog of this version alone
        body[entry.id] = entry.to_json()
        return json.dumps({"format": CATALOG_FORMAT, "versions": body}, separators=(",", ":")).encode()

    return _swap(backend, lambda: _read(backend), rewrite)


def _swap(
    backend: Backend, first: Callable[[], bytes | None], rewrite: Callable[[bytes | None], bytes | None]
) -> bool:
    """Replace the catalog's bytes ``data`` with ``rewrite(data)`` by compare-and-swap, from
    ``first()`` and then from what a lost race found; whether it was written (not when
    ``rewrite`` returns None). Never raises: the catalog is a cache."""
    where = f"{backend.location}/{CATALOG_PATH}"
    try:
        data = first()
        for _ in range(_ATTEMPTS):
            new = rewrite(data)
            if new is None:
                return False
            try:
                backend.swap_pointer(CATALOG_PATH, new, data)
                return True
            except PointerMoved as moved:
                data = moved.current
        log.info("%s moved %d times while it was updated: left for the next writer", where, _ATTEMPTS)
    except Exception as exc:  # a failed write must not fail the caller: listing reads the manifests
        log.info("could not update %s (%s): listing reads the manifests it lacks", where, exc)
    return False
