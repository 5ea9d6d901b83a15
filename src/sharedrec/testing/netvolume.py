"""A network-volume bench: a FUSE file system over a local folder that behaves like NFS/EFS.

One *node* is one mount of a backing folder, served by its own process. Several nodes over
one backing folder model several Kubernetes nodes mounting one EFS volume: each has its own
page cache and its own attribute and entry caches, and they share the files. A node models:

- **latency per request kind** (``lookup``, ``open``, ``read``, ``write``, ...), from a
  :class:`Profile`; :data:`PROFILES` holds ``"none"`` (0 everywhere) and ``"efs"``;
- **attribute and entry caching** like NFS ``actimeo``: the kernel keeps a file's size and
  mtime for ``attr_timeout`` seconds and a name's lookup for ``entry_timeout`` seconds;
- **close-to-open**: a file whose size or mtime changed since this node last saw it is read
  afresh when it is reopened; its cached pages are dropped;
- **stale handles**: a file deleted or replaced through another node (or in the backing
  folder) while this node holds it open or mapped fails reads of pages this node has not
  cached with ``ESTALE`` (a memory-mapped reader receives ``SIGBUS``); an open through a
  name this node cached before the file was replaced fails with ``ESTALE`` and the kernel
  looks the name up again, as NFS does;
- **silly rename**: a file deleted through the node that holds it open stays readable there
  (libfuse renames it to ``.fuse_hidden*``, as NFS renames it to ``.nfs*``) and goes away on
  the last close;
- **locks across nodes**: ``flock`` through any node locks the backing file, as NFSv4 does;
- **counting**: every request is counted by kind in a small counters file beside the mount,
  so tests and benchmarks can state round trips (:func:`read_counts`).

From Python, :class:`Node` starts and stops a node (and :meth:`Node.remount` gives a cold
node); from the command line::

    python -m sharedrec.testing.netvolume mount BACKING MOUNTPOINT --profile efs --attr-timeout 3
    python -m sharedrec.testing.netvolume counts MOUNTPOINT.counts

Needs Linux, ``/dev/fuse``, libfuse 3 (Debian's ``fuse3``) and the ``mfusepy`` package
(``pip install sharedrec[test]``).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import dataclasses
import errno
import fcntl
import json
import mmap
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, TextIO

__all__ = [
    "KINDS",
    "PROFILES",
    "ROUND_TRIP_KINDS",
    "Node",
    "Profile",
    "Volume",
    "missing",
    "read_counts",
    "round_trips",
]

#: Request kinds the bench counts. ``lookup`` is a name lookup or an attribute fetch
#: (libfuse's high-level API serves both through one call); ``close`` is the flush of a
#: handle that wrote nothing and ``release`` the kernel's final release: neither waits on the
#: server in NFS, so neither is a round trip.
KINDS: tuple[str, ...] = (
    "lookup",
    "open",
    "read",
    "write",
    "create",
    "rename",
    "unlink",
    "mkdir",
    "rmdir",
    "readdir",
    "setattr",
    "fsync",
    "flush",
    "lock",
    "link",
    "statfs",
    "close",
    "release",
)
#: The kinds that wait on the server: everything but ``close`` and ``release``.
ROUND_TRIP_KINDS: frozenset[str] = frozenset(KINDS) - {"close", "release"}
_EXTRA = ("bytes_read", "bytes_written", "stale")
_FIELDS = KINDS + _EXTRA
_MAGIC = b"NVOL0001"
_LAYOUT = struct.Struct("<8s" + "q" * len(_FIELDS))


@dataclasses.dataclass(frozen=True)
class Profile:
    """Seconds of latency added to each request, by kind.

    ``PROFILES["efs"]`` uses the figures AWS states for EFS General Purpose mode:
    0.25 ms for a read or a metadata read (lookup, open, readdir) and 2.7 ms for a write or
    a metadata change (create, rename, unlink, mkdir, rmdir, setattr, fsync, the flush of a
    written file), and 1 ms for a lock.
    """

    lookup: float = 0.0
    open: float = 0.0
    read: float = 0.0
    write: float = 0.0
    create: float = 0.0
    rename: float = 0.0
    unlink: float = 0.0
    mkdir: float = 0.0
    rmdir: float = 0.0
    readdir: float = 0.0
    setattr: float = 0.0
    fsync: float = 0.0
    flush: float = 0.0
    lock: float = 0.0
    link: float = 0.0
    statfs: float = 0.0

    def with_overrides(self, spec: str) -> Profile:
        """This profile with ``kind=seconds`` pairs from ``spec`` (``"read=0.5ms,write=3ms"``)."""
        changes: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            kind, sep, value = part.partition("=")
            if not sep or kind not in {f.name for f in dataclasses.fields(self)}:
                raise ValueError(
                    f"latency {part!r}: expected KIND=SECONDS with KIND one of {', '.join(KINDS)}"
                )
            changes[kind] = _seconds(value)
        return dataclasses.replace(self, **changes)


def _seconds(text: str) -> float:
    text = text.strip()
    for suffix, scale in (("us", 1e-6), ("ms", 1e-3), ("s", 1.0)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * scale
    return float(text)


_EFS_READ = 0.25e-3
_EFS_WRITE = 2.7e-3
PROFILES: dict[str, Profile] = {
    "none": Profile(),
    "efs": Profile(
        lookup=_EFS_READ,
        open=_EFS_READ,
        read=_EFS_READ,
        readdir=_EFS_READ,
        statfs=_EFS_READ,
        write=_EFS_WRITE,
        create=_EFS_WRITE,
        rename=_EFS_WRITE,
        unlink=_EFS_WRITE,
        mkdir=_EFS_WRITE,
        rmdir=_EFS_WRITE,
        setattr=_EFS_WRITE,
        fsync=_EFS_WRITE,
        flush=_EFS_WRITE,
        link=_EFS_WRITE,
        lock=1e-3,
    ),
}


def missing() -> str | None:
    """Why a node cannot run on this machine (a sentence), or None when it can."""
    if not sys.platform.startswith("linux"):
        return "the network-volume bench needs Linux (FUSE)"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is absent: the machine or container has no FUSE device"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed (Debian/Ubuntu: apt-get install fuse3)"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as exc:
        return (
            f"mfusepy cannot load libfuse 3 ({exc}): pip install 'sharedrec[test]' and apt-get install fuse3"
        )
    return None


# --------------------------------------------------------------------------- counters


class _Counters:
    """Counts kept in a small file mapped by the node process; readers open it read-only."""

    def __init__(self, path: str) -> None:
        with open(path, "wb") as f:
            f.write(_LAYOUT.pack(_MAGIC, *([0] * len(_FIELDS))))
        self._file = open(path, "r+b")  # noqa: SIM115 - kept open for the node's life
        self._map = mmap.mmap(self._file.fileno(), _LAYOUT.size)
        self._lock = threading.Lock()
        self._index = {name: i for i, name in enumerate(_FIELDS)}

    def add(self, field: str, n: int = 1) -> None:
        offset = 8 + 8 * self._index[field]
        with self._lock:
            (value,) = struct.unpack_from("<q", self._map, offset)
            struct.pack_into("<q", self._map, offset, value + n)


def read_counts(path: str) -> dict[str, int]:
    """The counters of a node: requests by kind, plus ``bytes_read``, ``bytes_written`` and
    ``stale`` (requests answered ``ESTALE``)."""
    with open(path, "rb") as f:
        raw = f.read(_LAYOUT.size)
    if len(raw) != _LAYOUT.size or raw[:8] != _MAGIC:
        raise ValueError(f"{path} is not a network-volume counters file")
    _magic, *values = _LAYOUT.unpack(raw)
    return dict(zip(_FIELDS, values, strict=True))


def round_trips(counts: Mapping[str, int]) -> int:
    """Requests that waited on the server, in a :func:`read_counts` result or a difference of two."""
    return sum(counts.get(kind, 0) for kind in ROUND_TRIP_KINDS)


# --------------------------------------------------------------------------- the file system


_STATFS_FIELDS = (
    "f_bavail",
    "f_bfree",
    "f_blocks",
    "f_bsize",
    "f_favail",
    "f_ffree",
    "f_files",
    "f_flag",
    "f_frsize",
)


@dataclasses.dataclass
class _Handle:
    fd: int
    path: str
    wrote: bool = False


def _build_operations(
    backing: str,
    profile: Profile,
    counters: _Counters,
    timeouts: tuple[float, float, float],
    trace: TextIO | None = None,
) -> Any:
    import mfusepy as fuse

    # The library mfusepy loaded: dlopen() of the same file returns the same handle, so
    # fuse_get_context() below sees the session mfusepy runs.
    libfuse = ctypes.CDLL(ctypes.util.find_library("fuse3") or "libfuse3.so.3")
    libfuse.fuse_get_context.restype = ctypes.POINTER(fuse.fuse_context)
    libfuse.fuse_invalidate_path.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    libfuse.fuse_invalidate_path.restype = ctypes.c_int

    def invalidate(path: str) -> None:
        """Drop the kernel's cached attributes and pages of ``path`` (from a request's thread)."""
        session = ctypes.c_void_p(libfuse.fuse_get_context().contents.fuse)
        libfuse.fuse_invalidate_path(session, os.fsencode(path))

    class NetworkVolume(fuse.Operations):  # type: ignore[misc]
        use_ns = True

        def __init__(self) -> None:
            self._root = os.path.realpath(backing)
            self._handles: dict[int, _Handle] = {}
            self._next = 1
            self._lock = threading.Lock()
            # The identity (device, inode) this node's kernel last learnt for each name: an
            # open through a name whose file has since been replaced is a stale handle.
            self._seen: dict[str, tuple[int, int]] = {}
            # The size and mtime this node's kernel last learnt for each name.
            self._told: dict[str, tuple[int, int]] = {}

        # -- plumbing
        def _abs(self, path: str) -> str:
            return self._root + path

        def _cost(self, kind: str, path: str) -> None:
            counters.add(kind)
            if trace is not None:
                trace.write(f"{time.monotonic():.6f} {kind} {path}\n")
            delay = getattr(profile, kind, 0.0)
            if delay > 0:
                time.sleep(delay)

        def _stale(self) -> fuse.FuseOSError:
            counters.add("stale")
            return fuse.FuseOSError(errno.ESTALE)

        def _handle(self, fh: int) -> _Handle:
            with self._lock:
                handle = self._handles.get(fh)
            if handle is None:
                raise fuse.FuseOSError(errno.EBADF)
            return handle

        def _new_handle(self, fd: int, path: str) -> int:
            with self._lock:
                fh = self._next
                self._next += 1
                self._handles[fh] = _Handle(fd, path)
            return fh

        def _check_live(self, handle: _Handle) -> os.stat_result:
            st = os.fstat(handle.fd)
            if st.st_nlink == 0:  # deleted or replaced through another node
                raise self._stale()
            return st

        def init_with_config(self, conn_info: Any, config: Any) -> None:
            if config is not None:
                config.entry_timeout = timeouts[1]
                config.negative_timeout = timeouts[2]
                config.attr_timeout = timeouts[0]
                config.auto_cache = 1  # close-to-open: reopen re-reads a file that changed
                # ... checked at every open, as NFS does whatever its actimeo: by default
                # libfuse trusts what it knows for attr_timeout and keeps stale pages.
                config.ac_attr_timeout_set = 1
                config.ac_attr_timeout = 0.0
                config.kernel_cache = 0
                config.hard_remove = 0  # silly rename of files open on this node
                config.use_ino = 0

        # -- metadata
        def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
            self._cost("lookup", path)
            if fh is not None:
                handle = self._handle(fh)
                st = self._check_live(handle)
                with self._lock:
                    self._told[handle.path] = (st.st_size, st.st_mtime_ns)
            else:
                st = os.lstat(self._abs(path))
                with self._lock:
                    self._seen[path] = (st.st_dev, st.st_ino)
                    self._told[path] = (st.st_size, st.st_mtime_ns)
            return {
                "st_mode": st.st_mode,
                "st_nlink": st.st_nlink,
                "st_size": st.st_size,
                "st_uid": st.st_uid,
                "st_gid": st.st_gid,
                "st_atime": st.st_atime_ns,
                "st_mtime": st.st_mtime_ns,
                "st_ctime": st.st_ctime_ns,
                "st_blocks": st.st_blocks,
            }

        def access(self, path: str, amode: int) -> int:
            self._cost("lookup", path)
            if not os.access(self._abs(path), amode):
                raise fuse.FuseOSError(errno.EACCES)
            return 0

        def readlink(self, path: str) -> str:
            self._cost("lookup", path)
            return os.readlink(self._abs(path))

        def opendir(self, path: str) -> int:
            self._cost("lookup", path)
            if not os.path.isdir(self._abs(path)):
                raise fuse.FuseOSError(errno.ENOTDIR)
            return 0

        def readdir(self, path: str, fh: int) -> list[str]:
            self._cost("readdir", path)
            return [".", "..", *os.listdir(self._abs(path))]

        def releasedir(self, path: str, fh: int) -> int:
            return 0

        def statfs(self, path: str) -> dict[str, int]:
            self._cost("statfs", path)
            st = os.statvfs(self._abs(path))
            return {key: getattr(st, key) for key in _STATFS_FIELDS}

        # -- changes to names
        def mkdir(self, path: str, mode: int) -> int:
            self._cost("mkdir", path)
            os.mkdir(self._abs(path), mode)
            return 0

        def rmdir(self, path: str) -> int:
            self._cost("rmdir", path)
            os.rmdir(self._abs(path))
            return 0

        def unlink(self, path: str) -> int:
            self._cost("unlink", path)
            os.unlink(self._abs(path))
            with self._lock:
                self._seen.pop(path, None)
            return 0

        def rename(self, old: str, new: str) -> int:
            self._cost("rename", old)
            os.rename(self._abs(old), self._abs(new))
            with self._lock:  # this node's kernel moves its cached names with the rename
                prefix = old + "/"
                for name in [n for n in self._seen if n == old or n.startswith(prefix)]:
                    self._seen[new + name[len(old) :]] = self._seen.pop(name)
            return 0

        def link(self, target: str, source: str) -> int:
            self._cost("link", target)
            os.link(self._abs(source), self._abs(target))
            return 0

        def symlink(self, target: str, source: str) -> int:
            self._cost("create", target)
            os.symlink(source, self._abs(target))
            return 0

        def chmod(self, path: str, mode: int) -> int:
            self._cost("setattr", path)
            os.chmod(self._abs(path), mode)
            return 0

        def chown(self, path: str, uid: int, gid: int) -> int:
            self._cost("setattr", path)
            os.chown(self._abs(path), uid, gid)
            return 0

        def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
            self._cost("setattr", path)
            if times is None:
                os.utime(self._abs(path))
            else:
                os.utime(self._abs(path), ns=times)
            return 0

        def truncate(self, path: str, length: int, fh: int | None = None) -> int:
            self._cost("setattr", path)
            if fh is not None:
                os.ftruncate(self._handle(fh).fd, length)
            else:
                os.truncate(self._abs(path), length)
            return 0

        # -- files
        def open(self, path: str, flags: int) -> int:
            self._cost("open", path)
            fd = os.open(self._abs(path), flags & ~(os.O_CREAT | os.O_EXCL))
            st = os.fstat(fd)
            with self._lock:
                seen = self._seen.get(path)
            if seen is not None and seen != (st.st_dev, st.st_ino):
                # The kernel opened a name it resolved to a file since replaced: a stale
                # handle. The kernel looks the name up again and retries, as with NFS.
                os.close(fd)
                raise self._stale()
            with self._lock:
                told = self._told.get(path)
                changed = told is not None and told != (st.st_size, st.st_mtime_ns)
                if changed:
                    del self._told[path]  # the kernel asks again before it trusts a size
            if changed:
                # Close-to-open: the file changed since the kernel learnt its size, which it
                # would trust (and read no further than) until attr_timeout passes; NFS's
                # open asks the server afresh. Drop what the kernel knows of the file.
                invalidate(path)
            return self._new_handle(fd, path)

        def create(self, path: str, mode: int, flags: int = os.O_WRONLY) -> int:
            self._cost("create", path)
            fd = os.open(self._abs(path), flags | os.O_CREAT, mode)
            st = os.fstat(fd)
            with self._lock:
                self._seen[path] = (st.st_dev, st.st_ino)
            return self._new_handle(fd, path)

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            self._cost("read", path)
            handle = self._handle(fh)
            self._check_live(handle)
            data = os.pread(handle.fd, size, offset)
            counters.add("bytes_read", len(data))
            return data

        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            self._cost("write", path)
            handle = self._handle(fh)
            self._check_live(handle)
            handle.wrote = True
            n = os.pwrite(handle.fd, data, offset)
            counters.add("bytes_written", n)
            return n

        def flush(self, path: str, fh: int) -> int:
            handle = self._handle(fh)
            self._cost("flush" if handle.wrote else "close", path)
            return 0

        def fsync(self, path: str, datasync: int, fh: int) -> int:
            self._cost("fsync", path)
            handle = self._handle(fh)
            if datasync:
                os.fdatasync(handle.fd)
            else:
                os.fsync(handle.fd)
            return 0

        def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
            self._cost("fsync", path)
            return 0

        def release(self, path: str, fh: int) -> int:
            counters.add("release")
            with self._lock:
                handle = self._handles.pop(fh, None)
            if handle is not None:
                os.close(handle.fd)
            return 0

        def flock(self, path: str, fh: int, op: int) -> int:
            self._cost("lock", path)
            fcntl.flock(self._handle(fh).fd, op)
            return 0

    return NetworkVolume()


def serve(
    backing: str,
    mountpoint: str,
    *,
    profile: Profile,
    attr_timeout: float,
    entry_timeout: float,
    counts_path: str,
    negative_timeout: float | None = None,
    allow_other: bool = False,
    trace_path: str | None = None,
) -> None:
    """Serve one node in this process until it is unmounted (``fusermount3 -u MOUNTPOINT``).

    ``trace_path``: a file that gets one line per counted request (time, kind, path).
    """
    import mfusepy as fuse

    counters = _Counters(counts_path)
    trace = open(trace_path, "a", buffering=1, encoding="utf-8") if trace_path else None  # noqa: SIM115
    operations = _build_operations(
        backing,
        profile,
        counters,
        (attr_timeout, entry_timeout, entry_timeout if negative_timeout is None else negative_timeout),
        trace,
    )
    options: dict[str, Any] = {"fsname": "netvolume", "subtype": "netvolume"}
    if allow_other:
        # The kernel checks each caller's uid against the files' modes, as NFS does; without
        # it every user could read what the node's process (root) can. Only here: it costs a
        # request per path component whose attributes are not cached (NFS's ACCESS calls),
        # which would change the figures of single-user benchmarks.
        options["allow_other"] = True
        options["default_permissions"] = True
    fuse.FUSE(operations, mountpoint, foreground=True, **options)


# --------------------------------------------------------------------------- a node from Python


class Node:
    """One node: a mount of ``backing`` at ``mountpoint``, served by a child process.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. ``counts()`` gives the
    requests so far; ``counts(since=...)`` the difference from an earlier reading.
    """

    def __init__(
        self,
        backing: str | os.PathLike[str],
        mountpoint: str | os.PathLike[str],
        *,
        profile: Profile | str = "none",
        attr_timeout: float = 0.0,
        entry_timeout: float | None = None,
        name: str = "node",
        allow_other: bool = False,
        negative_timeout: float | None = None,
        trace: str | os.PathLike[str] | None = None,
    ) -> None:
        self.backing = os.fspath(backing)
        self.path = os.fspath(mountpoint)
        self.profile = PROFILES[profile] if isinstance(profile, str) else profile
        self.attr_timeout = attr_timeout
        self.entry_timeout = attr_timeout if entry_timeout is None else entry_timeout
        self.name = name
        self.allow_other = allow_other
        """Other users may use the mount, and the kernel checks their permissions."""
        self.negative_timeout = self.entry_timeout if negative_timeout is None else negative_timeout
        """Seconds a name found missing stays missing (NFS ``lookupcache=positive`` is 0)."""
        self.trace = None if trace is None else os.fspath(trace)
        """A file that gets one line per request (time, kind, path), or None."""
        self.counts_path = self.path.rstrip("/") + ".counts"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path = self.path.rstrip("/") + ".log"

    def __repr__(self) -> str:
        return f"Node({self.name!r}, {self.path!r}, attr_timeout={self.attr_timeout})"

    def __enter__(self) -> Node:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 20.0) -> None:
        """Mount, and wait until the mount answers."""
        reason = missing()
        if reason is not None:
            raise RuntimeError(reason)
        os.makedirs(self.path, exist_ok=True)
        overrides = ",".join(
            f"{f.name}={getattr(self.profile, f.name)!r}" for f in dataclasses.fields(self.profile)
        )
        command = [
            sys.executable,
            "-m",
            "sharedrec.testing.netvolume",
            "mount",
            self.backing,
            self.path,
            "--profile",
            "none",
            "--latency",
            overrides,
            "--attr-timeout",
            repr(self.attr_timeout),
            "--entry-timeout",
            repr(self.entry_timeout),
            "--counts",
            self.counts_path,
        ]
        command += ["--negative-timeout", repr(self.negative_timeout)]
        if self.allow_other:
            command.append("--allow-other")
        if self.trace is not None:
            command += ["--trace", self.trace]
        with open(self._log_path, "ab") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while not os.path.ismount(self.path):
            if self._process.poll() is not None:
                raise RuntimeError(f"node {self.name} failed to mount {self.path}: {self._log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"node {self.name} did not mount {self.path} in {timeout} s: {self._log()}"
                )
            time.sleep(0.02)
        while not os.path.exists(self.counts_path):
            time.sleep(0.01)

    def _log(self) -> str:
        with contextlib.suppress(OSError), open(self._log_path, encoding="utf-8", errors="replace") as f:
            return f.read()[-2000:]
        return ""

    def stop(self, timeout: float = 20.0) -> None:
        """Unmount and end the node's process (lazily, if a process still uses the mount)."""
        process, self._process = self._process, None
        if os.path.ismount(self.path):
            done = subprocess.run(["fusermount3", "-u", self.path], capture_output=True, check=False)
            if done.returncode != 0:
                subprocess.run(["fusermount3", "-u", "-z", self.path], capture_output=True, check=False)
        if process is not None:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def remount(self) -> None:
        """Unmount and mount again: a cold node, with empty page, attribute and entry caches."""
        self.stop()
        self.start()

    def counts(self, since: Mapping[str, int] | None = None) -> dict[str, int]:
        """Requests by kind so far, or since an earlier ``counts()``."""
        now = read_counts(self.counts_path)
        if since is None:
            return now
        return {k: v - since.get(k, 0) for k, v in now.items()}

    def round_trips(self, since: Mapping[str, int] | None = None) -> int:
        """Requests that waited on the server, so far or since an earlier ``counts()``."""
        return round_trips(self.counts(since))


