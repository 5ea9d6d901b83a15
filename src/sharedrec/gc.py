"""Garbage collection: delete old versions nobody can still be reading."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sharedrec.errors import InvalidInput
from sharedrec.format import LEASES, MANIFEST, VERSIONS
from sharedrec.leases import read_leases

if TYPE_CHECKING:
    from sharedrec.backends.base import Backend
    from sharedrec.store import Store

__all__ = ["GCReport", "collect"]

log = logging.getLogger("sharedrec")


@dataclass
class GCReport:
    """What `gc()` deleted (or, in a dry run, would delete) and what it kept."""

    dry_run: bool
    deleted: list[str] = field(default_factory=list)
    """Committed versions deleted."""
    unfinished: list[str] = field(default_factory=list)
    """Folders of publishes that never finished, deleted."""
    kept: dict[str, str] = field(default_factory=dict)
    """Every other version folder, with the reason it was kept."""
    freed_bytes: int = 0


def collect(store: Store, backend: Backend, keep: int, grace: float | timedelta, dry_run: bool) -> GCReport:
    """Delete versions that are not live, not among the newest ``keep``, not leased by a
    reader whose lease has not expired, and older than ``grace``; and unfinished version
    folders older than ``grace``."""
    if not isinstance(keep, int) or keep < 0:
        raise InvalidInput(f"keep must be a non-negative int; got {keep!r}")
    grace_s = grace.total_seconds() if isinstance(grace, timedelta) else float(grace)
    if grace_s < 0:
        raise InvalidInput(f"grace must not be negative; got {grace!r}")
    now = datetime.now(UTC)
    report = GCReport(dry_run=dry_run)
    pointed = {version: name for name, version in store.refs().items()}
    leases, damaged = read_leases(backend, LEASES)
    leased: dict[str, str] = {}
    for lease in leases:
        if lease.expires_at > now:
            for version in lease.versions:
                leased.setdefault(version, lease.reader_id)
    versions = store.versions()
    newest = {info.id for info in versions[-keep:]} if keep else set()
    committed = {info.id: info for info in versions}

    doomed: list[str] = []
    for name in backend.listdir(VERSIONS):
        if name.startswith("."):
            continue
        directory = f"{VERSIONS}/{name}"
        info = committed.get(name)
        if info is None:
            if backend.exists(f"{directory}/{MANIFEST}"):
                report.kept[name] = "its manifest is damaged: inspect it, then delete it by hand"
                continue
            # A publish writes deep inside the folder: judge by its newest file, not the folder.
            modified = backend.tree_mtime(directory)
            if modified is None:
                report.kept[name] = "unfinished, of unknown age on this filesystem: delete it by hand"
                continue
            if time.time() - modified < grace_s:
                report.kept[name] = "unfinished, but recent: a publish may still be writing it"
                continue
            report.unfinished.append(name)
        elif name in pointed:
            ref = pointed[name]
            report.kept[name] = "live (CURRENT)" if ref == "current" else f"named by ref {ref!r}"
            continue
        elif name in newest:
            report.kept[name] = f"among the newest {keep}"
            continue
        elif name in leased:
            report.kept[name] = f"leased by reader {leased[name]}"
            continue
        elif damaged:
            report.kept[name] = f"damaged lease files ({', '.join(damaged)}) may protect it"
            continue
        elif (now - info.created_at).total_seconds() < grace_s:
            report.kept[name] = "younger than the grace period"
            continue
        doomed.append(name)
    # A delta version reads the versions below it: keep every base of a version kept.
    kept = [name for name in committed if name not in doomed]
    needed: dict[str, str] = {}
    for name in kept:
        below = committed[name].base
        while below is not None and below not in needed:
            needed[below] = name
            below = committed[below].base if below in committed else None
    for name in doomed:
        info = committed.get(name)
        if info is not None and name in needed:
            report.kept[name] = f"a base of delta version {needed[name]}, which is kept"
            continue
        if info is not None:
            report.deleted.append(name)
            report.freed_bytes += info.size_bytes
        if not dry_run:
            # The manifest goes first: from then on no reader or listing sees the version.
            directory = f"{VERSIONS}/{name}"
            backend.remove_tree(f"{directory}/{MANIFEST}")
            backend.remove_tree(directory)
            log.info("gc deleted %s from %s", directory, backend.location)
    return report
