"""The `RecommendationStore` facade: versions, the live pointer, publishing and readers."""

from __future__ import annotations

import logging
import os
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sharedrec._progress import reporter
from sharedrec.backends import backend_for
from sharedrec.backends.base import Backend, PointerMoved
from sharedrec.errors import (
    ConcurrentPublishError,
    CorruptVersion,
    InvalidInput,
    PublishRejected,
    SharedrecError,
    StoreNotFound,
    VersionGone,
    VersionNotFound,
)
from sharedrec.format.layout import (
    CHUNK_TARGET_BYTES,
    CURRENT,
    GC_MARK,
    LEASES,
    MANIFEST,
    MAX_CHAIN,
    POINTER_HISTORY,
    VERSIONS,
    new_version_id,
    ref_path,
    validate_version_id,
)
from sharedrec.format.schema import Manifest, Pointer
from sharedrec.manage.integrity import VerifyLevel, VerifyReport, check_version, raise_if_bad
from sharedrec.read.root import StoreRoot

if TYPE_CHECKING:
    from numpy.typing import ArrayLike
    from pydantic import JsonValue

    from sharedrec._progress import ProgressMode
    from sharedrec.manage.diff import VersionDiff
    from sharedrec.manage.gc import GCReport
    from sharedrec.read.cache import ChunkCache
    from sharedrec.read.leases import LeaseInfo
    from sharedrec.read.reader import OpenVersion, Reader
    from sharedrec.write.distributed import PublishHandle
    from sharedrec.write.draft import Draft
    from sharedrec.write.guards import GuardLike

__all__ = ["RecommendationStore", "VersionInfo", "open"]

