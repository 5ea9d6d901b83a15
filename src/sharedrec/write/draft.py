"""Drafts: writing a new version and committing it atomically.

A `Draft` writes each collection as soon as it is added, straight into
``versions/<id>/``. Nothing there is visible until the draft commits: the files are
fsynced, ``manifest.json`` (sizes and checksums of every file) is written last, and only
then does ``CURRENT`` move, by an atomic compare-and-replace. Any exception inside the
``with`` block, or a failed check at commit, removes the folder and leaves ``CURRENT``
where it was. On object stores the files are written on local disk first
(`sharedrec.write.staging.Staging`) and uploaded at commit; the commit itself is the one
every publish shares (`sharedrec.write.commit.commit`). `Draft.written` says, per
collection, what was written: a delta or the whole collection, and why in full when a
delta was asked for.
"""

from __future__ import annotations

import logging
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypedDict, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sharedrec._progress import Reporter, reporter
from sharedrec.errors import InvalidInput, PublishRejected, SharedrecError
from sharedrec.format.layout import (
    GC_MARK,
    VERSIONS,
    chunk_path,
    new_version_id,
    ref_path,
    validate_collection_name,
    validate_version_id,
)
from sharedrec.format.schema import ArraySpec, CollectionSpec, Manifest
from sharedrec.read import index
from sharedrec.write import delta as _delta
from sharedrec.write import validate as _validate
from sharedrec.write.arrays import chunk_sizes, write_array, write_ranked_rows, write_vector_rows
from sharedrec.write.commit import checksums, commit, now
from sharedrec.write.guards import DEFAULT_GUARDS, GuardLike, as_guard
from sharedrec.write.staging import Staging

if TYPE_CHECKING:
    from pydantic import JsonValue

    from sharedrec._progress import ProgressMode
    from sharedrec.format.schema import Pointer
    from sharedrec.read.reader import OpenVersion, Reader
    from sharedrec.read.root import StoreRoot
    from sharedrec.write.hold import Hold

__all__ = ["Draft", "Written", "start"]

log = logging.getLogger("sharedrec")

_VANISHED = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError)
"""What file operations raise when a folder changes under them (removed by a collector or by
hand); a full or read-only volume raises its own OSError, left as it is."""


class PublishOptions(TypedDict, total=False):
    """The options of `RecommendationStore.publish` (keyword arguments, all optional)."""

    metadata: dict[str, JsonValue] | None
    """JSON-serialisable facts to keep in the manifest (model, run id...)."""
    version_id: str | None
    """Choose the id (default: a time-sortable id)."""
    make_current: bool
    """Move ``CURRENT`` to the new version (default True). With False the version is
    committed but not live; `RecommendationStore.set_current` makes it live."""
    progress: ProgressMode
    """Show progress bars; by default only when stderr is a terminal."""
    chunk_bytes: int
    """Target size of a chunk file (default 4 MiB). Larger chunks mean fewer files and S3
    requests; smaller ones less data pulled per lookup through a lazy cache. Rows are never
    split across chunks."""
    guards: Sequence[GuardLike] | None
    """Checks run before ``CURRENT`` moves (default: `DEFAULT_GUARDS`: at most 50% fewer keys
    per collection, at most 50% empty lists, at least 50% of sampled live keys kept). Pass
    ``[]`` for none, or add your own (see [Publish guards](publishing.md#publish-guards))."""
    force: bool
    """Publish even if guards fail (the failure is logged and recorded); default False."""
    ref: str
    """The pointer to move: ``"current"`` (``CURRENT``, what readers follow by default) or a
    named ref such as ``"canary"`` that only readers opened with ``ref="canary"`` follow.
    Guards compare with the version that ref names."""
    delta: bool
    """Write a delta version over the version ``ref`` names: give the full new data as usual;
    only the keys added, changed or removed are written, and collections not added are kept
    as they are. Readers answer from the delta first and from the versions below it
    otherwise. Default False."""
    base: str | None
    """Write a delta over this version instead (implies ``delta``)."""
    max_chain: int
    """When the delta would sit on ``max_chain`` deltas already (default 8), a full version is
    written instead, so a chain never grows past it (see also
    `RecommendationStore.compact`). At most ``MAX_CHAIN`` (256), the longest chain readers
    open."""


