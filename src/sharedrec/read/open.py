"""Opening a reader: the pointer, the lease (written first), the version, the follower.

`open_reader` is the body of `RecommendationStore.reader`, whose docstring describes
the arguments (each one is documented in `sharedrec.read.options`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from sharedrec.errors import InvalidInput, SharedrecError, VersionNotFound
from sharedrec.format.layout import LEASES, ref_path
from sharedrec.read.checks import VerifyLevel
from sharedrec.read.follow import Follower
from sharedrec.read.leases import LeaseKeeper, default_reader_id
from sharedrec.read.reader import Reader
from sharedrec.read.version import open_version

if TYPE_CHECKING:
    from sharedrec.backends.base import Backend
    from sharedrec.read.follow import Opener
    from sharedrec.read.root import StoreRoot

__all__ = ["lease_keeper", "open_reader"]


def open_reader(
    root: StoreRoot,
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
    opener: Opener | None = None,
) -> Reader:
    """A `Reader` of the store at ``root`` (arguments as in `RecommendationStore.reader`).

    ``opener`` opens each version, the first one and those switched to (default:
    `open_version` on ``root``).
    """
    if refresh_interval is not None and refresh_interval <= 0:
        raise InvalidInput(f"refresh_interval must be positive seconds or None; got {refresh_interval!r}")
    if opener is None:
        opener = functools.partial(open_version, root)
    ref = ref or os.environ.get("SHAREDREC_REF") or "current"
    raw = None
    pointer = None
    target = version
    if target is None:
        pointer, raw = root.read_pointer(ref)
        if pointer is None:
            raise root.nothing_live(ref)
        target = pointer.version
    keeper = None
    if lease:
        keeper = lease_keeper(root, lease_dir, reader_id, lease_ttl)
        # Warming from the first lease on, so that `sharedrec ready` never sees this reader
        # ready before its prefetch has started.
        keeper.warming = bool(prefetch)
        # Lease the version before mapping any of it: garbage collection may delete (or
        # condemn) a version no lease names, so the lease must come first.
        keeper.write(target, [])
    try:
        if pointer is None:
            opened = opener(target, verify)
        else:
            try:
                opened = opener(pointer.version, verify, manifest=pointer.manifest)
            except VersionNotFound as exc:
                raise VersionNotFound(
                    f"{root.location}/{ref_path(ref)} names version {pointer.version}, but {exc}; "
                    "point CURRENT at a good version with store.set_current() or store.rollback()"
                ) from None
    except BaseException:
        if keeper is not None:
            keeper.remove()
        raise
    follower = None
    if version is None and not pin:
        follower = Follower(root, opener, refresh_interval, verify, on_refresh_error, raw, ref_path(ref))
    reader = Reader(opened, refresher=follower, lease=keeper)
    if prefetch:
        try:
            reader.prefetch(None if prefetch is True else list(prefetch))
        except BaseException:
            reader.close()  # an unknown collection: no reader, no lease left warming
            raise
    return reader


def lease_keeper(
    root: StoreRoot, lease_dir: str | os.PathLike[str] | None, reader_id: str | None, ttl: float
) -> LeaseKeeper:
    """The keeper of a reader's lease: in ``lease_dir`` (else ``$SHAREDREC_LEASE_DIR``, else the
    store's ``leases/`` folder)."""
    folder = lease_dir if lease_dir is not None else os.environ.get("SHAREDREC_LEASE_DIR")
    if not folder:
        return LeaseKeeper(root.backend, LEASES, reader_id or default_reader_id(), ttl)
    from sharedrec.backends.posix import PosixBackend

    try:
        backend: Backend = PosixBackend(folder, create=True)
    except OSError as exc:
        raise SharedrecError(
            f"cannot write reader lease in {folder} ({exc.strerror or exc}): give a "
            "writable lease_dir, or lease=False to read without one (garbage collection "
            "then cannot see this reader)"
        ) from None
    return LeaseKeeper(backend, "", reader_id or default_reader_id(), ttl)