class Volume:
    """One network volume: a backing folder under ``root`` and the nodes that mount it.

    ``volume.node("a", attr_timeout=3)`` mounts a node at ``root/node-a``; :meth:`close` (or
    leaving the ``with`` block) unmounts them all.
    """

    def __init__(self, root: str | os.PathLike[str], **defaults: Any) -> None:
        self.root = os.fspath(root)
        self.backing = os.path.join(self.root, "backing")
        os.makedirs(self.backing, exist_ok=True)
        self._defaults = defaults
        self.nodes: dict[str, Node] = {}

    def __enter__(self) -> Volume:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def node(self, name: str, **options: Any) -> Node:
        """Mount a new node called ``name`` (options as for :class:`Node`) and return it."""
        if name in self.nodes:
            raise ValueError(f"node {name!r} is already mounted")
        node = Node(
            self.backing, os.path.join(self.root, f"node-{name}"), name=name, **{**self._defaults, **options}
        )
        node.start()
        self.nodes[name] = node
        return node

    def close(self) -> None:
        """Unmount every node."""
        for node in self.nodes.values():
            node.stop()
        self.nodes.clear()


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """``mount`` serves a node in the foreground; ``counts`` prints a node's counters."""
    parser = argparse.ArgumentParser(
        prog="python -m sharedrec.testing.netvolume", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    mount = sub.add_parser("mount", help="serve a node over BACKING at MOUNTPOINT until unmounted")
    mount.add_argument("backing")
    mount.add_argument("mountpoint")
    mount.add_argument("--profile", choices=sorted(PROFILES), default="none")
    mount.add_argument("--latency", default="", help="per-kind overrides, e.g. read=0.5ms,write=3ms")
    mount.add_argument(
        "--attr-timeout", type=float, default=3.0, help="seconds a file's attributes are cached"
    )
    mount.add_argument("--entry-timeout", type=float, default=None, help="seconds a name lookup is cached")
    mount.add_argument("--counts", default=None, help="counters file (default MOUNTPOINT.counts)")
    mount.add_argument(
        "--negative-timeout",
        type=float,
        default=None,
        help="seconds a missing name is cached (default: entry timeout)",
    )
    mount.add_argument(
        "--trace", default=None, help="write one line per request (time, kind, path) to this file"
    )
    mount.add_argument("--allow-other", action="store_true", help="let other users in (permissions checked)")
    show = sub.add_parser("counts", help="print a node's counters as JSON")
    show.add_argument("counts")
    args = parser.parse_args(argv)
    if args.command == "counts":
        counts = read_counts(args.counts)
        print(json.dumps({**counts, "round_trips": round_trips(counts)}, indent=2))
        return 0
    reason = missing()
    if reason is not None:
        print(reason, file=sys.stderr)
        return 2
    try:
        profile = PROFILES[args.profile].with_overrides(args.latency)
    except ValueError as exc:
        parser.error(str(exc))
    signal.signal(
        signal.SIGTERM, lambda *_: subprocess.run(["fusermount3", "-u", "-z", args.mountpoint], check=False)
    )
    serve(
        args.backing,
        args.mountpoint,
        profile=profile,
        attr_timeout=args.attr_timeout,
        entry_timeout=args.attr_timeout if args.entry_timeout is None else args.entry_timeout,
        negative_timeout=args.negative_timeout,
        counts_path=args.counts or args.mountpoint.rstrip("/") + ".counts",
        allow_other=args.allow_other,
        trace_path=args.trace,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