def start(
    root: StoreRoot,
    *,
    metadata: dict[str, JsonValue] | None = None,
    version_id: str | None = None,
    make_current: bool = True,
    progress: ProgressMode = None,
    chunk_bytes: int | None = None,
    guards: Sequence[GuardLike] | None = None,
    force: bool = False,
    ref: str = "current",
    delta: bool = False,
    base: str | None = None,
    max_chain: int = 8,
) -> Draft:
    """A new draft of the store at ``root`` (see `RecommendationStore.publish` for the options)."""
    from sharedrec.format.schema import validate_metadata

    vid = validate_version_id(version_id) if version_id is not None else new_version_id()
    metadata = validate_metadata(metadata)
    pointer, raw = root.read_pointer(ref)
    if make_current:
        # A store that would refuse the pointer move refuses now, before any upload.
        root.backend.check_swaps(ref_path(ref))
    base_reader = _delta.delta_base(root, base, delta, pointer, max_chain)
    return Draft(
        root,
        vid,
        pointer,
        raw,
        metadata,
        reporter(progress),
        make_current,
        chunk_bytes,
        DEFAULT_GUARDS if guards is None else guards,
        force,
        ref_path(ref),
        base_reader if not isinstance(base_reader, _delta.FullWrite) else None,
        ref=ref,
        full=base_reader if isinstance(base_reader, _delta.FullWrite) else None,
    )


def compact(root: StoreRoot, ref: str, progress: ProgressMode = None) -> str:
    """Rewrite the version ``ref`` names as a full version, if it is a delta, and make it
    live, without guards; its id after (see `RecommendationStore.compact`)."""
    from sharedrec.read.reader import Reader
    from sharedrec.read.version import open_version

    live = root.live_id(ref)
    manifest = root.manifest(live)
    if manifest.base is None:
        return live
    reader = Reader(open_version(root, live, "lazy", manifest=manifest))
    metadata = {**manifest.metadata, "compacted_from": live}
    with start(root, metadata=metadata, progress=progress, guards=[], ref=ref) as draft:
        for name, spec in manifest.collections.items():
            keys = reader.keys(name)
            if spec.kind == "vectors":
                vectors, _ = reader.vectors(name, keys)
                draft.add_vectors(name, keys, vectors)
                continue
            items, scores, _ = reader.get_many(name, keys)
            lengths = np.count_nonzero(items != -1, axis=1)  # item ids are never negative
            default = reader.default(name)
            draft.add_ranked(
                name,
                keys,
                items,
                scores,
                lengths=lengths,
                default=(default.items, default.scores) if default is not None else None,
                fallbacks=spec.fallbacks,
                serve_to_all=spec.serve_to_all,
            )
    return draft.version_id


class RankedOptions(TypedDict, total=False):
    """The options of `Draft.add_ranked` (see it for each one's meaning)."""

    lengths: ArrayLike | None
    pad: int | None
    sort: bool
    top_k: int | None
    default: tuple[ArrayLike, ArrayLike] | None
    fallbacks: Sequence[str]
    serve_to_all: bool


class PublishRankedOptions(PublishOptions, RankedOptions, total=False):
    """The options of `RecommendationStore.publish_ranked`: those of `PublishOptions` and of
    `RankedOptions` (`Draft.add_ranked`)."""


