"""S3 faults between sharedrec and a real S3 server (moto on 127.0.0.1): 5xx errors,
throttling, dropped connections, timeouts and lost responses. A publish completes or
leaves the old version live; readers keep serving."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sharedrec

from ._s3_proxy import FaultInjector, every
from ._support import Tally, check_answers, publish_tagged

pytestmark = pytest.mark.slow


@pytest.fixture
def setup(s3_server: str, tmp_path: Path) -> Iterator[tuple[FaultInjector, str, dict[str, Any]]]:
    from conftest import make_bucket, s3_options

    url = f"s3://{make_bucket(s3_server)}/recs"
    direct = s3_options(s3_server)
    publish_tagged(sharedrec.open(url, storage_options=direct, cache_dir=tmp_path / "c0", create=True), 0)
    with FaultInjector(s3_server, hang_seconds=1.6) as proxy:
        yield proxy, url, direct


def _through(proxy: FaultInjector, **config: Any) -> dict[str, Any]:
    return {
        "endpoint_url": proxy.url,
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"region_name": "us-east-1"},
        "config_kwargs": {"read_timeout": 1, "connect_timeout": 1, **config},
    }


@pytest.mark.parametrize("fault", ["500", "503", "slowdown", "reset", "timeout", "lost"])
def test_publish_under_transient_faults(
    setup: tuple[FaultInjector, str, dict[str, Any]], fault: str, tmp_path: Path, tally: Tally
) -> None:
    proxy, url, direct = setup
    through = sharedrec.open(url, storage_options=_through(proxy), cache_dir=tmp_path / "c1")
    reader = through.reader(lease=False, refresh_interval=None)
    reader.prefetch(wait=True)
    # Writes are where a fault hurts: every 4th PUT fails (twice in all; "lost" hits the
    # conditional PUT of CURRENT, whose response never arrives).
    methods = ("PUT",) if fault != "timeout" else ("GET", "PUT")
    if fault == "lost":
        limit = 1
        lost = every(1, "lost", limit, ("PUT",))
        proxy.rule = lambda method, path: lost(method, path) if path.endswith("/CURRENT") else None
    else:
        limit = 2 if fault == "timeout" else 4
        proxy.rule = every(4, fault, limit, methods)
    tally.scenarios += 1
    error: Exception | None = None
    try:
        publish_tagged(through, 1)
    except Exception as exc:
        error = exc
    proxy.rule = lambda method, path: None
    injected = proxy.total_injected
    tally.faults_injected += injected
    assert injected == limit, proxy.injected

    store = sharedrec.open(url, storage_options=direct, cache_dir=tmp_path / "c2")
    live = store.reader(lease=False, refresh_interval=None)
    # Retries carry a publish through these few faults; if one ever does not, the old
    # version must still be live and whole.
    expected = 0 if error is not None else 1
    assert error is None, f"{type(error).__name__}: {error}"
    if live.metadata["tag"] != expected:
        tally.data_lost += 1
    assert live.metadata["tag"] == expected
    assert store.verify().ok
    assert check_answers(live, expected) == 0
    # The reader opened before the faults still serves, then follows.
    assert check_answers(reader, 0) == 0
    assert reader.refresh() and check_answers(reader, 1) == 0


_OUTAGE = r"cannot reach|SlowDown|InternalError|ServiceUnavailable|503|500|reset|aborted|closed"


def test_outage_during_publish_leaves_the_old_version(
    setup: tuple[FaultInjector, str, dict[str, Any]], tmp_path: Path, tally: Tally
) -> None:
    proxy, url, direct = setup
    through = sharedrec.open(
        url, storage_options=_through(proxy, retries={"max_attempts": 2}), cache_dir=tmp_path / "c1"
    )
    reader = through.reader(lease=False, refresh_interval=None)
    reader.prefetch(wait=True)
    store = sharedrec.open(url, storage_options=direct, cache_dir=tmp_path / "c2")
    old = store.current()
    for fault in ("slowdown", "reset"):
        tally.scenarios += 1

        # Every write fails: the publish cannot finish.
        def fail_writes(method: str, path: str, fault: str = fault) -> str | None:
            return fault if method == "PUT" else None

        proxy.rule = fail_writes
        with pytest.raises(Exception, match=_OUTAGE) as caught:
            publish_tagged(through, 1)
        proxy.rule = lambda method, path: None
        # S3's own error after the retries, or sharedrec's for a connection that never answers.
        assert type(caught.value).__name__ in ("ClientError", "SharedrecError"), repr(caught.value)
        assert store.current() == old
        assert [v.id for v in store.versions()] == [old]
        assert store.verify().ok

        # A whole outage: the reader cannot see CURRENT, and keeps serving from its cache.
        def fail_all(method: str, path: str, fault: str = fault) -> str | None:
            return fault

        proxy.rule = fail_all
        with pytest.raises(
            Exception, match=r"cannot reach|SlowDown|InternalError|ServiceUnavailable|503|500"
        ):
            reader.refresh()
        assert reader.version == old and check_answers(reader, 0) == 0
        proxy.rule = lambda method, path: None
    tally.faults_injected += proxy.total_injected
    # Service comes back: the next publish goes through and the reader follows.
    publish_tagged(through, 2)
    assert reader.refresh() and check_answers(reader, 2) == 0
