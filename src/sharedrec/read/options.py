"""The documented keyword sets of `sharedrec.open` and `RecommendationStore.reader`.

`StoreOptions` and `ReaderOptions` type the ``**options`` of the facade and document each
option once. They live apart from the code that takes them: a ``TypedDict`` costs a
fraction of a millisecond to create (every annotation is compiled), and a serving process
opening a reader needs none of it; it loads when a type checker, the API docs or a user
names them (``sharedrec.ReaderOptions``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, TypedDict

from sharedrec.read.checks import VerifyLevel

__all__ = ["ReaderOptions", "StoreOptions"]


class StoreOptions(TypedDict, total=False):
    """The options of `sharedrec.open` and `RecommendationStore` (all optional)."""

    storage_options: dict[str, Any] | None
    """For S3: passed to ``s3fs.S3FileSystem`` untouched (``endpoint_url``, ``key``,
    ``secret``, ``client_kwargs``, ``config_kwargs``...); credentials otherwise come from the
    standard AWS chain."""
    cache_dir: str | os.PathLike[str] | None
    """For S3: where chunk files are cached on this machine (default ``$SHAREDREC_CACHE_DIR``,
    else ``~/.cache/sharedrec``); processes on one node share it. Publishes stage the version
    there (``staging/``) before uploading it; the next publish or `gc` on the node removes
    what a killed publisher left."""
    cache_max_bytes: int | None
    """For S3: the cache's size bound (default 10 GiB; least recently used files go first);
    None for no bound."""


class ReaderOptions(TypedDict, total=False):
    """The options of `RecommendationStore.reader` (keyword arguments, all optional)."""

    pin: bool
    """Serve the live version and never move (default False)."""
    refresh_interval: float | None
    """Seconds between polls of ``CURRENT`` (default 5); None polls only on `Reader.refresh`."""
    verify: VerifyLevel
    """How much to check before serving a version. ``"lazy"`` (default): each chunk's size
    when it is first mapped, plus every file's size before a switch. ``"sizes"``: stat every
    file on open too (one round trip per file on NFS). ``"full"``: recompute every checksum
    on open and on every switch (reads the whole version)."""
    lease: bool
    """Keep a lease file (default True) so garbage collection never deletes a version this
    reader maps. Needs write access to the store's ``leases/`` folder or to ``lease_dir``."""
    lease_dir: str | os.PathLike[str] | None
    """Where to keep the lease instead (default: ``$SHAREDREC_LEASE_DIR``, else the store's
    ``leases/`` folder). It must be the folder the garbage collector reads: mount the store's
    ``leases/`` folder there."""
    lease_ttl: float
    """Seconds a lease stays valid without a heartbeat (default 60; renewed every third of it)."""
    reader_id: str | None
    """Who holds the lease (default: ``$SHAREDREC_READER_ID``, e.g. the pod name, else host,
    pid and a random suffix). The lease file is ``<reader_id>.<pid>-<random>.json``: each
    process, and each reader of a process, holds its own."""
    on_refresh_error: Callable[[Exception], None] | None
    """Called with the exception when a refresh fails."""
    prefetch: bool | Sequence[str]
    """Warm the cache with every collection (True) or the named ones, in the background,
    after open (see `Reader.prefetch`); default False."""
    ref: str | None
    """Follow this pointer instead of ``CURRENT`` (default: ``$SHAREDREC_REF``, else
    ``"current"``), e.g. ``"canary"`` for the pods of a canary Deployment."""