log = logging.getLogger("sharedrec")


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
        from sharedrec.format.schema import validate_metadata
        from sharedrec.read.reader import Reader
        from sharedrec.write.draft import Draft
        from sharedrec.write.guards import DEFAULT_GUARDS

        vid = validate_version_id(version_id) if version_id is not None else new_version_id()
        metadata = validate_metadata(metadata)
        pointer, raw = self._read_pointer(ref)
        base_reader = self._delta_base(base, delta, pointer, max_chain)
        return Draft(
            self._backend,
            vid,
            pointer,
            raw,
            metadata,
            reporter(progress),
            make_current,
            chunk_bytes,
            DEFAULT_GUARDS if guards is None else guards,
            force,
            lambda version: Reader(self.open_version(version, "lazy")),
            ref_path(ref),
            base_reader,
            staging_dir=self._cache_dir,
        )

    def _delta_base(
        self, base: str | None, delta: bool, pointer: Pointer | None, max_chain: int
    ) -> Reader | None:
        """The version a delta publish builds on, opened pinned; None for a full version."""

        if not isinstance(max_chain, int) or isinstance(max_chain, bool) or not 1 <= max_chain <= MAX_CHAIN:
            raise InvalidInput(
                f"max_chain must be an int from 1 to {MAX_CHAIN} (MAX_CHAIN: readers refuse longer "
                f"chains of deltas); got {max_chain!r}"
            )
        if base is None and not delta:
            return None
        if base is None:
            if pointer is None:
                log.info("no version is live yet: writing a full version instead of a delta")
                return None
            base = pointer.version
        manifest = self._manifest_view(base)
        if any(spec.partitions is not None for spec in manifest.collections.values()):
            log.info("version %s holds partitioned collections: writing a full version, not a delta", base)
            return None
        if manifest.depth + 1 > max_chain:
            log.info(
                "a delta over %s would make a chain of %d deltas (max_chain=%d): writing a full version",
                base,
                manifest.depth + 1,
                max_chain,
            )
            return None
        # A pinned reader with a lease: garbage collection keeps the base while the delta is
        # written over it (the draft closes the reader when it is done).
        return self.reader(base, pin=True, refresh_interval=None, verify="lazy")

    def compact(self, *, ref: str = "current", progress: ProgressMode = None) -> str:
        """Rewrite the version ``ref`` names as a full version, if it is a delta, and make it live.

        The new version answers exactly as the old one; afterwards garbage collection can
        delete the versions of the chain. Returns the id of the version ``ref`` names
        afterwards (unchanged when it was already full).

        Raises:
            VersionNotFound: ``ref`` names no version.
            ConcurrentPublishError: Another writer moved ``ref`` meanwhile.
        """
        import numpy as np

        from sharedrec.read.reader import Reader

        live = self._live_id(ref)
        manifest = self._manifest_view(live)
        if manifest.base is None:
            return live
        reader = Reader(self.open_version(live, "lazy", manifest=manifest))
        metadata = {**manifest.metadata, "compacted_from": live}
        with self.publish(metadata=metadata, progress=progress, guards=[], ref=ref) as draft:
            for name, spec in manifest.collections.items():
                keys = reader.keys(name)
                if spec.kind == "vectors":
                    vectors, _ = reader.vectors(name, keys)
                    draft.add_vectors(name, keys, vectors)
                    continue
                items, scores, _ = reader.get_many(name, keys)
                lengths = np.count_nonzero(items != -1, axis=1)  # item ids are never negative
                col = reader._collection(name)
                default = (col.default.items, col.default.scores) if col.default is not None else None
                draft.add_ranked(
                    name,
                    keys,
                    items,
                    scores,
                    lengths=lengths,
                    default=default,
                    fallbacks=spec.fallbacks,
                    serve_to_all=spec.serve_to_all,
                )
        return draft.version_id

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
        from sharedrec.format.schema import validate_metadata
        from sharedrec.manage.gc import write_lease
        from sharedrec.write.distributed import PublishHandle, _check_partitions, group_metadata, now

        _check_partitions(partitions)
        if not isinstance(lease_ttl, int | float) or isinstance(lease_ttl, bool) or not lease_ttl > 0:
            raise InvalidInput(f"lease_ttl must be positive seconds; got {lease_ttl!r}")
        if not isinstance(chunk_bytes, int) or not 1024 <= chunk_bytes <= 1 << 30:
            raise InvalidInput(f"chunk_bytes must be an int from 1 KiB to 1 GiB; got {chunk_bytes!r}")
        vid = validate_version_id(version_id) if version_id is not None else new_version_id()
        metadata = validate_metadata(metadata)
        options = validate_metadata(self._storage_options) if self._storage_options else None
        _, raw = self._read_pointer(ref)
        directory = f"{VERSIONS}/{vid}"
        if self._backend.exists(directory):
            raise InvalidInput(f"version {vid!r} already exists in {self.location}")
        handle = PublishHandle(
            location=self.location,
            storage_options=options,
            version_id=vid,
            partitions=partitions,
            chunk_bytes=chunk_bytes,
            ref=ref,
            parent_pointer=raw.decode() if raw is not None else None,
            metadata=metadata,
            started_at=now(),
        )
        # Leased before the folder exists: a collector that sees the folder sees the lease.
        write_lease(self._backend, _publish_lease(vid), vid, [], float(lease_ttl))
        # The root group's metadata reserves the folder: workers check it is there.
        self._backend.write_atomic(f"{directory}/zarr.json", group_metadata({}, vid)["zarr.json"])
        return handle

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
        from sharedrec.format.schema import FileEntry
        from sharedrec.manage.gc import remove_lease
        from sharedrec.read.reader import Reader
        from sharedrec.write.distributed import (
            PublishHandle,
            collection_spec,
            group_metadata,
            resolve_receipts,
        )
        from sharedrec.write.draft import check_stored, judge, move_pointer
        from sharedrec.write.guards import DEFAULT_GUARDS, as_guard

        if not isinstance(handle, PublishHandle):
            raise InvalidInput(
                f"handle must be the PublishHandle of begin_publish(); got {type(handle).__name__}"
            )
        if handle.location != self.location:
            raise InvalidInput(
                f"the handle publishes to {handle.location}, not to this store ({self.location})"
            )
        vid = handle.version_id
        directory = f"{VERSIONS}/{vid}"
        if self._backend.exists(f"{directory}/{MANIFEST}"):
            raise PublishRejected(f"version {vid} is already committed")
        collections, dropped = resolve_receipts(handle, receipts)
        files = self._settle_partitions(directory, collections)
        for receipt in dropped:
            log.info("version %s: dropped attempt %s of %s", vid, receipt.attempt, receipt.collection)
        for path, data in group_metadata(
            {name: parts[0].kind for name, parts in collections.items()}, vid
        ).items():
            self._backend.write_atomic(f"{directory}/{path}", data)
            files[path] = FileEntry(size=len(data), crc32=zlib.crc32(data))
        manifest = Manifest(
            id=vid,
            parent=None,
            created_at=datetime.now(UTC),
            metadata=handle.metadata,
            collections={name: collection_spec(parts) for name, parts in collections.items()},
            files=dict(sorted(files.items())),
        )
        raw = handle.parent_pointer.encode() if handle.parent_pointer is not None else None
        parent = Pointer.loads(raw, f"the pointer read by begin_publish ({handle.ref})") if raw else None
        manifest = manifest.replace(parent=parent.version if parent else None)
        checks = {}
        chosen = [as_guard(guard) for guard in (DEFAULT_GUARDS if guards is None else guards)]
        if chosen:
            view = Manifest.loads(manifest.dumps(), f"{self.location}/{directory}/{MANIFEST}")
            new = Reader(self.open_version(vid, "lazy", manifest=view))
            live = None
            if parent is not None:
                try:
                    live = Reader(self.open_version(parent.version, "lazy"))
                except SharedrecError as exc:
                    log.warning("guards cannot read the live version %s (%s)", parent.version, exc)
            checks = judge(chosen, force, vid, parent, new, live)
        manifest = manifest.replace(checks=checks)
        check_stored(self._backend, directory, manifest)
        self._backend.write_atomic(f"{directory}/{MANIFEST}", manifest.dumps())
        try:
            if make_current:
                move_pointer(self._backend, ref_path(handle.ref), manifest, parent, raw)
        finally:
            # Committed: the lease has done its work. (A commit that failed earlier keeps it,
            # so that the publish can still be committed or aborted.)
            remove_lease(self._backend, _publish_lease(vid))
        return vid

    def abort_publish(self, handle: PublishHandle) -> None:
        """Remove what the tasks of an uncommitted publish wrote (on the driver).

        Raises:
            PublishRejected: The version was already committed.
        """
        from sharedrec.manage.gc import remove_lease

        directory = f"{VERSIONS}/{handle.version_id}"
        if self._backend.exists(f"{directory}/{MANIFEST}"):
            raise PublishRejected(f"version {handle.version_id} is committed; it is not aborted")
        self._backend.remove_tree(directory)
        remove_lease(self._backend, _publish_lease(handle.version_id))

    def _settle_partitions(self, directory: str, collections: dict[str, list[Any]]) -> dict[str, Any]:
        """Check the kept partitions' files, delete every other attempt; the kept files."""
        from sharedrec.format.schema import FileEntry

        present = dict(self._backend.walk_files(directory))
        files: dict[str, FileEntry] = {}
        kept: set[str] = set()
        for name, parts in collections.items():
            for receipt in parts:
                if receipt.path is None:
                    continue
                kept.add(f"{name}/{receipt.path}")
                for path, entry in receipt.files.items():
                    full = f"{name}/{receipt.path}/{path}"
                    if present.get(full) != entry.size:
                        found = present.get(full)
                        raise CorruptVersion(
                            f"{self.location}/{directory}/{full} "
                            + ("is missing" if found is None else f"has {found} bytes, not {entry.size}")
                            + f": partition {receipt.partition} of {name!r} (attempt {receipt.attempt}) is "
                            "damaged or was removed; re-run its task and commit again, or abort"
                        )
                    files[full] = entry
        stale: set[str] = set()
        for path in present:
            parts = path.split("/")
            if len(parts) < 3 or parts[0].startswith("."):
                continue  # the root's and the collections' zarr.json, temporary files
            if parts[0] not in collections:
                raise InvalidInput(
                    f"{self.location}/{directory}/{parts[0]}/ holds partitions written for collection "
                    f"{parts[0]!r}, but no receipt names it: pass its receipts too, or abort the publish"
                )
            folder = f"{parts[0]}/{parts[1]}"
            if folder not in kept:
                stale.add(folder)
        for folder in sorted(stale):
            log.info("removing %s/%s: an attempt no receipt kept", directory, folder)
            self._backend.remove_tree(f"{directory}/{folder}")
        return files

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
        from sharedrec.read.leases import LeaseKeeper, default_reader_id
        from sharedrec.read.reader import Reader

        if refresh_interval is not None and refresh_interval <= 0:
            raise InvalidInput(f"refresh_interval must be positive seconds or None; got {refresh_interval!r}")
        ref = ref or os.environ.get("SHAREDREC_REF") or "current"
        raw = None
        pointer = None
        target = version
        if target is None:
            pointer, raw = self._read_pointer(ref)
            if pointer is None:
                raise self._nothing_live(ref)
            target = pointer.version
        keeper = None
        if lease:
            folder = lease_dir if lease_dir is not None else os.environ.get("SHAREDREC_LEASE_DIR")
            if folder:
                from sharedrec.backends.posix import PosixBackend

                try:
                    keeper_backend: Backend = PosixBackend(folder, create=True)
                except OSError as exc:
                    raise SharedrecError(
                        f"cannot write reader lease in {folder} ({exc.strerror or exc}): give a "
                        "writable lease_dir, or lease=False to read without one (garbage collection "
                        "then cannot see this reader)"
                    ) from None
                keeper = LeaseKeeper(keeper_backend, "", reader_id or default_reader_id(), lease_ttl)
            else:
                keeper = LeaseKeeper(self._backend, LEASES, reader_id or default_reader_id(), lease_ttl)
            # Warming from the first lease on, so that `sharedrec ready` never sees this reader
            # ready before its prefetch has started.
            keeper.warming = bool(prefetch)
            # Lease the version before mapping any of it: garbage collection may delete (or
            # condemn) a version no lease names, so the lease must come first.
            keeper.write(target, [])
        try:
            if pointer is None:
                opened = self.open_version(target, verify)
            else:
                try:
                    opened = self.open_version(pointer.version, verify, manifest=pointer.manifest)
                except VersionNotFound as exc:
                    raise VersionNotFound(
                        f"{self.location}/{ref_path(ref)} names version {pointer.version}, but {exc}; "
                        "point CURRENT at a good version with store.set_current() or store.rollback()"
                    ) from None
        except BaseException:
            if keeper is not None:
                keeper.remove()
            raise
        follower = None
        if version is None and not pin:
            follower = _Follower(self, refresh_interval, verify, on_refresh_error, raw, ref_path(ref))
        reader = Reader(opened, refresher=follower, lease=keeper)
        if prefetch:
            try:
                reader.prefetch(None if prefetch is True else list(prefetch))
            except BaseException:
                reader.close()  # an unknown collection: no reader, no lease left warming
                raise
        return reader

    def open_version(
        self,
        version_id: str,
        verify: VerifyLevel = "sizes",
        *,
        manifest: Manifest | None = None,
        _below: tuple[str, ...] | None = None,
    ) -> OpenVersion:
        """Map a version for reading after checking it (``verify`` as in `reader()`).

        On S3 the files are fetched into the local cache on first use, where their size
        and checksum are checked; ``verify="full"`` fetches and checks all of them now.
        ``manifest`` is the version's manifest when the caller already has it (the copy
        in a pointer on object stores); else it is read.
        """
        from sharedrec.read.mmap import LocalFolder
        from sharedrec.read.reader import OpenVersion

        validate_version_id(version_id)
        directory = f"{VERSIONS}/{version_id}"
        root = self._backend.local_path(directory)
        if root is not None:
            self._refuse_outside(version_id, root)
        given = manifest is not None and manifest.id == version_id
        # A condemned version is never mapped: the caller's lease may have come after the
        # collector read the leases. Checked before the manifest is read, which the collector
        # deletes first. On object stores a manifest that came with the pointer skips the
        # check (no request added to opening): files there are copied, never mapped in place,
        # and a version deleted meanwhile shows as VersionGone, which a following reader
        # recovers from by re-reading the pointer.
        if (root is not None or not given) and version_condemned(self._backend, directory):
            raise VersionGone(
                f"version {version_id} in {self.location} is being deleted by garbage collection "
                f"({directory}/{GC_MARK} marks it); open the live version (store.current()) or another one"
            )
        if manifest is None or not given:
            manifest = self._manifest_view(version_id)
        below = _below or ()
        base = None
        if manifest.base is not None:  # a delta: open the versions it builds on first
            if manifest.base in below or manifest.base == version_id or len(below) >= MAX_CHAIN:
                raise CorruptVersion(
                    f"version {version_id} is a delta over {manifest.base}, which makes the chain "
                    f"of deltas {' -> '.join([*below, version_id, manifest.base])} loop or run too "
                    "long: republish the data in full"
                )
            try:
                base = self.open_version(manifest.base, verify, _below=(*below, version_id))
            except VersionNotFound as exc:
                raise CorruptVersion(
                    f"version {version_id} is a delta over version {manifest.base}, which is gone "
                    f"({exc}); roll back, or republish the data in full"
                ) from None
        if root is not None:
            raise_if_bad(check_version(self._backend, directory, manifest, verify), self.location)
            return OpenVersion(manifest, LocalFolder(root), root, base)
        from sharedrec.read.cache import CachedVersion

        source = CachedVersion(self._chunk_cache(), manifest, lambda rel: self._fetch(directory, rel))
        if verify == "full":
            for relpath in manifest.files:
                source.local_file(relpath)
        return OpenVersion(manifest, source, f"{self.location}/{directory}", base)

    def _refuse_outside(self, version_id: str, folder: str) -> None:
        """Raise unless a version folder resolves inside the store root (no link out of it)."""
        top = os.path.realpath(self._backend.local_path("") or self.location)
        real = os.path.realpath(folder)
        if os.path.commonpath([top, real]) != top:
            raise CorruptVersion(
                f"{folder} (version {version_id}) is a symbolic link to {real}, outside the store "
                f"root {top}: sharedrec never reads or deletes another location's files through a "
                "link; remove the link, and publish the version into this store instead"
            )

    def _chunk_cache(self) -> ChunkCache:
        return self._root.chunk_cache()

    def _read_file(self, path: str) -> bytes | None:
        return self._root.read_file(path)

    def _fetch(self, directory: str, relpath: str) -> bytes:
        return self._root.fetch(directory, relpath)

    def verify(self, version: str | None = None, *, progress: ProgressMode = None) -> VerifyReport:
        """Recompute the checksum of every file of a version (default: the live one).

        Returns:
            The report: files and bytes checked, and every problem found.

        Raises:
            CorruptVersion: Some file is missing or does not match the manifest; the message
                lists the problems.
        """
        version_id = version if version is not None else self._live_id()
        manifest = self._manifest_view(version_id)
        report = check_version(
            self._backend, f"{VERSIONS}/{version_id}", manifest, "full", reporter(progress)
        )
        raise_if_bad(report, self.location)
        return report

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

        if not dry_run and self._backend.local_path("") is None:
            from sharedrec.write.staging import sweep_staging

            sweep_staging(self._cache_dir, self.location)  # what killed publishers on this node left
        return collect(self, self._backend, keep, grace, dry_run)

    def diff(self, a: str, b: str, *, k: int = 10) -> VersionDiff:
        """What changed from version (or ref) ``a`` to ``b``, collection by collection.

        Keys added, removed and changed; for ranked collections the mean overlap@k of the
        changed lists and the median shift of the first score. Reads both versions' keys and
        lists in batches (a million keys take seconds).
        """
        from sharedrec.manage.diff import diff

        return diff(self, a, b, k)

    def leases(self) -> list[LeaseInfo]:
        """The fleet view: every reader's lease, which version it serves and how fresh it is.

        Each process (each reader object) holds a lease of its own; those of one pod share
        the reader id and come together, sorted by reader id.

        Leases kept outside the store (``lease_dir``) appear only if that folder is the
        store's ``leases/`` folder.
        """
        from sharedrec.read.leases import LeaseInfo, process_of, read_lease_files

        now = datetime.now(UTC)
        live = self.current()
        return sorted(
            (
                LeaseInfo(
                    reader_id=lease.reader_id,
                    host=lease.host,
                    pid=lease.pid,
                    process=process_of(name, lease),
                    version=lease.version,
                    versions=lease.versions,
                    heartbeat=lease.heartbeat,
                    expires_at=lease.expires_at,
                    live=lease.expires_at > now,
                    on_current=lease.version == live,
                    seconds_since_heartbeat=(now - lease.heartbeat).total_seconds(),
                )
                for name, lease in read_lease_files(self._backend, LEASES)[0]
            ),
            # A pod's processes share the reader id: sorting by it keeps them together.
            key=lambda info: (info.reader_id, info.host, info.pid, info.process),
        )

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
        version = self.current(ref)
        if version is None:
            raise VersionNotFound(f"ref {ref!r} of {self.location} names no version; publish to it first")
        self.set_current(version, ref=to)
        return version

    def manifest(self, version_id: str) -> Manifest:
        """The manifest of a committed version.

        Raises:
            VersionNotFound: No such version, or its publish never finished.
            CorruptVersion: Its manifest is truncated or invalid.
        """
        return self._manifest_view(version_id)

    def _manifest_view(self, version_id: str) -> Manifest:
        """The manifest parsed for reading, without pydantic (see `sharedrec.format.schema`)."""
        return self._root.manifest(version_id)

    def versions(self) -> list[VersionInfo]:
        """Committed versions, oldest first. Unfinished publishes are not listed."""
        live = self.current()
        found = []
        for name in self._backend.listdir(VERSIONS):
            if name.startswith("."):
                continue
            try:  # one read per version: a missing manifest is an unfinished publish
                manifest = self._manifest_view(name)
            except (VersionNotFound, CorruptVersion, InvalidInput):
                continue
            found.append(
                VersionInfo(
                    id=manifest.id,
                    created_at=manifest.created_at,
                    parent=manifest.parent,
                    metadata=dict(manifest.metadata),
                    collections={n: c.count for n, c in manifest.collections.items()},
                    size_bytes=manifest.data_bytes,
                    current=manifest.id == live,
                    base=manifest.base,
                )
            )
        return sorted(found, key=lambda info: (info.created_at, info.id))

    def set_current(self, version_id: str, *, ref: str = "current") -> None:
        """Make a committed version live (or the target of a named ref); readers follow it.

        Raises:
            VersionNotFound: The version does not exist or never finished publishing.
            ConcurrentPublishError: Another writer moved the pointer at the same moment.
        """
        manifest = self._manifest_view(version_id)
        try:
            pointer, raw = self._read_pointer(ref)
        except CorruptVersion as exc:  # a damaged pointer is what set_current() repairs
            log.warning("%s; replacing it (its history is lost)", exc)
            pointer, raw = None, self._read_file(ref_path(ref))
        if pointer and pointer.version == version_id:
            return
        history = [pointer.version, *pointer.previous] if pointer else []
        history = [v for v in history if v != version_id][:POINTER_HISTORY]
        self._swap(manifest, history, raw, ref)

    def rollback(self, *, ref: str = "current") -> str:
        """Make the previously live version live again (or a named ref's); returns its id.

        Each call steps one version further back through the versions that were live
        before, skipping any that no longer exist.

        Raises:
            VersionNotFound: There is no earlier version to go back to.
        """
        pointer, raw = self._read_pointer(ref)
        if pointer is None:
            raise VersionNotFound(f"nothing to roll back in {self.location}: no version is live")
        for position, candidate in enumerate(pointer.previous):
            try:
                manifest = self._manifest_view(candidate)
            except (VersionNotFound, CorruptVersion):
                continue
            rest = pointer.previous[position + 1 :]
            try:
                self._swap(manifest, rest, raw, ref)
            except VersionGone as exc:  # garbage collection took it meanwhile: go further back
                log.info("rollback skips %s: %s", candidate, exc)
                continue
            return candidate
        raise VersionNotFound(
            f"no earlier version of {self.location} to roll back to from {pointer.version}; "
            "store.versions() lists what exists and store.set_current(id) picks one"
        )

    # -- internals -------------------------------------------------------------------------

    def _read_pointer(self, ref: str = "current") -> tuple[Pointer | None, bytes | None]:
        return self._root.read_pointer(ref)

    def _live_id(self, ref: str = "current") -> str:
        return self._root.live_id(ref)

    def _nothing_live(self, ref: str) -> VersionNotFound:
        return self._root.nothing_live(ref)

    def _swap(
        self, manifest: Manifest, previous: list[str], expected: bytes | None, ref: str = "current"
    ) -> None:
        """Move a pointer to ``manifest``'s version if it still holds ``expected`` (compare-and-swap)."""
        from sharedrec.manage.gc import move_guarded

        path = ref_path(ref)
        pointer = pointer_for(self._backend, manifest.id, previous, manifest)
        try:
            move_guarded(self._backend, path, pointer.dumps(), expected, manifest.id, manifest.base)
        except PointerMoved:
            raise ConcurrentPublishError(
                f"{path} of {self.location} changed while moving it to {pointer.version}; "
                "check store.refs() and retry"
            ) from None

    def _not_found(self, version_id: str) -> str:
        return self._root.not_found(version_id)


