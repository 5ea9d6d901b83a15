"""The S3 tests that depend on the server, on every S3 server the tests start (moto,
localbucket, s3rver): one scenario per server (publish, read, a delta, a switch, a lost race,
rollback, gc around a reader's lease, lease removal, a missing and a corrupt chunk), and what
sharedrec does where a server falls short of S3: conditional PUTs ignored (a publish is
refused before it writes anything unless the store has a single writer), no batch delete
(one DELETE per object), and an endpoint that cannot be reached (an error naming it, after
two attempts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import sharedrec
from sharedrec.backends import backend_for
from sharedrec.errors import (
    ConcurrentPublishError,
    CorruptVersion,
    PublishRejected,
    SharedrecError,
    VersionGone,
)
from test_backend_contract import shared_session
from test_lease_cost import Requests

from conftest import KEYS, S3_SERVERS, make_bucket, publish, s3_client, s3_options

# The servers that ignore a conditional PUT header; the probe names which.
_IGNORED = {
    "localbucket": ["If-Match with a wrong ETag"],
    "s3rver": ["If-None-Match: * on an existing object", "If-Match with a wrong ETag"],
}


def _open(endpoint: str, bucket: str, cache: Path, **options: object) -> sharedrec.RecommendationStore:
    return sharedrec.open(
        f"s3://{bucket}/recs",
        storage_options=s3_options(endpoint) | options,
        cache_dir=cache,
        create=True,
    )


@pytest.fixture(params=S3_SERVERS)
def server(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(name, endpoint) of each S3 server."""
    fixture = "s3_server" if request.param == "moto" else f"{request.param}_server"
    endpoint: str = request.getfixturevalue(fixture)
    return request.param, endpoint


def _item(reader: sharedrec.Reader, row: int) -> int:
    return int(reader.get("home", int(KEYS[row])).items[0])


