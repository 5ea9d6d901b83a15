"""The one commit path: checksums -> guards -> manifest -> pointer compare-and-swap.

Every way a version becomes committed or live goes through here: a draft (`Draft`), the
commit of a publish from many tasks (`sharedrec.write.distributed.commit`), and the pointer
moves of `set_current`, `rollback` and `promote`. A version is committed once its
``manifest.json`` (sizes and checksums of every file) is written, which happens only after
the guards passed and every file was seen in the store (its summary then joins the version
catalog, `sharedrec.format.catalog`); it is live once a pointer names it,
moved by compare-and-swap from the bytes the writer read and guarded against garbage
collection (`sharedrec.write.hold.move_guarded`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sharedrec.backends.base import PointerMoved, file_crc32
from sharedrec.errors import (
    ConcurrentPublishError,
    CorruptVersion,
    NewerFormat,
    PublishRejected,
    SharedrecError,
    VersionGone,
)
from sharedrec.format.catalog import add_entry, entry_of, manifest_stamp
from sharedrec.format.layout import CURRENT, MANIFEST, POINTER_HISTORY, VERSIONS, ref_path
from sharedrec.format.schema import FileEntry, Manifest, Pointer
from sharedrec.read.version import version_condemned
from sharedrec.write.guards import run_guards
from sharedrec.write.hold import move_guarded

if TYPE_CHECKING:
    from pydantic import JsonValue

    from sharedrec._progress import Reporter
    from sharedrec.backends.base import Backend
    from sharedrec.read.reader import OpenVersion, Reader
    from sharedrec.read.root import StoreRoot
    from sharedrec.write.guards import Guard
    from sharedrec.write.hold import Hold

__all__ = [
    "check_stored",
    "checksums",
    "commit",
    "make_live",
    "pointer_for",
    "promote",
    "publish_lease",
    "rollback",
    "set_current",
]

log = logging.getLogger("sharedrec")


def now() -> datetime:
    """The time a pointer or a manifest records."""
    return datetime.now(UTC)


def publish_lease(version_id: str) -> str:
    """The name of the lease that keeps garbage collection off a publish from many tasks."""
    return f"publish-{version_id}"


def pointer_for(backend: Backend, version: str, previous: list[str], manifest: Manifest) -> Pointer:
    """The pointer naming ``version``: on object stores it carries a copy of the manifest.

    A reader then opens the version with one request (the pointer's GET) instead of two.
    On a POSIX path the pointer stays small: readers there poll it by reading it whole.
    """
    inline = manifest if backend.local_path("") is None else None
    return Pointer(version=version, previous=previous, updated_at=now(), manifest=inline)


# -- checksums, guards, manifest -----------------------------------------------------------


def checksums(backend: Backend, directory: str, reporter: Reporter | None = None) -> dict[str, FileEntry]:
    """The size and CRC32 of every file under ``directory``, by path relative to it.

    Hidden names (a collector's mark, temporary files) are never files of a version.
    """
    listing = [
        (path, size)
        for path, size in backend.walk_files(directory)
        if not any(part.startswith(".") for part in path.split("/"))
    ]
    if reporter is None:
        return {
            path: FileEntry(size=size, crc32=file_crc32(backend, f"{directory}/{path}"))
            for path, size in listing
        }
    files: dict[str, FileEntry] = {}
    with reporter.task("checksums", sum(size for _, size in listing)) as task:
        for path, size in listing:
            files[path] = FileEntry(size=size, crc32=file_crc32(backend, f"{directory}/{path}", task))
    return files


def judge(
    guards: Sequence[Guard],
    force: bool,
    version_id: str,
    parent: Pointer | None,
    new: Reader,
    live: Reader | None,
) -> dict[str, JsonValue]:
    """Run the guards on a finished version; the manifest's ``checks``, or raise if one fails.

    Raises:
        PublishRejected: A guard failed and ``force`` is False.
    """
    results = run_guards(guards, new, live)
    failed = [result for result in results if not result.passed]
    checks: dict[str, JsonValue] = {
        result.name: {"passed": result.passed, "message": result.message, **result.values}
        for result in results
    }
    if failed and force:
        log.warning(
            "publishing version %s despite failed guards (force=True): %s",
            version_id,
            "; ".join(f"{r.name}: {r.message}" for r in failed),
        )
        checks["forced"] = True
    elif failed:
        against = f"live version {parent.version}" if parent else "an empty store"
        # A version holding fewer collections than the live one: a delta keeps the others.
        lacking = sorted(set(live.collections) - set(new.collections)) if live is not None else []
        keep = (
            f"; to replace only the collections given and keep {lacking} of the live version, "
            "publish with delta=True"
            if lacking
            else ""
        )
        raise PublishRejected(
            f"version {version_id} was refused by {len(failed)} publish guard(s) against {against}: "
            + "; ".join(f"{r.name}: {r.message}" for r in failed)
            + ". Nothing was published. Fix the batch job, or pass force=True (or different guards=) "
            f"if the change is intended{keep}"
        )
    return checks


def _open_live(root: StoreRoot, parent: Pointer | None) -> Reader | None:
    """The version the guards compare with (the pointer's), or None when it is damaged.

    Raises:
        NewerFormat: A newer sharedrec wrote it: the guards cannot compare with it.
    """
    from sharedrec.read.reader import Reader
    from sharedrec.read.version import open_version

    if parent is None:
        return None
    try:
        return Reader(open_version(root, parent.version, "lazy"))
    except NewerFormat as exc:
        raise NewerFormat(
            f"the publish guards cannot compare with the live version {parent.version}, and nothing "
            f"was published: {exc}"
        ) from None
    except SharedrecError as exc:
        log.warning(
            "guards cannot read the live version %s (%s); comparing with nothing", parent.version, exc
        )
        return None


def check_stored(backend: Backend, directory: str, manifest: Manifest) -> None:
    """Just before a manifest is written: every file it lists is in the store with its size,
    and no garbage collector condemned the folder.

    Raises:
        PublishRejected: Something was removed; nothing is published.
    """
    where = f"{backend.location}/{directory}"
    if version_condemned(backend, directory):
        raise PublishRejected(
            f"{where} was removed while it was published (garbage collection took it for an "
            "abandoned publish: its lease expired?); nothing was published: publish again"
        )
    stored = dict(backend.walk_files(directory))  # one listing, not a request per file
    for path, entry in manifest.files.items():
        if stored.get(path) != entry.size:
            raise PublishRejected(
                f"{where}/{path} was removed while it was published (garbage collection, or by "
                "hand?); nothing was published: publish again"
            )


def commit(
    backend: Backend,
    manifest: Manifest,
    *,
    guards: Sequence[Guard],
    force: bool,
    new: Callable[[Manifest], OpenVersion],
    root: StoreRoot,
    parent: Pointer | None,
    parent_raw: bytes | None,
    pointer_path: str | None,
    hold: Hold | None = None,
    upload: Callable[[Manifest], None] | None = None,
    committed: Callable[[], None] | None = None,
) -> Manifest:
    """Commit a version whose files are written and checksummed in ``manifest``.

    Runs the guards (``new`` opens the finished version from its manifest; the version
    ``parent`` names, in the store at ``root``, is the one compared with), calls ``upload``
    (files staged on local disk go to the store), checks every file is in the store, writes
    the manifest, calls ``committed``, then moves the pointer ``pointer_path`` (None: commit
    only) from ``parent_raw`` to the version.

    Returns:
        The manifest written (with the guards' ``checks``).

    Raises:
        PublishRejected: A guard failed, or a file was removed meanwhile.
        ConcurrentPublishError: The pointer moved since ``parent_raw`` was read (the version
            stays committed).
    """
    from sharedrec.read.reader import Reader

    directory = f"{VERSIONS}/{manifest.id}"
    checks: dict[str, JsonValue] = {}
    if guards:
        view = Manifest.loads(manifest.dumps(), f"{backend.location}/{directory}/{MANIFEST}")
        checks = judge(guards, force, manifest.id, parent, Reader(new(view)), _open_live(root, parent))
    manifest = manifest.replace(checks=checks)
    if upload is not None:
        upload(manifest)
    check_stored(backend, directory, manifest)
    data = manifest.dumps()
    backend.write_atomic(f"{directory}/{MANIFEST}", data)
    # The catalog only spares listings the manifest's parse: a crash here, or a failed
    # write, leaves it stale, and listings read this manifest instead.
    add_entry(backend, entry_of(manifest, data, manifest_stamp(backend, manifest.id)))
    if committed is not None:
        committed()
    if pointer_path is not None:
        make_live(backend, pointer_path, manifest, parent, parent_raw, hold)
    return manifest


# -- moving a pointer ----------------------------------------------------------------------


def _swap(
    backend: Backend,
    path: str,
    manifest: Manifest,
    previous: list[str],
    expected: bytes | None,
    hold: Hold | None = None,
) -> None:
    """THE compare-and-swap: move the pointer ``path`` to ``manifest``'s version if it still holds
    ``expected``, guarded against garbage collection (`move_guarded`).

    Raises:
        PointerMoved: The pointer no longer holds ``expected``.
        VersionGone: The version (or one below it) is being deleted.
    """
    pointer = pointer_for(backend, manifest.id, previous[:POINTER_HISTORY], manifest)
    move_guarded(backend, path, pointer.dumps(), expected, manifest.id, manifest.base, hold)


def make_live(
    backend: Backend,
    pointer_path: str,
    manifest: Manifest,
    parent: Pointer | None,
    parent_raw: bytes | None,
    hold: Hold | None = None,
) -> None:
    """Compare-and-swap a pointer from ``parent_raw`` to the committed ``manifest``'s version.

    ``hold`` is the lease the publish already holds on the version, if any.

    Raises:
        ConcurrentPublishError: Another writer moved the pointer since ``parent_raw`` was
            read, or garbage collection was deleting the version.
    """
    version_id = manifest.id
    previous = [parent.version, *parent.previous] if parent else []
    try:
        _swap(backend, pointer_path, manifest, previous, parent_raw, hold)
    except VersionGone as exc:
        raise ConcurrentPublishError(
            f"garbage collection was deleting version {version_id} (or a version below it) while it "
            f"was made live: {exc}; it was not made live"
        ) from None
    except PointerMoved as moved:
        other = _pointer_version(moved.current)
        base = parent.version if parent else "an empty store"
        raise ConcurrentPublishError(
            f"another writer made version {other} live while version {version_id} was being "
            f"published (both started from {base}); "
            f"{other} stays live and {version_id} was kept unpublished: "
            f"store.set_current({version_id!r}) makes it live"
        ) from None
    log.info("published version %s to %s", version_id, backend.location)


def _point(
    root: StoreRoot, manifest: Manifest, previous: list[str], expected: bytes | None, ref: str
) -> None:
    """Move the pointer ``ref`` to a committed version if it still holds ``expected``.

    Raises:
        ConcurrentPublishError: Another writer moved the pointer meanwhile.
        VersionGone: Garbage collection is deleting the version.
    """
    path = ref_path(ref)
    try:
        _swap(root.backend, path, manifest, previous, expected)
    except PointerMoved:
        raise ConcurrentPublishError(
            f"{path} of {root.location} changed while moving it to {manifest.id}; "
            "check store.refs() and retry"
        ) from None


def set_current(root: StoreRoot, version_id: str, ref: str = "current") -> None:
    """Make a committed version the target of ``ref`` (see `RecommendationStore.set_current`)."""
    manifest = root.manifest(version_id)
    try:
        pointer, raw = root.read_pointer(ref)
    except CorruptVersion as exc:  # a damaged pointer is what set_current() repairs
        log.warning("%s; replacing it (its history is lost)", exc)
        pointer, raw = None, root.read_file(ref_path(ref))
    if pointer and pointer.version == version_id:
        return
    history = [pointer.version, *pointer.previous] if pointer else []
    history = [v for v in history if v != version_id][:POINTER_HISTORY]
    _point(root, manifest, history, raw, ref)


def rollback(root: StoreRoot, ref: str = "current") -> str:
    """Point ``ref`` at the version it named before (see `RecommendationStore.rollback`)."""
    from sharedrec.errors import VersionNotFound

    pointer, raw = root.read_pointer(ref)
    if pointer is None:
        named = "no version is live" if ref == "current" else f"ref {ref!r} names no version"
        raise VersionNotFound(f"nothing to roll back in {root.location}: {named}")
    for position, candidate in enumerate(pointer.previous):
        try:
            manifest = root.manifest(candidate)
        except (VersionNotFound, CorruptVersion):
            continue
        rest = pointer.previous[position + 1 :]
        try:
            _point(root, manifest, rest, raw, ref)
        except VersionGone as exc:  # garbage collection took it meanwhile: go further back
            log.info("rollback skips %s: %s", candidate, exc)
            continue
        return candidate
    raise VersionNotFound(
        f"no earlier version of {root.location}{'' if ref == 'current' else f' under ref {ref!r}'} "
        f"to roll back to from {pointer.version}; "
        "store.versions() lists what exists and store.set_current(id) picks one"
    )


def promote(root: StoreRoot, ref: str, to: str = "current") -> str:
    """Point ``to`` at the version ``ref`` names (see `RecommendationStore.promote`)."""
    from sharedrec.errors import VersionNotFound

    version = root.current(ref)
    if version is None:
        raise VersionNotFound(f"ref {ref!r} of {root.location} names no version; publish to it first")
    set_current(root, version, ref=to)
    return version


def _pointer_version(raw: bytes | None) -> str:
    if raw is None:
        return "(none: CURRENT was deleted)"
    try:
        return Pointer.loads(raw, CURRENT).version
    except NewerFormat:
        return "(a version of a newer sharedrec)"
    except Exception:
        return "(unreadable CURRENT)"
