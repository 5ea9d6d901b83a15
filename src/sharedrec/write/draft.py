"""Drafts: writing a new version and committing it atomically.

A `Draft` writes each collection as soon as it is added, straight into
``versions/<id>/``. Nothing there is visible until the draft commits: the files are
fsynced, ``manifest.json`` (sizes and checksums of every file) is written last, and only
then does ``CURRENT`` move, by an atomic compare-and-replace. Any exception inside the
``with`` block, or a failed check at commit, removes the folder and leaves ``CURRENT``
where it was.
"""

from __future__ import annotations

import logging
import math
import os
import types
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sharedrec._progress import Reporter
from sharedrec.backends.base import Backend, PointerMoved
from sharedrec.errors import (
    ConcurrentPublishError,
    InvalidInput,
    PublishRejected,
    SharedrecError,
    VersionGone,
)
from sharedrec.format.layout import (
    CHUNK_TARGET_BYTES,
    CURRENT,
    GC_MARK,
    KEY_CHUNK_TARGET_BYTES,
    MANIFEST,
    POINTER_HISTORY,
    VERSIONS,
    chunk_path,
    validate_collection_name,
)
from sharedrec.format.schema import ArraySpec, CollectionSpec, FileEntry, Manifest, Pointer
from sharedrec.manage.diff import rows_equal
from sharedrec.manage.integrity import file_crc32
from sharedrec.read import index
from sharedrec.write import validate as _validate
from sharedrec.write.guards import DEFAULT_GUARDS, GuardLike, as_guard, run_guards
from sharedrec.write.staging import remove_staging

if TYPE_CHECKING:
    from pydantic import JsonValue

    from sharedrec.manage.gc import Hold
    from sharedrec.read.reader import Reader

__all__ = ["Draft", "chunk_rows", "judge", "move_pointer", "write_array", "write_keys"]

log = logging.getLogger("sharedrec")

_WRITE_BLOCK_BYTES = 64 * 1024 * 1024


