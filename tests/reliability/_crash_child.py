"""A publishing process that SIGKILLs itself at a chosen fault point (run by test_crash.py).

It imports everything once, then forks one child per request read from stdin, so every
kill hits a fresh real process without paying for the imports again. A request is a JSON
line ``{"root": ..., "tag": ..., "kill_at": n, "events": path, "s3": {...} | null}``: the
child publishes version ``tag`` and kills itself with SIGKILL at fault point ``n``
(``-1``: never, and every fault point is written to ``events``). The answer is a JSON
line with the child's exit status.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, cast

import zarr.storage._local as zarr_local

import sharedrec
import sharedrec.backends.posix as posix
from sharedrec.backends.posix import PosixBackend
from sharedrec.format.layout import PROBE

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reliability._support import publish_tagged


class FaultPoints:
    """Numbers every fault point the publish passes; dies at the chosen one."""

    def __init__(self, kill_at: int) -> None:
        self.kill_at = kill_at
        self.seen: list[str] = []
        self.lock = threading.Lock()

    def point(self, name: str) -> None:
        with self.lock:
            index = len(self.seen)
            self.seen.append(name)
        if index == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


def install_posix(points: FaultPoints) -> None:
    put = zarr_local._put

    def traced_put(path: Path, value: Any, exclusive: bool = False) -> int:
        rel = "/".join(path.parts[-5:])
        points.point(f"before chunk {rel}")
        if points.kill_at == len(points.seen):
            # Die half-way through the temporary file zarr writes before its rename.
            data = bytes(value.as_buffer_like())
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path.with_suffix(".dying.partial"), "wb") as f:
                f.write(data[: len(data) // 2])
                f.flush()
        points.point(f"during chunk {rel}")
        written: int = put(path, value, exclusive)
        points.point(f"after chunk {rel}")
        return written

    zarr_local._put = traced_put

    replace = os.replace

    def traced_replace(src: Any, dst: Any, **kwargs: Any) -> None:
        name = Path(dst).name
        if name in ("manifest.json", "CURRENT"):
            points.point(f"before rename of {name}")
            replace(src, dst, **kwargs)
            points.point(f"after rename of {name}")
        else:
            replace(src, dst, **kwargs)

    cast(Any, posix).os.replace = traced_replace

    for method in ("sync_tree", "write_atomic", "swap_pointer"):
        original = getattr(PosixBackend, method)

        def traced(self: Any, *args: Any, _original: Any = original, _name: str = method, **kw: Any) -> Any:
            what = f"{_name}({args[0]})"
            points.point(f"before {what}")
            result = _original(self, *args, **kw)
            points.point(f"after {what}")
            return result

        setattr(PosixBackend, method, traced)


def install_s3(store: sharedrec.RecommendationStore, points: FaultPoints) -> None:
    client = store._backend.client  # type: ignore[attr-defined]
    put = client.put_object

    async def traced_put(**kwargs: Any) -> Any:
        key = kwargs["Key"].split("/", 1)[-1]
        if key.startswith(PROBE):
            # The server's conditional-write probe, before the publish writes anything: a kill
            # there leaves a scratch object that gc removes (tests/test_gc.py), not a version.
            return await put(**kwargs)
        points.point(f"before PUT {key}")
        result = await put(**kwargs)
        points.point(f"after PUT {key}")
        return result

    client.put_object = traced_put


def run(request: dict[str, Any]) -> None:
    points = FaultPoints(request["kill_at"])
    s3 = request.get("s3")
    try:
        if s3:
            store = sharedrec.open(request["root"], storage_options=s3["options"], cache_dir=s3["cache"])
            install_s3(store, points)
        else:
            install_posix(points)
            store = sharedrec.open(request["root"])
        publish_tagged(store, request["tag"])
        points.point("published")
    finally:
        if request.get("events"):
            Path(request["events"]).write_text(json.dumps(points.seen))


def main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                run(request)
            except BaseException as exc:
                print(f"publish failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                code = 3
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        answer = (
            {"signal": os.WTERMSIG(status)} if os.WIFSIGNALED(status) else {"code": os.WEXITSTATUS(status)}
        )
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
