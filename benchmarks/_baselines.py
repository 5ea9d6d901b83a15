"""Key-value baselines on the benchmark data: an LMDB environment and a Redis server.

Both hold one entry per user. The key is the user id as 8 big-endian bytes (signed int64: the
ids are positive, so byte order is numeric order and LMDB can append in sorted order); the
value is the row's ``k`` items as little-endian int32 followed by its ``k`` scores as
little-endian float32 (800 bytes for k = 100). ``lmdb`` and ``redis`` are imported only
when a baseline is built, so a machine without them skips those benchmarks.
"""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from benchmarks._workload import Workload

__all__ = [
    "REDIS_PIPELINE",
    "RedisServer",
    "build_lmdb",
    "decode_row",
    "decode_rows",
    "encode_key",
    "encode_keys",
    "load_redis",
    "open_lmdb",
    "redis_binary",
    "row_dtype",
    "start_redis",
]

REDIS_PIPELINE = 10_000
"""SETs sent per pipeline when loading Redis."""
REDIS_STARTUP_TIMEOUT = 10.0
"""Seconds to wait for a new redis-server to answer PING."""

_BLOCK_ROWS = 1 << 16
"""Rows encoded at once while loading: bounds the temporaries to about 50 MB."""

encode_key = struct.Struct(">q").pack
"""One user id -> its 8-byte big-endian key."""


def encode_keys(keys: NDArray[np.int64]) -> list[bytes]:
    """Many user ids -> their 8-byte big-endian keys (``V8`` keeps trailing zero bytes)."""
    return np.asarray(keys).astype(">i8").view("V8").tolist()  # type: ignore[no-any-return]


def row_dtype(k: int) -> np.dtype[np.void]:
    """One value: ``k`` little-endian int32 items, then ``k`` little-endian float32 scores."""
    return np.dtype([("items", "<i4", (k,)), ("scores", "<f4", (k,))])


def decode_row(value: Any, k: int) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
    """``(items, scores)`` of one value: views of ``value``, no copy."""
    return np.frombuffer(value, "<i4", k), np.frombuffer(value, "<f4", k, 4 * k)


def decode_rows(values: list[Any], k: int) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
    """``(items, scores)`` of many values, as ``(len(values), k)`` views of one joined buffer."""
    rows = np.frombuffer(b"".join(values), dtype=row_dtype(k))
    return rows["items"], rows["scores"]


def _sorted_rows(workload: Workload) -> Iterator[tuple[list[bytes], list[bytes]]]:
    """Blocks of ``(keys, values)`` encoded as above, in ascending key order."""
    dtype = row_dtype(workload.k)
    size = dtype.itemsize
    for start in range(0, workload.n_users, _BLOCK_ROWS):
        rows = workload.order[start : start + _BLOCK_ROWS]
        encoded = np.empty(len(rows), dtype=dtype)
        encoded["items"] = workload.items[rows]
        encoded["scores"] = workload.scores[rows]
        blob = encoded.tobytes()
        values = [blob[i : i + size] for i in range(0, len(blob), size)]
        yield encode_keys(workload.sorted_keys[start : start + _BLOCK_ROWS]), values


# -- LMDB -------------------------------------------------------------------------------------


def build_lmdb(workload: Workload, path: Path) -> Path:
    """Write every row into a new LMDB environment (a folder) in one write transaction."""
    import lmdb

    # A leaf page of 4 KiB holds 4 entries of 816 bytes: about 1 KiB per entry on disk.
    # The map is only address space; the file grows with the pages written.
    map_size = workload.n_users * (2 * row_dtype(workload.k).itemsize + 512) + (64 << 20)
    env = lmdb.open(str(path), map_size=map_size, subdir=True, writemap=False, metasync=False)
    try:
        with env.begin(write=True) as txn:
            cursor = txn.cursor()
            for keys, values in _sorted_rows(workload):
                consumed, added = cursor.putmulti(zip(keys, values, strict=True), append=True)
                if added != consumed:
                    raise RuntimeError(f"LMDB took {added} of {consumed} rows: keys out of order?")
        env.sync(True)
        entries = env.stat()["entries"]
    finally:
        env.close()
    if entries != workload.n_users:
        raise RuntimeError(f"LMDB holds {entries} entries, expected {workload.n_users}")
    return path


def open_lmdb(path: Path) -> Any:
    """A read-only environment, as every reader process opens it: no lock file, no read-ahead.

    ``readahead=False`` is LMDB's advice for random access, like sharedrec's MADV_RANDOM.
    """
    import lmdb

    return lmdb.open(str(path), readonly=True, lock=False, readahead=False, subdir=True)


# -- Redis ------------------------------------------------------------------------------------


@dataclass
class RedisServer:
    """A redis-server process on 127.0.0.1, without persistence."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=120)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers_ping(port: int) -> bool:
    """Whether a Redis server on ``port`` answers PING (a raw probe: no client retries)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(binary: str, folder: Path, attempts: int = 3) -> RedisServer:
    """Start ``binary`` on a free loopback port and wait (bounded) until it answers PING."""
    error = "no attempt made"
    for _ in range(attempts):  # another process may take the free port before the server binds it
        port = _free_port()
        log = folder / f"redis-{port}.log"
        command = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
        command += ["--dir", str(folder), "--logfile", str(log)]
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        server = RedisServer(process, port, log)
        deadline = time.monotonic() + REDIS_STARTUP_TIMEOUT
        while process.poll() is None and time.monotonic() < deadline:
            if _answers_ping(port):
                return server
            time.sleep(0.02)
        exited = process.poll() is not None
        server.stop()
        text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        state = (
            f"exited with code {process.returncode}"
            if exited
            else f"no PONG in {REDIS_STARTUP_TIMEOUT:.0f} s"
        )
        error = f"{state}; log:\n{text}"
    raise RuntimeError(f"redis-server did not start ({attempts} attempts; last: {error})")


def load_redis(client: Any, workload: Workload) -> None:
    """``SET`` every row, in pipelines of ``REDIS_PIPELINE`` commands, into an empty database."""
    client.flushall()
    pipe = client.pipeline(transaction=False)
    for keys, values in _sorted_rows(workload):
        for start in range(0, len(keys), REDIS_PIPELINE):
            stop = start + REDIS_PIPELINE
            for key, value in zip(keys[start:stop], values[start:stop], strict=True):
                pipe.set(key, value)
            pipe.execute()
    stored = client.dbsize()
    if stored != workload.n_users:
        raise RuntimeError(f"Redis holds {stored} keys, expected {workload.n_users}")


def redis_binary() -> str | None:
    """The redis-server on PATH, if any."""
    return shutil.which("redis-server")
