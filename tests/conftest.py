"""Shared fixtures: a local store, a synthetic data generator, tagged versions."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

import sharedrec
from sharedrec.testing import netvolume


@dataclass
class RankedData:
    """Ranked lists in input order, with the expected list of every key."""

    keys: NDArray[np.int64] | list[str]
    items: NDArray[np.int32]
    scores: NDArray[np.float32]

    def expected(self, row: int, k: int | None = None) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        return self.items[row, :k], self.scores[row, :k]


def make_ranked(n: int, k: int, *, str_keys: bool = False, seed: int = 0) -> RankedData:
    """``n`` keys (sparse int64 ids, or strings) with ``k`` distinct items each, best first."""
    rng = np.random.default_rng(seed)
    ids = rng.choice(10**12, size=n, replace=False).astype(np.int64)
    keys: NDArray[np.int64] | list[str] = [f"user-{i}" for i in ids.tolist()] if str_keys else ids
    gaps = rng.geometric(0.2, size=(n, k))
    items = np.cumsum(gaps, axis=1).astype(np.int32)
    scores = np.sort(rng.random((n, k), dtype=np.float32), axis=1)[:, ::-1].copy()
    return RankedData(keys, items, scores)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3 server (moto) on 127.0.0.1; yields its endpoint URL."""
    server_module = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def s3_options(endpoint: str) -> dict[str, Any]:
    """storage_options for the test server."""
    return {
        "endpoint_url": endpoint,
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"region_name": "us-east-1"},
    }


S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
"""The environment a child process (the command) needs to reach the test server."""


def s3_client(endpoint: str) -> Any:
    """A boto3 client of the test server, to look at or tamper with objects directly."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def make_bucket(endpoint: str) -> str:
    """A fresh, empty bucket on the test server."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_client(endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_store(s3_server: str, tmp_path: Path) -> sharedrec.RecommendationStore:
    """An empty store under s3://<fresh bucket>/recs, with its cache in a temporary folder."""
    bucket = make_bucket(s3_server)
    return sharedrec.open(
        f"s3://{bucket}/recs",
        storage_options=s3_options(s3_server),
        cache_dir=tmp_path / "cache",
        create=True,
    )


@pytest.fixture(params=["local", "s3"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> sharedrec.RecommendationStore:
    """An empty store on each backend: a local folder, and S3 (tests marked local_only: local)."""
    if request.param == "local":
        return sharedrec.open(tmp_path / "store", create=True)
    if request.node.get_closest_marker("local_only"):
        pytest.skip("inspects files on a local disk")
    return request.getfixturevalue("s3_store")  # type: ignore[no-any-return]


def version_folders(store: sharedrec.RecommendationStore) -> list[str]:
    """What is under versions/ on any backend, finished or not."""
    return store._backend.listdir("versions")


@pytest.fixture
def store(tmp_path: Path) -> sharedrec.RecommendationStore:
    """An empty store in a temporary folder."""
    return sharedrec.open(tmp_path / "store", create=True)


@pytest.fixture
def ranked() -> RankedData:
    """500 int64 keys x 20 items."""
    return make_ranked(500, 20)


KEYS = np.arange(200, dtype=np.int64) * 3


def publish(store: sharedrec.RecommendationStore, tag: int, **options: object) -> str:
    """A version whose every item is ``tag * 1000 + position``."""
    items = np.tile(np.arange(5), (len(KEYS), 1)) + tag * 1000
    scores = np.tile(np.linspace(1, 0, 5), (len(KEYS), 1))
    return store.publish_ranked("home", KEYS, items, scores, metadata={"tag": tag}, **options)  # type: ignore[arg-type]


@pytest.fixture
def network_volume(tmp_path: Path) -> Iterator[netvolume.Volume]:
    """A network volume (``sharedrec.testing.netvolume.Volume``) over a fresh backing folder.

    Mount nodes with ``network_volume.node("a", attr_timeout=...)``; all are unmounted at the
    end of the test. Skips, saying what is missing, where FUSE is unavailable.
    """
    reason = netvolume.missing()
    if reason is not None:
        pytest.skip(reason)
    with netvolume.Volume(tmp_path / "volume") as volume:
        yield volume
