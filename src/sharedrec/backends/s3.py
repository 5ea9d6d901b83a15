"""Amazon S3 and S3-compatible servers, through s3fs's aiobotocore client.

Writes are single PUTs (atomic per object). ``CURRENT`` is replaced with a conditional
PUT: ``If-None-Match: *`` for the first version, ``If-Match: <etag read before>``
afterwards, so two writers can never silently overwrite each other. Reads are plain GETs
(never s3fs's cached listings); the pointer is polled with a conditional GET that costs a
304 when nothing changed. Transient errors (5xx, throttling, resets) are retried with
backoff by botocore's standard retry mode; an endpoint that cannot be connected to at all
fails after `_CONNECT_ATTEMPTS` tries of `_CONNECT_TIMEOUT` seconds, naming it. One
filesystem and one client per store.

Not every S3-compatible server honours ``If-Match`` / ``If-None-Match`` on PUT (some answer
200 and overwrite). When a publish begins (`check_swaps`, before it writes anything) and
before a pointer swap, a handle probes the server once (`_probe_conditions`, remembered per
endpoint and bucket in this process); where the server ignores either condition, publishes
and swaps are refused with `PublishRejected` unless the store was opened for a single
writer (``storage_options={"single_writer": True}`` or ``SHAREDREC_SINGLE_WRITER=1``).

A prefix with no object at all is not a store: opening it with ``create=True`` writes the
store marker there (`STORE_MARKER`), and anything else meets `StoreNotFound` at its first
write, or at its first read of a missing file. Checking costs one LIST, sent only then and
at most once per handle: a reader whose first read of ``CURRENT`` succeeds never sends it.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

from sharedrec.backends.base import STORE_MARKER, PointerMoved, no_store
from sharedrec.errors import InvalidInput, PublishRejected, SharedrecError, StoreNotFound
from sharedrec.format.layout import PROBE

__all__ = ["S3Backend"]

log = logging.getLogger("sharedrec")

_PRECONDITION = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
_MISSING = {"NoSuchKey", "404", "NotFound"}
_UNSUPPORTED = {"NotImplemented", "501"}
_UPLOADS = 16
_BODY_ATTEMPTS = 4
# A server that refuses connections or never answers the handshake is most likely the wrong
# endpoint: fail in seconds. Throttling, 5xx and resets keep botocore's full retries.
_CONNECT_TIMEOUT = 3
_CONNECT_ATTEMPTS = 2
_SINGLE_WRITER = "single_writer"
_SINGLE_WRITER_ENV = "SHAREDREC_SINGLE_WRITER"
# What the probe found, per (endpoint, bucket): None when both conditions are honoured,
# else what the server got wrong. A server does not change its mind within a process.
_PROBED: dict[tuple[str, str], str | None] = {}
# Single-writer swaps are serialised within the process, as on generic filesystems.
_SWAP_LOCK = threading.Lock()


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


class S3Backend:
    """A store under ``s3://bucket/prefix``."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None, *, create: bool) -> None:
        try:
            import s3fs
            from fsspec.asyn import sync
        except ImportError:
            raise SharedrecError("S3 stores need s3fs: pip install 'sharedrec[s3]'") from None
        parsed = urlparse(url)
        if not parsed.netloc:
            raise InvalidInput(f"invalid S3 location {url!r}: use s3://bucket[/prefix]")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self._url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        options = fail_fast_options(storage_options)
        self.single_writer = bool(options.pop(_SINGLE_WRITER, False)) or os.environ.get(
            _SINGLE_WRITER_ENV, ""
        ).lower() in ("1", "true", "yes")
        config = options.pop("config_kwargs")
        config.setdefault("retries", {"max_attempts": 8, "mode": "standard"})
        self._sync = sync
        self._s3fs = s3fs
        self._options = {"config_kwargs": config, **options}
        self._connect()
        # Whether DeleteObjects works here (some S3-compatible servers answer 501).
        self._batch_delete = True
        # Whether an object under the prefix has been seen: a store exists there.
        self._found = False
        if create:
            # Writers check the bucket up front; readers (create=False) save the request and
            # learn the same from their first read of CURRENT.
            self._call("head_bucket", Bucket=self.bucket)
            if not self._holds_anything():
                self._call("put_object", Bucket=self.bucket, Key=self._key(STORE_MARKER), Body=b"")
            self._found = True

    def _connect(self) -> None:
        self._pid = os.getpid()
        self._fs = self._s3fs.S3FileSystem(
            skip_instance_cache=True, use_listings_cache=False, **self._options
        )
        self._client = fail_fast(self._fs)

    @property
    def fs(self) -> Any:
        """The s3fs filesystem of this process (a forked child connects anew: s3fs's event
        loop and connections do not survive fork())."""
        if self._pid != os.getpid():
            self._connect()
        return self._fs

    @property
    def client(self) -> Any:
        """The aiobotocore client of this process."""
        if self._pid != os.getpid():
            self._connect()
        return self._client

    @property
    def location(self) -> str:
        return self._url

    @property
    def endpoint(self) -> str:
        """The URL of the S3 server this store is reached at."""
        return str(self.client.meta.endpoint_url)

    # -- plumbing ----------------------------------------------------------------------------

    def _key(self, path: str) -> str:
        return f"{self.prefix}/{path}".strip("/") if self.prefix else path.strip("/")

    def _call(self, method: str, **kwargs: Any) -> Any:
        try:
            return self._sync(self.fs.loop, getattr(self.client, method), **kwargs)
        except Exception as exc:
            raise self._explain(exc) from None

    def _explain(self, exc: Exception) -> Exception:
        """The error to raise for a failed request: a missing bucket or an unreachable
        endpoint become one clear sharedrec error; anything else is kept as it is."""
        code = _code(exc)
        if code == "NoSuchBucket" or (
            code in _MISSING and not getattr(exc, "operation_name", "").endswith("Object")
        ):
            return StoreNotFound(f"no bucket {self.bucket!r} for {self._url}: create it first")
        if not code and not isinstance(exc, (FileNotFoundError, SharedrecError)):
            return SharedrecError(
                f"cannot reach {self._url} at endpoint {self.endpoint} ({type(exc).__name__}: "
                f"{exc}); check the endpoint (storage_options endpoint_url, --endpoint-url or "
                "$SHAREDREC_ENDPOINT_URL), network and credentials (AWS_* environment or "
                "storage_options)"
            )
        return exc

    def _holds_anything(self) -> bool:
        prefix = f"{self.prefix}/" if self.prefix else ""
        page = self._call("list_objects_v2", Bucket=self.bucket, Prefix=prefix, MaxKeys=1)
        return bool(page.get("KeyCount") or page.get("Contents"))

    def _require_store(self) -> None:
        """Raise `StoreNotFound` unless some object exists under the prefix (one LIST, once)."""
        if self._found:
            return
        if not self._holds_anything():
            raise no_store(self._url, "no object exists under that prefix")
        self._found = True

    def _get(self, path: str, **kwargs: Any) -> tuple[bytes, str]:
        async def fetch() -> tuple[bytes, str]:
            from aiohttp import ClientPayloadError

            for attempt in range(_BODY_ATTEMPTS):
                response = await self.client.get_object(Bucket=self.bucket, Key=self._key(path), **kwargs)
                try:
                    async with response["Body"] as body:
                        return await body.read(), str(response["ETag"])
                except ClientPayloadError:
                    # A body cut short (a dropped connection, or a server that rewrites the
                    # object in place while sending it): botocore retries only the headers.
                    if attempt == _BODY_ATTEMPTS - 1:
                        raise
            raise AssertionError("unreachable")

        try:
            result: tuple[bytes, str] = self._sync(self.fs.loop, fetch)
        except Exception as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                self._require_store()  # a missing file, or no store at all?
                raise FileNotFoundError(f"{self._url}/{path}") from None
            if _code(exc) in ("304", "NotModified"):
                self._found = True
            raise self._explain(exc) from None
        self._found = True
        return result

    def _list(self, path: str, delimiter: bool) -> Iterator[dict[str, Any]]:
        prefix = self._key(path)
        prefix = f"{prefix}/" if prefix else ""
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
            if delimiter:
                kwargs["Delimiter"] = "/"
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call("list_objects_v2", **kwargs)
            for item in page.get("CommonPrefixes", []):
                yield {"Prefix": item["Prefix"][len(prefix) :].rstrip("/")}
            for item in page.get("Contents", []):
                yield {**item, "Name": item["Key"][len(prefix) :]}
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    # -- the Backend protocol ------------------------------------------------------------------

    def read_bytes(self, path: str) -> bytes:
        return self._get(path)[0]

    def read_if_changed(self, path: str, token: object) -> tuple[bytes, object] | None:
        """GET with ``If-None-Match``: None (a 304) when the object still has etag ``token``."""
        try:
            kwargs = {"IfNoneMatch": token} if isinstance(token, str) else {}
            data, etag = self._get(path, **kwargs)
        except Exception as exc:
            if _code(exc) in ("304", "NotModified"):
                return None
            raise
        # Some servers ignore If-None-Match on GET and send the object again.
        return None if etag == token else (data, etag)

    def write_atomic(self, path: str, data: bytes, *, durable: bool = True) -> None:
        self._require_store()
        self._call("put_object", Bucket=self.bucket, Key=self._key(path), Body=data)

    def swap_pointer(self, path: str, data: bytes, expected: bytes | None) -> None:
        if self.single_writer:
            # The conditions are still sent: a server that honours some of them checks them.
            with _SWAP_LOCK:
                self._swap(path, data, expected)
            return
        self._require_conditions(path, f"{path} of {self._url} was not moved")
        self._swap(path, data, expected)

    def check_swaps(self, path: str) -> None:
        """Refuse, before a publish writes anything, what `swap_pointer` would refuse after it."""
        if not self.single_writer:
            self._require_conditions(
                path, f"a publish to {path} of {self._url} was refused before writing anything"
            )

    def _swap(self, path: str, data: bytes, expected: bytes | None) -> None:
        try:
            current, etag = self._get(path)
        except FileNotFoundError:
            current, etag = None, ""
        if current != expected:
            raise PointerMoved(current)
        condition = {"IfMatch": etag} if current is not None else {"IfNoneMatch": "*"}
        try:
            self._call("put_object", Bucket=self.bucket, Key=self._key(path), Body=data, **condition)
        except Exception as exc:
            if _code(exc) not in _PRECONDITION:
                raise
            try:
                now: bytes | None = self._get(path)[0]
            except FileNotFoundError:
                now = None
            if now == data:
                # Our PUT landed but its response was lost; botocore's retry then met our own
                # object and failed the precondition. The pointer bytes are unique per flip.
                return
            raise PointerMoved(now) from None

    def _require_conditions(self, path: str, refused: str) -> None:
        """Raise `PublishRejected` (``refused`` says what was refused) on a server that ignores
        conditional PUTs (probed once per endpoint and bucket)."""
        where = (self.endpoint, self.bucket)
        if where not in _PROBED:
            _PROBED[where] = self._probe_conditions()
        failing = _PROBED[where]
        if failing is not None:
            raise PublishRejected(
                f"{refused}: the S3 server at {self.endpoint} {failing}, "
                "so two writers publishing at once could silently replace each other's version. "
                "Use a server that honours If-Match and If-None-Match on PUT (AWS S3, MinIO, "
                "moto...), or, if one writer at a time publishes to this store (one scheduled "
                "job with concurrencyPolicy Forbid, or writers serialised by a lock of yours), "
                f"open it with storage_options={{'{_SINGLE_WRITER}': True}} or "
                f"{_SINGLE_WRITER_ENV}=1"
            )

    def _probe_conditions(self) -> str | None:
        """Test both conditional PUTs on a scratch object: None if the server honours them,
        else what it got wrong. Costs four requests (PUT, two conditional PUTs, DELETE)."""
        key = self._key(f"{PROBE}-{int(time.time())}-{os.urandom(8).hex()}")
        self._call("put_object", Bucket=self.bucket, Key=key, Body=b"probe")
        wrong: list[str] = []
        try:
            # A correct server answers 412 to both; some answer 200 and overwrite instead.
            checks = {
                "IfNoneMatch": ("*", "If-None-Match: * on an existing object"),
                "IfMatch": ('"00000000000000000000000000000000"', "If-Match with a wrong ETag"),
            }
            for header, (value, what) in checks.items():
                try:
                    self._call("put_object", Bucket=self.bucket, Key=key, Body=b"probe", **{header: value})
                    wrong.append(f"{what} (replaced the object instead of answering 412)")
                except Exception as exc:
                    if _code(exc) not in _PRECONDITION:
                        wrong.append(f"{what} (answered {_code(exc) or type(exc).__name__}, not 412)")
        finally:
            self._call("delete_object", Bucket=self.bucket, Key=key)
        if not wrong:
            return None
        log.warning("the S3 server at %s ignores conditional writes: %s", self.endpoint, "; ".join(wrong))
        return "ignores " + " and ".join(wrong)

    def listdir(self, path: str) -> list[str]:
        """Names under ``path``; the store marker is the backend's own, and never listed."""
        names = {item.get("Prefix") or item["Name"] for item in self._list(path, delimiter=True)}
        return sorted(names - {STORE_MARKER} if not path else names)

    def exists(self, path: str) -> bool:
        if self.size(path) is not None:
            return True
        return next(iter(self._list(path, delimiter=True)), None) is not None

    def remove_tree(self, path: str) -> None:
        keys = [item["Key"] for item in self._list(path, delimiter=False)]
        if self.size(path) is not None:
            keys.append(self._key(path))
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            if self._batch_delete and len(batch) > 1:
                try:
                    objects = [{"Key": key} for key in batch]
                    self._call(
                        "delete_objects", Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True}
                    )
                    continue
                except Exception as exc:
                    if _code(exc) not in _UNSUPPORTED:
                        raise
                    log.info("the S3 server at %s has no batch delete: deleting one by one", self.endpoint)
                    self._batch_delete = False
            for key in batch:
                self._call("delete_object", Bucket=self.bucket, Key=key)

    def remove_file(self, path: str) -> None:
        # A plain DELETE: S3 answers 204 whether the key was there or not.
        self._call("delete_object", Bucket=self.bucket, Key=self._key(path))

    def size(self, path: str) -> int | None:
        try:
            head = self._call("head_object", Bucket=self.bucket, Key=self._key(path))
        except Exception as exc:
            if _code(exc) in _MISSING:
                return None
            raise
        return int(head["ContentLength"])

    def tree_mtime(self, path: str) -> float | None:
        times = [item["LastModified"].timestamp() for item in self._list(path, delimiter=False)]
        return max(times) if times else None

    def walk_files(self, path: str) -> Iterator[tuple[str, int]]:
        yield from sorted((item["Name"], int(item["Size"])) for item in self._list(path, delimiter=False))

    def open_read(self, path: str) -> io.BytesIO:
        return io.BytesIO(self.read_bytes(path))

    def sync_tree(self, path: str) -> None:
        """Nothing to do: an object is durable once its PUT returns."""

    def zarr_store(self, path: str) -> Any:
        raise SharedrecError("drafts for S3 are staged on local disk, then uploaded")

    def local_path(self, path: str) -> str | None:
        return None

    def upload(self, files: list[tuple[str, str]], progress: Any = None) -> None:
        """PUT local files (``(local path, store path)``), several at a time."""
        self._require_store()

        async def put_all() -> None:
            limit = asyncio.Semaphore(_UPLOADS)

            async def put(local: str, path: str) -> None:
                async with limit:
                    with open(local, "rb") as f:
                        data = f.read()
                    await self.client.put_object(Bucket=self.bucket, Key=self._key(path), Body=data)
                    if progress is not None:
                        progress.advance(len(data))

            await asyncio.gather(*(put(local, path) for local, path in files))

        try:
            self._sync(self.fs.loop, put_all)
        except Exception as exc:
            raise self._explain(exc) from None


