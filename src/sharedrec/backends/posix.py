"""Local disk and mounted network file systems (AWS EFS, NFS).

One code path for both, written to the rules a network file system needs: data and
metadata are fsynced before anything points at them, files are replaced by
``os.replace`` of a fsynced temporary file in the same folder followed by a fsync of the
folder, and the pointer is always read with open+read (close-to-open consistency on NFS),
never judged by ``stat``, and read again when the read fails with ``ESTALE`` or comes back
short.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from collections.abc import Iterator
from typing import Any, BinaryIO

from sharedrec.backends.base import no_store, replace_if_unchanged
from sharedrec.errors import SharedrecError
from sharedrec.format.layout import CURRENT, REFS

__all__ = ["PosixBackend"]

_LOCK = ".sharedrec.lock"
_VERSIONS = "versions"
# A file another host replaces under its name can fail a read with ESTALE (NFS: the file
# went between our open and our read), or come back short: a client that keeps one inode
# per name (FUSE mounts) may cut the read at the size of another generation of the file,
# learnt meanwhile. Opening the name again reaches the new file whole: ESTALE is retried for
# up to three seconds (only a file replaced faster than it can be read, for that long, fails:
# one second was not enough for a reader starved of CPU on a busy node), a pointer that does
# not parse for a tenth of a second (then it is reported corrupt, as it may really be).
_STALE_SECONDS = 3.0
_SHORT_SECONDS = 0.1

# Plain os.path, not pathlib: every reader process opens its store through this module,
# and pathlib (with shutil) would add milliseconds to its start-up.


class PosixBackend:
    """A store root on a POSIX path."""

    def __init__(self, root: str | os.PathLike[str], *, create: bool) -> None:
        self.root = os.path.abspath(os.path.expanduser(os.fspath(root)))
        # A store is a folder: an existing one, even empty (a freshly mounted volume), is a
        # store without versions yet. One stat; nothing is created unless asked.
        if not os.path.isdir(self.root):
            if not create:
                raise no_store(self.root, "the folder does not exist (is the volume mounted?)")
            os.makedirs(self.root, exist_ok=True)

    @property
    def location(self) -> str:
        return self.root

    def _abs(self, path: str) -> str:
        return os.path.join(self.root, path) if path else self.root

    def read_bytes(self, path: str) -> bytes:
        target = self._abs(path)
        # A pointer is a JSON object written whole by os.replace: one that does not parse was
        # read short, or is damaged (then the caller reports it).
        pointer = path == CURRENT or path.startswith(REFS + "/")
        first_failure, delay = 0.0, 0.001
        while True:
            waited = time.monotonic() - first_failure if first_failure else 0.0
            try:
                with open(target, "rb") as f:
                    data = f.read()
            except OSError as exc:
                if exc.errno != errno.ESTALE or waited > _STALE_SECONDS:
                    raise
            else:
                if not pointer or waited > _SHORT_SECONDS or _whole_json(data):
                    return data
            first_failure = first_failure or time.monotonic()
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def read_if_changed(self, path: str, token: object) -> tuple[bytes, object] | None:
        # open + read every time: on NFS only a fresh open revalidates the cached file.
        data = self.read_bytes(path)
        return None if data == token else (data, data)

    def upload(self, files: list[tuple[str, str]], progress: Any = None) -> None:
        import shutil

        for local, path in files:
            target = self._abs(path)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(local, target)
            if progress is not None:
                progress.advance(os.stat(target).st_size)

    def write_atomic(self, path: str, data: bytes, *, durable: bool = True) -> None:
        target = self._abs(path)
        folder, name = os.path.split(target)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{name}.tmp-{os.urandom(4).hex()}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                if durable:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        if durable:
            _fsync_dir(folder)

    def swap_pointer(self, path: str, data: bytes, expected: bytes | None) -> None:
        # flock works across hosts on NFSv4 (EFS), so two writers on two pods serialise here.
        import fcntl  # here: only writers lock, and a reader's open need not load it

        with open(os.path.join(self.root, _LOCK), "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                replace_if_unchanged(self, path, data, expected)
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def check_swaps(self, path: str) -> None:
        """Nothing to check: `swap_pointer` holds ``flock``, which every writer honours."""

    def listdir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(self._abs(path)))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def exists(self, path: str) -> bool:
        return os.path.exists(self._abs(path))

    def remove_tree(self, path: str) -> None:
        target = self._abs(path)
        if path.split("/", 1)[0] == _VERSIONS:
            self._refuse_links(target)
        if os.path.isdir(target) and not os.path.islink(target):
            import shutil

            # rmtree unlinks the links it meets inside; it never follows them.
            shutil.rmtree(target, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target)  # a link itself, never what it points to

    def remove_file(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._abs(path))

    def _refuse_links(self, target: str) -> None:
        """Raise if a folder on the way from the root to ``target`` is a link: the data of
        another store may be behind it."""
        parent = os.path.dirname(target)
        relative = os.path.relpath(parent, self.root)
        root = os.path.realpath(self.root)
        expected = root if relative == "." else os.path.join(root, relative)
        real = os.path.realpath(parent)
        if real != expected and os.path.lexists(parent):
            raise SharedrecError(
                f"refusing to delete {target}: a folder on its path is a symbolic link (to {real}), "
                "and sharedrec never deletes through links; remove the link by hand"
            )

    def size(self, path: str) -> int | None:
        try:
            return os.stat(self._abs(path)).st_size
        except FileNotFoundError:
            return None

    def tree_mtime(self, path: str) -> float | None:
        base = self._abs(path)
        try:
            newest = os.stat(base).st_mtime
        except FileNotFoundError:
            return None
        for folder, _dirs, files in os.walk(base):
            for name in (*files, *_dirs):
                try:
                    newest = max(newest, os.stat(os.path.join(folder, name)).st_mtime)
                except FileNotFoundError:  # removed while we walked
                    continue
        return newest

    def walk_files(self, path: str) -> Iterator[tuple[str, int]]:
        base = self._abs(path)
        found: list[tuple[str, int]] = []
        for folder, _dirs, files in os.walk(base):
            for name in files:
                full = os.path.join(folder, name)
                relative = os.path.relpath(full, base).replace(os.sep, "/")
                try:
                    found.append((relative, os.stat(full).st_size))
                except FileNotFoundError:  # removed while we walked
                    continue
        yield from sorted(found)

    def open_read(self, path: str) -> BinaryIO:
        return open(self._abs(path), "rb")

    def sync_tree(self, path: str) -> None:
        base = self._abs(path)
        for folder, _dirs, files in os.walk(base, topdown=False):
            for name in files:
                fd = os.open(os.path.join(folder, name), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            _fsync_dir(folder)
        _fsync_dir(os.path.dirname(base))

    def zarr_store(self, path: str) -> Any:
        from zarr.storage import LocalStore

        target = self._abs(path)
        os.makedirs(target, exist_ok=True)
        return LocalStore(target)

    def local_path(self, path: str) -> str | None:
        return self._abs(path)


def _whole_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
