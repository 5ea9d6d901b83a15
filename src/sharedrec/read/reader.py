"""The hot path: lookups served from memory-mapped chunk files of one version.

Opening a reader reads ``CURRENT`` and ``manifest.json`` and nothing else; chunk files are
mapped the first time a lookup needs them. A lookup is a binary search over the mapped key
array and a slice of the mapped row: no zarr-python, no copies for single keys.
"""

from __future__ import annotations

import os
import threading
import time
import types
import weakref
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from sharedrec._log import log
from sharedrec.errors import InvalidInput, KeyNotFound, SharedrecError, UnknownCollection, VersionGone
from sharedrec.format.keys import INT64_MAX, INT64_MIN, is_bool
from sharedrec.read.collections import Chained, Partitioned, RankedList, Whole, _Found, check_k
from sharedrec.read.follow import Background, WeakMethod, after_fork, forget_after_fork, shutdown
from sharedrec.read.ragged import batch
from sharedrec.read.version import OpenVersion

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray

    from sharedrec._progress import ProgressMode
    from sharedrec.format.schema import CollectionSpec, Manifest
    from sharedrec.read.collections import Collection
    from sharedrec.read.follow import Refresher
    from sharedrec.read.leases import LeaseKeeper
    from sharedrec.read.stats import ReaderStats

__all__ = ["CollectionView", "OpenVersion", "RankedList", "Reader"]


