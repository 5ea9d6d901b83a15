"""The `RecommendationStore` facade: versions, the live pointer, publishing and readers."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sharedrec.backends import backend_for
from sharedrec.backends.base import Backend
from sharedrec.format.layout import (
    CHUNK_TARGET_BYTES,
)
from sharedrec.format.schema import Manifest
from sharedrec.manage.versions import VersionInfo
from sharedrec.read.checks import VerifyLevel, VerifyReport
from sharedrec.read.root import StoreRoot

if TYPE_CHECKING:
    from numpy.typing import ArrayLike
    from pydantic import JsonValue

    from sharedrec._progress import ProgressMode
    from sharedrec.manage.diff import VersionDiff
    from sharedrec.manage.gc import GCReport
    from sharedrec.manage.leases import LeaseInfo
    from sharedrec.read.reader import OpenVersion, Reader
    from sharedrec.write.distributed import PublishHandle
    from sharedrec.write.draft import Draft
    from sharedrec.write.guards import GuardLike

__all__ = ["RecommendationStore", "VersionInfo", "open"]

log = logging.getLogger("sharedrec")


def open(
    location: str | os.PathLike[str],
    *,
    create: bool = True,
    storage_options: dict[str, Any] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    cache_max_bytes: int | None = 10 * 1024**3,
) -> RecommendationStore:
    """Open the store at a path or URL.

    Args:
        location: A local path, a mounted EFS/NFS path, a ``file://`` URL, or
            ``s3://bucket/prefix``.
        create: Create the folder if it does not exist (writers). Readers pass ``False``
            to fail fast when a volume is not mounted.
        storage_options: For S3: passed to ``s3fs.S3FileSystem`` untouched
            (``endpoint_url``, ``key``, ``secret``, ``client_kwargs``, ``config_kwargs``...);
            credentials otherwise come from the standard AWS chain.
        cache_dir: For S3: where chunk files are cached on this machine (default
            ``$SHAREDREC_CACHE_DIR``, else ``~/.cache/sharedrec``); processes on one node
            share it. Publishes stage the version there (``staging/``) before uploading it;
            the next publish or `gc` on the node removes what a killed publisher left.
        cache_max_bytes: For S3: the cache's size bound (least recently used files go
            first); None for no bound.

    Returns:
        The `RecommendationStore`. Nothing but the location's existence is checked.

    Raises:
        StoreNotFound: The folder (or bucket) does not exist and ``create`` is False.
        UnsupportedLocation: The URL's protocol is not supported.
        SharedrecError: The S3 endpoint cannot be reached.

    Example:
        >>> store = sharedrec.open("/mnt/recs")  # doctest: +SKIP
        >>> store = sharedrec.open("s3://bucket/recs")  # doctest: +SKIP
    """
    backend = backend_for(location, create=create, storage_options=storage_options)
    return RecommendationStore(
        backend, cache_dir=cache_dir, cache_max_bytes=cache_max_bytes, storage_options=storage_options
    )


class RecommendationStore:
    """A root location holding immutable versions and the ``CURRENT`` pointer."""

    def __init__(
        self,
        backend: Backend,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_max_bytes: int | None = 10 * 1024**3,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self._root = StoreRoot(backend, cache_dir=cache_dir, cache_max_bytes=cache_max_bytes)
        self._backend = backend
        self._storage_options = storage_options
        self._cache_dir = cache_dir

    @property
    def location(self) -> str:
        """Where the store lives."""
        return self._backend.location

    def __repr__(self) -> str:
        return f"sharedrec.RecommendationStore({self.location!r})"

    # -- publishing ------------------------------------------------------------------------

    def publish(
        self,
        *,
        metadata: dict[str, JsonValue] | None = None,
        version_id: str | None = None,
        make_current: bool = True,
        progress: ProgressMode = None,
        chunk_bytes: int = CHUNK_TARGET_BYTES,
        guards: Sequence[GuardLike] | None = None,
        force: bool = False,
        ref: str = "current",
        delta: bool = False,
        base: str | None = None,
        max_chain: int = 8,
    ) -> Draft:
        """Start a new version; use it as a context manager.

        On a clean exit of the ``with`` block the version is checked, its manifest is
        written and ``CURRENT`` moves to it atomically. On an exception nothing becomes
        visible and what was written is removed.

        Args:
            metadata: JSON-serialisable facts to keep in the manifest (model, run id...).
            version_id: Choose the id (default: a time-sortable id).
            make_current: Move ``CURRENT`` to the new version (default). With False the
                version is committed but not live; `set_current()` makes it live.
            progress: Show progress bars; by default only when stderr is a terminal.
            chunk_bytes: Target size of a chunk file (default 4 MiB). Larger chunks mean
                fewer files and S3 requests; smaller ones less data pulled per lookup
                through a lazy cache. Rows are never split across chunks.
            guards: Checks run before ``CURRENT`` moves (default:
                `DEFAULT_GUARDS`: at most 50% fewer keys per
                collection, at most 50% empty lists, at least 50% of sampled live keys kept).
                Pass ``[]`` for none, or add your own (see `guards`).
            force: Publish even if guards fail (the failure is logged and recorded).
            ref: The pointer to move: ``"current"`` (``CURRENT``, what readers follow by
                default) or a named ref such as ``"canary"`` that only readers opened with
                ``ref="canary"`` follow. Guards compare with the version that ref names.
            delta: Write a delta version over the version ``ref`` names: give the full new
                data as usual; only the keys added, changed or removed are written, and
                collections not added are kept as they are. Readers answer from the delta
                first and from the versions below it otherwise.
            base: Write a delta over this version instead (implies ``delta``).
            max_chain: When the delta would sit on ``max_chain`` deltas already, a full
                version is written instead, so a chain never grows past it (see also
                `compact()`). At most ``MAX_CHAIN`` (256), the longest chain readers open.

        Raises:
            InvalidInput: ``max_chain`` is out of range.
            ConcurrentPublishError: On exit, when another writer moved ``CURRENT`` first.
            PublishRejected: On exit, when the draft holds no collection or a guard fails.

        Example:
            >>> with store.publish(metadata={"model": "als"}) as draft:  # doctest: +SKIP
            ...     draft.add_ranked("home", keys=users, items=items, scores=scores)
        """
        from sharedrec.write.draft import start

        return start(
            self._root,
            metadata=metadata,
            version_id=version_id,
            make_current=make_current,
            progress=progress,
            chunk_bytes=chunk_bytes,
            guards=guards,
            force=force,
            ref=ref,
            delta=delta,
            base=base,
            max_chain=max_chain,
        )

    def compact(self, *, ref: str = "current", progress: ProgressMode = None) -> str:
        """Rewrite the version ``ref`` names as a full version, if it is a delta, and make it live.

        The new version answers exactly as the old one; afterwards garbage collection can
        delete the versions of the chain. Returns the id of the version ``ref`` names
        afterwards (unchanged when it was already full).

        Raises:
            VersionNotFound: ``ref`` names no version.
            ConcurrentPublishError: Another writer moved ``ref`` meanwhile.
        """
        from sharedrec.write.delta import compact

        def publish(metadata: dict[str, JsonValue]) -> Draft:
            return self.publish(metadata=metadata, progress=progress, guards=[], ref=ref)

        return compact(self._root, ref, publish)

    def publish_ranked(
        self,
        name: str,
        keys: ArrayLike,
        items: ArrayLike,
        scores: ArrayLike,
        *,
        metadata: dict[str, JsonValue] | None = None,
        progress: ProgressMode = None,
        guards: Sequence[GuardLike] | None = None,
        force: bool = False,
        ref: str = "current",
        delta: bool = False,
        **options: Any,
    ) -> str:
        """Publish a version holding one ranked collection; returns the version id.

        ``options`` are those of `add_ranked()` (``lengths``, ``pad``, ``sort``,
        ``top_k``, ``default``, ``fallbacks``); ``ref`` moves a named pointer instead of
        ``CURRENT``, and ``delta`` writes only what changed (see `publish()`).
        """
        with self.publish(
            metadata=metadata, progress=progress, guards=guards, force=force, ref=ref, delta=delta
        ) as draft:
            draft.add_ranked(name, keys, items, scores, **options)
        return draft.version_id

    def publish_vectors(
        self,
        name: str,
        keys: ArrayLike,
        vectors: ArrayLike,
        *,
        metadata: dict[str, JsonValue] | None = None,
        progress: ProgressMode = None,
        guards: Sequence[GuardLike] | None = None,
        force: bool = False,
        ref: str = "current",
        delta: bool = False,
    ) -> str:
        """Publish a version holding one vectors collection; returns the version id.

        ``ref`` and ``delta`` are as in `publish()`.
        """
        with self.publish(
            metadata=metadata, progress=progress, guards=guards, force=force, ref=ref, delta=delta
        ) as draft:
            draft.add_vectors(name, keys, vectors)
        return draft.version_id

    # -- publishing from many tasks ----------------------------------------------------------

    def begin_publish(
        self,
        *,
        partitions: int,
        metadata: dict[str, JsonValue] | None = None,
        version_id: str | None = None,
        chunk_bytes: int = CHUNK_TARGET_BYTES,
        ref: str = "current",
        lease_ttl: float = 24 * 3600.0,
    ) -> PublishHandle:
        """Start a version that worker tasks write partition by partition (on the driver).

        Reserves the version folder and returns a handle to ship to the workers (it pickles
        and serialises to JSON). Each collection of the version is split into
        ``partitions`` partitions by a hash of the key (`PublishHandle.partition_of`);
        workers write whole partitions with `PublishHandle.write_ranked` /
        `PublishHandle.write_vectors`, and `commit_publish()` makes the version live from
        their receipts. See [Publishing from Spark and Dask](distributed.md).

        Args:
            partitions: How many partitions every collection has (1 to 100,000).
            metadata: JSON facts to keep in the manifest.
            version_id: Choose the id (default: a time-sortable id).
            chunk_bytes: Target size of a chunk file (default 4 MiB).
            ref: The pointer `commit_publish()` moves, and whose version guards compare with.
            lease_ttl: Seconds garbage collection leaves the unfinished version alone, however
                old its files: a lease (``leases/publish-<id>.json``) written now and removed
                by `commit_publish()` or `abort_publish()`. A job that may take longer must
                pass more.

        Returns:
            The `PublishHandle`.

        Raises:
            InvalidInput: Bad arguments, an existing version id, or ``storage_options`` that
                are not JSON (give credentials through the environment instead).

        Example:
            >>> handle = store.begin_publish(partitions=64)  # doctest: +SKIP
            >>> receipts = [handle.write_ranked("home", p, *rows_of(p)) for p in range(64)]  # doctest: +SKIP
            >>> store.commit_publish(handle, receipts)  # doctest: +SKIP
        """
        from sharedrec.write.distributed import begin_publish

        return begin_publish(
            self._root,
            self._storage_options,
            partitions=partitions,
            metadata=metadata,
            version_id=version_id,
            chunk_bytes=chunk_bytes,
            ref=ref,
            lease_ttl=lease_ttl,
        )

    def commit_publish(
        self,
        handle: PublishHandle,
        receipts: Sequence[object],
        *,
        guards: Sequence[GuardLike] | None = None,
        force: bool = False,
        make_current: bool = True,
    ) -> str:
        """Commit a version written by worker tasks from their receipts (on the driver).

        Keeps one receipt per partition (a partition written by several attempts of a
        retried task keeps one and the other attempts' files are deleted), checks that
        every file a receipt names is in the store with its size, deletes files no receipt
        kept, runs the guards, writes the manifest and moves the pointer (by
        compare-and-swap from the pointer read by `begin_publish()`).

        Args:
            handle: From `begin_publish()`.
            receipts: Every receipt the tasks returned (objects, dicts or JSON).
            guards: As in `publish()`.
            force: Publish even if guards fail.
            make_current: Move the pointer (default); with False the version is committed only.

        Returns:
            The version id.

        Raises:
            InvalidInput: Receipts of another version, a partition missing or written twice
                with different contents, partitions that disagree, or files written for a
                collection no receipt names.
            CorruptVersion: A file a receipt names is missing or has another size.
            PublishRejected: A guard failed, or the version was already committed.
            ConcurrentPublishError: Another writer moved the pointer since `begin_publish()`.
        """
        from sharedrec.write.distributed import commit_publish

        return commit_publish(
            self._root,
            handle,
            receipts,
            guards=guards,
            force=force,
            make_current=make_current,
        )

    def abort_publish(self, handle: PublishHandle) -> None:
        """Remove what the tasks of an uncommitted publish wrote (on the driver).

        Raises:
            PublishRejected: The version was already committed.
        """
        from sharedrec.write.distributed import abort_publish

        abort_publish(self._root, handle)

    # -- reading ---------------------------------------------------------------------------

    def reader(
        self,
        version: str | None = None,
        *,
        pin: bool = False,
        refresh_interval: float | None = 5.0,
        verify: VerifyLevel = "lazy",
        lease: bool = True,
        lease_dir: str | os.PathLike[str] | None = None,
        lease_ttl: float = 60.0,
        reader_id: str | None = None,
        on_refresh_error: Callable[[Exception], None] | None = None,
        prefetch: bool | Sequence[str] = False,
        ref: str | None = None,
    ) -> Reader:
        """Open a reader on the live version, following ``CURRENT`` as it moves.

        Opening reads ``CURRENT`` and the manifest; chunk files are mapped on first use
        and each one's size is checked then, so the cost of opening does not grow with the
        data. A background thread polls ``CURRENT`` every ``refresh_interval`` seconds
        (open + read, never ``stat``) and switches to a new version only after it has
        opened it and checked the size of every file (or every checksum, with
        ``verify="full"``); a version that fails is not switched to.

        Args:
            version: Serve this version and never move (pinned).
            pin: Serve the live version and never move.
            refresh_interval: Seconds between polls of ``CURRENT``; None polls only on
                `refresh()`.
            verify: How much to check before serving a version. ``"lazy"`` (default):
                each chunk's size when it is first mapped, plus every file's size before a
                switch. ``"sizes"``: stat every file on open too (one round trip per file on
                NFS). ``"full"``: recompute every checksum on open and on every switch
                (reads the whole version).
            lease: Keep a lease file so garbage collection never deletes a version this
                reader maps. Needs write access to the store's ``leases/`` folder or to
                ``lease_dir``.
            lease_dir: Where to keep the lease instead (default: ``$SHAREDREC_LEASE_DIR``,
                else the store's ``leases/`` folder). It must be the folder the garbage
                collector reads: mount the store's ``leases/`` folder there.
            lease_ttl: Seconds a lease stays valid without a heartbeat (renewed every third
                of it).
            reader_id: Who holds the lease (default: ``$SHAREDREC_READER_ID``, e.g. the
                pod name, else host, pid and a random suffix). The lease file is
                ``<reader_id>.<pid>-<random>.json``: each process, and each reader of a
                process, holds its own.
            on_refresh_error: Called with the exception when a refresh fails.
            prefetch: Warm the cache with every collection (True) or the named ones, in
                the background, after open (see `Reader.prefetch`).
            ref: Follow this pointer instead of ``CURRENT`` (default: ``$SHAREDREC_REF``, else
                ``"current"``), e.g. ``"canary"`` for the pods of a canary Deployment.

        Raises:
            VersionNotFound: No version is live yet, or ``CURRENT`` names a missing one.
            CorruptVersion: The manifest or ``CURRENT`` is truncated or invalid, or a file
                does not match the manifest.
        """
        from sharedrec.read.open import open_reader

        return open_reader(
            self._root,
            version,
            pin=pin,
            refresh_interval=refresh_interval,
            verify=verify,
            lease=lease,
            lease_dir=lease_dir,
            lease_ttl=lease_ttl,
            reader_id=reader_id,
            on_refresh_error=on_refresh_error,
            prefetch=prefetch,
            ref=ref,
            opener=self.open_version,  # the facade's, so that a wrapped one sees every open
        )

    def open_version(
        self, version_id: str, verify: VerifyLevel = "sizes", *, manifest: Manifest | None = None
    ) -> OpenVersion:
        """Map a version for reading after checking it (``verify`` as in `reader()`).

        On S3 the files are fetched into the local cache on first use, where their size
        and checksum are checked; ``verify="full"`` fetches and checks all of them now.
        ``manifest`` is the version's manifest when the caller already has it (the copy
        in a pointer on object stores); else it is read.
        """
        from sharedrec.read.version import open_version

        return open_version(self._root, version_id, verify, manifest=manifest)

    def verify(self, version: str | None = None, *, progress: ProgressMode = None) -> VerifyReport:
        """Recompute the checksum of every file of a version (default: the live one).

        Returns:
            The report: files and bytes checked, and every problem found.

        Raises:
            CorruptVersion: Some file is missing or does not match the manifest; the message
                lists the problems.
        """
        from sharedrec.manage.integrity import verify

        return verify(self._root, version, progress)

    def gc(
        self, keep: int = 3, grace: float | timedelta = timedelta(hours=1), *, dry_run: bool = False
    ) -> GCReport:
        """Delete versions that nobody can still be reading.

        A version is deleted when it is not live, not among the ``keep`` newest, not named
        by an unexpired reader lease, older than ``grace``, and left by every pointer more
        than ``grace`` ago (each pointer move notes the time in ``versions/<id>/.left``; a
        version without a note counts from its successor's creation). Folders of publishes that
        never finished (no manifest) are deleted once older than ``grace`` and no publish
        holds a lease on them (a publish in progress always does). A version folder that is
        a symbolic link is never followed nor deleted: the report names it.

        Safe against everything running at the same time: the versions chosen are marked
        first, pointers and leases are read again, and only then is a version deleted that
        none of them names; pointer movers and readers refuse a marked version (see
        `sharedrec.manage.gc`).

        Args:
            keep: How many of the newest versions to keep whatever their age (rollback room).
            grace: Seconds (or a timedelta) a version or unfinished folder is left alone,
                counted from its creation and from the last time a pointer left it; it must
                exceed what readers without a lease need to leave a version (see the
                network-volumes page of the docs).
            dry_run: Only report what would be deleted.

        Returns:
            The report: deleted versions, deleted unfinished folders, and why the rest stayed.
        """
        from sharedrec.manage.gc import collect

        return collect(self._root, keep, grace, dry_run)

    def diff(self, a: str, b: str, *, k: int = 10) -> VersionDiff:
        """What changed from version (or ref) ``a`` to ``b``, collection by collection.

        Keys added, removed and changed; for ranked collections the mean overlap@k of the
        changed lists and the median shift of the first score. Reads both versions' keys and
        lists in batches (a million keys take seconds).
        """
        from sharedrec.manage.diff import diff
        from sharedrec.read.reader import Reader

        return diff(self._root, a, b, k, lambda version: Reader(self.open_version(version, "lazy")))

    def leases(self) -> list[LeaseInfo]:
        """The fleet view: every reader's lease, which version it serves and how fresh it is.

        Each process (each reader object) holds a lease of its own; those of one pod share
        the reader id and come together, sorted by reader id.

        Leases kept outside the store (``lease_dir``) appear only if that folder is the
        store's ``leases/`` folder.
        """
        from sharedrec.manage.leases import fleet

        return fleet(self._root)

    # -- versions --------------------------------------------------------------------------

    def current(self, ref: str = "current") -> str | None:
        """The id of the live version (or of the version a named ref points at), or None.

        Raises:
            CorruptVersion: The pointer exists but cannot be parsed.
        """
        return self._root.current(ref)

    def refs(self) -> dict[str, str]:
        """Every pointer and the version it names: ``"current"`` (``CURRENT``) and the named refs."""
        return self._root.refs()

    def promote(self, ref: str, to: str = "current") -> str:
        """Point ``to`` at the version ``ref`` names (e.g. a canary to everyone); returns it.

        Raises:
            VersionNotFound: ``ref`` names no version.
            ConcurrentPublishError: Another writer moved ``to`` at the same moment.
        """
        from sharedrec.write.commit import promote

        return promote(self._root, ref, to)

    def manifest(self, version_id: str) -> Manifest:
        """The manifest of a committed version.

        Raises:
            VersionNotFound: No such version, or its publish never finished.
            CorruptVersion: Its manifest is truncated or invalid.
        """
        from sharedrec.manage.versions import manifest

        return manifest(self._root, version_id)

    def versions(self) -> list[VersionInfo]:
        """Committed versions, oldest first. Unfinished publishes are not listed."""
        from sharedrec.manage.versions import versions

        return versions(self._root)

    def set_current(self, version_id: str, *, ref: str = "current") -> None:
        """Make a committed version live (or the target of a named ref); readers follow it.

        Raises:
            VersionNotFound: The version does not exist or never finished publishing.
            ConcurrentPublishError: Another writer moved the pointer at the same moment.
        """
        from sharedrec.write.commit import set_current

        set_current(self._root, version_id, ref)

    def rollback(self, *, ref: str = "current") -> str:
        """Make the previously live version live again (or a named ref's); returns its id.

        Each call steps one version further back through the versions that were live
        before, skipping any that no longer exist.

        Raises:
            VersionNotFound: There is no earlier version to go back to.
        """
        from sharedrec.write.commit import rollback

        return rollback(self._root, ref)

    # -- internals -------------------------------------------------------------------------
