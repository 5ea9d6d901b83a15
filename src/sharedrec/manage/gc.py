"""Garbage collection: delete old versions nobody can still be reading.

Collection races with everything that makes a version live or starts reading it, in other
processes and on other machines, with no lock in common. One rule closes those races: the
collector *condemns before it deletes*, and everyone else *announces before they check*.

- The collector picks the versions to delete, writes its mark (``versions/<id>/.gc``) into
  each, then reads every pointer and every lease again: a version that one now names is
  unmarked and kept; the others leave the version catalog (`sharedrec.format.catalog`), then
  lose their manifest, then their folder.
- A pointer mover (`set_current`, `rollback`, `promote`, a publish) writes a lease naming
  the version first, then checks that the version has its manifest and no mark, then moves
  the pointer by compare-and-swap. A reader writes its lease before it opens a version, and
  opening refuses a marked version.
- A publish holds a lease naming its draft while it writes (renewed by a thread), so an
  unfinished folder that is being written is never taken for an abandoned one, whatever its
  age; a publish from many tasks holds a long lease from `begin_publish` to its commit.

Whichever of the two comes second sees the other: if the collector reads the leases after
the lease was written, it keeps the version; if before, the mark was written before the
lease, so the mover's or reader's check (which comes after its lease) sees the mark, or
the manifest already gone. A mark seen while the collector has yet to decide is waited
for (`sharedrec.read.version.SETTLE_SECONDS`). The assumptions: leases are renewed within
their time to live (a process frozen for longer loses its protection, as a reader does), and
the storage is read-after-write consistent (POSIX, NFS close-to-open, S3).

The writers' half lives in `sharedrec.write.hold` (the publish's lease `Hold`, the guarded
pointer move `move_guarded`), so that publishing never imports this module; the readers'
half in `sharedrec.read.leases` (the lease) and `sharedrec.read.version` (opening refuses a
marked version).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sharedrec.errors import CorruptVersion, InvalidInput, NewerFormat
from sharedrec.format.catalog import manifest_crc32, read_catalog, update_catalog
from sharedrec.format.layout import GC_MARK, LEASES, MANIFEST, PROBE, VERSIONS
from sharedrec.manage.leases import read_leases
from sharedrec.manage.versions import scan
from sharedrec.read.version import GROUP_METADATA
from sharedrec.write.hold import LEFT, links_out
from sharedrec.write.hold import chain_below as _chain

if TYPE_CHECKING:
    from sharedrec.backends.base import Backend
    from sharedrec.format.catalog import Entry
    from sharedrec.format.schema import Lease
    from sharedrec.manage.versions import VersionInfo
    from sharedrec.read.root import StoreRoot

__all__ = ["LEFT", "GCReport", "collect"]

log = logging.getLogger("sharedrec")

MARK_ABANDONED_SECONDS = 600.0
"""A mark this old was left by a collector that died between marking and deciding: the
next collection unmarks the version if it is still in use."""


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


def _left_at(backend: Backend, version: str) -> float | None:
    """When a pointer last stopped naming ``version`` (POSIX seconds), if that was noted."""
    try:
        return float(json.loads(backend.read_bytes(f"{VERSIONS}/{version}/{LEFT}"))["left"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, IsADirectoryError):
        return None  # damaged (a crash while writing it): fall back on the successor's creation


# -- the collector -------------------------------------------------------------------------


def collect(root: StoreRoot, keep: int, grace: float | timedelta, dry_run: bool) -> GCReport:
    """Delete versions that are not live, not among the newest ``keep``, not leased by a
    reader whose lease has not expired, older than ``grace`` and left by every pointer more
    than ``grace`` ago; and unfinished version folders older than ``grace`` that no publish
    holds a lease on. On an object store, first remove what killed publishers on this node
    left in the local staging folder.

    A version a newer sharedrec wrote is never deleted, nor the versions it builds on (its
    ``base``); a lease a newer sharedrec wrote may protect any version, as a damaged one does.

    Raises:
        NewerFormat: A newer sharedrec wrote ``CURRENT`` or a ref: only it knows what the
            store keeps, and nothing is deleted.
    """
    backend = root.backend
    if not isinstance(keep, int) or keep < 0:
        raise InvalidInput(f"keep must be a non-negative int; got {keep!r}")
    grace_s = grace.total_seconds() if isinstance(grace, timedelta) else float(grace)
    if grace_s < 0:
        raise InvalidInput(f"grace must not be negative; got {grace!r}")
    now = datetime.now(UTC)
    report = GCReport(dry_run=dry_run)
    # Folders first, leases after: a publish leases its draft before creating the folder, so
    # every unfinished folder listed here has its lease among those read below.
    names = backend.listdir(VERSIONS)
    try:
        pointed = {version: name for name, version in root.refs().items()}
    except NewerFormat as exc:
        raise NewerFormat(
            f"garbage collection did not run, and deleted nothing: it cannot know what a newer "
            f"sharedrec keeps. {exc}"
        ) from None
    if not dry_run and backend.local_path("") is None:
        from sharedrec.write.staging import sweep_staging

        sweep_staging(root.cache_dir, root.location)
        _sweep_probes(backend, grace_s)
    leases, damaged, newer_leases = read_leases(backend, LEASES)
    leased = _live(leases, now)
    listing = scan(root)
    listed = listing.versions
    # What this sharedrec cannot read stays out of every decision: it is kept, and so is
    # every version it builds on.
    newer = {info.id: info for info in listed if info.newer_format is not None}
    versions = [info for info in listed if info.newer_format is None]
    newest = {info.id for info in versions[-keep:]} if keep else set()
    committed = {info.id: info for info in versions}
    # The version after each (oldest first): a pointer left a version no earlier than its
    # successor was created, when versions went live in order and nothing noted it (LEFT).
    successor = {a.id: b.created_at.timestamp() for a, b in itertools.pairwise(versions)}

    doomed: list[str] = []
    stale: list[str] = []  # marks of a collector that died: removed from versions kept
    links = links_out(backend, VERSIONS, names)
    for name in names:
        if name.startswith("."):
            continue
        directory = f"{VERSIONS}/{name}"
        outside = links.get(name)
        if outside is not None:
            report.kept[name] = (
                f"a symbolic link to {outside}: garbage collection never follows links (another "
                "store's data may be there); remove the link by hand"
            )
            continue
        if name in newer:
            report.kept[name] = (
                f"written by a newer sharedrec (format {newer[name].newer_format}): this sharedrec "
                "cannot read it and leaves it alone; upgrade sharedrec"
            )
            continue
        mark = _read_mark(backend, directory)
        if mark is not None and time.time() - mark[1] < MARK_ABANDONED_SECONDS:
            report.kept[name] = "another garbage collection is deciding on it"
            continue
        if mark is not None:
            stale.append(name)
        info = committed.get(name)
        if info is None:
            if backend.exists(f"{directory}/{MANIFEST}"):
                report.kept[name] = "its manifest is damaged: inspect it, then delete it by hand"
                continue
            if name in leased:
                report.kept[name] = f"unfinished: a publish is writing it (lease {leased[name]})"
                continue
            held = _held_open(backend, directory)
            if held:
                report.kept[name] = (
                    f"deleted, but {held} of its files are still open on the node that deleted them "
                    "(renamed .nfs*/.fuse_hidden* until closed): a later gc removes the folder"
                )
                continue
            # A publish writes deep inside the folder: judge by its newest file, not the folder.
            modified = backend.tree_mtime(directory)
            if modified is None:
                report.kept[name] = "unfinished, of unknown age on this filesystem: delete it by hand"
                continue
            if time.time() - modified < grace_s:
                report.kept[name] = "unfinished, but recent: a publish may still be writing it"
                continue
            if newer_leases:
                report.kept[name] = f"unfinished, but {_newer_leases(newer_leases)} may hold it"
                continue
            report.unfinished.append(name)
            continue
        if name in pointed:
            ref = pointed[name]
            report.kept[name] = "live (CURRENT)" if ref == "current" else f"named by ref {ref!r}"
            continue
        if name in newest:
            report.kept[name] = f"among the newest {keep}"
            continue
        if name in leased:
            report.kept[name] = f"leased by reader {leased[name]}"
            continue
        if damaged:
            report.kept[name] = f"damaged lease files ({', '.join(damaged)}) may protect it"
            continue
        if newer_leases:
            report.kept[name] = f"{_newer_leases(newer_leases)} may protect it"
            continue
        if (now - info.created_at).total_seconds() < grace_s:
            report.kept[name] = "younger than the grace period"
            continue
        left = _last_left(backend, name, successor.get(name))
        if left is not None and now.timestamp() - left < grace_s:
            report.kept[name] = (
                "live less than the grace period ago: readers without a lease may not have left it yet"
            )
            continue
        doomed.append(name)
    # A delta version reads the versions below it: keep every base of a version kept, and
    # of a version a newer sharedrec wrote (its base as format 1 names it).
    chosen = set(doomed)
    tops = [(name, committed[name].base) for name in committed if name not in chosen]
    unknown = []
    for name in newer:
        base, known = _newer_base(backend, name)
        tops.append((name, base))
        if not known:
            unknown.append(name)
    needed: dict[str, str] = {}
    if unknown:
        for name in doomed:
            needed[name] = unknown[0]
    for name, below in tops:
        while below is not None and below not in needed:
            needed[below] = name
            below = committed[below].base if below in committed else None
    for name in doomed:
        info = committed[name]
        if name in needed:
            if needed[name] in unknown:
                report.kept[name] = (
                    f"version {needed[name]}, written by a newer sharedrec, may build on it (its base "
                    "cannot be read): upgrade sharedrec"
                )
            else:
                report.kept[name] = f"a base of delta version {needed[name]}, which is kept"
            continue
        report.deleted.append(name)
        report.freed_bytes += info.size_bytes
    if dry_run:
        return report
    for name in stale:
        if name in report.kept:
            _unmark(backend, f"{VERSIONS}/{name}", None)
            log.warning("gc removed the mark a garbage collection left on %s (it died before deciding)", name)
    _condemn(root, report, committed, listing.entries)
    return report


_DELETED_OPEN = (".nfs", ".fuse_hidden", ".smbdelete")
"""How NFS, FUSE and SMB clients rename a file deleted while the deleting node holds it open."""


def _sweep_probes(backend: Backend, grace_s: float) -> None:
    """Remove the conditional-write probe's scratch objects older than the grace period: a
    writer killed during its probe leaves one behind (a live probe lasts four requests)."""
    for name in backend.listdir(""):
        if name.startswith(f"{PROBE}-"):
            written = name.removeprefix(f"{PROBE}-").partition("-")[0]
            if not written.isdigit() or time.time() - int(written) >= grace_s:
                backend.remove_file(name)


def _held_open(backend: Backend, directory: str) -> int:
    """How many files remain in ``directory``, if all were deleted while open (else 0).

    Such a file lives on until the node that holds it closes it, and the folder cannot be
    removed meanwhile: it is no unfinished publish, and deleting again fails every time.
    """
    if backend.local_path(directory) is None:
        return 0  # object stores delete at once
    names = [path.rsplit("/", 1)[-1] for path, _ in backend.walk_files(directory)]
    if names and all(name.startswith(_DELETED_OPEN) for name in names):
        return len(names)
    return 0


def _last_left(backend: Backend, version: str, successor_created: float | None) -> float | None:
    """When ``version`` stopped being live, as far as it is known: the noted moment, or no
    earlier than its successor's creation (versions of a store without notes, or whose note
    could not be written)."""
    noted = _left_at(backend, version)
    known = [t for t in (noted, successor_created) if t is not None]
    return max(known) if known else None


def _condemn(
    root: StoreRoot, report: GCReport, committed: dict[str, VersionInfo], entries: dict[str, Entry]
) -> None:
    """Mark the versions chosen, read pointers and leases again, then delete what none names.

    A committed version is deleted only if its manifest is still the one the catalog
    summarised (`Entry.manifest_crc32`), and it leaves the catalog before its manifest goes.
    """
    backend = root.backend

    token = f"{os.uname().nodename}-{os.getpid()}-{os.urandom(6).hex()}"
    chosen = [*report.deleted, *report.unfinished]
    marked: list[str] = []
    settled: set[str] = set()
    try:
        for name in chosen:
            _write_mark(backend, f"{VERSIONS}/{name}", token)
            marked.append(name)
        if not marked:
            return
        # Everything that announced a use before this point is seen now; anything later
        # checks for the marks (see the module's docstring).
        protected = {version: _pointed_reason(ref) for ref, version in root.refs().items()}
        leases, damaged, newer_leases = read_leases(backend, LEASES)
        for version, reader in _live(leases, datetime.now(UTC)).items():
            protected.setdefault(version, f"leased by {reader}")
        for version in list(protected):
            for below in _chain(backend, _base_of(backend, version), version):
                protected.setdefault(below, f"a base of version {version}, which is in use")
        going: list[str] = []
        orphans: dict[str, Entry] = {}
        for name in marked:
            directory = f"{VERSIONS}/{name}"
            reason = protected.get(name)
            if reason is None and damaged:
                reason = f"damaged lease files ({', '.join(damaged)}) may protect it"
            if reason is None and newer_leases:
                reason = f"{_newer_leases(newer_leases)} may protect it"
            if reason is None and _read_mark(backend, directory) is None:
                reason = "its mark was removed by someone else"
            elif reason is None and (mark := _read_mark(backend, directory)) and mark[0] != token:
                reason = "another garbage collection took it over"
            if reason is None and name in entries:
                reason = _changed(backend, directory, entries[name])
                if reason == _NO_MANIFEST:  # its entry outlived it: the folder is unfinished now
                    orphans[name] = entries[name]
            if reason is not None:
                _unmark(backend, directory, token)
                settled.add(name)
                _spare(report, name, committed, f"{reason} (seen after it was chosen for deletion)")
                continue
            going.append(name)
        # Out of the catalog first: a listing meanwhile reads the manifest, or finds none.
        doomed = {name: entries[name] for name in going if name in entries}
        if doomed or orphans:
            gone = {**doomed, **orphans}
            if not update_catalog(backend, lambda now: _without(now, gone)):
                catalog, _ = read_catalog(backend)
                for name in [name for name, entry in doomed.items() if catalog.get(name) == entry]:
                    going.remove(name)
                    _unmark(backend, f"{VERSIONS}/{name}", token)
                    settled.add(name)
                    reason = "its entry in the version catalog could not be removed (see the log)"
                    _spare(report, name, committed, f"{reason}: a later collection deletes it")
        for name in going:
            directory = f"{VERSIONS}/{name}"
            # The manifest goes first: from then on no reader or listing sees the version;
            # then the root group's metadata, which tells a waiting reader or mover it is gone.
            backend.remove_tree(f"{directory}/{MANIFEST}")
            backend.remove_tree(f"{directory}/{GROUP_METADATA}")
            backend.remove_tree(directory)
            settled.add(name)
            log.info("gc deleted %s from %s", directory, backend.location)
            held = _held_open(backend, directory)
            if held:
                log.info(
                    "%s of %s/%s are still open on this node: the folder stays until they are closed",
                    held,
                    backend.location,
                    directory,
                )
    finally:
        for name in marked:
            if name not in settled:  # an error stopped this collection: leave nothing condemned
                _unmark(backend, f"{VERSIONS}/{name}", token)


_NO_MANIFEST = "its manifest was removed by someone else"


def _changed(backend: Backend, directory: str, entry: Entry) -> str | None:
    """Why a version must not be deleted after all: its manifest is not the one the catalog
    summarised (a version published again under the same id), or is gone; None when it is."""
    try:
        data = backend.read_bytes(f"{directory}/{MANIFEST}")
    except FileNotFoundError:
        return _NO_MANIFEST
    if manifest_crc32(data) != entry.manifest_crc32:
        return "its manifest changed since it was listed (published again under the same id?)"
    return None


def _without(now: dict[str, Entry], doomed: dict[str, Entry]) -> dict[str, Entry] | None:
    """The catalog ``now`` without the entries of the versions being deleted."""
    new = {name: entry for name, entry in now.items() if doomed.get(name) != entry}
    return None if len(new) == len(now) else new


def _spare(report: GCReport, name: str, committed: dict[str, VersionInfo], reason: str) -> None:
    if name in report.deleted:
        report.deleted.remove(name)
        report.freed_bytes -= committed[name].size_bytes
    if name in report.unfinished:
        report.unfinished.remove(name)
    report.kept[name] = reason


def _pointed_reason(ref: str) -> str:
    return "live (CURRENT)" if ref == "current" else f"named by ref {ref!r}"


def _base_of(backend: Backend, version: str) -> str | None:
    from sharedrec.format.schema import Manifest

    where = f"{VERSIONS}/{version}/{MANIFEST}"
    try:
        return Manifest.loads(backend.read_bytes(where), f"{backend.location}/{where}").base
    except NewerFormat:
        return _newer_base(backend, version)[0]
    except (FileNotFoundError, CorruptVersion, InvalidInput):
        return None


def _newer_base(backend: Backend, version: str) -> tuple[str | None, bool]:
    """The base of a version a newer sharedrec wrote, and whether it could be read."""
    from sharedrec.format.schema import peek_newer_manifest

    try:
        peek = peek_newer_manifest(backend.read_bytes(f"{VERSIONS}/{version}/{MANIFEST}"))
    except FileNotFoundError:
        return None, True  # deleted meanwhile (by its own sharedrec): it needs nothing now
    if peek is None:
        return None, False
    return peek.base, peek.base_known


def _newer_leases(paths: list[str]) -> str:
    return f"leases written by a newer sharedrec ({', '.join(paths)}; upgrade sharedrec)"


def _live(leases: list[Lease], now: datetime) -> dict[str, str]:
    """Every version an unexpired lease names, with the first reader naming it."""
    leased: dict[str, str] = {}
    for lease in leases:
        if lease.expires_at > now:
            for version in lease.versions:
                leased.setdefault(version, lease.reader_id)
    return leased


def _write_mark(backend: Backend, directory: str, token: str) -> None:
    data = json.dumps({"gc": token, "at": time.time()}).encode()
    # No fsync: a mark lost in a crash only means the version was not deleted yet.
    backend.write_atomic(f"{directory}/{GC_MARK}", data, durable=False)


def _read_mark(backend: Backend, directory: str) -> tuple[str, float] | None:
    """The token and time of a version's mark, or None when it has none."""
    try:
        raw = json.loads(backend.read_bytes(f"{directory}/{GC_MARK}"))
        return str(raw["gc"]), float(raw["at"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return "", 0.0  # a damaged mark counts as an abandoned one
    except IsADirectoryError:
        return "", 0.0


def _unmark(backend: Backend, directory: str, token: str | None) -> None:
    """Remove a version's mark: ours only (``token``), or any when ``token`` is None."""
    if token is not None:
        mark = _read_mark(backend, directory)
        if mark is None or mark[0] != token:
            return
    try:
        backend.remove_tree(f"{directory}/{GC_MARK}")
    except Exception as exc:
        log.warning("could not remove the gc mark of %s/%s: %s", backend.location, directory, exc)