class Reader:
    """Serves lookups from the live version of a store, switching when ``CURRENT`` moves.

    Create one with `reader()`; it is safe to share between threads.
    A switch is atomic: each call runs entirely on one version, calls in flight finish on
    the version they started on, and new calls use the new one. Returned arrays of
    single-key lookups are read-only views into the mapped files.
    """

    def __init__(
        self,
        opened: OpenVersion,
        *,
        refresher: Refresher | None = None,
        lease: LeaseKeeper | None = None,
    ) -> None:
        self._v = opened
        self._closed = False
        self._lookups = 0
        self._misses = 0
        self._fallbacks = 0
        self._switches = 0
        self._failures = 0
        self._last_error: str | None = None
        self._refresher = refresher
        self._lease = lease
        self._lock = threading.Lock()
        self._retired: list[tuple[str, float]] = []  # versions left, leased until the deadline
        self._stop = threading.Event()
        self._thread: Background | None = None
        self._swept = False
        self._warming = 0  # prefetch threads running
        if lease is not None and lease.version != opened.id:  # store.reader() leased it already
            lease.write(opened.id, [])
        self._start_thread()
        self._finalizer = weakref.finalize(self, shutdown, self._stop, lease)
        after_fork(self._after_fork)

    def _start_thread(self, first: float | None = None) -> None:
        """Start the background thread if there is anything to poll or renew.

        ``first``: seconds before its first round (default: one period).
        """
        refresher, lease = self._refresher, self._lease
        interval = refresher.interval if refresher else None
        if interval or lease is not None:
            beat = lease.ttl / 3 if lease is not None else None
            period = min(p for p in (interval, beat) if p)
            self._thread = Background(
                WeakMethod(self._tick), self._stop, period, period if first is None else first
            )

    def _after_fork(self) -> None:
        """In a forked child: own locks, a lease file of its own, a live background thread.

        Threads do not survive ``fork()``, and a lock a parent's thread held stays held in
        the child: without this, the child's reader would never move off its version and
        never renew a lease, and its ``close()`` would remove the parent's lease.
        """
        self._lock = threading.Lock()
        self._warming = 0  # the parent's prefetch threads did not come along
        if self._closed:
            return
        self._finalizer.detach()  # it would stop the parent's thread and remove its lease
        self._stop = threading.Event()
        self._thread = None
        if self._lease is not None:
            self._lease.after_fork()
        self._finalizer = weakref.finalize(self, shutdown, self._stop, self._lease)
        # The first round at once: it writes the child's own lease (no I/O in the fork hook).
        self._start_thread(first=0.0)

    # -- what is open ----------------------------------------------------------------------

    @property
    def version(self) -> str:
        """The id of the version this reader serves now."""
        return self._v.manifest.id

    @property
    def manifest(self) -> Manifest:
        """The manifest of the version this reader serves now."""
        return self._v.manifest

    @property
    def metadata(self) -> Mapping[str, Any]:
        """The metadata given at publish time."""
        return self._v.manifest.metadata

    @property
    def collections(self) -> Mapping[str, CollectionSpec]:
        """The collections of the version, by name."""
        return self._v.manifest.collections

    @property
    def ready(self) -> bool:
        """True while a verified version is open, the reader is not closed, and no
        `prefetch()` is still warming the cache (a readiness probe's answer)."""
        return not self._closed and self._warming == 0

    @property
    def pinned(self) -> bool:
        """True when this reader never moves to another version."""
        return self._refresher is None

    def stats(self) -> ReaderStats:
        """A snapshot of the reader's counters."""
        from sharedrec.read.stats import ReaderStats  # its module loads at the first call

        manifest = self._v.manifest
        return ReaderStats(
            version=manifest.id,
            version_age_seconds=(datetime.now(UTC) - manifest.created_at).total_seconds(),
            lookups=self._lookups,
            misses=self._misses,
            fallbacks_served=self._fallbacks,
            switches=self._switches,
            refresh_failures=self._failures,
            last_error=self._last_error,
        )

    # -- ranked lists ----------------------------------------------------------------------

    def get(
        self,
        collection: str,
        key: int | str,
        k: int | None = None,
        *,
        fallback_keys: Mapping[str, int | str] | None = None,
    ) -> RankedList:
        """The ranked list of ``key``, best first, at most ``k`` long.

        When the key is absent, the collection's fallbacks are tried in order (each looked
        up with ``fallback_keys[name]`` if given, else with ``key``; a fallback published
        with ``serve_to_all=True`` serves its one list to every key), then its default list.

        Args:
            collection: A ranked collection of the version.
            key: An int (int64 collections) or str (str collections).
            k: Return at most this many items (default: the whole list).
            fallback_keys: Keys for fallback collections, e.g. ``{"by_country": "DE"}``.

        Returns:
            A `RankedList` whose ``items`` and ``scores`` are views of mapped memory
            and whose ``source`` says which collection served it.

        Raises:
            KeyNotFound: A ``KeyError``: the key is absent and nothing could stand in.
            UnknownCollection: The version has no ranked collection of that name.
            CorruptVersion: A chunk file is missing or has the wrong size.
        """
        try:
            v = self._v
            self._lookups += 1
            col = v.ranked.get(collection)
            stored = col  # where an int key is searched: a whole collection, or a part of one
            if type(col) is not Whole:
                if type(col) is Chained:  # a delta: a key no delta touched is in the full version
                    chain = col.chain
                    if type(key) is int and not chain.str_keys and key not in chain.lookup:
                        stored = chain.root
                elif type(col) is Partitioned and type(key) is int:
                    index = col.index
                    if index.spread:  # the key's partition by fibonacci64, inlined
                        stored = col.parts[(key * index.spread >> 64) % index.n_parts]
                    elif index.key_type == "int64":  # split by splitmix64, before fibonacci64
                        stored = col.parts[index.partition(key)]
            if type(stored) is Whole:  # inlined for speed: this is the hot path
                full = stored.full
                if full is not None and type(key) is int and (k is None or (type(k) is int and k >= 0)):
                    # Every key and row mapped and checked: one search, whole rows, no numpy scalar
                    # compared (numpy would compare a key outside int64 as a float).
                    search, ints, count, items, scores = full
                    if INT64_MIN <= key <= INT64_MAX:
                        at = int(search(key))  # a Python int indexes faster than numpy's
                        if at < count and ints[at] == key:  # exact: never another key's row
                            listed: RankedList = _Found()  # a RankedList, without the call of its __init__
                            if k is None:
                                listed.items, listed.scores = items[at], scores[at]
                            else:
                                listed.items, listed.scores = items[at, :k], scores[at, :k]
                            listed.source = collection
                            return listed
                    assert col is not None  # ``stored`` is ``col`` or a part of it
                    return self._missing(v, col, key, k, fallback_keys)
            if col is None:
                raise self._unknown(v, collection, "ranked")
            # Not every chunk mapped yet, lists of varying length, another key type or k, or
            # a delta's own key: the stored collection's lookup (None: an empty partition).
            found = None if stored is None else stored.listed(key, k)
            if found is None:
                return self._missing(v, col, key, k, fallback_keys)
            return found
        except VersionGone:
            if not self._recover():
                raise
            return self.get(collection, key, k, fallback_keys=fallback_keys)

    def get_many(
        self, collection: str, keys: ArrayLike, k: int | None = None
    ) -> tuple[NDArray[Any], NDArray[Any], NDArray[np.bool_]]:
        """The lists of many keys at once, as padded 2-D arrays.

        Args:
            collection: A ranked collection of the version.
            keys: A 1-D sequence of keys.
            k: At most this many columns (default, and at most: the collection's longest list).

        Returns:
            ``(items, scores, found)``: ``items`` and ``scores`` have one row per key, padded
            with -1 and NaN past each list's end; ``found[i]`` is False for a key that is not
            in the collection, whose row holds the default list if there is one, else padding.
            With ``k``, they are ``min(k, longest list of the collection)`` columns wide.
            Without it, a collection stored ragged gives as many columns as the longest list
            among the keys asked for (and the default list, when a key is missing), so that
            one long list elsewhere does not widen every batch; a padded one gives its width.
        """
        try:
            v = self._v
            col = v.ranked.get(collection)
            if col is None:
                raise self._unknown(v, collection, "ranked")
            width = col.spec.width if k is None else min(check_k(k), col.spec.width)
            (items, scores), found = col.many(keys, width) if k is not None else batch(col, keys, width)
            return self._count_batch(col, items, scores, found)
        except VersionGone:
            if not self._recover():
                raise
            return self.get_many(collection, keys, k)

    def _count_batch(
        self,
        col: Collection,
        items: NDArray[Any],
        scores: NDArray[Any],
        found: NDArray[np.bool_],
    ) -> tuple[NDArray[Any], NDArray[Any], NDArray[np.bool_]]:
        """Count a batch and put the default list in the rows of missing keys."""
        missing = len(found) - int(np.count_nonzero(found))
        self._lookups += len(found)
        self._misses += missing
        if col.default is not None and missing:
            miss = ~found
            n = min(items.shape[1], len(col.default))
            items[miss, :n] = col.default.items[:n]
            scores[miss, :n] = col.default.scores[:n]
            self._fallbacks += missing
        return items, scores, found

    # -- vectors ---------------------------------------------------------------------------

    def vector(self, collection: str, key: int | str) -> NDArray[Any]:
        """The vector of ``key`` as a read-only view.

        Raises:
            KeyNotFound: A ``KeyError``: the key is absent.
            UnknownCollection: The version has no vectors collection of that name.
        """
        try:
            v = self._v
            self._lookups += 1
            col = v.vectors.get(collection)
            if col is None:
                raise self._unknown(v, collection, "vectors")
            target, row = col.locate(key)
            if row < 0:
                self._misses += 1
                raise KeyNotFound(f"key {key!r} is not in collection {collection!r} of version {v.id}")
            return target.vector(row)
        except VersionGone:
            if not self._recover():
                raise
            return self.vector(collection, key)

    def vectors(self, collection: str, keys: ArrayLike) -> tuple[NDArray[Any], NDArray[np.bool_]]:
        """The vectors of many keys: ``(array of shape (len(keys), dim), found)``.

        Rows of keys that are not in the collection are NaN.
        """
        try:
            v = self._v
            col = v.vectors.get(collection)
            if col is None:
                raise self._unknown(v, collection, "vectors")
            (out,), found = col.many(keys, col.spec.width)
            self._lookups += len(found)
            self._misses += len(found) - int(np.count_nonzero(found))
            return out, found
        except VersionGone:
            if not self._recover():
                raise
            return self.vectors(collection, keys)

    def prefetch(
        self, collections: Sequence[str] | None = None, *, wait: bool = False, progress: ProgressMode = None
    ) -> threading.Thread:
        """Warm the cache (S3) or the page cache (local disk, EFS/NFS) with whole collections.

        Runs in a background thread (joined first when ``wait``); lookups are served
        meanwhile. Progress bars show when ``progress`` (default: stderr is a terminal).
        While it runs, the reader's lease says it is warming: ``sharedrec ready`` reports
        the pod not ready until every byte has been read.
        """
        from sharedrec._progress import reporter

        v = self._v
        names = list(v.manifest.collections) if collections is None else list(collections)
        for name in names:
            if name not in v.manifest.collections:
                raise UnknownCollection(
                    f"version {v.id} has no collection {name!r}; it has {sorted(v.manifest.collections)}"
                )
        files = []
        version: OpenVersion | None = v
        while version is not None:  # a delta version reads the versions below it too
            source = version.source
            files += [
                (source, path, entry.size)
                for path, entry in version.manifest.files.items()
                if path.split("/", 1)[0] in names
            ]
            version = version.base
        bars = reporter(progress)

        def warm() -> None:
            # Read every byte rather than posix_fadvise(WILLNEED): the kernel caps that hint at
            # the readahead window (128 KiB on NFS since Linux 5.4 and on FUSE, a few MiB on
            # local disk) and does not wait for it, so a 4 MiB chunk on EFS stayed mostly cold
            # after a prefetch that had "finished".
            block = bytearray(1 << 20)
            with bars.task(f"prefetch {', '.join(names)}", sum(size for _, _, size in files)) as task:
                for source, path, size in files:
                    local = source.local_file(path)
                    fd = os.open(local, os.O_RDONLY)
                    try:
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
                        while os.readv(fd, [block]):
                            pass
                    finally:
                        os.close(fd)
                    task.advance(size)

        def run() -> None:
            try:
                warm()
            except Exception:
                log.exception("prefetch of %s failed", names)
            finally:
                self._set_warming(-1)

        self._set_warming(+1)
        thread = threading.Thread(target=run, name="sharedrec-prefetch", daemon=True)
        thread.start()
        if wait:
            thread.join()
        return thread

    def _set_warming(self, change: int) -> None:
        """Count a prefetch in or out, and say in the lease whether one still runs."""
        with self._lock:
            self._warming += change
            lease = self._lease
            if lease is None or self._closed or lease.warming == (self._warming > 0):
                return
            lease.warming = self._warming > 0
            try:
                lease.write(self._v.id, self._held())
            except SharedrecError as exc:
                log.warning("%s", exc)

    def _recover(self) -> bool:
        """After `VersionGone`: move to the live version if this reader follows it."""
        if self._refresher is None:
            return False
        gone = self._v.id
        late = self._lease.expired_for() if self._lease is not None else None
        try:
            switched = self._refresh(force=True)
        except SharedrecError:
            return False
        if switched or self._v.id != gone:  # another thread may have switched meanwhile
            if late is not None:
                why = f"while this reader was paused (lease expired {late:.0f} s ago)"
            elif self._lease is None:
                why = "while this reader used it (it holds no lease)"
            else:
                why = "while this reader used it (its lease had not expired: deleted by hand?)"
            log.warning("version %s was garbage-collected %s: switched to %s", gone, why, self._v.id)
            return True
        return False

    # -- keys: what a collection serves ---------------------------------------------------

    def keys(self, collection: str) -> NDArray[np.int64] | list[str]:
        """Every key ``collection`` serves in this version: int ids as an int64 array,
        string ids as a list (``default`` and ``serve_to_all`` answers are not keys).

        Raises:
            UnknownCollection: The version has no such collection.
        """
        return self._find(collection).keys()

    def key_at(self, collection: str, position: int) -> int | str:
        """``keys(collection)[position]``, without building the whole key list when it can."""
        return self._find(collection).key_at(position)

    def count(self, collection: str) -> int:
        """How many keys ``collection`` serves (``len(keys(collection))``)."""
        return self._find(collection).count()

    def contains(self, collection: str, key: int | str) -> bool:
        """Whether ``collection`` has a row of its own for ``key`` (no fallback counted).

        Raises:
            InvalidInput: ``key`` is not of the collection's key type.
        """
        return self._find(collection).contains(key)

    def default(self, collection: str) -> RankedList | None:
        """The list served to keys ``collection`` has no row for, or None."""
        return self._find(collection).default

    # -- a collection as a mapping ---------------------------------------------------------

    def __getitem__(self, collection: str) -> CollectionView:
        """``reader["home"]``: the collection as a read-only mapping of its keys
        (`CollectionView`): ``[key]``, ``in``, ``len()`` and iteration over its keys.

        Raises:
            UnknownCollection: The version served now has no such collection.
        """
        self._find(collection)
        return CollectionView(self, collection)

    def __contains__(self, collection: object) -> bool:
        """``"home" in reader``: whether the version served now has that collection."""
        return collection in self._v.manifest.collections

    def __iter__(self) -> Iterator[str]:
        """The names of the collections of the version served now."""
        return iter(list(self._v.manifest.collections))

    def _find(self, collection: str) -> Collection:
        v = self._v
        col = v.ranked.get(collection) or v.vectors.get(collection)
        if col is None:
            raise self._unknown(v, collection, "ranked or vectors")
        return col

    # -- switching versions ----------------------------------------------------------------

    def refresh(self) -> bool:
        """Check ``CURRENT`` now and switch if it moved; returns whether the reader switched.

        A pinned reader never switches. When the new version cannot be opened or does not
        verify, the reader keeps serving the old one, counts the failure, calls the
        ``on_refresh_error`` callback, and this method raises the error.

        Raises:
            CorruptVersion: The new version (or ``CURRENT``) is damaged.
            VersionNotFound: ``CURRENT`` names a version that does not exist.
        """
        return self._refresh(force=True)

    def _refresh(self, force: bool) -> bool:
        refresher = self._refresher
        if refresher is None or self._closed:
            return False
        with self._lock:
            try:
                target = refresher.poll(force, self._v.id)
                if target is None or target == self._v.id:
                    return False
                if self._lease is not None:  # lease the new version before mapping it
                    self._lease.write(self._v.id, [target, *self._held()])
                opened = refresher.open(target)
            except Exception as exc:
                self._failures += 1
                self._last_error = str(exc)
                refresher.failed(exc)
                if force:
                    raise
                return False
            old, self._v = self._v, opened
            self._switches += 1
            if self._lease is not None:
                self._retired.append((old.id, time.monotonic() + self._lease.ttl))
                self._lease.write(opened.id, self._held())
            log.info("reader switched from version %s to %s", old.id, opened.id)
            return True

    def _held(self) -> list[str]:
        now = time.monotonic()
        self._retired = [(vid, until) for vid, until in self._retired if until > now]
        return [vid for vid, _ in self._retired]

    def _tick(self) -> None:
        """One round of the background thread: poll ``CURRENT``, then renew the lease."""
        if self._refresher is not None and self._refresher.due():
            self._refresh(force=False)
        if self._lease is not None and not self._closed:
            try:
                with self._lock:
                    held = self._held()
                    if self._lease.due(self._v.id, held):
                        self._lease.write(self._v.id, held)
            except SharedrecError as exc:
                log.warning("%s", exc)
            if not self._swept:  # once, off the open path: files of killed processes of this id
                self._swept = True
                self._lease.sweep()

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop refreshing, remove the lease, and drop this reader's mappings.

        Views already returned stay valid on local disks; on a network file system they
        are safe until the version is garbage-collected.
        """
        if self._closed:
            return
        self._closed = True
        forget_after_fork(self)
        self._v = self._v.emptied()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._finalizer()

    def __enter__(self) -> Reader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        refresher = self._refresher
        state = "closed" if self._closed else (f"following {refresher.pointer}" if refresher else "pinned")
        collections = sorted(self._v.manifest.collections)
        return f"Reader(version={self.version!r}, {state}, collections={collections})"

    # -- misses and errors -----------------------------------------------------------------

    def _missing(
        self,
        v: OpenVersion,
        col: Collection,
        key: object,
        k: int | None,
        fallback_keys: Mapping[str, int | str] | None,
    ) -> RankedList:
        self._misses += 1
        for name in col.spec.fallbacks:
            fallback = v.ranked[name]
            fallback_key = fallback_keys.get(name, key) if fallback_keys else key
            try:
                holder, row = fallback.locate(fallback_key)
            except InvalidInput:  # a key of the other type: only its default or list for all
                if is_bool(fallback_key):  # a key for no collection at all
                    raise
                row = -1
            if row < 0 and fallback.single:
                holder, row = fallback.at(0)
            if row >= 0:
                self._fallbacks += 1
                return holder.ranked(row, k)
            if fallback.default is not None:
                self._fallbacks += 1
                return fallback.default.head(k)
        if col.default is not None:
            self._fallbacks += 1
            return col.default.head(k)
        raise KeyNotFound(
            f"key {key!r} is not in collection {col.name!r} of version {v.id} (publish it with "
            "default=(items, scores) or fallbacks=[...] to serve a list for unknown keys)"
        )

    def _unknown(self, v: OpenVersion, collection: str, kind: str) -> UnknownCollection:
        if self._closed:
            return UnknownCollection("this reader is closed")
        collections = v.manifest.collections
        have = sorted(name for name, spec in collections.items() if spec.kind == kind)
        other = collections.get(collection)
        if other is not None:
            return UnknownCollection(
                f"collection {collection!r} of version {v.id} holds {other.kind}, "
                f"not {kind}; {kind} collections: {have}"
            )
        return UnknownCollection(f"version {v.id} has no {kind} collection {collection!r}; it has {have}")


class CollectionView(Mapping[Any, Any]):
    """One collection of a `Reader` as a read-only mapping, from ``reader["home"]``.

    ``view[key]`` is ``reader.get("home", key)`` for a ranked collection (a `RankedList`,
    fallbacks and the default list included, so it may answer a key that ``key in view``
    says it does not hold) and ``reader.vector("home", key)`` for vectors; ``key in view``
    is `Reader.contains`, ``len(view)`` is `Reader.count`, and iterating yields the keys as
    Python ``int`` or ``str``. ``view.get(key)`` returns None for a key nothing answers.
    The view follows the reader: after a switch it answers from the new version. For the
    fastest lookups call ``reader.get`` directly.
    """

    __slots__ = ("name", "reader")

    def __init__(self, reader: Reader, name: str) -> None:
        self.reader = reader
        self.name = name

    def __getitem__(self, key: int | str) -> Any:
        spec = self.reader.collections.get(self.name)
        if spec is not None and spec.kind == "vectors":
            return self.reader.vector(self.name, key)
        return self.reader.get(self.name, key)

    def __contains__(self, key: object) -> bool:
        return self.reader.contains(self.name, key)  # type: ignore[arg-type]  # checked there

    def __len__(self) -> int:
        return self.reader.count(self.name)

    def __iter__(self) -> Iterator[int | str]:
        keys = self.reader.keys(self.name)
        if isinstance(keys, list):
            return iter(keys)
        # Python ints a block at a time: a list of every key of a large collection is big.
        return (key for start in range(0, len(keys), 65536) for key in keys[start : start + 65536].tolist())

    def __repr__(self) -> str:
        spec = self.reader.collections.get(self.name)
        what = f"{spec.kind}, {spec.count:,} {spec.key_type} keys" if spec is not None else "absent"
        return f"CollectionView({self.name!r}, {what}, version={self.reader.version!r})"