def publish_ranked(
    root: StoreRoot,
    name: str,
    keys: ArrayLike,
    items: ArrayLike,
    scores: ArrayLike,
    options: PublishRankedOptions,
) -> str:
    """Publish a version holding one ranked collection (see `RecommendationStore.publish_ranked`)."""
    given: dict[str, Any] = dict(options)
    ranked = {key: given.pop(key) for key in RankedOptions.__optional_keys__ if key in given}
    with start(root, **cast("PublishOptions", given)) as draft:
        draft.add_ranked(name, keys, items, scores, **cast("RankedOptions", ranked))
    return draft.version_id


@dataclass(frozen=True)
class Written:
    """What a draft wrote of one collection: one value of `Draft.written`.

    ``str()`` of it is a one-line summary, e.g. ``written as a delta: 40 added, 50 changed,
    10 removed (1,000,000 keys in all)``.
    """

    mode: Literal["delta", "full"]
    """``"delta"``: only the keys added, changed or removed were written; ``"full"``: every
    key's row was."""
    keys: int
    """The keys the collection holds in the new version."""
    written: int
    """The keys written: all of them in full; added + changed + removed in a delta."""
    added: int = 0
    """In a delta: keys the base's collection lacks."""
    changed: int = 0
    """In a delta: keys whose row differs from the base's."""
    removed: int = 0
    """In a delta: keys of the base's collection the new data lacks (written as tombstones)."""
    reason: str | None = None
    """When a delta was asked for and the collection was written in full: why."""

    def __str__(self) -> str:
        if self.mode == "delta":
            return (
                f"written as a delta: {self.added:,} added, {self.changed:,} changed, "
                f"{self.removed:,} removed ({self.keys:,} keys in all)"
            )
        text = f"written in full: {self.keys:,} keys"
        return f"{text} (not as a delta: {self.reason})" if self.reason else text


