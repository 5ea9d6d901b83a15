"""The core of the S3 tests on every S3 server the tests start (moto, localbucket, s3rver), and
what sharedrec does where a server falls short of S3: conditional PUTs ignored (the pointer
swap is refused unless the store has a single writer), no batch delete (one DELETE per
object), and an endpoint that cannot be reached (an error naming it, after two attempts)."""

from __future__ import annotations

from pathlib import Path

import pytest

import sharedrec
from sharedrec.backends import backend_for
from sharedrec.errors import PublishRejected, SharedrecError
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


def test_publish_read_gc_and_leases(server: tuple[str, str], tmp_path: Path) -> None:
    name, any_s3_server = server
    # moto honours conditional PUTs; the others are opened for a single writer, as they must be.
    options = {"single_writer": True} if name in _IGNORED else {}
    bucket = make_bucket(any_s3_server)
    store = _open(any_s3_server, bucket, tmp_path / "w", **options)
    v1 = publish(store, 1)
    with store.reader(reader_id="pod-a", refresh_interval=None) as reader:
        assert int(reader.get("home", int(KEYS[3])).items[0]) == 1000
        v2 = publish(store, 2)
        v3 = publish(store, 3)
        report = store.gc(keep=0, grace=0)
        assert report.kept[v1] == "leased by reader pod-a"
        assert report.deleted == [v2]
    assert store.leases() == []
    assert store.gc(keep=0, grace=0).deleted == [v1]
    keys = {obj["Key"] for obj in s3_client(any_s3_server).list_objects_v2(Bucket=bucket)["Contents"]}
    assert {key.split("/")[2] for key in keys if key.startswith("recs/versions/")} == {v3}
    assert not any(key.startswith("recs/leases/") for key in keys)
    fresh = sharedrec.open(
        f"s3://{bucket}/recs", storage_options=s3_options(any_s3_server), cache_dir=tmp_path / "r"
    )
    assert int(fresh.reader(lease=False).get("home", int(KEYS[7])).items[0]) == 3000
    assert fresh.verify(v3).ok


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
