"""What a reader's lease costs on an object store, counted in real requests to a real S3 server.

A lease is written at open, when what it names changes (a switch, the warming flag) and when a
third of its time-to-live has passed since the last write, not at every poll of ``CURRENT``;
removing it is one plain DELETE of its known key.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

import sharedrec
from sharedrec.backends import backend_for
from sharedrec.backends.base import Backend

from conftest import s3_client, s3_options


class Requests:
    """The HTTP requests one store's S3 client sends, as ``METHOD path?query``."""

    def __init__(self, store: sharedrec.RecommendationStore) -> None:
        self._calls: list[str] = []
        self._lock = threading.Lock()
        backend = store._backend  # noqa: SLF001 - the client whose requests are counted
        backend.client.meta.events.register("before-send.s3", self._count)  # type: ignore[attr-defined]

    def _count(self, request: object, **kwargs: object) -> None:
        url = str(getattr(request, "url", "?")).split("://", 1)[-1]
        with self._lock:
            self._calls.append(f"{getattr(request, 'method', '?')} {url.split('/', 1)[-1]}")

    def take(self) -> list[str]:
        with self._lock:
            calls, self._calls = self._calls, []
        return calls

    def count(self, needle: str) -> int:
        with self._lock:
            return sum(needle in call for call in self._calls)


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def _publish(store: sharedrec.RecommendationStore, value: float) -> str:
    return store.publish_vectors("emb", [1, 2], np.full((2, 2), value, dtype=np.float32))


def lease_puts(calls: list[str]) -> list[str]:
    return [call for call in calls if call.startswith("PUT ") and "/leases/" in call]


def test_removing_a_lease_is_one_delete(s3_store: sharedrec.RecommendationStore) -> None:
    _publish(s3_store, 1.0)
    reader = s3_store.reader(refresh_interval=None, reader_id="pod-d")
    counter = Requests(s3_store)
    reader.close()
    calls = counter.take()
    assert len(calls) == 1, calls  # was: a listing, a HEAD and a batch delete
    method, path = calls[0].split()
    assert method == "DELETE" and "/leases/pod-d." in path and path.endswith(".json"), calls
    assert s3_store.leases() == []


def test_a_polling_reader_writes_its_lease_only_when_due(
    s3_store: sharedrec.RecommendationStore, s3_server: str
) -> None:
    _publish(s3_store, 1.0)
    writer = sharedrec.open(s3_store.location, storage_options=s3_options(s3_server))
    counter = Requests(s3_store)
    with s3_store.reader(refresh_interval=0.02, lease_ttl=60, reader_id="pod-p") as reader:
        assert len(lease_puts(counter.take())) == 1  # written once at open, before mapping
        # Forty polls of CURRENT: nothing the lease names changed, and 20 s are far off.
        wait_for(lambda: counter.count("CURRENT") >= 40)
        assert lease_puts(counter.take()) == []
        # A switch: the lease names both versions before the new one is mapped, then the
        # old one stays named for a time-to-live after the switch. Two writes.
        v2 = _publish(writer, 2.0)  # through another client: only the reader's requests count
        wait_for(lambda: reader.version == v2)
        wait_for(lambda: counter.count("CURRENT") >= 40)
        assert len(lease_puts(counter.take())) == 2
        leased = json.loads(s3_client_body(s3_store, "pod-p"))
        assert leased["version"] == v2 and len(leased["versions"]) == 2


def test_a_lease_is_renewed_every_third_of_its_time_to_live(s3_store: sharedrec.RecommendationStore) -> None:
    _publish(s3_store, 1.0)
    counter = Requests(s3_store)
    with s3_store.reader(refresh_interval=0.02, lease_ttl=1.5, reader_id="pod-r"):
        counter.take()
        wait_for(lambda: counter.count("/leases/pod-r.") >= 1)
        first = datetime.fromisoformat(json.loads(s3_client_body(s3_store, "pod-r"))["expires_at"])
        assert first > datetime.now(UTC)  # renewed before it expired
        assert lease_puts(counter.take())


def s3_client_body(store: sharedrec.RecommendationStore, reader_id: str) -> bytes:
    """The bytes of the one lease file of ``reader_id``."""
    bucket, _, prefix = store.location.removeprefix("s3://").partition("/")
    endpoint = store._backend.client.meta.endpoint_url  # type: ignore[attr-defined]  # noqa: SLF001
    client = s3_client(endpoint)
    listed = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/leases/{reader_id}.")
    (key,) = [item["Key"] for item in listed.get("Contents", [])]
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()  # type: ignore[no-any-return]


def test_a_stale_lease_is_removed_with_one_delete(s3_store: sharedrec.RecommendationStore) -> None:
    version = _publish(s3_store, 1.0)
    long_ago = datetime.now(UTC) - timedelta(hours=3)
    stale = {
        "reader_id": "pod-s",
        "host": "h",
        "pid": 7,
        "version": version,
        "versions": [version],
        "started_at": long_ago.isoformat(),
        "heartbeat": long_ago.isoformat(),
        "expires_at": (long_ago + timedelta(minutes=1)).isoformat(),
    }
    s3_store._backend.write_atomic("leases/pod-s.7-aaaaaa.json", json.dumps(stale).encode())  # noqa: SLF001
    counter = Requests(s3_store)
    with s3_store.reader(refresh_interval=0.02, reader_id="pod-s"):
        wait_for(lambda: counter.count("DELETE ") >= 1)
        calls = [call for call in counter.take() if "pod-s.7-aaaaaa" in call]
    assert [call.split()[0] for call in calls] == ["GET", "DELETE"], calls
    assert [info.process for info in s3_store.leases()] == []


@pytest.fixture(params=["local", "s3", "memory"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        return backend_for(tmp_path / "store", create=True)
    if request.param == "memory":
        return backend_for(f"memory://lease-cost-{id(request)}", create=True)
    store: sharedrec.RecommendationStore = request.getfixturevalue("s3_store")
    return store._backend  # noqa: SLF001


def test_remove_file_deletes_one_file_and_ignores_a_missing_one(backend: Backend) -> None:
    backend.write_atomic("leases/a.json", b"{}")
    backend.write_atomic("leases/b.json", b"{}")
    backend.remove_file("leases/a.json")
    assert backend.listdir("leases") == ["b.json"]
    backend.remove_file("leases/a.json")  # gone already: no error
    assert backend.listdir("leases") == ["b.json"]


def test_a_publish_and_a_pointer_move_remove_their_leases_with_one_delete(
    s3_store: sharedrec.RecommendationStore,
) -> None:
    v1 = _publish(s3_store, 1.0)
    counter = Requests(s3_store)
    _publish(s3_store, 2.0)  # the publish's lease (draft-...)
    s3_store.set_current(v1)  # the pointer move's own lease (pointer-...)
    calls = [call for call in counter.take() if "leases" in call]
    removals = [call for call in calls if not call.startswith("PUT ")]
    # Was: a listing of the lease's "folder", a HEAD and a DELETE for each.
    assert [call.split()[0] for call in removals] == ["DELETE", "DELETE"], calls
    assert "/leases/draft-" in removals[0] and "/leases/pointer-" in removals[1], calls
    assert s3_store.leases() == []
