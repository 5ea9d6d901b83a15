"""Following the live version: pointer polling, the background thread, the lease's last words.

A following `Reader` holds a `Refresher` (a `Follower` of one pointer) that says when
the pointer moved and opens the version it names; a background thread (`background`)
polls it and renews the reader's lease. `after_fork` gives a forked child's readers a
thread and a lease of their own.
"""

from __future__ import annotations

import _thread
import atexit  # noqa: F401  # with the read path: weakref.finalize imports it at a reader's first open
import os
import threading
import time
import weakref
from types import MethodType
from typing import TYPE_CHECKING, Protocol

from sharedrec._log import log
from sharedrec.errors import StoreNotFound, VersionNotFound
from sharedrec.format.layout import CURRENT
from sharedrec.format.schema import Pointer

if TYPE_CHECKING:
    from collections.abc import Callable

    from sharedrec.format.schema import Manifest
    from sharedrec.read.checks import VerifyLevel
    from sharedrec.read.leases import LeaseKeeper
    from sharedrec.read.root import StoreRoot
    from sharedrec.read.version import OpenVersion

__all__ = [
    "Background",
    "Follower",
    "Opener",
    "Refresher",
    "after_fork",
    "background",
    "forget_after_fork",
    "shutdown",
]


class Refresher(Protocol):
    """What a following reader needs from its store (implemented by `Follower`)."""

    interval: float | None
    pointer: str
    """The pointer file followed: ``CURRENT``, or ``refs/<name>`` for a named ref."""

    def due(self) -> bool:
        """Whether the background thread should poll now."""
        ...

    def poll(self, force: bool, current: str) -> str | None:
        """The version ``CURRENT`` names if it is not ``current``, else None.

        Unless ``force``, a pointer that already failed to open is not tried again.
        """
        ...

    def open(self, version_id: str) -> OpenVersion:
        """Open and verify a version."""
        ...

    def failed(self, exc: Exception) -> None:
        """Report a failed refresh (log, callback)."""
        ...


class Opener(Protocol):
    """Opens a version of a store (`open_version` bound to its root, or the facade's)."""

    def __call__(
        self, version_id: str, verify: VerifyLevel = ..., *, manifest: Manifest | None = ...
    ) -> OpenVersion: ...


class Follower:
    """Polls a pointer (``CURRENT`` by default) for a reader that follows the live version."""

    def __init__(
        self,
        root: StoreRoot,
        opener: Opener,
        interval: float | None,
        verify: VerifyLevel,
        on_error: Callable[[Exception], None] | None,
        seen: bytes | None,
        path: str = CURRENT,
    ) -> None:
        self.interval = interval
        self.pointer = path
        self._path = path
        self._root = root
        self._opener = opener
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
            changed = self._root.backend.read_if_changed(self._path, None if force else self._token)
        except StoreNotFound:  # the bucket or mount is missing, not the file
            raise
        except FileNotFoundError:
            raise VersionNotFound(f"{self._root.location}/{self._path} disappeared") from None
        if changed is None:
            return None
        raw, self._token = changed
        if raw == self._seen or (raw == self._failed and not force):
            return None
        pointer = Pointer.loads(raw, f"{self._root.location}/{self._path}")
        self._pending = raw
        self._pending_manifest = pointer.manifest
        if pointer.version == current:
            self._seen = raw
            return None
        return pointer.version

    def open(self, version_id: str) -> OpenVersion:
        # A switch happens off the hot path: check at least every file's size first.
        verify: VerifyLevel = "full" if self._verify == "full" else "sizes"
        opened = self._opener(version_id, verify, manifest=self._pending_manifest)
        self._seen = self._pending
        return opened

    def failed(self, exc: Exception) -> None:
        self._failed = self._pending
        log.warning("reader stays on its version: refresh from %s failed: %s", self._root.location, exc)
        if self._on_error is not None:
            try:
                self._on_error(exc)
            except Exception:
                log.exception("on_refresh_error callback raised")


