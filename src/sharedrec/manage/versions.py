"""Versions and refs, the read side of operating a store: what is committed, what each
pointer names, and a version's manifest."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sharedrec.errors import CorruptVersion, InvalidInput, NewerFormat, VersionNotFound
from sharedrec.format.layout import MANIFEST, VERSIONS

if TYPE_CHECKING:
    from sharedrec.format.schema import Manifest
    from sharedrec.read.root import StoreRoot

__all__ = ["VersionInfo", "manifest", "versions"]


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


def versions(root: StoreRoot) -> list[VersionInfo]:
    """Committed versions, oldest first. Unfinished publishes are not listed.

    A version a newer sharedrec wrote is listed with `VersionInfo.newer_format` set.

    Raises:
        NewerFormat: A newer sharedrec wrote ``CURRENT``: which version is live is unknown.
    """
    live = root.current()
    found = []
    for name in root.backend.listdir(VERSIONS):
        if name.startswith("."):
            continue
        try:  # one read per version: a missing manifest is an unfinished publish
            view = root.manifest(name)
        except NewerFormat:
            newer = _newer_info(root, name, live)
            if newer is not None:
                found.append(newer)
            continue
        except (VersionNotFound, CorruptVersion, InvalidInput):
            continue
        found.append(
            VersionInfo(
                id=view.id,
                created_at=view.created_at,
                parent=view.parent,
                metadata=dict(view.metadata),
                collections={n: c.count for n, c in view.collections.items()},
                size_bytes=view.data_bytes,
                current=view.id == live,
                base=view.base,
            )
        )
    return sorted(found, key=lambda info: (info.created_at, info.id))


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