class Draft:
    """A version being written. Use through ``with store.publish() as draft:``.

    Collections are validated and written when added; the version becomes live when the
    ``with`` block exits without an exception. `written` then says what was written of
    each collection.
    """

    def __init__(
        self,
        root: StoreRoot,
        version_id: str,
        parent: Pointer | None,
        parent_raw: bytes | None,
        metadata: dict[str, JsonValue],
        reporter: Reporter,
        make_current: bool,
        chunk_bytes: int | None,
        guards: Sequence[GuardLike],
        force: bool,
        pointer_path: str,
        base: Reader | None = None,
        *,
        ref: str = "current",
        full: _delta.FullWrite | None = None,
    ) -> None:
        self._chunk_bytes, self._huge_up_to = chunk_sizes(chunk_bytes, root.backend)
        self._guards = [as_guard(guard) for guard in guards]
        self._force = force
        self._root = root
        self._backend = root.backend
        self._pointer_path = pointer_path
        self._ref = ref
        # Where the files are written: in place on a POSIX path; staged on local disk, then
        # uploaded, for object stores.
        self._stage: Staging | None = None
        self._id = version_id
        self._dir = f"{VERSIONS}/{version_id}"
        self._parent = parent
        self._parent_raw = parent_raw
        self._metadata = metadata
        self._reporter = reporter
        self._make_current = make_current
        self._collections: dict[str, CollectionSpec] = {}
        self._group: Any = None
        self._state = "new"
        # A delta publish: the version it updates, read through a pinned reader.
        self._base = base
        self._hold: Hold | None = None  # the lease that keeps garbage collection off the draft
        self._full = full  # why a delta asked for is a full version
        self._written: dict[str, Written] = {}
        self._reasons: dict[str, str] = {}  # collections written in full in a delta publish, and why
        if full is not None:
            self._tell(full, f"version {version_id} is written in full, not as a delta: {full.reason}")

    @property
    def version_id(self) -> str:
        """The id the version will have once committed."""
        return self._id

    @property
    def base(self) -> str | None:
        """The version this draft is a delta over (None: a full version)."""
        return self._base.version if self._base is not None else None

    @property
    def _staging(self) -> str | None:
        """The local folder the draft is staged in (object stores), if any."""
        return self._stage.folder if self._stage is not None else None

    @property
    def collections(self) -> dict[str, CollectionSpec]:
        """The collections added so far."""
        return dict(self._collections)

    @property
    def written(self) -> dict[str, Written]:
        """What was written of each collection added so far, by name: a delta or in full,
        the counts of keys, and why in full when a delta was asked for (`Written`).

        Collections a delta inherits from its base, unchanged, are not listed.
        """
        return dict(self._written)

    @property
    def state(self) -> Literal["new", "open", "committed", "aborted"]:
        """``"new"`` before the ``with`` block, ``"open"`` inside it, then ``"committed"``,
        or ``"aborted"`` when the block raised or the commit failed."""
        return cast("Literal['new', 'open', 'committed', 'aborted']", self._state)

    def __repr__(self) -> str:
        kind = f"delta over {self.base!r}" if self._base is not None else "full"
        return (
            f"Draft(version={self._id!r}, ref={self._ref!r}, {kind}, "
            f"collections={list(self._collections)}, {self._state})"
        )

    def __enter__(self) -> Draft:
        if self._state != "new":
            raise PublishRejected("a draft can be entered once; call store.publish() again")
        if self._backend.exists(self._dir):
            raise InvalidInput(f"version {self._id!r} already exists in {self._backend.location}")
        import zarr

        from sharedrec.write.hold import Hold

        # Leased before the folder exists: a collector that sees the folder sees the lease.
        self._hold = Hold(self._backend, self._id)
        self._state = "open"
        try:
            self._stage = Staging(self._backend, self._dir, self._root.cache_dir)
            store = self._stage.local.zarr_store(self._dir)
            attributes = {"sharedrec": {"format": "sharedrec/1", "version": self._id}}
            self._group = zarr.open_group(store=store, mode="w-", attributes=attributes)
        except BaseException:
            self._abort()
            self._hold.release()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        try:
            if exc_type is not None:
                lost = isinstance(exc, _VANISHED) and self._draft_lost()
                self._abort()
                if lost and exc is not None:
                    raise PublishRejected(self._failed(exc)) from exc
                return
            try:
                self._commit()
            except BaseException as failure:
                # A committed version is complete and kept even if CURRENT could not move to it.
                if self._state != "committed":
                    self._abort()
                if isinstance(failure, _VANISHED) and not isinstance(failure, SharedrecError):
                    raise PublishRejected(self._failed(failure)) from failure
                raise
        finally:
            if self._hold is not None:
                self._hold.release()
            if self._base is not None:
                self._base.close()  # ends the lease that kept the base from garbage collection

    def add_ranked(
        self,
        name: str,
        keys: ArrayLike,
        items: ArrayLike,
        scores: ArrayLike,
        *,
        lengths: ArrayLike | None = None,
        pad: int | None = None,
        sort: bool = False,
        top_k: int | None = None,
        default: tuple[ArrayLike, ArrayLike] | None = None,
        fallbacks: Sequence[str] = (),
        serve_to_all: bool = False,
    ) -> CollectionSpec:
        """Add a collection of ranked lists: key -> items in descending score order.

        Args:
            name: Collection name (letters, digits, ``_ - .``).
            keys: One key per list, all integers (stored as int64) or all str; unique.
            items: A ``(n_keys, k)`` integer array, or one 1-D sequence per key (ragged).
                Item ids are non-negative int32/int64.
            scores: Same shape as ``items``; finite floats.
            lengths: For 2-D input, the length of every list (entries past it are ignored).
            pad: For 2-D input, the item value that marks the end of a shorter list.
            sort: Sort every list by descending score, ties by ascending item id. By
                default lists must already be in descending order, and an unsorted list
                is an error (it often means the scores are distances, where lower is
                better). Repeated items within a list are not looked for.
            top_k: Keep at most the first ``top_k`` items of every list.
            default: ``(items, scores)`` served by `get()` for unknown keys.
            fallbacks: Ranked collections of this version tried in order for a key that
                is absent here (e.g. ``["by_segment", "popular"]``), before ``default``.
            serve_to_all: This collection holds one list (``keys`` has exactly one key)
                that it serves, as a fallback, to every key, e.g. a list of popular items.
                Without it a fallback collection serves only the keys it holds, even when
                it holds one.

        Returns:
            The collection's manifest entry.

        Raises:
            InvalidInput: With the collection, argument and first bad row named.
        """
        name = self._new_collection(name)
        fallback_names = [validate_collection_name(f) for f in fallbacks]
        if name in fallback_names:
            raise InvalidInput(f"collection {name!r} cannot be its own fallback")
        key_data = _validate.normalize_keys(name, keys)
        if type(serve_to_all) is not bool:
            raise InvalidInput(
                f"collection {name!r}: serve_to_all must be True or False; got {serve_to_all!r}"
            )
        if serve_to_all and len(key_data) != 1:
            raise InvalidInput(
                f"collection {name!r}: serve_to_all=True needs exactly one key, whose list is served "
                f"to every key; got {len(key_data)} keys"
            )
        ranked = _validate.normalize_ranked(
            name, key_data, items, scores, lengths=lengths, pad=pad, sort=sort, top_k=top_k, flat=True
        )
        width = ranked.width
        default_arrays = (
            _validate.normalize_default(name, default, width, sort) if default is not None else None
        )
        d_items, d_scores = default_arrays if default_arrays is not None else (None, None)
        fitted = self._fit_base(name, "ranked", key_data, width, [[ranked.items, d_items], [ranked.scores]])
        if fitted is not None:
            (items_, d_items), (scores_,) = fitted
            assert items_ is not None
            assert scores_ is not None
            ranked = ranked.with_arrays(items_, scores_)
        elif d_items is not None:
            ranked, d_items = _with_default_items(ranked, d_items)
        if d_scores is not None:  # a default's scores take the precision of the lists'
            d_scores = d_scores.astype(ranked.scores.dtype)
        group = self._group.create_group(name, attributes={"sharedrec_kind": "ranked"})
        full = ranked
        changes = (
            self._changes(name, key_data, ranked.items, ranked.scores, ranked.offsets)
            if fitted is not None
            else None
        )
        stored, removed = key_data, 0
        arrays: dict[str, ArraySpec] = {}
        fences: list[int] = []
        key_hash = index.DEFAULT_KEY_HASH if key_data.kind == "str" else None
        if changes is not None:
            changed = changes.rows
            stored = _take_keys(key_data, changed)
            ranked = ranked.take(changed)
            arrays.update(_delta.write_removed(group, changes.gone, self._chunk_bytes))
            removed = len(changes.gone)
        if len(stored):
            nbytes = ranked.items.nbytes + ranked.scores.nbytes + ranked.lengths.nbytes
            with self._reporter.task(f"{name}: lists", nbytes) as task:
                row_arrays, fences, key_hash = write_ranked_rows(
                    group,
                    stored,
                    ranked,
                    self._chunk_bytes,
                    task,
                    allow_ragged=True,
                    huge_up_to=self._huge_up_to,
                )
            arrays.update(row_arrays)
        default_length = None
        if d_items is not None and d_scores is not None:
            default_length = int(np.count_nonzero(d_items != _validate.ITEM_PAD))
            arrays["default_items"] = write_array(
                group, "default_items", d_items, None, None, None, self._chunk_bytes
            )
            arrays["default_scores"] = write_array(
                group, "default_scores", d_scores, None, None, None, self._chunk_bytes
            )
        spec = CollectionSpec(
            kind="ranked",
            key_type=key_data.kind,
            count=len(key_data),
            key_hash=key_hash,
            key_fences=fences,
            width=width,
            min_length=int(full.lengths.min()),
            max_length=int(full.lengths.max()),
            default_length=default_length,
            empty_lists=int(np.count_nonzero(full.lengths == 0)),
            fallbacks=fallback_names,
            serve_to_all=serve_to_all,
            delta=changes is not None,
            removed=removed,
            arrays=arrays,
            layout="ragged" if "offsets" in arrays else "padded",
        )
        self._collections[name] = spec
        self._record(name, len(key_data), changes)
        return spec

    def add_vectors(self, name: str, keys: ArrayLike, vectors: ArrayLike) -> CollectionSpec:
        """Add a collection of fixed-width vectors (embeddings): key -> 1-D float vector.

        Args:
            name: Collection name (letters, digits, ``_ - .``).
            keys: One key per vector, all integers (stored as int64) or all str; unique.
            vectors: A ``(n_keys, dim)`` float16/32/64 array, all finite.

        Returns:
            The collection's manifest entry.

        Raises:
            InvalidInput: With the collection, argument and first bad row named.
        """
        name = self._new_collection(name)
        key_data = _validate.normalize_keys(name, keys)
        array = _validate.normalize_vectors(name, key_data, vectors)
        dim = array.shape[1]
        fitted = self._fit_base(name, "vectors", key_data, dim, [[array]])
        if fitted is not None:
            ((fitted_array,),) = fitted
            assert fitted_array is not None
            array = fitted_array
        group = self._group.create_group(name, attributes={"sharedrec_kind": "vectors"})
        changes = self._changes(name, key_data, array, None) if fitted is not None else None
        stored, removed = key_data, 0
        arrays: dict[str, ArraySpec] = {}
        fences: list[int] = []
        key_hash = index.DEFAULT_KEY_HASH if key_data.kind == "str" else None
        if changes is not None:
            changed = changes.rows
            stored, array = _take_keys(key_data, changed), array[changed]
            arrays.update(_delta.write_removed(group, changes.gone, self._chunk_bytes))
            removed = len(changes.gone)
        if len(stored):
            with self._reporter.task(f"{name}: vectors", array.nbytes) as task:
                row_arrays, fences, key_hash = write_vector_rows(
                    group, stored, array, self._chunk_bytes, task, huge_up_to=self._huge_up_to
                )
            arrays.update(row_arrays)
        spec = CollectionSpec(
            kind="vectors",
            key_type=key_data.kind,
            count=len(key_data),
            key_hash=key_hash,
            key_fences=fences,
            width=dim,
            min_length=dim,
            max_length=dim,
            delta=changes is not None,
            removed=removed,
            arrays=arrays,
        )
        self._collections[name] = spec
        self._record(name, len(key_data), changes)
        return spec

    # -- deltas ----------------------------------------------------------------------------

    def _fit_base(
        self,
        name: str,
        kind: str,
        keys: _validate.Keys,
        width: int,
        roles: list[list[NDArray[Any] | None]],
    ) -> list[list[NDArray[Any] | None]] | None:
        """For a delta publish: the arrays of each role (items and scores, or vectors) in the
        dtypes the base stores them in, when every value survives the cast. None when the
        collection is written in full (not a delta publish, or the base's collection cannot
        take the new rows: the reason is kept for `written`, logged and shown)."""
        if self._base is None:
            return None
        dtypes = _delta.stored_dtypes(self._base, name, kind, keys, width)
        if isinstance(dtypes, _delta.FullWrite):
            self._in_full(name, dtypes)
            return None
        names = ("items", "scores") if kind == "ranked" else ("vectors",)
        out: list[list[NDArray[Any] | None]] = []
        for role, dtype, arrays in zip(names, dtypes, roles, strict=True):
            fitted: list[NDArray[Any] | None] = []
            for number, array in enumerate(arrays):
                if array is None:
                    fitted.append(None)
                    continue
                cast_array, lost = _delta.fit(array, dtype)
                if cast_array is None:
                    where = " in the default list" if number else ""
                    exactly = "" if np.dtype(dtype).kind in "iu" else " exactly"
                    reason = (
                        f"{role} dtype {array.dtype} differs from the base's {np.dtype(dtype)}, "
                        f"which cannot hold {lost!r}{where}{exactly}"
                    )
                    self._in_full(name, _delta.FullWrite(reason))
                    return None
                fitted.append(cast_array)
            out.append(fitted)
        return out

    def _in_full(self, name: str, why: _delta.FullWrite) -> None:
        """Note that collection ``name`` is written in full although a delta was asked for."""
        self._reasons[name] = why.reason
        self._tell(why, f"collection {name!r} is written in full, not as a delta: {why.reason}")

    def _tell(self, why: _delta.FullWrite, message: str) -> None:
        """Log ``message`` on the ``sharedrec`` logger (INFO when the full write is by design,
        WARNING otherwise) and show it in the progress output."""
        level = logging.INFO if why.expected else logging.WARNING
        log.log(level, message)
        # Without any logging handler, Python's last resort already prints a warning on stderr.
        last_resort = logging.lastResort
        printed = (
            last_resort is not None
            and not log.hasHandlers()
            and log.isEnabledFor(level)
            and level >= last_resort.level
        )
        if self._reporter.enabled and not printed:
            print(message, file=sys.stderr, flush=True)

    def _changes(
        self,
        name: str,
        keys: _validate.Keys,
        rows: NDArray[Any],
        scores: NDArray[Any] | None,
        offsets: NDArray[np.int64] | None = None,
    ) -> _delta.Changes:
        """For a delta publish: which input rows differ from the base, and the keys removed."""
        assert self._base is not None
        return _delta.changes(self._base, name, keys, rows, scores, self._reporter, offsets)

    def _record(self, name: str, keys: int, changes: _delta.Changes | None) -> None:
        """Keep what was written of collection ``name`` for `written`."""
        if changes is None:
            reason = self._reasons.get(name) or (self._full.reason if self._full is not None else None)
            self._written[name] = Written("full", keys, keys, reason=reason)
            return
        rows = int(np.count_nonzero(changes.rows))
        removed = len(changes.gone)
        self._written[name] = Written(
            "delta", keys, rows + removed, changes.added, rows - changes.added, removed
        )

    # -- writing ---------------------------------------------------------------------------

    def _new_collection(self, name: str) -> str:
        if self._state != "open":
            raise PublishRejected(
                "add collections inside `with store.publish() as draft:`; this draft is "
                + ("not entered yet" if self._state == "new" else "already closed")
            )
        name = validate_collection_name(name)
        if name in self._collections:
            raise InvalidInput(f"collection {name!r} was already added to this version")
        return name

    # -- commit ----------------------------------------------------------------------------

    def _draft_lost(self) -> bool:
        """Whether the draft's folder in the store is gone or condemned by a collector."""
        if self._backend.local_path(self._dir) is None:
            return False  # staged on local disk: nothing in the store yet
        return not self._backend.exists(self._dir) or self._backend.exists(f"{self._dir}/{GC_MARK}")

    def _failed(self, exc: BaseException) -> str:
        """The message of a publish that failed on a file operation."""
        where = f"{self._backend.location}/{self._dir}"
        if self._state == "committed":
            return (
                f"version {self._id} was committed but not made live: {type(exc).__name__}: {exc}; "
                f"store.set_current({self._id!r}) makes it live"
            )
        return (
            f"publishing version {self._id} failed on a file of {where}: {type(exc).__name__}: {exc} "
            "(was the folder removed while it was published: garbage collection, or by hand?); "
            "nothing was published: publish again"
        )

    def _abort(self) -> None:
        self._state = "aborted"
        self._group = None
        if self._stage is not None:
            self._stage.discard()  # local files, and whatever was uploaded before the failure
        else:
            self._backend.remove_tree(self._dir)

    def _commit(self) -> None:
        if self._state != "open":
            raise PublishRejected(f"draft {self._id} is {self._state}; it cannot be committed")
        if not self._collections:
            raise PublishRejected(f"nothing to publish in version {self._id}: add at least one collection")
        base = self._base
        if base is not None:  # before the checks: inherited collections name fallbacks too
            _delta.inherit(base, self._group, self._collections, self._chunk_bytes)
        for name, spec in self._collections.items():
            for fallback in spec.fallbacks:
                target = self._collections.get(fallback)
                if target is None or target.kind != "ranked":
                    raise InvalidInput(
                        f"collection {name!r} names fallback {fallback!r}, which is not a ranked "
                        "collection of this version: add it in the same publish"
                    )
        self._group = None
        staging = self._stage
        assert staging is not None
        staging.local.sync_tree(self._dir)
        manifest = Manifest(
            id=self._id,
            parent=self._parent.version if self._parent else None,
            base=base.version if base is not None else None,
            depth=base.manifest.depth + 1 if base is not None else 0,
            created_at=now(),
            metadata=self._metadata,
            collections=self._collections,
            files=checksums(staging.local, self._dir, self._reporter),
        )
        self._check_files(manifest)

        def upload(manifest: Manifest) -> None:
            if staging.folder is not None:
                with self._reporter.task(f"upload to {self._backend.location}", manifest.data_bytes) as task:
                    staging.upload(manifest.files, task)

        def committed() -> None:
            self._state = "committed"

        commit(
            self._backend,
            manifest,
            guards=self._guards,
            force=self._force,
            new=self._open_new,
            root=self._root,
            parent=self._parent,
            parent_raw=self._parent_raw,
            pointer_path=self._pointer_path if self._make_current else None,
            hold=self._hold,
            upload=upload,
            committed=committed,
        )

    def _check_files(self, manifest: Manifest) -> None:
        """Every chunk file the manifest's arrays need is among the files written."""
        for name, spec in manifest.collections.items():
            for array, shape in spec.arrays.items():
                for chunk in range(shape.n_chunks):
                    path = chunk_path(f"{name}/{array}", chunk, len(shape.shape))
                    if path not in manifest.files:
                        raise PublishRejected(
                            f"{path} of version {self._id} disappeared while it was published (a "
                            "garbage collector with a grace period shorter than the publish?); "
                            "nothing was published: publish again"
                        )

    def _open_new(self, manifest: Manifest) -> OpenVersion:
        """The finished draft, from its local files (staged ones not uploaded yet), for the guards."""
        from sharedrec.read.mmap import LocalFolder
        from sharedrec.read.reader import OpenVersion
        from sharedrec.read.version import open_version

        assert self._stage is not None
        folder = self._stage.local.local_path(self._dir)
        assert folder is not None, "drafts are always written on local disk"
        below = open_version(self._root, self._base.version, "lazy") if self._base is not None else None
        return OpenVersion(manifest, LocalFolder(folder), folder, below)


def _take_keys(keys: _validate.Keys, mask: NDArray[np.bool_]) -> _validate.Keys:
    """The keys of the rows where ``mask`` is True."""
    if keys.ints is not None:
        return _validate.Keys("int64", keys.ints[mask], None)
    assert keys.encoded is not None
    return _validate.Keys(
        "str", None, [key for key, keep in zip(keys.encoded, mask.tolist(), strict=True) if keep]
    )


def _with_default_items(
    ranked: _validate.Ranked, items: NDArray[Any]
) -> tuple[_validate.Ranked, NDArray[Any]]:
    """The lists and the default list's items in one dtype: the lists', or the wider of the
    two when an item of the default does not fit the lists' (a cast would wrap it)."""
    fitted, _ = _delta.fit(items, ranked.items.dtype)
    if fitted is not None:
        return ranked, fitted
    wider = np.promote_types(ranked.items.dtype, items.dtype)
    return ranked.with_arrays(ranked.items.astype(wider), ranked.scores), items.astype(wider)
