"""Amazon S3 and S3-compatible servers, through s3fs's aiobotocore client.

Writes are single PUTs (atomic per object). ``CURRENT`` is replaced with a conditional
PUT: ``If-None-Match: *`` for the first version, ``If-Match: <etag read before>``
afterwards, so two writers can never silently overwrite each other. Reads are plain GETs
(never s3fs's cached listings); the pointer is polled with a conditional GET that costs a
304 when nothing changed. Transient errors (5xx, throttling, resets) are retried with
backoff by botocore's standard retry mode. One filesystem and one client per store.

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
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

from sharedrec.backends.base import STORE_MARKER, PointerMoved, no_store
from sharedrec.errors import InvalidInput, SharedrecError, StoreNotFound

__all__ = ["S3Backend"]

log = logging.getLogger("sharedrec")

_PRECONDITION = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
_MISSING = {"NoSuchKey", "404", "NotFound"}
_UPLOADS = 16


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
        options = dict(storage_options or {})
        config = dict(options.pop("config_kwargs", {}) or {})
        config.setdefault("retries", {"max_attempts": 8, "mode": "standard"})
        self._sync = sync
        self._s3fs = s3fs
        self._options = {"config_kwargs": config, **options}
        self._connect()
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
        self._client = self._sync(self._fs.loop, self._fs.set_session)

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
                f"cannot reach {self._url} ({type(exc).__name__}: {exc}); check the endpoint, "
                "network and credentials (AWS_* environment or storage_options)"
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
            response = await self.client.get_object(Bucket=self.bucket, Key=self._key(path), **kwargs)
            async with response["Body"] as body:
                return await body.read(), str(response["ETag"])

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
            return self._get(path, **kwargs)
        except Exception as exc:
            if _code(exc) in ("304", "NotModified"):
                return None
            raise

    def write_atomic(self, path: str, data: bytes, *, durable: bool = True) -> None:
        self._require_store()
        self._call("put_object", Bucket=self.bucket, Key=self._key(path), Body=data)

    def swap_pointer(self, path: str, data: bytes, expected: bytes | None) -> None:
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
            batch = [{"Key": key} for key in keys[start : start + 1000]]
            self._call("delete_objects", Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

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
