"""Versions and refs, the read side of operating a store: what is committed, what each
pointer names, and a version's manifest.

Listing reads the version catalog (`sharedrec.format.catalog`) and the manifests only of the
folders it lacks, so that a store of thousands of versions lists in two requests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sharedrec.errors import CorruptVersion, InvalidInput, NewerFormat, VersionNotFound
from sharedrec.format.layout import MANIFEST, VERSIONS, validate_version_id

if TYPE_CHECKING:
    from sharedrec.format.catalog import Entry
    from sharedrec.format.schema import Manifest
    from sharedrec.read.root import StoreRoot

__all__ = ["Listing", "VersionInfo", "manifest", "scan", "versions"]


@dataclass(frozen=True)
class VersionInfo:
    """A committed version, as listed by `versions()`."""

    id: str
    created_at: datetime
    parent: str | None
    metadata: dict[str, Any]
    collections: dict[str, int]
    """Number of keys of every collection."""
    size_bytes: int
    current: bool
    base: str | None = None
    """For a delta version, the version it updates."""
    newer_format: str | None = None
    """Set when a newer sharedrec wrote the version: its format (e.g. ``"sharedrec/2"``).
    This sharedrec cannot read it (upgrade sharedrec); ``collections`` and ``metadata`` are
    then empty, and ``created_at``, ``base`` and ``size_bytes`` are what could be read of
    its manifest (``created_at`` is the manifest file's time when it could not)."""


@dataclass(frozen=True)
class Listing:
    """The version folders of a store and what is known of each (see `scan`)."""

    names: list[str]
    """Every folder under ``versions/`` (hidden names aside), committed or not."""
    entries: dict[str, Entry]
    """The committed versions this sharedrec reads, by id, as the catalog summarises them."""
    versions: list[VersionInfo]
    """Committed versions, oldest first, including those a newer sharedrec wrote."""


def versions(root: StoreRoot) -> list[VersionInfo]:
    """Committed versions, oldest first. Unfinished publishes are not listed.

    A version a newer sharedrec wrote is listed with `VersionInfo.newer_format` set.

    Raises:
        NewerFormat: A newer sharedrec wrote ``CURRENT``: which version is live is unknown.
    """
    return scan(root).versions


def scan(root: StoreRoot) -> Listing:
    """List ``versions/`` and read the catalog (`sharedrec.format.catalog`): two requests,
    plus one per folder the catalog lacks (its manifest). The catalog is then brought up to
    date with what was read and what is gone, when it can be written.

    Raises:
        NewerFormat: A newer sharedrec wrote ``CURRENT``: which version is live is unknown.
    """
    from sharedrec.format.catalog import manifest_stamp, read_catalog, update_catalog

    live = root.current()
    backend = root.backend
    names = [name for name in backend.listdir(VERSIONS) if not name.startswith(".")]
    catalog, seen = read_catalog(backend)
    local = backend.local_path("") is not None
    entries: dict[str, Entry] = {}
    found: dict[str, Entry] = {}
    newer: list[VersionInfo] = []
    for name in names:
        known = catalog.get(name)
        stamp = manifest_stamp(backend, name) if local and known is not None else None
        if known is not None and (not local or (stamp is not None and stamp == known.stamp)):
            entries[name] = known
            continue
        try:  # one read per version: a missing manifest is an unfinished publish
            found_entry = _read_entry(root, name)
        except NewerFormat:
            info = _newer_info(root, name, live)
            if info is not None:
                newer.append(info)
            continue
        if found_entry is not None:
            found[name] = found_entry
    entries.update(found)
    listed_names = set(names)
    # Entries of folders gone, and of manifests gone or damaged since they were written.
    gone = {
        name: entry
        for name, entry in catalog.items()
        if name not in listed_names or (name not in entries and name not in found)
    }
    if found or gone:

        def change(now: dict[str, Entry]) -> dict[str, Entry] | None:
            new = dict(now)
            for name, entry in gone.items():
                if new.get(name) == entry:  # the same version: its folder is gone
                    del new[name]
            for name, entry in found.items():
                if name not in new or new[name] == catalog.get(name):  # absent, or stale
                    new[name] = entry
            return None if new == now else new

        update_catalog(backend, change, seen, read=False)
    listed = [_info(entry, live) for entry in entries.values()] + newer
    return Listing(names, entries, sorted(listed, key=lambda info: (info.created_at, info.id)))


def _read_entry(root: StoreRoot, name: str) -> Entry | None:
    """The catalog entry of a folder the catalog lacks, from its manifest; None when it is
    no committed version (unfinished, damaged, or not named as a version).

    Raises:
        NewerFormat: A newer sharedrec wrote the manifest.
    """
    from sharedrec.format.catalog import entry_of, manifest_stamp
    from sharedrec.format.schema import Manifest

    path = f"{VERSIONS}/{name}/{MANIFEST}"
    try:
        validate_version_id(name)
        stamp = manifest_stamp(root.backend, name)  # before the read: a change after it shows
        data = root.read_file(path)
        if data is None:
            return None
        view = Manifest.loads(data, f"{root.location}/{path}")
    except (CorruptVersion, InvalidInput, VersionNotFound):
        return None
    if view.id != name:  # a folder renamed or copied by hand: no version of this store
        return None
    return entry_of(view, data, stamp)


def _info(entry: Entry, live: str | None) -> VersionInfo:
    return VersionInfo(
        id=entry.id,
        created_at=entry.created_at,
        parent=entry.parent,
        metadata=dict(entry.metadata),
        collections=dict(entry.collections),
        size_bytes=entry.size_bytes,
        current=entry.id == live,
        base=entry.base,
    )


def _newer_info(root: StoreRoot, name: str, live: str | None) -> VersionInfo | None:
    """The listing of a version a newer sharedrec wrote: what its manifest still says."""
    from sharedrec.format.schema import peek_newer_manifest

    path = f"{VERSIONS}/{name}/{MANIFEST}"
    data = root.read_file(path)
    peek = peek_newer_manifest(data) if data is not None else None
    if peek is None:  # replaced meanwhile (gone, or rewritten): list it no more than a race would
        return None
    created = peek.created_at
    if created is None:
        modified = root.backend.tree_mtime(path)
        created = datetime.fromtimestamp(modified or 0.0, UTC)
    return VersionInfo(
        id=name,
        created_at=created,
        parent=None,
        metadata={},
        collections={},
        size_bytes=peek.size_bytes,
        current=name == live,
        base=peek.base,
        newer_format=peek.format,
    )


def manifest(root: StoreRoot, version_id: str) -> Manifest:
    """The manifest of a committed version, as its schema record.

    Raises:
        VersionNotFound: No such version, or its publish never finished.
        CorruptVersion: Its manifest is truncated or invalid.
        NewerFormat: A newer sharedrec wrote it.
    """
    from sharedrec.format.schema import Manifest

    view = root.manifest(version_id)
    return Manifest.loads(view.raw, f"{root.location}/{VERSIONS}/{version_id}/{MANIFEST}")