GROUP_METADATA = "zarr.json"
"""The root group's metadata: the first file of every version folder, deleted by garbage
collection right after the manifest."""

SETTLE_SECONDS = 30.0
"""How long a reader or a pointer mover waits for a garbage collector that marked a version
to decide on it (it keeps the version when it then sees a lease or pointer naming it)."""


def version_condemned(backend: Backend, directory: str, wait: float = SETTLE_SECONDS) -> bool:
    """Whether garbage collection is deleting (or deleted) the version in ``directory``.

    A version without the collector's mark is not condemned. A marked one may yet be kept:
    the collector marks a version, then reads pointers and leases again, and removes the
    mark if one names it; so wait up to ``wait`` seconds for the mark to go, then the version
    is condemned if its root group's ``zarr.json`` went with it (a committed version and an
    unfinished one alike have it). The order matters: the collector deletes the manifest and
    that file before the rest of the folder, mark included, so the mark is checked first.
    """
    mark = f"{directory}/{GC_MARK}"
    if backend.size(mark) is None:
        return False
    deadline = time.monotonic() + wait
    delay = 0.002
    while backend.size(mark) is not None:
        if time.monotonic() >= deadline:
            return True
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    return backend.size(f"{directory}/{GROUP_METADATA}") is None


def _publish_lease(version_id: str) -> str:
    """The name of the lease that keeps garbage collection off a publish from many tasks."""
    return f"publish-{version_id}"


