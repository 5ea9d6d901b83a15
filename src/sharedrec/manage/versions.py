"""Versions and refs, the read side of operating a store: what is committed, what each
pointer names, and a version's manifest."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sharedrec.errors import CorruptVersion, InvalidInput, VersionNotFound
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


def versions(root: StoreRoot) -> list[VersionInfo]:
    """Committed versions, oldest first. Unfinished publishes are not listed."""
    live = root.current()
    found = []
    for name in root.backend.listdir(VERSIONS):
        if name.startswith("."):
            continue
        try:  # one read per version: a missing manifest is an unfinished publish
            view = root.manifest(name)
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


def manifest(root: StoreRoot, version_id: str) -> Manifest:
    """The manifest of a committed version, as its schema record.

    Raises:
        VersionNotFound: No such version, or its publish never finished.
        CorruptVersion: Its manifest is truncated or invalid.
    """
    from sharedrec.format.schema import Manifest

    view = root.manifest(version_id)
    return Manifest.loads(view.raw, f"{root.location}/{VERSIONS}/{version_id}/{MANIFEST}")
