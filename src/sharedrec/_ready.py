"""The readiness probe, ``sharedrec ready``, without the rest of the command.

The kubelet runs a pod's probe every few seconds for as long as the pod lives, under the
pod's CPU limit and a one-second timeout. Loading the whole command for it (click, rich,
numpy, the Kubernetes generator) cost half a second of CPU; the probe itself is a listing
of the leases folder and a few small reads. `check` is the probe, shared by the
``sharedrec ready`` command, and `run` is the fast path that ``python -m sharedrec`` and the
console script take for a plain ``sharedrec ready`` before they load anything else. It
imports only the errors, the store's layout and schema, and the local-disk backend.
"""

from __future__ import annotations

import os
import sys

from sharedrec.errors import SharedrecError

__all__ = ["NO_READER", "check", "run"]

NO_READER = (
    "which reader? set $SHAREDREC_READER_ID (in a pod, to the pod name, as the readers do) "
    + "or pass --reader-id"
)
"""The usage error of a probe that names no reader."""

_INTERRUPTED = "interrupted: nothing was changed"
_OPTIONS = {"--reader-id": "reader_id", "--lease-dir": "lease_dir"}
_ENV = {"reader_id": "SHAREDREC_READER_ID", "lease_dir": "SHAREDREC_LEASE_DIR"}


def check(store: str, reader_id: str, lease_dir: str | None) -> str:
    """Whether a process of ``reader_id`` holds a fresh lease on an existing version of ``store``.

    Args:
        store: The store's location.
        reader_id: The reader (the pod name in Kubernetes).
        lease_dir: Where the reader keeps its lease (default: the store's ``leases/`` folder).

    Returns:
        The line the probe prints when the reader is ready.

    Raises:
        StoreNotFound: There is no store at ``store``.
        SharedrecError: Not ready: no lease, every lease expired, a prefetch still warms the
            cache, or a lease names a version that is missing or damaged.
    """
    # os.path and glob, not pathlib: pathlib (with urllib.parse behind it) would add a tenth
    # of the probe's time.
    import glob
    from datetime import UTC, datetime

    from sharedrec.backends import backend_for
    from sharedrec.format.layout import LEASES
    from sharedrec.format.schema import Lease
    from sharedrec.read.root import StoreRoot

    root = StoreRoot(backend_for(store, create=False))
    folder = os.path.normpath(lease_dir) if lease_dir else os.path.join(root.location, LEASES)
    # Every process of the pod holds its own lease, <reader-id>.<pid>-<random>.json.
    leases = []
    pattern = os.path.join(glob.escape(folder), f"{glob.escape(reader_id)}.*json")
    for path in sorted(glob.glob(pattern)):
        try:
            with open(path, "rb") as f:
                lease = Lease.loads(f.read(), path)
        except FileNotFoundError:
            continue  # its reader closed meanwhile
        if lease.reader_id == reader_id:  # not a reader whose id merely starts like this one
            leases.append(lease)
    if not leases:
        raise SharedrecError(
            f"not ready: no lease of reader {reader_id} in {folder} (the reader has not opened a version yet)"
        )
    now = datetime.now(UTC)
    # Ready while one process serves: the file of a killed worker expires but stays behind.
    fresh = [lease for lease in leases if lease.expires_at > now]
    if not fresh:
        newest = max(lease.expires_at for lease in leases)
        raise SharedrecError(
            f"not ready: the lease of {reader_id} expired {(now - newest).total_seconds():.0f} s "
            "ago (its process is stuck or gone)"
        )
    warming = [lease for lease in fresh if lease.warming]
    if warming:
        # The page cache is the node's: one process's prefetch warms it for all, and one that
        # still reads means the node is not warm yet.
        started = min(lease.started_at for lease in warming)
        raise SharedrecError(
            f"not ready: {reader_id} is still warming its cache (prefetch of version "
            f"{warming[0].version}, reader started {(now - started).total_seconds():.0f} s ago); "
            "it is ready once the prefetch has read every file"
        )
    for lease in fresh:
        root.manifest(lease.version)
    lease = max(fresh, key=lambda lease: lease.heartbeat)
    age = (now - lease.heartbeat).total_seconds()
    processes = f", {len(fresh)} processes" if len(fresh) > 1 else ""
    return f"ready: {reader_id} serves version {lease.version} (heartbeat {age:.1f} s ago{processes})"


def _plain(args: list[str]) -> dict[str, str | None] | None:
    """The store and options of a plain ``ready STORE [--reader-id ID] [--lease-dir DIR]``.

    None for anything else (help, --debug, an unknown option, a missing or extra argument):
    the full command parses those, with its usual messages.
    """
    given: dict[str, str | None] = {"store": None, "reader_id": None, "lease_dir": None}
    rest = iter(args)
    for arg in rest:
        name, eq, value = arg.partition("=")
        if name in _OPTIONS and given[_OPTIONS[name]] is None:
            if not eq:
                value = next(rest, "")
            if not value or value.startswith("-"):
                return None
            given[_OPTIONS[name]] = value
        elif arg.startswith("-") or given["store"] is not None:
            return None
        else:
            given["store"] = arg
    if given["store"] is None:
        return None
    for key, variable in _ENV.items():
        given[key] = given[key] or os.environ.get(variable) or None
    return given


def run(args: list[str]) -> int | None:
    """Run ``sharedrec ready`` for the command-line ``args`` (without the program name).

    Returns:
        The exit status (0 ready, 1 not ready, 2 no reader named, 130 interrupted), or None
        when ``args`` are not a plain ``ready`` (another command, help, --debug, a mistake),
        for the full command to run.
    """
    if args[:1] != ["ready"]:
        return None
    given = _plain(args[1:])
    if given is None:
        return None
    store, reader_id = given["store"], given["reader_id"]
    assert store is not None  # _plain returns none without a store
    try:
        if not reader_id:
            _say_error(NO_READER)
            return 2
        print(check(store, reader_id, given["lease_dir"]), flush=True)
    except SharedrecError as exc:
        _say_error(str(exc))
        return 1
    except KeyboardInterrupt:
        print(_INTERRUPTED, file=sys.stderr)
        return 130
    return 0


def _say_error(message: str) -> None:
    # The command's words (a fix spelled as a flag, not a keyword); loaded on failure only.
    from sharedrec._cli_words import speak_cli

    print(f"error: {speak_cli(message)}", file=sys.stderr, flush=True)
