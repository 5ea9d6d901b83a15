"""Writers' side of the garbage-collection protocol: leases, marks checked, guarded pointer moves.

Garbage collection (`sharedrec.manage.gc`) *condemns before it deletes*: it marks the versions
it chose (``versions/<id>/.gc``), reads every pointer and lease again, and deletes only what
none names. Everyone else *announces before they check*: a publish holds a lease (`Hold`)
naming its draft while it writes; a pointer mover writes a lease naming the version, then
checks that the version is settled (manifest, no mark: `version_condemned`), then moves the
pointer by compare-and-swap (`move_guarded`). Whichever of the two comes second sees the
other. The module docstring of `sharedrec.manage.gc` tells the whole protocol.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sharedrec.backends.base import PointerMoved
from sharedrec.errors import ConcurrentPublishError, CorruptVersion, NewerFormat, VersionGone
from sharedrec.format.layout import LEASES, MANIFEST, MAX_CHAIN, VERSIONS
from sharedrec.read.leases import lease_bytes
from sharedrec.read.version import version_condemned

if TYPE_CHECKING:
    from sharedrec.backends.base import Backend

__all__ = [
    "LEFT",
    "Hold",
    "chain_below",
    "link_out",
    "links_out",
    "move_guarded",
    "remove_lease",
    "write_lease",
]

log = logging.getLogger("sharedrec")

LEFT = ".left"
"""A file in a version folder: when a pointer (``CURRENT`` or a ref) last stopped naming the
version, written by the process that moved the pointer. Garbage collection counts the grace
period from then: a reader without a lease leaves a version only once it sees the pointer
move, so the age of the version itself says nothing about whether it is still read."""

_MOVE_LEASE_SECONDS = 120.0
_DRAFT_LEASE_SECONDS = 60.0


def write_lease(backend: Backend, name: str, version: str, versions: list[str], ttl: float) -> None:
    """Write ``leases/<name>.json`` naming ``versions``: garbage collection keeps them until it expires."""
    now = datetime.now(UTC)
    # A full or read-only volume fails here as it would at the publish's first file.
    backend.write_atomic(f"{LEASES}/{name}.json", lease_bytes(name, version, versions, now, now, ttl))


def remove_lease(backend: Backend, name: str) -> None:
    """Delete ``leases/<name>.json`` (one DELETE on an object store); a failure is logged
    (the lease expires by itself)."""
    try:
        backend.remove_file(f"{LEASES}/{name}.json")
    except Exception as exc:
        log.warning("could not remove lease %s/%s/%s.json: %s", backend.location, LEASES, name, exc)


class Hold:
    """A lease showing garbage collection that a publish is writing ``version``.

    Written before the draft's folder exists and renewed by a thread until `release()`, so
    the collector never takes the folder for an abandoned publish, however long the
    publish lasts.
    """

    def __init__(self, backend: Backend, version: str, ttl: float = _DRAFT_LEASE_SECONDS) -> None:
        self.name = f"draft-{version}-{os.getpid()}-{os.urandom(3).hex()}"
        self._backend = backend
        self._version = version
        self._versions: list[str] = []
        self._ttl = ttl
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._renew()
        self._thread = threading.Thread(target=self._beat, name="sharedrec-draft-lease", daemon=True)
        self._thread.start()

    def protect(self, versions: list[str]) -> None:
        """Name ``versions`` too (besides the draft's) from now on."""
        with self._lock:
            self._versions = list(versions)
        self._renew()

    def _renew(self) -> None:
        with self._lock:
            write_lease(self._backend, self.name, self._version, self._versions, self._ttl)

    def _beat(self) -> None:
        while not self._stop.wait(self._ttl / 3):
            try:
                self._renew()
            except Exception as exc:
                log.warning("could not renew the lease of draft %s: %s", self._version, exc)

    def release(self) -> None:
        """Stop renewing and delete the lease."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        remove_lease(self._backend, self.name)


# -- moving a pointer ----------------------------------------------------------------------


def move_guarded(
    backend: Backend,
    path: str,
    data: bytes,
    expected: bytes | None,
    version: str,
    base: str | None,
    hold: Hold | None = None,
) -> None:
    """Compare-and-swap the pointer ``path`` to ``version`` so that no collector deletes it.

    A lease names the version, the versions below it (a delta) and the version the pointer
    named (``hold``'s when given); then the version must be settled (manifest, no mark);
    then the swap. After it the check is repeated: it fails only if a lease expired (a
    process frozen for longer than its lease), and then the pointer is moved back.

    Raises:
        CorruptVersion: The version folder is a symbolic link.
        VersionGone: The version (or one below it) is being deleted; the pointer did not move.
        PointerMoved: The pointer no longer holds ``expected``.
        ConcurrentPublishError: The version was deleted right after the swap.
    """
    from sharedrec.format.schema import Pointer

    outside = link_out(backend, f"{VERSIONS}/{version}")
    if outside is not None:
        raise CorruptVersion(
            f"{backend.location}/{VERSIONS}/{version} is a symbolic link to {outside}: a pointer never "
            "names a version outside the store (its data is not this store's to keep); remove the "
            "link and publish the version here"
        )
    below = chain_below(backend, base, version)
    replaced = None
    if expected is not None:
        try:
            replaced = Pointer.loads(expected, path).version
        except CorruptVersion:
            replaced = None
    names = [version, *below, *([replaced] if replaced else [])]
    lease = None
    if hold is not None:
        hold.protect(names)
    else:
        lease = f"pointer-{os.getpid()}-{os.urandom(4).hex()}"
        write_lease(backend, lease, version, names, _MOVE_LEASE_SECONDS)
    try:
        gone = _unsettled(backend, [version, *below])
        if gone is not None:
            raise VersionGone(
                f"version {gone} of {backend.location} is being deleted by garbage collection (or is "
                f"gone): {path} was not moved to {version}; pick another version (store.versions())"
            )
        backend.swap_pointer(path, data, expected)
        gone = _unsettled(backend, [version, *below])
        if gone is not None:
            back = "could not be moved back (another writer moved it): check store.refs()"
            if expected is not None:
                try:
                    backend.swap_pointer(path, expected, data)
                    back = f"was moved back to {replaced}"
                except PointerMoved:
                    pass
            raise ConcurrentPublishError(
                f"garbage collection deleted version {gone} of {backend.location} while {path} moved "
                f"to {version} (this process paused longer than its lease?); {path} {back}"
            )
        if replaced is not None and replaced != version:
            _note_left(backend, replaced)  # while our lease still names it
    finally:
        if hold is not None:
            try:
                hold.protect([])
            except Exception as exc:  # the pointer may have moved: that must not be reported as failed
                log.warning("could not renew the lease of draft %s after moving %s: %s", version, path, exc)
        elif lease is not None:
            remove_lease(backend, lease)


def _note_left(backend: Backend, version: str) -> None:
    """Record in ``version``'s folder that a pointer stopped naming it now (see `LEFT`)."""
    directory = f"{VERSIONS}/{version}"
    try:
        if backend.size(f"{directory}/{MANIFEST}") is None:
            return  # gone, or never finished: nothing for the grace period to protect
        data = json.dumps({"left": time.time()}).encode()
        # No fsync: a note lost in a crash leaves the successor's creation time as the bound.
        backend.write_atomic(f"{directory}/{LEFT}", data, durable=False)
    except Exception as exc:  # the pointer has moved: the publish must not fail for this
        log.warning("could not note in %s/%s when a pointer left it: %s", backend.location, directory, exc)


def _unsettled(backend: Backend, versions: list[str]) -> str | None:
    """The first of ``versions`` that is condemned or has no manifest, else None."""
    for name in versions:
        directory = f"{VERSIONS}/{name}"
        if version_condemned(backend, directory) or backend.size(f"{directory}/{MANIFEST}") is None:
            return name
    return None


def chain_below(backend: Backend, base: str | None, top: str) -> list[str]:
    """The versions below a delta: its base, the base's base... (as far as they can be read;
    a version a newer sharedrec wrote by the ``base`` its format keeps)."""
    from sharedrec.format.schema import Manifest, peek_newer_manifest

    found: list[str] = []
    while base is not None and base not in found and base != top and len(found) < MAX_CHAIN:
        found.append(base)
        where = f"{VERSIONS}/{base}/{MANIFEST}"
        try:
            data = backend.read_bytes(where)
            base = Manifest.loads(data, f"{backend.location}/{where}").base
        except NewerFormat:
            peek = peek_newer_manifest(data)
            base = peek.base if peek is not None else None
        except (FileNotFoundError, CorruptVersion):
            break  # the check of the chain reports it
    return found


def link_out(backend: Backend, directory: str) -> str | None:
    """Where a version folder leads when it is a link, or resolves outside the store root."""
    local = backend.local_path(directory)
    top = backend.local_path("")
    if local is None or top is None:
        return None
    real, root = os.path.realpath(local), os.path.realpath(top)
    if os.path.islink(local) or os.path.commonpath([real, root]) != root:
        return real
    return None


def links_out(backend: Backend, directory: str, names: list[str]) -> dict[str, str]:
    """`link_out` of every folder ``names`` under ``directory``, with one ``lstat`` each:
    the links, or every folder when ``directory`` itself resolves outside the store root."""
    local = backend.local_path(directory)
    top = backend.local_path("")
    if local is None or top is None:
        return {}
    root, real = os.path.realpath(top), os.path.realpath(local)
    outside = os.path.commonpath([real, root]) != root
    found = {}
    for name in names:
        path = os.path.join(local, name)
        if outside or os.path.islink(path):
            found[name] = os.path.realpath(path)
    return found