def test_publish_delta_switch_rollback_gc_leases_and_damage(server: tuple[str, str], tmp_path: Path) -> None:
    """One scenario per server, the behaviours of tests/test_s3.py that depend on the server."""
    name, endpoint = server
    # moto honours conditional PUTs; the others are opened for a single writer, as they must be.
    options = {"single_writer": True} if name in _IGNORED else {}
    bucket = make_bucket(endpoint)
    client = s3_client(endpoint)
    session = shared_session()
    store = _open(endpoint, bucket, tmp_path / "w", session=session, **options)
    v1 = publish(store, 1)
    with store.reader(reader_id="pod-a", refresh_interval=None) as reader:
        assert _item(reader, 3) == 1000
        # A delta: row 5 changes, key 0 goes; the rest is read from v1 below it.
        items = np.tile(np.arange(5), (len(KEYS), 1)) + 1000
        items[5] += 1000
        scores = np.tile(np.linspace(1, 0, 5), (len(KEYS), 1))
        v2 = store.publish_ranked("home", KEYS[1:], items[1:], scores[1:], delta=True)
        assert store.manifest(v2).base == v1
        assert reader.refresh() is True and reader.version == v2  # the switch
        assert _item(reader, 5) == 2000 and _item(reader, 7) == 1000
        assert not reader.contains("home", int(KEYS[0]))
        # A publish that started from v2 loses to one that finished first: an error, not a loss.
        slow = store.publish(guards=[]).__enter__()
        slow.add_ranked("home", KEYS, items, scores)
        v3 = publish(store, 3)
        with pytest.raises(ConcurrentPublishError, match=v3):
            slow.__exit__(None, None, None)
        assert store.current() == v3 and store.verify(slow.version_id).ok
        assert store.rollback() == v2
        assert reader.refresh() is False and reader.version == v2
        # The reader's lease names v2 and v1 below it; v3 and the lost publish are not named.
        report = store.gc(keep=0, grace=0)
        assert sorted(report.deleted) == sorted([v3, slow.version_id])
        assert set(report.kept) == {v1, v2}
    assert store.leases() == []  # removed at close, one DELETE (no batch delete needed)
    listed = {item["Key"] for item in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert {key.split("/")[2] for key in listed if key.startswith("recs/versions/")} == {v1, v2}
    assert not any(key.startswith("recs/leases/") for key in listed)

    # Damage below the live delta: a missing chunk, then a corrupt one, each named.
    chunk = f"recs/versions/{v1}/home/scores/c/0/0"
    body = client.get_object(Bucket=bucket, Key=chunk)["Body"].read()
    client.delete_object(Bucket=bucket, Key=chunk)
    fresh = _open(endpoint, bucket, tmp_path / "r1", session=session)
    with pytest.raises(VersionGone, match=f"{v1}/home/scores/c/0/0 is gone"):
        _item(fresh.reader(lease=False, refresh_interval=None), 7)
    with pytest.raises(CorruptVersion, match=f"{v1} .* home/scores/c/0/0: missing"):
        fresh.verify(v1)
    client.put_object(Bucket=bucket, Key=chunk, Body=body[:-1] + bytes([body[-1] ^ 1]))
    fresh = _open(endpoint, bucket, tmp_path / "r2", session=session)
    with pytest.raises(CorruptVersion, match="does not match its manifest"):
        _item(fresh.reader(lease=False, refresh_interval=None), 7)
    client.put_object(Bucket=bucket, Key=chunk, Body=body)
    fresh = _open(endpoint, bucket, tmp_path / "r3", session=session)
    assert _item(fresh.reader(lease=False, refresh_interval=None), 7) == 1000
    assert fresh.verify(v1).ok


@pytest.fixture(params=sorted(_IGNORED))
def lax_server(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(name, endpoint) of each server that ignores a conditional PUT header."""
    endpoint: str = request.getfixturevalue(f"{request.param}_server")
    return request.param, endpoint


def _objects(endpoint: str, bucket: str) -> dict[str, str]:
    """Every object of ``bucket``, key -> ETag."""
    listed = s3_client(endpoint).list_objects_v2(Bucket=bucket).get("Contents", [])
    return {item["Key"]: item["ETag"] for item in listed}


def test_a_publish_is_refused_before_it_writes_anything_where_conditional_puts_are_ignored(
    lax_server: tuple[str, str], tmp_path: Path
) -> None:
    name, endpoint = lax_server
    bucket = make_bucket(endpoint)
    first = _open(endpoint, bucket, tmp_path / "a", single_writer=True)
    live = publish(first, 1)
    before = _objects(endpoint, bucket)
    second = _open(endpoint, bucket, tmp_path / "b")
    requests = Requests(second)
    with pytest.raises(PublishRejected) as refused:
        publish(second, 2)
    message = str(refused.value)
    assert "before writing anything" in message and "CURRENT" in message and endpoint in message
    assert "single_writer" in message and "SHAREDREC_SINGLE_WRITER=1" in message
    for failing in _IGNORED[name]:
        assert failing in message
    # Nothing was uploaded: the only writes were the probe's, on its own scratch object.
    writes = [call for call in requests.take() if call.split()[0] in ("PUT", "POST", "DELETE")]
    assert writes and all("/recs/.sharedrec-probe-" in call for call in writes), writes
    # A delta and a publish from many tasks are refused as early; the probe is not repeated.
    with pytest.raises(PublishRejected, match="before writing anything"):
        publish(second, 3, delta=True)
    with pytest.raises(PublishRejected, match="before writing anything"):
        second.begin_publish(partitions=2)
    assert [call for call in requests.take() if not call.startswith(("GET ", "HEAD "))] == []
    assert _objects(endpoint, bucket) == before
    assert first.current() == live and [v.id for v in second.versions()] == [live]
    # Committing without moving the pointer is safe, and allowed; the move is refused at the
    # swap, and left to the single writer.
    kept = publish(second, 4, make_current=False)
    with pytest.raises(PublishRejected, match=r"CURRENT of .* was not moved"):
        second.set_current(kept)
    assert second.reader(lease=False).version == live
    first.set_current(kept)
    assert first.current() == kept


def test_single_writer_from_the_environment(
    lax_server: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, endpoint = lax_server
    monkeypatch.setenv("SHAREDREC_SINGLE_WRITER", "1")
    store = _open(endpoint, make_bucket(endpoint), tmp_path / "c")
    v1 = publish(store, 1)
    assert store.current() == v1


def test_batch_delete_is_not_needed(localbucket_server: str) -> None:
    # localbucket answers 501 to DeleteObjects: remove_tree deletes one object at a time.
    backend = backend_for(
        f"s3://{make_bucket(localbucket_server)}/recs",
        create=True,
        storage_options=s3_options(localbucket_server),
    )
    for name in ("a", "b/c", "b/d"):
        backend.write_atomic(f"versions/v1/{name}", b"1")
    backend.remove_tree("versions/v1")
    assert backend.listdir("versions") == []


def test_an_unreachable_endpoint_fails_after_two_attempts_naming_it(s3_server: str) -> None:
    endpoint = "http://127.0.0.1:9"  # the discard port: nothing listens there
    backend = backend_for("s3://b/r", create=False, storage_options=s3_options(endpoint))
    attempts: list[str] = []
    backend.client.meta.events.register(  # type: ignore[attr-defined]
        "before-send.s3", lambda request, **_: attempts.append(request.url)
    )
    with pytest.raises(SharedrecError, match=f"cannot reach s3://b/r at endpoint {endpoint}") as failed:
        backend.read_bytes("CURRENT")
    assert "endpoint_url" in str(failed.value)
    assert len(attempts) == 2, attempts  # not botocore's 8, with backoff up to 20 s between
    config = backend.client.meta.config  # type: ignore[attr-defined]
    assert config.connect_timeout <= 5
    # Throttling and 5xx keep their retries.
    assert config.retries["total_max_attempts"] >= 5
