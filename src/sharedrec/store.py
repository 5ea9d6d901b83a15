"""The `RecommendationStore` facade: versions, the live pointer, publishing and readers."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Unpack

from sharedrec.backends import backend_for
from sharedrec.backends.base import Backend
from sharedrec.format.schema import Manifest
from sharedrec.read.checks import VerifyLevel, VerifyReport
from sharedrec.read.root import StoreRoot

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from sharedrec._progress import ProgressMode
    from sharedrec.manage.diff import VersionDiff
    from sharedrec.manage.gc import GCReport
    from sharedrec.manage.leases import LeaseInfo
    from sharedrec.manage.versions import VersionInfo
    from sharedrec.read.options import ReaderOptions, StoreOptions
    from sharedrec.read.reader import OpenVersion, Reader
    from sharedrec.write.distributed import BeginOptions, PublishHandle
    from sharedrec.write.draft import Draft, PublishOptions, PublishRankedOptions
    from sharedrec.write.guards import GuardLike

__all__ = ["RecommendationStore", "open"]


def open(
    location: str | os.PathLike[str], *, create: bool = False, **options: Unpack[StoreOptions]
) -> RecommendationStore:
    """Open the store at a path or URL; only ``create=True`` creates one.

    A store exists where its folder exists (an empty one, such as a freshly mounted volume,
    is a store without versions) or, on object stores, where its prefix holds an object.

    Args:
        location: A local path, a mounted EFS/NFS path, a ``file://`` URL, or
            ``s3://bucket/prefix``.
        create: Create the store if there is none: the folder, or on object stores an empty
            marker object, ``.sharedrec-store``, under a prefix that holds nothing.
        **options: `StoreOptions`: ``storage_options``, ``cache_dir``, ``cache_max_bytes``.

    Returns:
        The store. A folder is checked at once, an S3 prefix at the first write or miss.

    Raises:
        StoreNotFound: There is no store at ``location`` (nor bucket) and ``create`` is False.
        UnsupportedLocation: The URL's protocol is not supported.
        SharedrecError: The S3 endpoint cannot be reached.

    Example:
        >>> store = sharedrec.open("/mnt/recs", create=True)  # doctest: +SKIP
    """
    backend = backend_for(location, create=create, storage_options=options.get("storage_options"))
    return RecommendationStore(backend, **options)


class RecommendationStore:
    """A root location holding immutable versions and the ``CURRENT`` pointer."""

    def __init__(self, backend: Backend, **options: Unpack[StoreOptions]) -> None:
        self._root = StoreRoot(backend, **options)
        self._backend = backend

    @property
    def location(self) -> str:
        """Where the store lives."""
        return self._backend.location

    def __repr__(self) -> str:
        return f"sharedrec.RecommendationStore({self.location!r})"

    # -- publishing ------------------------------------------------------------------------

    def publish(self, **options: Unpack[PublishOptions]) -> Draft:
        """Start a new version; use it as a context manager.

        On a clean exit of the ``with`` block the version is checked, its manifest is
        written and ``CURRENT`` moves to it atomically. On an exception nothing becomes
        visible and what was written is removed.

        Args:
            **options: `PublishOptions`: ``metadata``, ``version_id``, ``make_current``,
                ``progress``, ``chunk_bytes``, ``guards``, ``force``, ``ref``, ``delta``,
                ``base``, ``max_chain``.

        Raises:
            InvalidInput: ``max_chain`` is out of range.
            ConcurrentPublishError: On exit, when another writer moved ``CURRENT`` first.
            PublishRejected: On exit, when the draft holds no collection or a guard fails.

        Example:
            >>> with store.publish(metadata={"model": "als"}) as draft:  # doctest: +SKIP
            ...     draft.add_ranked("home", keys=users, items=items, scores=scores)
        """
        from sharedrec.write.draft import start

        return start(self._root, **options)

    def compact(self, *, ref: str = "current", progress: ProgressMode = None) -> str:
        """Rewrite the version ``ref`` names as a full version, if it is a delta, and make it live.

        The new version answers exactly as the old one; afterwards garbage collection can
        delete the versions of the chain. Returns the id of the version ``ref`` names
        afterwards (unchanged when it was already full).

        Raises:
            VersionNotFound: ``ref`` names no version.
            ConcurrentPublishError: Another writer moved ``ref`` meanwhile.
        """
        from sharedrec.write.draft import compact

        return compact(self._root, ref, progress)

    def publish_ranked(
        self,
        name: str,
        keys: ArrayLike,
        items: ArrayLike,
        scores: ArrayLike,
        **options: Unpack[PublishRankedOptions],
    ) -> str:
        """Publish a version holding one ranked collection; returns the version id.

        ``options`` are those of `publish()` and of `Draft.add_ranked` (``lengths``, ``pad``,
        ``sort``, ``top_k``, ``default``, ``fallbacks``, ``serve_to_all``).
        """
        from sharedrec.write.draft import publish_ranked

        return publish_ranked(self._root, name, keys, items, scores, options)

    def publish_vectors(
        self, name: str, keys: ArrayLike, vectors: ArrayLike, **options: Unpack[PublishOptions]
    ) -> str:
        """Publish a version holding one vectors collection; returns the version id.

        ``options`` are those of `publish()` (`PublishOptions`).
        """
        with self.publish(**options) as draft:
            draft.add_vectors(name, keys, vectors)
        return draft.version_id

    # -- publishing from many tasks ----------------------------------------------------------

    def begin_publish(self, *, partitions: int, **options: Unpack[BeginOptions]) -> PublishHandle:
        """Start a version that worker tasks write partition by partition (on the driver).

        Reserves the version folder and returns a handle to ship to the workers (it pickles
        and serialises to JSON). Each collection of the version is split into
        ``partitions`` partitions by a hash of the key (`PublishHandle.partition_of`);
        workers write whole partitions with `PublishHandle.write_ranked` /
        `PublishHandle.write_vectors`, and `commit_publish()` makes the version live from
        their receipts. See [Publishing from Spark and Dask](distributed.md).

        Args:
            partitions: How many partitions every collection has (1 to 100,000).
            **options: `BeginOptions`: ``metadata``, ``version_id``, ``chunk_bytes``, ``ref``,
                ``lease_ttl``.

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

        return begin_publish(self._root, partitions=partitions, **options)

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

        Keeps one receipt per partition (other attempts of a retried task are deleted),
        checks every file a receipt names, runs the guards, writes the manifest and moves
        the pointer by compare-and-swap from the one `begin_publish()` read.

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
            self._root, handle, receipts, guards=guards, force=force, make_current=make_current
        )

    def abort_publish(self, handle: PublishHandle) -> None:
        """Remove what the tasks of an uncommitted publish wrote (on the driver).

        Raises:
            PublishRejected: The version was already committed.
        """
        from sharedrec.write.distributed import abort_publish

        abort_publish(self._root, handle)

    # -- reading ---------------------------------------------------------------------------

    def reader(self, version: str | None = None, **options: Unpack[ReaderOptions]) -> Reader:
        """Open a reader on the live version, following ``CURRENT`` as it moves.

        Opening reads ``CURRENT`` and the manifest; chunk files are mapped on first use
        and each one's size is checked then, so the cost of opening does not grow with the
        data. A background thread polls ``CURRENT`` every ``refresh_interval`` seconds
        (open + read, never ``stat``) and switches to a new version only after it has
        opened it and checked the size of every file (or every checksum, with
        ``verify="full"``); a version that fails is not switched to.

        Args:
            version: Serve this version and never move (pinned).
            **options: `ReaderOptions`: ``pin``, ``refresh_interval``, ``verify``, ``lease``,
                ``lease_dir``, ``lease_ttl``, ``reader_id``, ``on_refresh_error``,
                ``prefetch``, ``ref``.

        Raises:
            VersionNotFound: No version is live yet, or ``CURRENT`` names a missing one.
            CorruptVersion: The manifest or ``CURRENT`` is truncated or invalid, or a file
                does not match the manifest.
        """
        from sharedrec.read.open import open_reader

        # The facade's open_version, so that a wrapped one sees every open.
        return open_reader(self._root, version, opener=self.open_version, **options)

    def open_version(
        self, version_id: str, verify: VerifyLevel = "sizes", *, manifest: Manifest | None = None
    ) -> OpenVersion:
        """Map a version for reading after checking it (``verify`` as in `reader()`).

        On S3 files are fetched into the local cache on first use and checked there.
        ``manifest``: the version's manifest when the caller has it; else it is read.
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

        Safe against publishes, pointer moves and readers running at the same time (see
        [Safety](safety.md)).

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

        return diff(self._root, a, b, k)

    def leases(self) -> list[LeaseInfo]:
        """The fleet view: every reader's lease, which version it serves and how fresh it is.

        Each reader object of each process holds a lease of its own; those of one pod share
        the reader id, sorted together. Leases kept in another ``lease_dir`` do not appear.
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
