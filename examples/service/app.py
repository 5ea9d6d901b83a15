"""A minimal recommendation service that serves ranked lists from a sharedrec store.

Run it with uvicorn's factory mode::

    SHAREDREC_STORE=./sharedrec-demo/store uvicorn app:create_app --factory --port 8080

The store path comes from ``$SHAREDREC_STORE`` (the Kubernetes manifests written by
``sharedrec k8s`` set it to the read-only mount path). sharedrec itself honours
``$SHAREDREC_LEASE_DIR`` (where the reader keeps its lease) and ``$SHAREDREC_READER_ID``
(the lease's name, the pod name in Kubernetes).

One reader is opened at startup and closed at shutdown. It follows the store's ``CURRENT``
pointer in a background thread, so a newly published version is served within
``refresh_interval`` seconds without a restart.

Routes:
    ``GET /recommendations/{user}?k=20&collection=home``: the user's ranked list.
    ``GET /healthz``: liveness, always 200 while the process answers.
    ``GET /readyz``: readiness, 200 with the served version, else 503.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse

import sharedrec

__all__ = ["DEFAULT_COLLECTION", "DEFAULT_K", "MAX_K", "STORE_ENV", "create_app"]

STORE_ENV = "SHAREDREC_STORE"
"""Environment variable naming the store (a local or mounted path, or an ``s3://`` URL)."""

DEFAULT_COLLECTION = "home"
"""Collection served when the request names none."""

DEFAULT_K = 20
"""List length returned when the request gives no ``k``."""

MAX_K = 1000
"""Largest ``k`` a request may ask for."""

_INT_KEY = re.compile(r"-?[0-9]+")


def create_app(store_path: str | None = None, *, refresh_interval: float | None = 5.0) -> FastAPI:
    """Build the service.

    Args:
        store_path: The store to serve (default: ``$SHAREDREC_STORE``).
        refresh_interval: Seconds between checks of the store's ``CURRENT`` pointer; None
            checks only when ``app.state.reader.refresh()`` is called.

    Returns:
        The FastAPI app. Its reader is opened when the app starts (and is then available
        as ``app.state.reader``) and closed when it stops.

    Raises:
        RuntimeError: Neither ``store_path`` nor ``$SHAREDREC_STORE`` is given.
    """
    location = store_path or os.environ.get(STORE_ENV)
    if not location:
        raise RuntimeError(f"no store to serve: set ${STORE_ENV} to the store's path (e.g. /mnt/recs)")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Opening never creates a store: fail at startup, with a clear message, when the volume
        # is not mounted or nothing has been published yet, rather than serve errors.
        store = sharedrec.open(location)
        reader = store.reader(refresh_interval=refresh_interval)
        app.state.reader = reader
        try:
            yield
        finally:
            # Closed in a worker thread: called on the event loop, sharedrec would remove the
            # lease in a background thread that the exiting process may not wait for.
            await asyncio.to_thread(reader.close)

    app = FastAPI(title="recommendations", lifespan=lifespan)

    # Plain `def` routes run in FastAPI's thread pool. A lookup costs microseconds once its
    # chunk is mapped, but the first touch of a page on a network volume (EFS/NFS) can wait
    # on I/O, which must not block the event loop.

    @app.get("/recommendations/{user}")
    def recommendations(
        request: Request,
        user: Annotated[str, Path(description="User id: an integer for collections with int64 keys.")],
        k: Annotated[int, Query(ge=1, le=MAX_K, description="Number of items to return.")] = DEFAULT_K,
        collection: Annotated[str, Query(description="Ranked collection to read.")] = DEFAULT_COLLECTION,
    ) -> dict[str, Any]:
        """The ranked list of ``user`` in ``collection``, best first."""
        reader: sharedrec.Reader = request.app.state.reader
        spec = reader.collections.get(collection)
        if spec is None or spec.kind != "ranked":
            ranked = sorted(name for name, s in reader.collections.items() if s.kind == "ranked")
            raise HTTPException(404, f"unknown collection {collection!r}; collections: {ranked}")
        key = _parse_key(user, spec.key_type)
        if key is None:
            raise HTTPException(404, f"unknown user {user!r}: user ids of {collection!r} are integers")
        # Read before the lookup: a switch in between is possible but harmless (the next
        # request reports the new version).
        version = reader.version
        try:
            recs = reader.get(collection, key, k=k)
        except sharedrec.KeyNotFound:
            raise HTTPException(404, f"unknown user {user!r} in collection {collection!r}") from None
        except sharedrec.UnknownCollection:  # the reader moved to a version without it
            raise HTTPException(404, f"unknown collection {collection!r}") from None
        except sharedrec.InvalidInput:  # the key type changed with a new version
            raise HTTPException(404, f"unknown user {user!r} in collection {collection!r}") from None
        return {
            "user": key,
            "version": version,
            "source": recs.source,
            "items": recs.items.tolist(),
            "scores": recs.scores.tolist(),
        }

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=None)
    def readyz(request: Request) -> dict[str, Any] | JSONResponse:
        """Readiness: 200 with the served version while the reader is open, else 503."""
        reader: sharedrec.Reader | None = getattr(request.app.state, "reader", None)
        if reader is None or not reader.ready:
            return JSONResponse({"status": "not ready"}, status_code=503)
        stats = reader.stats()
        return {
            "status": "ready",
            "version": stats.version,
            "version_age_seconds": round(stats.version_age_seconds, 3),
        }

    return app


def _parse_key(user: str, key_type: str) -> int | str | None:
    """The lookup key for ``user``: an int for int64 collections (None if not an integer)."""
    if key_type != "int64":
        return user
    if not _INT_KEY.fullmatch(user):
        return None
    try:
        return int(user)
    except ValueError:  # more digits than Python converts: no int64 key anyway
        return None