def chunk_rows(row_bytes: int | Sequence[int], n_rows: int, chunk_bytes: int) -> int:
    """Rows per chunk so that a chunk holds about ``chunk_bytes`` (at least one row).

    ``row_bytes`` may list the row sizes of several arrays chunked alike. When the rows
    take several chunks, the count is rounded down so that every chunk file of each array
    is a whole number of 4 KiB pages (when a chunk holds enough rows for that): readers
    then map the chunks back to back and gather a batch with one fancy index.
    """
    sizes = [max(1, row_bytes)] if isinstance(row_bytes, int) else [max(1, size) for size in row_bytes]
    rows = max(1, min(n_rows, chunk_bytes // max(sizes)))
    if rows < n_rows:
        step = math.lcm(*(_PAGE_BYTES // math.gcd(size, _PAGE_BYTES) for size in sizes))
        if rows >= step:
            rows -= rows % step
    return rows


_PAGE_BYTES = 4096

_VANISHED = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError)
"""What file operations raise when a folder changes under them (removed by a collector or by
hand); a full or read-only volume raises its own OSError, left as it is."""


class Draft:
    """A version being written. Use through ``with store.publish() as draft:``.

    Collections are validated and written when added; the version becomes live when the
    ``with`` block exits without an exception.
    """

    def __init__(
        self,
        backend: Backend,
        version_id: str,
        parent: Pointer | None,
        parent_raw: bytes | None,
        metadata: dict[str, JsonValue],
        reporter: Reporter,
        make_current: bool,
        chunk_bytes: int = CHUNK_TARGET_BYTES,
        guards: Sequence[GuardLike] = DEFAULT_GUARDS,
        force: bool = False,
        open_live: Callable[[str], Reader] | None = None,
        pointer_path: str = CURRENT,
        base: Reader | None = None,
        staging_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if not isinstance(chunk_bytes, int) or not 1024 <= chunk_bytes <= 1 << 30:
            raise InvalidInput(f"chunk_bytes must be an int from 1 KiB to 1 GiB; got {chunk_bytes!r}")
        self._chunk_bytes = chunk_bytes
        self._guards = [as_guard(guard) for guard in guards]
        self._force = force
        self._backend = backend
        self._open_live = open_live
        self._pointer_path = pointer_path
        # Where the files are written: in place on a POSIX path; staged on local disk, then
        # uploaded, for object stores.
        self._staging: str | None = None
        self._staging_dir = staging_dir  # the node's cache folder (None: the default one)
        self._local: Backend = backend
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

    @property
    def version_id(self) -> str:
        """The id the version will have once committed."""
        return self._id

    @property
    def base(self) -> str | None:
        """The version this draft is a delta over (None: a full version)."""
        return self._base.version if self._base is not None else None

    @property
    def collections(self) -> dict[str, CollectionSpec]:
        """The collections added so far."""
        return dict(self._collections)

    def __enter__(self) -> Draft:
        if self._state != "new":
            raise PublishRejected("a draft can be entered once; call store.publish() again")
        if self._backend.exists(self._dir):
            raise InvalidInput(f"version {self._id!r} already exists in {self._backend.location}")
        import zarr

        from sharedrec.manage.gc import Hold

        # Leased before the folder exists: a collector that sees the folder sees the lease.
        self._hold = Hold(self._backend, self._id)
        self._state = "open"
        try:
            if self._backend.local_path(self._dir) is None:
                from sharedrec.backends.posix import PosixBackend
                from sharedrec.write.staging import new_staging

                self._staging = new_staging(self._staging_dir, self._backend.location)
                self._local = PosixBackend(self._staging, create=True)
            store = self._local.zarr_store(self._dir)
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
            sort: Sort every list by descending score. By default lists must already be in
                descending order, and an unsorted list is an error (it often means the
                scores are distances, where lower is better).
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
            name, key_data, items, scores, lengths=lengths, pad=pad, sort=sort, top_k=top_k
        )
        width = ranked.items.shape[1]
        default_arrays = (
            _validate.normalize_default(name, default, width, sort) if default is not None else None
        )
        group = self._group.create_group(name, attributes={"sharedrec_kind": "ranked"})
        full = ranked
        changes = self._changes(name, "ranked", key_data, ranked.items, ranked.scores)
        stored, removed = key_data, 0
        arrays: dict[str, ArraySpec] = {}
        fences: list[int] = []
        key_hash = index.DEFAULT_KEY_HASH if key_data.kind == "str" else None
        if changes is not None:
            changed, gone = changes
            stored = _take_keys(key_data, changed)
            ranked = _validate.Ranked(ranked.items[changed], ranked.scores[changed], ranked.lengths[changed])
            arrays.update(self._write_removed(group, gone))
            removed = len(gone)
        if len(stored):
            nbytes = ranked.items.nbytes + ranked.scores.nbytes + ranked.lengths.nbytes
            with self._reporter.task(f"{name}: lists", nbytes) as task:
                row_arrays, fences, key_hash = write_ranked_rows(
                    group, stored, ranked, self._chunk_bytes, task
                )
            arrays.update(row_arrays)
        default_length = None
        if default_arrays is not None:
            d_items = default_arrays[0].astype(ranked.items.dtype)
            d_scores = default_arrays[1].astype(ranked.scores.dtype)
            default_length = int(np.count_nonzero(d_items != _validate.ITEM_PAD))
            arrays["default_items"] = self._write_array(group, "default_items", d_items, None, None, None)
            arrays["default_scores"] = self._write_array(group, "default_scores", d_scores, None, None, None)
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
        )
        self._collections[name] = spec
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
        group = self._group.create_group(name, attributes={"sharedrec_kind": "vectors"})
        changes = self._changes(name, "vectors", key_data, array, None)
        stored, removed = key_data, 0
        arrays: dict[str, ArraySpec] = {}
        fences: list[int] = []
        key_hash = index.DEFAULT_KEY_HASH if key_data.kind == "str" else None
        dim = array.shape[1]
        if changes is not None:
            changed, gone = changes
            stored, array = _take_keys(key_data, changed), array[changed]
            arrays.update(self._write_removed(group, gone))
            removed = len(gone)
        if len(stored):
            with self._reporter.task(f"{name}: vectors", array.nbytes) as task:
                row_arrays, fences, key_hash = write_vector_rows(
                    group, stored, array, self._chunk_bytes, task
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
        return spec

    # -- deltas ----------------------------------------------------------------------------

    def _changes(
        self,
        name: str,
        kind: str,
        keys: _validate.Keys,
        rows: NDArray[Any],
        scores: NDArray[Any] | None,
    ) -> tuple[NDArray[np.bool_], list[Any]] | None:
        """For a delta publish: which input rows differ from the base, and the keys removed.

        None when the collection is written in full: not a delta publish, or the base has
        no collection of that name, kind and key type (or vectors of another dimension).
        """
        base = self._base
        if base is None:
            return None
        spec = base.collections.get(name)
        if spec is None or spec.kind != kind or spec.key_type != keys.kind:
            return None
        if kind == "vectors" and spec.width != rows.shape[1]:
            return None
        # Every level of a chain stores rows alike, so batches gather them into one array.
        col = base._collection(name)
        root = col.chain.root if getattr(col, "chain", None) is not None else col
        stored = [root.vectors.dtype] if kind == "vectors" else [root.items.dtype, root.scores.dtype]
        given = [rows.dtype] if scores is None else [rows.dtype, scores.dtype]
        if [np.dtype(d).newbyteorder("<") for d in given] != [np.dtype(d).newbyteorder("<") for d in stored]:
            log.info("collection %r changes dtypes: written in full, not as a delta", name)
            return None
        query: Any = keys.ints if keys.ints is not None else [key.decode() for key in keys.encoded or ()]
        with self._reporter.task(f"{name}: compare with {base.version}", len(keys)) as task:
            if scores is None:
                old_rows, found = base.vectors(name, query)
                same = found & rows_equal(old_rows, rows)
            else:
                old_items, old_scores, found = base.get_many(name, query)
                same = found & rows_equal(old_items, rows) & rows_equal(old_scores, scores)
            task.advance(len(keys))
        old_keys = base.keys(name)
        if keys.ints is not None:
            assert isinstance(old_keys, np.ndarray)
            gone: list[Any] = old_keys[~np.isin(old_keys, keys.ints)].tolist()
        else:
            present = set(query)
            gone = [key for key in old_keys if key not in present]
        return ~same, gone

    def _write_removed(self, group: Any, gone: list[Any]) -> dict[str, ArraySpec]:
        """The tombstones of a delta collection: the keys of the base it removes."""
        if not gone:
            return {}
        if isinstance(gone[0], str):
            spans, blob = index.encode_keys([key.encode() for key in gone])
            return {
                "removed_spans": self._write_array(group, "removed_spans", spans, None, None, None),
                "removed_bytes": self._write_array(group, "removed_bytes", blob, None, None, None),
            }
        removed = np.sort(np.asarray(gone, dtype=np.int64))
        return {"removed": self._write_array(group, "removed", removed, None, None, None)}

    def _inherit(self) -> None:
        """Collections of the base that this delta does not mention are kept as they are."""
        base = self._base
        if base is None:
            return
        for name, spec in base.collections.items():
            if name in self._collections:
                continue
            group = self._group.create_group(name, attributes={"sharedrec_kind": spec.kind})
            arrays: dict[str, ArraySpec] = {}
            if spec.kind == "ranked" and spec.default_length is not None:
                default = base._collection(name).default
                arrays["default_items"] = self._write_array(
                    group, "default_items", default.items, None, None, None
                )
                arrays["default_scores"] = self._write_array(
                    group, "default_scores", default.scores, None, None, None
                )
            self._collections[name] = spec.replace(delta=True, removed=0, key_fences=[], arrays=arrays)

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

    def _write_array(
        self,
        group: Any,
        name: str,
        data: NDArray[Any],
        order: NDArray[np.intp] | None,
        rows: int | None,
        task: Any,
    ) -> ArraySpec:
        return write_array(group, name, data, order, rows, task, self._chunk_bytes)

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
        self._local.remove_tree(self._dir)
        if self._staging is not None:
            remove_staging(self._staging)
            self._backend.remove_tree(self._dir)  # whatever was uploaded before the failure

    def _commit(self) -> None:
        if self._state != "open":
            raise PublishRejected(f"draft {self._id} is {self._state}; it cannot be committed")
        if not self._collections:
            raise PublishRejected(f"nothing to publish in version {self._id}: add at least one collection")
        self._inherit()  # before the checks: inherited collections name fallbacks too
        for name, spec in self._collections.items():
            for fallback in spec.fallbacks:
                target = self._collections.get(fallback)
                if target is None or target.kind != "ranked":
                    raise InvalidInput(
                        f"collection {name!r} names fallback {fallback!r}, which is not a ranked "
                        "collection of this version: add it in the same publish"
                    )
        self._group = None
        self._local.sync_tree(self._dir)
        base = self._base
        manifest = Manifest(
            id=self._id,
            parent=self._parent.version if self._parent else None,
            base=base.version if base is not None else None,
            depth=base._v.manifest.depth + 1 if base is not None else 0,
            created_at=datetime.now(UTC),
            metadata=self._metadata,
            collections=self._collections,
            files=self._checksum_files(),
        )
        self._check_files(manifest)
        manifest = manifest.replace(checks=self._run_guards(manifest))
        if self._staging is not None:
            self._upload(manifest)
        check_stored(self._backend, self._dir, manifest)
        self._backend.write_atomic(f"{self._dir}/{MANIFEST}", manifest.dumps())
        self._state = "committed"
        if self._make_current:
            self._move_pointer(manifest)

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

    def _run_guards(self, manifest: Manifest) -> dict[str, JsonValue]:
        """Check the finished draft against the live version; raise if a guard fails."""
        if not self._guards:
            return {}
        from sharedrec.read.mmap import LocalFolder
        from sharedrec.read.reader import OpenVersion, Reader

        root = self._local.local_path(self._dir)
        assert root is not None, "drafts are always written on local disk"
        view = Manifest.loads(manifest.dumps(), f"{root}/{MANIFEST}")
        below = self._base._v if self._base is not None else None
        new = Reader(OpenVersion(view, LocalFolder(root), root, below))
        return judge(self._guards, self._force, self._id, self._parent, new, self._open_parent())

    def _open_parent(self) -> Reader | None:
        if self._parent is None or self._open_live is None:
            return None
        try:
            return self._open_live(self._parent.version)
        except SharedrecError as exc:
            log.warning(
                "guards cannot read the live version %s (%s); comparing with nothing",
                self._parent.version,
                exc,
            )
            return None

    def _upload(self, manifest: Manifest) -> None:
        assert self._staging is not None
        files = [(f"{self._staging}/{self._dir}/{path}", f"{self._dir}/{path}") for path in manifest.files]
        with self._reporter.task(f"upload to {self._backend.location}", manifest.data_bytes) as task:
            self._backend.upload(files, task)
        remove_staging(self._staging)

    def _checksum_files(self) -> dict[str, FileEntry]:
        # Hidden names (a collector's mark, temporary files) are never files of the version.
        listing = [
            (path, size)
            for path, size in self._local.walk_files(self._dir)
            if not any(part.startswith(".") for part in path.split("/"))
        ]
        files: dict[str, FileEntry] = {}
        with self._reporter.task("checksums", sum(size for _, size in listing)) as task:
            for path, size in listing:
                crc = file_crc32(self._local, f"{self._dir}/{path}", task)
                files[path] = FileEntry(size=size, crc32=crc)
        return files

    def _move_pointer(self, manifest: Manifest) -> None:
        move_pointer(self._backend, self._pointer_path, manifest, self._parent, self._parent_raw, self._hold)


def write_ranked_rows(
    group: Any, keys: _validate.Keys, ranked: _validate.Ranked, chunk_bytes: int, task: Any = None
) -> tuple[dict[str, ArraySpec], list[int], str | None]:
    """Write the key index and the lists of ranked rows; items and scores are chunked alike.

    Returns the array specs, the key fences and the key hash name.
    """
    arrays, fences, key_hash, order = write_keys(group, keys, chunk_bytes)
    width = ranked.items.shape[1]
    rows = chunk_rows([width * ranked.items.itemsize, width * ranked.scores.itemsize], len(keys), chunk_bytes)
    arrays["items"] = write_array(group, "items", ranked.items, order, rows, task, chunk_bytes)
    arrays["scores"] = write_array(group, "scores", ranked.scores, order, rows, task, chunk_bytes)
    arrays["lengths"] = write_array(group, "lengths", ranked.lengths, order, None, task, chunk_bytes)
    return arrays, fences, key_hash


def write_vector_rows(
    group: Any, keys: _validate.Keys, vectors: NDArray[Any], chunk_bytes: int, task: Any = None
) -> tuple[dict[str, ArraySpec], list[int], str | None]:
    """Write the key index and the vectors of rows; returns specs, fences and hash name."""
    arrays, fences, key_hash, order = write_keys(group, keys, chunk_bytes)
    rows = chunk_rows(vectors.shape[1] * vectors.itemsize, len(keys), chunk_bytes)
    arrays["vectors"] = write_array(group, "vectors", vectors, order, rows, task, chunk_bytes)
    return arrays, fences, key_hash


def write_keys(
    group: Any, keys: _validate.Keys, chunk_bytes: int
) -> tuple[dict[str, ArraySpec], list[int], str | None, NDArray[np.intp] | None]:
    """Write the key index.

    Returns its array specs, the fences, the hash name, and the order in which input
    rows must be written (None when they already are in key order).
    """
    arrays: dict[str, ArraySpec] = {}
    order: NDArray[np.intp] | None
    chunk_bytes = min(chunk_bytes, KEY_CHUNK_TARGET_BYTES)
    if keys.ints is not None:
        order = np.argsort(keys.ints, kind="stable")
        sorted_keys = keys.ints[order]
        if bool((order[1:] > order[:-1]).all()):  # already in key order: write rows as given
            order = None
        rows = chunk_rows(8, len(keys), chunk_bytes)
        arrays["keys"] = write_array(group, "keys", sorted_keys, None, rows, None, chunk_bytes)
        fences = sorted_keys[::rows].tolist()
        key_hash = None
    else:
        assert keys.encoded is not None
        key_hash = index.DEFAULT_KEY_HASH
        hashes = index.hash_keys(keys.encoded, key_hash)
        order = np.argsort(hashes, kind="stable")
        sorted_hashes = hashes[order]
        spans, blob = index.encode_keys([keys.encoded[i] for i in order.tolist()])
        rows = chunk_rows(8, len(keys), chunk_bytes)
        arrays["key_hash"] = write_array(group, "key_hash", sorted_hashes, None, rows, None, chunk_bytes)
        arrays["key_spans"] = write_array(group, "key_spans", spans, None, None, None, chunk_bytes)
        arrays["key_bytes"] = write_array(group, "key_bytes", blob, None, None, None, chunk_bytes)
        fences = sorted_hashes[::rows].tolist()
    return arrays, fences, key_hash, order


def write_array(
    group: Any,
    name: str,
    data: NDArray[Any],
    order: NDArray[np.intp] | None,
    rows: int | None,
    task: Any,
    chunk_bytes: int,
) -> ArraySpec:
    """Write ``data[order]`` as an uncompressed little-endian zarr array, every chunk."""
    from zarr.codecs import BytesCodec

    dtype = data.dtype.newbyteorder("<") if data.dtype.itemsize > 1 else data.dtype
    n = data.shape[0]
    row_bytes = int(np.prod(data.shape[1:], dtype=np.int64)) * dtype.itemsize
    rows = rows or chunk_rows(row_bytes, n, chunk_bytes)
    fill: Any = np.nan if dtype.kind == "f" else (_validate.ITEM_PAD if dtype.kind == "i" else 0)
    array = group.create_array(
        name,
        shape=data.shape,
        chunks=(rows, *data.shape[1:]),
        dtype=dtype,
        fill_value=fill,
        compressors=None,
        filters=None,
        serializer=BytesCodec(endian="little" if dtype.itemsize > 1 else None),
        config={"write_empty_chunks": True},
    )
    step = rows * max(1, _WRITE_BLOCK_BYTES // max(1, rows * row_bytes))
    for start in range(0, n, step):
        stop = min(n, start + step)
        # Rows are C-contiguous here (normalised on input), where np.take is the fastest gather.
        block = np.take(data, order[start:stop], axis=0) if order is not None else data[start:stop]
        array[start:stop] = block
        if task is not None:
            task.advance(block.nbytes)
    return ArraySpec(dtype=dtype.str, shape=tuple(data.shape), chunks=(rows, *data.shape[1:]))


def judge(
    guards: Sequence[GuardLike],
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
        raise PublishRejected(
            f"version {version_id} was refused by {len(failed)} publish guard(s) against {against}: "
            + "; ".join(f"{r.name}: {r.message}" for r in failed)
            + ". Nothing was published. Fix the batch job, or pass force=True (or different guards=) "
            "if the change is intended"
        )
    return checks


def check_stored(backend: Backend, directory: str, manifest: Manifest) -> None:
    """Just before a manifest is written: every file it lists is in the store with its size,
    and no garbage collector condemned the folder.

    Raises:
        PublishRejected: Something was removed; nothing is published.
    """
    from sharedrec.store import version_condemned

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


def move_pointer(
    backend: Backend,
    pointer_path: str,
    manifest: Manifest,
    parent: Pointer | None,
    parent_raw: bytes | None,
    hold: Hold | None = None,
) -> None:
    """Compare-and-swap a pointer from ``parent_raw`` to the committed ``manifest``'s version.

    The move is guarded against garbage collection (see `sharedrec.manage.gc`); ``hold`` is the
    lease the publish already holds on the version, if any.

    Raises:
        ConcurrentPublishError: Another writer moved the pointer since ``parent_raw`` was
            read, or garbage collection was deleting the version.
    """
    from sharedrec.manage.gc import move_guarded
    from sharedrec.store import pointer_for

    version_id = manifest.id
    previous = [parent.version, *parent.previous] if parent else []
    pointer = pointer_for(backend, version_id, previous[:POINTER_HISTORY], manifest)
    try:
        move_guarded(backend, pointer_path, pointer.dumps(), parent_raw, version_id, manifest.base, hold)
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


def _take_keys(keys: _validate.Keys, mask: NDArray[np.bool_]) -> _validate.Keys:
    """The keys of the rows where ``mask`` is True."""
    if keys.ints is not None:
        return _validate.Keys("int64", keys.ints[mask], None)
    assert keys.encoded is not None
    return _validate.Keys(
        "str", None, [key for key, keep in zip(keys.encoded, mask.tolist(), strict=True) if keep]
    )


def _pointer_version(raw: bytes | None) -> str:
    if raw is None:
        return "(none: CURRENT was deleted)"
    try:
        return Pointer.loads(raw, CURRENT).version
    except Exception:
        return "(unreadable CURRENT)"