def _now() -> datetime:
    return datetime.now(UTC)


def pointer_for(backend: Backend, version: str, previous: list[str], manifest: Manifest) -> Pointer:
    """The pointer naming ``version``: on object stores it carries a copy of the manifest.

    A reader then opens the version with one request (the pointer's GET) instead of two.
    On a POSIX path the pointer stays small: readers there poll it by reading it whole.
    """
    inline = manifest if backend.local_path("") is None else None
    return Pointer(version=version, previous=previous, updated_at=_now(), manifest=inline)


class _Follower:
    """Polls ``CURRENT`` for a reader that follows the live version."""

    def __init__(
        self,
        store: RecommendationStore,
        interval: float | None,
        verify: VerifyLevel,
        on_error: Callable[[Exception], None] | None,
        seen: bytes | None,
        path: str = CURRENT,
    ) -> None:
        self.interval = interval
        self._path = path
        self._store = store
        self._verify = verify
        self._on_error = on_error
        self._next = time.monotonic() + (interval or 0.0)
        self._seen = seen  # the pointer bytes the reader's version came from
        self._token: object = None
        self._pending: bytes | None = None
        self._pending_manifest: Manifest | None = None
        self._failed: bytes | None = None

    def due(self) -> bool:
        if self.interval is None:
            return False
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.interval
        return True

    def poll(self, force: bool, current: str) -> str | None:
        try:
            # On S3 a conditional GET: an unchanged pointer costs a 304, no body.
            changed = self._store._backend.read_if_changed(self._path, None if force else self._token)
        except StoreNotFound:  # the bucket or mount is missing, not the file
            raise
        except FileNotFoundError:
            raise VersionNotFound(f"{self._store.location}/{self._path} disappeared") from None
        if changed is None:
            return None
        raw, self._token = changed
        if raw == self._seen or (raw == self._failed and not force):
            return None
        pointer = Pointer.loads(raw, f"{self._store.location}/{self._path}")
        self._pending = raw
        self._pending_manifest = pointer.manifest
        if pointer.version == current:
            self._seen = raw
            return None
        return pointer.version

    def open(self, version_id: str) -> OpenVersion:
        # A switch happens off the hot path: check at least every file's size first.
        verify: VerifyLevel = "full" if self._verify == "full" else "sizes"
        opened = self._store.open_version(version_id, verify, manifest=self._pending_manifest)
        self._seen = self._pending
        return opened

    def failed(self, exc: Exception) -> None:
        self._failed = self._pending
        log.warning("reader stays on its version: refresh from %s failed: %s", self._store.location, exc)
        if self._on_error is not None:
            try:
                self._on_error(exc)
            except Exception:
                log.exception("on_refresh_error callback raised")
