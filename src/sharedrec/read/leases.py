"""Reader leases: how garbage collection knows which versions are still mapped.

Every reader writes ``leases/<reader-id>.<pid>-<random>.json`` (temp file + rename) before
it maps its first version, again at every heartbeat and before it maps a new version, and
removes it on close. A lease names the versions the reader may touch and when it expires;
garbage collection never deletes a version named by a lease that has not expired.

The reader id names the pod (``$SHAREDREC_READER_ID``); the rest of the file name names one
reader of one process. Processes of a pod (gunicorn or uvicorn workers, a child forked after
the reader opened) and several readers of one process therefore never share a lease file:
one closing cannot drop the lease another still relies on.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta

from sharedrec._log import log
from sharedrec.backends.base import Backend
from sharedrec.errors import InvalidInput, SharedrecError, StoreNotFound
from sharedrec.format.layout import LEASE_FORMAT

__all__ = ["LeaseKeeper", "default_reader_id", "lease_bytes"]


_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
"""The characters of a reader id (a set, not a regular expression: compiling one took a
fifth of a millisecond of every reader's open)."""

STALE_AFTER = 3600.0
"""Seconds after its expiry a lease file of a reader's own id is removed as left behind."""


def default_reader_id() -> str:
    """``$SHAREDREC_READER_ID`` (e.g. a pod name), else ``<host>-<pid>-<random>``."""
    given = os.environ.get("SHAREDREC_READER_ID")
    if given:
        return validate_reader_id(given)
    host = "".join(c if c in _SAFE else "-" for c in os.uname().nodename)[:64] or "host"
    return f"{host}-{os.getpid()}-{os.urandom(3).hex()}"


def validate_reader_id(reader_id: str) -> str:
    """Return ``reader_id`` if it can name a lease file, else raise `InvalidInput`."""
    if not reader_id or not _SAFE.issuperset(reader_id) or reader_id.startswith(".") or len(reader_id) > 200:
        raise InvalidInput(
            f"invalid reader id {reader_id!r}: use 1-200 letters, digits, '_', '-' or '.', not "
            "starting with '.'"
        )
    return reader_id


def lease_file_name(reader_id: str, process: str) -> str:
    """The name of the lease file of one reader of one process of ``reader_id``."""
    return f"{reader_id}.{process}.json"


def _process_tag() -> str:
    # The pid tells a pod's processes apart; the random part, two readers of one process.
    return f"{os.getpid()}-{os.urandom(3).hex()}"


class LeaseKeeper:
    """Writes and removes one reader's lease file (one file per reader object and process)."""

    def __init__(self, backend: Backend, folder: str, reader_id: str, ttl: float) -> None:
        if ttl <= 0:
            raise InvalidInput(f"lease_ttl must be positive seconds; got {ttl!r}")
        self.reader_id = validate_reader_id(reader_id)
        self.ttl = ttl
        self._backend = backend
        self._folder = folder
        self.version: str | None = None
        """The version the last lease written names."""
        self._expires: float | None = None
        self._lapsed: float | None = None  # when a lease expired before its renewal came
        self.warming = False
        """The reader is prefetching: `sharedrec ready` reports it not ready yet."""
        self._own_file()

    def _own_file(self) -> None:
        self.process = _process_tag()
        name = lease_file_name(self.reader_id, self.process)
        self._path = f"{self._folder}/{name}" if self._folder else name
        self._started = datetime.now(UTC)
        self._removed = False
        self.version = None
        self._written: tuple[str, tuple[str, ...], bool] | None = None

    def due(self, version: str, versions: list[str]) -> bool:
        """Whether the lease needs writing now: it would name other versions (or change
        its warming flag), or a third of its time-to-live has passed since it was written.

        Each write is several round trips on a network volume (create, write, close,
        rename): a reader that polls ``CURRENT`` often renews only as often as it must.
        """
        wanted = (version, tuple(versions), self.warming)
        if self._removed or self._expires is None or self._written != wanted:
            return True
        return time.time() >= self._expires - self.ttl * 2 / 3

    def after_fork(self) -> None:
        """In a forked child: write a lease file of its own from now on.

        The parent's file stays the parent's: the child neither renews nor removes it. The
        parent's prefetch thread did not come along: the parent's own lease says when it ends.
        """
        self.warming = False
        self._own_file()

    def expired_for(self) -> float | None:
        """Seconds since this reader's lease expired, if it is expired now or was renewed late.

        None when every renewal came in time. Reading it forgets a late renewal.
        """
        now = time.time()
        if self._expires is not None and now > self._expires:
            return now - self._expires
        lapsed, self._lapsed = self._lapsed, None
        return None if lapsed is None else now - lapsed

    @property
    def where(self) -> str:
        """The lease file, for messages."""
        return f"{self._backend.location}/{self._path}"

    def write(self, version: str, versions: list[str]) -> None:
        """Renew the lease on ``versions`` (``version`` being the one served)."""
        now = datetime.now(UTC)
        try:
            # No fsync: a lease only matters while its process lives, and close() on NFS
            # already publishes it to other clients (close-to-open consistency).
            self._write(
                lease_bytes(
                    self.reader_id, version, versions, self._started, now, self.ttl, warming=self.warming
                )
            )
            self.version = version
            self._written = (version, tuple(versions), self.warming)
            if self._expires is not None and now.timestamp() > self._expires:
                # Renewed too late (the process was paused?): gc may have deleted a version.
                self._lapsed = self._expires
            self._expires = now.timestamp() + self.ttl
        except StoreNotFound:
            raise  # no store at all: not a question of the leases folder
        except OSError as exc:
            raise SharedrecError(
                f"cannot write reader lease {self.where} ({exc.strerror or exc}): mount the store's "
                "leases/ folder read-write, pass lease_dir= to keep leases elsewhere, or lease=False "
                "to read without one (garbage collection then cannot see this reader)"
            ) from None
        self._removed = False

    def _write(self, data: bytes) -> None:
        try:
            self._backend.write_atomic(self._path, data, durable=False)
        except OSError:
            # Some mounts cannot rename (S3 through Mountpoint): overwrite in place. A reader
            # of the lease may then catch it half-written, which garbage collection treats
            # as a damaged lease that protects everything: safe.
            local = self._backend.local_path(self._path)
            if local is None:
                raise
            with open(local, "wb") as f:
                f.write(data)

    def sweep(self) -> None:
        """Remove lease files of this reader id that expired long ago.

        Each process writes a file of its own, so a killed one (OOM, SIGKILL) leaves its
        file behind, and a pod whose container restarts would pile them up. An expired
        lease protects nothing, and one expired for an hour belongs to no live reader in
        practice: a process back from so long a pause writes its lease again at its next
        heartbeat. Damaged files are left to people (garbage collection reports them), and
        files of another lease format (a newer sharedrec's) alone.
        """
        prefix = f"{self.reader_id}."
        own = self._path.rsplit("/", 1)[-1]
        try:
            names = self._backend.listdir(self._folder)
        except Exception as exc:
            log.debug("could not list leases to remove stale ones: %s", exc)
            return
        now = time.time()
        for name in names:
            if not name.startswith(prefix) or not name.endswith(".json") or name == own:
                continue
            path = f"{self._folder}/{name}" if self._folder else name
            try:
                lease = json.loads(self._backend.read_bytes(path))
                if lease.get("reader_id") != self.reader_id:
                    continue  # another reader whose id starts like this one
                if lease.get("format", LEASE_FORMAT) != LEASE_FORMAT:
                    continue  # a newer sharedrec's: its own reader sweeps it

                expires = datetime.fromisoformat(lease["expires_at"]).timestamp()
            except Exception:
                continue
            if now - expires > STALE_AFTER:
                try:
                    self._backend.remove_file(path)
                    log.info(
                        "removed the lease %s/%s, expired %.0f s ago",
                        self._backend.location,
                        path,
                        now - expires,
                    )
                except Exception as exc:
                    log.debug("could not remove stale lease %s: %s", path, exc)

    def remove(self) -> None:
        """Delete the lease (on close); a missing file is fine."""
        if not self._removed:
            self._removed = True
            try:
                self._backend.remove_file(self._path)
            except Exception as exc:  # the lease expires by itself
                log.warning("could not remove lease %s: %s", self.where, exc)


def lease_bytes(
    reader_id: str,
    version: str,
    versions: list[str],
    started: datetime,
    now: datetime,
    ttl: float,
    *,
    warming: bool = False,
) -> bytes:
    """A lease naming ``version`` and ``versions``, valid for ``ttl`` seconds from ``now``.

    The bytes `sharedrec.format.schema.Lease.dumps` writes for these fields,
    made without building the record: a reader writes its lease before its first answer,
    and the record's checks of values made here took half of that write.
    """
    lease: dict[str, object] = {
        "format": LEASE_FORMAT,
        "reader_id": reader_id,
        "host": os.uname().nodename,
        "pid": os.getpid(),
        "version": version,
        "versions": list(dict.fromkeys([version, *versions])),
        "started_at": _utc(started),
        "heartbeat": _utc(now),
        "expires_at": _utc(now + timedelta(seconds=ttl)),
    }
    if warming:  # only then, as in Lease.dumps: an older sharedrec reads the lease the same
        lease["warming"] = True
    return json.dumps(lease, separators=(",", ":"), ensure_ascii=False).encode()


def _utc(moment: datetime) -> str:
    """``moment`` in ISO 8601 as `Lease.dumps` writes it (``Z`` for UTC)."""
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text
