"""Local staging folders of publishes to object stores, which a dead publisher cannot leak.

A publish to S3 writes the whole version on local disk first, then uploads it. A publisher
killed on the way (SIGKILL, the OOM killer, a node drain) runs no cleanup, so its staging
folder must be found by somebody else: staging lives under the node's sharedrec cache
folder (``<cache dir>/staging/<store digest>/``), one folder per draft named by host,
process and a random suffix, next to a lock file that the owner holds (``flock``) for the
life of the draft. The kernel releases the lock when the owner dies, however it dies, so
the next publish (and ``store.gc()``) on the node removes every folder whose lock nobody
holds, and never one whose owner still runs (a lock held by a live process, or by a
forked child that inherited it, cannot be taken).

`Staging` is what writers use: it writes in place on a POSIX path, and only stages on
object stores.

Order matters for that test: the owner creates and locks ``<name>.lock`` before it creates
``<name>/``, and whoever removes a draft removes the folder before the lock file, so a
folder without a lock file always belongs to a dead owner.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import secrets
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sharedrec.backends.base import Backend

__all__ = ["Staging", "new_staging", "remove_staging", "sweep_staging"]

log = logging.getLogger("sharedrec")

_LOCK = ".lock"
_held: dict[str, int] = {}
"""Staging folders of this process, and the descriptor that holds each one's lock."""
_held_lock = threading.Lock()


class Staging:
    """Where a writer writes the folder ``target`` of a store: in place on a POSIX path,
    else in a local staging folder of this node, uploaded when the files are complete.

    Args:
        backend: The store.
        target: The folder to write, relative to the store root.
        cache_dir: The node's cache folder staging goes under (None: the default one).
    """

    def __init__(
        self, backend: Backend, target: str, cache_dir: str | os.PathLike[str] | None = None
    ) -> None:
        self.backend = backend
        self.target = target
        self.folder: str | None = None
        self.local: Backend = backend
        """Where to write ``target`` (the same paths as in the store)."""
        if backend.local_path(target) is None:
            from sharedrec.backends.posix import PosixBackend

            self.folder = new_staging(cache_dir, backend.location)
            try:
                self.local = PosixBackend(self.folder, create=True)
            except BaseException:
                remove_staging(self.folder)
                raise

    def upload(self, paths: Iterable[str], progress: Any = None) -> None:
        """Copy the files written (``paths`` relative to ``target``) into the store and free
        the staging folder; nothing to do when written in place."""
        if self.folder is None:
            return
        folder, target = self.folder, self.target
        self.backend.upload([(f"{folder}/{target}/{path}", f"{target}/{path}") for path in paths], progress)
        self.release()

    def release(self) -> None:
        """Free the staging folder, if any (again: nothing)."""
        if self.folder is not None:
            remove_staging(self.folder)

    def discard(self) -> None:
        """Remove what was written: locally, and whatever was uploaded before a failure."""
        self.local.remove_tree(self.target)
        if self.folder is not None:
            self.release()
            self.backend.remove_tree(self.target)


def _roots(cache_dir: str | os.PathLike[str] | None, location: str) -> list[Path]:
    """Where staging of the store ``location`` lives: the cache folder, else the temp folder."""
    from sharedrec.read.cache import default_cache_dir

    digest = hashlib.sha256(location.encode()).hexdigest()[:16]
    # The temp folder is the fallback when the cache folder is not writable (a read-only
    # home in a container); it is swept too.
    roots = [Path(tempfile.gettempdir()) / f"sharedrec-staging-{os.getuid()}" / digest]
    try:
        base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    except RuntimeError:  # no home folder to put the default cache in
        return roots
    return [base.absolute() / "staging" / digest, *roots]


def new_staging(cache_dir: str | os.PathLike[str] | None, location: str) -> str:
    """A new, empty staging folder for one draft of the store ``location``, locked by this process.

    First removes the staging left by dead publishers of the same store on this node.
    Release it with `remove_staging`.
    """
    sweep_staging(cache_dir, location)
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())[:64] or "host"
    roots = _roots(cache_dir, location)
    for number, root in enumerate(roots):
        try:
            root.mkdir(parents=True, exist_ok=True)
            for _attempt in range(8):
                folder = root / f"{host}-{os.getpid()}-{secrets.token_hex(4)}"
                if _lock_and_create(folder):
                    return str(folder)
        except OSError as exc:
            if number + 1 == len(roots):
                raise
            log.warning("cannot stage a publish in %s (%s); staging in %s", root, exc, roots[number + 1])
    raise OSError(f"cannot create a staging folder in {roots[-1]}: sweepers kept taking its lock")


def _lock_and_create(folder: Path) -> bool:
    """Create and lock ``folder``'s lock file, then the folder; False if a sweeper interfered."""
    lock = Path(f"{folder}{_LOCK}")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # A sweeper may have taken the lock file between its creation and the flock,
            # and removed it: then this lock guards nothing, and another name is needed.
            mine = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except (BlockingIOError, FileNotFoundError):
            mine = False
        if not mine:
            os.close(fd)
            return False
        folder.mkdir()
    except BaseException:
        lock.unlink(missing_ok=True)
        os.close(fd)
        raise
    with _held_lock:
        _held[str(folder)] = fd
    return True


def remove_staging(folder: str) -> None:
    """Delete a staging folder of this process and release its lock."""
    shutil.rmtree(folder, ignore_errors=True)
    with _held_lock:
        fd = _held.pop(folder, None)
    Path(f"{folder}{_LOCK}").unlink(missing_ok=True)
    if fd is not None:
        os.close(fd)


def sweep_staging(cache_dir: str | os.PathLike[str] | None, location: str) -> list[str]:
    """Delete the staging folders of the store ``location`` whose publisher is gone.

    Returns the folders deleted. Folders of live publishers, on this node or any process
    sharing the folder, are left alone: their lock cannot be taken.
    """
    removed = []
    for root in _roots(cache_dir, location):
        try:
            names = os.listdir(root)
        except OSError:  # no staging there (yet), or not readable: nothing of ours to clean
            continue
        for name in names:
            path = root / name
            if name.endswith(_LOCK):
                folder = root / name[: -len(_LOCK)]
                if _take_dead(path, folder):
                    removed.append(str(folder))
            elif not (root / f"{name}{_LOCK}").exists() and path.is_dir():
                # Its lock file was removed, which only a remover holding the lock does.
                shutil.rmtree(path, ignore_errors=True)
                removed.append(str(path))
    if removed:
        log.info("removed staging folders of dead publishers: %s", ", ".join(removed))
    return removed


def _take_dead(lock: Path, folder: Path) -> bool:
    """Remove ``folder`` and its lock file if no process holds the lock; True if removed."""
    try:
        fd = os.open(lock, os.O_RDWR)  # never O_CREAT: a lock file is created by its owner only
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: the publisher lives
            return False
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:  # another sweeper removed it first
            return False
        if not same:
            return False
        shutil.rmtree(folder, ignore_errors=True)
        lock.unlink(missing_ok=True)
        return True
    finally:
        os.close(fd)
