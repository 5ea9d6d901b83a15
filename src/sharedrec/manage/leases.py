"""The fleet view: every reader's lease, read back by garbage collection and `leases()`.

Readers write their leases (`sharedrec.read.leases`); this module reads them all: which
versions they protect, and which reader of which process serves what, how freshly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sharedrec.errors import CorruptVersion, NewerFormat
from sharedrec.format.layout import LEASES

if TYPE_CHECKING:
    from sharedrec.backends.base import Backend
    from sharedrec.format.schema import Lease
    from sharedrec.read.root import StoreRoot

__all__ = ["LeaseInfo", "fleet", "process_of", "read_lease_files", "read_leases"]

log = logging.getLogger("sharedrec")


@dataclass(frozen=True)
class LeaseInfo:
    """One reader as seen in the fleet view (`leases()`)."""

    reader_id: str
    """The reader id: the pod (``$SHAREDREC_READER_ID``), shared by its processes."""
    host: str
    pid: int
    process: str
    """Which reader of which process holds this lease (``<pid>-<random>``, from the file name)."""
    version: str
    versions: list[str]
    heartbeat: datetime
    expires_at: datetime
    live: bool
    """The lease has not expired."""
    on_current: bool
    """The reader serves the version ``CURRENT`` names."""
    seconds_since_heartbeat: float


def fleet(root: StoreRoot) -> list[LeaseInfo]:
    """Every lease in the store's ``leases/`` folder, sorted by reader id (a pod's together).

    Leases a newer sharedrec wrote are left out, with a warning naming them.
    """
    now = datetime.now(UTC)
    live = root.current()
    return sorted(
        (
            LeaseInfo(
                reader_id=lease.reader_id,
                host=lease.host,
                pid=lease.pid,
                process=process_of(name, lease),
                version=lease.version,
                versions=lease.versions,
                heartbeat=lease.heartbeat,
                expires_at=lease.expires_at,
                live=lease.expires_at > now,
                on_current=lease.version == live,
                seconds_since_heartbeat=(now - lease.heartbeat).total_seconds(),
            )
            for name, lease in read_lease_files(root.backend, LEASES)[0]
        ),
        # A pod's processes share the reader id: sorting by it keeps them together.
        key=lambda info: (info.reader_id, info.host, info.pid, info.process),
    )


def read_leases(backend: Backend, folder: str) -> tuple[list[Lease], list[str], list[str]]:
    """Every parsable lease under ``folder`` (every process's), the paths of damaged ones,
    and the paths of those a newer sharedrec wrote (which may protect anything, like a
    damaged one, and are left alone)."""
    files, damaged, newer = read_lease_files(backend, folder)
    return [lease for _, lease in files], damaged, newer


def read_lease_files(backend: Backend, folder: str) -> tuple[list[tuple[str, Lease]], list[str], list[str]]:
    """Like `read_leases`, with the name of each lease's file."""
    from sharedrec.format.schema import Lease

    leases, damaged, newer = [], [], []
    for name in backend.listdir(folder):
        if not name.endswith(".json") or name.startswith("."):
            continue
        path = f"{folder}/{name}" if folder else name
        try:
            leases.append((name, Lease.loads(backend.read_bytes(path), f"{backend.location}/{path}")))
        except FileNotFoundError:
            continue  # its reader closed while we listed
        except NewerFormat as exc:
            log.warning("%s", exc)
            newer.append(f"{backend.location}/{path}")
        except CorruptVersion as exc:
            log.warning("damaged lease: %s", exc)
            damaged.append(f"{backend.location}/{path}")
        except OSError as exc:
            # Renewed again at every attempt, or unreadable: it may protect anything.
            log.warning("could not read lease %s/%s: %s", backend.location, path, exc)
            damaged.append(f"{backend.location}/{path}")
    return leases, damaged, newer


def process_of(name: str, lease: Lease) -> str:
    """The process part of a lease file's name (the pid for a file named by the reader id alone)."""
    prefix = f"{lease.reader_id}."
    if name.startswith(prefix) and name.endswith(".json") and len(name) > len(prefix) + len(".json"):
        return name[len(prefix) : -len(".json")]
    return str(lease.pid)