def fail_fast_options(storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """s3fs options that give up on an unreachable endpoint within seconds, as the store's own
    connection does: a short connect timeout (the caller's ``config_kwargs`` win)."""
    options = dict(storage_options or {})
    config = dict(options.get("config_kwargs", {}) or {})
    config.setdefault("connect_timeout", _CONNECT_TIMEOUT)
    options["config_kwargs"] = config
    return options


def fail_fast(fs: Any) -> Any:
    """Stop an s3fs filesystem's client retrying a connection that cannot be opened after
    `_CONNECT_ATTEMPTS` tries (throttling and server errors keep their retries); returns
    that client."""
    from fsspec.asyn import sync

    client = sync(fs.loop, fs.set_session)
    client.meta.events.register_first("needs-retry.s3", _give_up_unreachable)
    return client


def _give_up_unreachable(caught_exception: Exception | None = None, attempts: int = 0, **_: Any) -> None:
    """botocore ``needs-retry`` handler, run before the retry policy: stop retrying a request
    whose connection could not be opened after `_CONNECT_ATTEMPTS` tries."""
    from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError

    unreachable = (EndpointConnectionError, ConnectTimeoutError)
    if isinstance(caught_exception, unreachable) and attempts >= _CONNECT_ATTEMPTS:
        raise caught_exception