class WeakMethod:
    """A method of an object held weakly: calling this gives the bound method, or None once
    the object is gone.

    It does what `weakref.WeakMethod` does without that class's callbacks, which Python 3.11
    can run after their own weak reference has died, at interpreter exit, printing
    ``AttributeError: 'NoneType' object has no attribute '_alive'`` for every reader a
    service had not closed.
    """

    __slots__ = ("_function", "_owner")

    def __init__(self, method: Callable[[], None], gone: Callable[[object], object] | None = None) -> None:
        self._owner = weakref.ref(method.__self__, gone)  # type: ignore[attr-defined]
        self._function: Callable[[object], None] = method.__func__  # type: ignore[attr-defined]

    def __call__(self) -> Callable[[], None] | None:
        owner = self._owner()
        return None if owner is None else MethodType(self._function, owner)


def background(tick: WeakMethod, stop: threading.Event, period: float, first: float) -> None:
    """The body of a reader's background thread: ``tick()`` every ``period`` seconds.

    ``tick`` is held weakly, so the thread never keeps its reader alive: it ends when the
    reader is garbage-collected, or when ``stop`` is set.
    """
    wait = first
    while not stop.wait(wait):
        wait = period
        method = tick()
        if method is None:
            return
        try:
            method()
        except Exception:  # never let the thread die: the next tick tries again
            log.exception("sharedrec reader background refresh failed")
        del method


class Background:
    """A reader's background thread (`background`), started without waiting for it to run.

    ``threading.Thread.start`` waits until the new thread has run: a switch to it and back,
    which on a busy node (other processes on every core) took milliseconds of a reader's
    open. Nothing needs the thread before its first round, one period later, so it is
    started with ``_thread`` and waited for only when the reader closes.
    """

    __slots__ = ("done", "ident")

    def __init__(self, tick: WeakMethod, stop: threading.Event, period: float, first: float) -> None:
        self.done = threading.Event()
        self.ident: int | None = None
        _thread.start_new_thread(self._run, (tick, stop, period, first))

    def _run(self, tick: WeakMethod, stop: threading.Event, period: float, first: float) -> None:
        self.ident = threading.get_ident()
        try:
            background(tick, stop, period, first)
        finally:
            self.done.set()

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the thread to end (not from the thread itself)."""
        if self.ident != threading.get_ident():
            self.done.wait(timeout)


def shutdown(stop: threading.Event, lease: LeaseKeeper | None) -> None:
    """Stop a reader's thread and remove its lease (at close, or when it is collected)."""
    stop.set()
    if lease is None:
        return
    if threading.current_thread().name != "fsspecIO":
        lease.remove()
    else:
        # Garbage collection ran this inside fsspec's event-loop thread, where the blocking
        # S3 calls of the removal would deadlock: remove the lease from another thread.
        threading.Thread(target=lease.remove, name="sharedrec-lease-removal", daemon=True).start()


_AFTER_FORK: dict[int, WeakMethod] = {}
"""What a forked child runs for each reader not closed yet, by the reader's id (held weakly)."""


def after_fork(hook: Callable[[], None]) -> None:
    """Run the bound method ``hook`` in every child forked while its object lives.

    Threads do not survive ``fork()``: a reader's hook gives the child its own lease and thread.
    """
    owner = id(hook.__self__)  # type: ignore[attr-defined]
    table = _AFTER_FORK  # held by the callback itself, which may run as the interpreter exits

    def gone(_: object) -> None:
        table.pop(owner, None)

    table[owner] = WeakMethod(hook, gone)


def forget_after_fork(owner: object) -> None:
    """Stop running ``owner``'s fork hook (a closed reader)."""
    _AFTER_FORK.pop(id(owner), None)


def _after_fork_in_child() -> None:
    for ref in list(_AFTER_FORK.values()):
        hook = ref()
        if hook is None:
            continue
        try:
            hook()
        except Exception:  # never fail the fork: the reader then only serves its version
            log.exception("sharedrec reader could not resume after fork()")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
