"""The example FastAPI service in examples/service, against real local stores."""

from __future__ import annotations

import importlib.util
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import sharedrec

pytest.importorskip("fastapi")
if importlib.util.find_spec("httpx2") is None:  # newer Starlette test clients prefer httpx2
    pytest.importorskip("httpx")

with warnings.catch_warnings():
    # Starlette >= 1.x warns at import when it falls back to httpx instead of httpx2.
    warnings.filterwarnings("ignore", message=".*install `httpx2` instead", category=UserWarning)
    from fastapi.testclient import TestClient

APP_PATH = Path(__file__).resolve().parents[1] / "examples" / "service" / "app.py"

USERS = np.array([7, 42, 10**12], dtype=np.int64)
ITEMS = np.array([[1, 2, 3, 4], [10, 20, 30, 40], [5, 6, 7, 8]], dtype=np.int32)
SCORES = np.array([[0.9, 0.5, 0.25, 0.125]] * 3, dtype=np.float32)


@pytest.fixture(scope="module")
def service() -> ModuleType:
    """examples/service/app.py, imported by path (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location("sharedrec_example_service", APP_PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _no_lease_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Leases go to the test store's own leases/ folder, whatever the environment says.
    monkeypatch.delenv("SHAREDREC_LEASE_DIR", raising=False)
    monkeypatch.delenv("SHAREDREC_READER_ID", raising=False)
    monkeypatch.delenv("SHAREDREC_STORE", raising=False)


@pytest.fixture
def int_store(tmp_path: Path) -> tuple[sharedrec.RecommendationStore, str]:
    """A store with a "home" collection keyed by int64 user ids; returns it and its version."""
    store = sharedrec.open(tmp_path / "int-store", create=True)
    version = store.publish_ranked("home", USERS, ITEMS, SCORES)
    return store, version


@pytest.fixture
def str_store(tmp_path: Path) -> tuple[sharedrec.RecommendationStore, str]:
    """A store with a "home" collection keyed by str user ids; returns it and its version."""
    store = sharedrec.open(tmp_path / "str-store", create=True)
    version = store.publish_ranked("home", ["alice", "bob", "42"], ITEMS, SCORES)
    return store, version


@pytest.fixture
def client(service: ModuleType, int_store: tuple[sharedrec.RecommendationStore, str]) -> Iterator[TestClient]:
    """The service on the int-keyed store; refreshes only when told to."""
    store, _ = int_store
    with TestClient(service.create_app(store.location, refresh_interval=None)) as test_client:
        yield test_client


def test_known_user(client: TestClient, int_store: tuple[sharedrec.RecommendationStore, str]) -> None:
    _, version = int_store
    response = client.get("/recommendations/42")
    assert response.status_code == 200
    assert response.json() == {
        "user": 42,
        "version": version,
        "source": "home",
        "items": [10, 20, 30, 40],
        "scores": SCORES[1].tolist(),
    }


def test_large_int_key(client: TestClient) -> None:
    response = client.get(f"/recommendations/{10**12}")
    assert response.status_code == 200
    assert response.json()["items"] == [5, 6, 7, 8]


def test_k(client: TestClient) -> None:
    response = client.get("/recommendations/7", params={"k": 2})
    assert response.status_code == 200
    body = response.json()
    assert body["items"] == [1, 2]
    assert body["scores"] == SCORES[0, :2].tolist()
    # Longer than the list: the whole list.
    assert client.get("/recommendations/7", params={"k": 100}).json()["items"] == [1, 2, 3, 4]


@pytest.mark.parametrize("user", ["8", "-1", str(2**70), "abc", "4 2"])
def test_unknown_user(client: TestClient, user: str) -> None:
    response = client.get(f"/recommendations/{user}")
    assert response.status_code == 404
    detail = response.json()["detail"]
    assert "unknown user" in detail
    assert repr(user) in detail


def test_unknown_collection(client: TestClient) -> None:
    response = client.get("/recommendations/42", params={"collection": "nope"})
    assert response.status_code == 404
    detail = response.json()["detail"]
    assert "unknown collection 'nope'" in detail
    assert "home" in detail  # names the collections there are


@pytest.mark.parametrize("k", ["0", "-3", "abc", "1.5", "1001"])
def test_bad_k(client: TestClient, k: str) -> None:
    response = client.get("/recommendations/42", params={"k": k})
    assert response.status_code == 422


def test_health_and_readiness(
    client: TestClient, int_store: tuple[sharedrec.RecommendationStore, str]
) -> None:
    _, version = int_store
    assert client.get("/healthz").status_code == 200
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["version"] == version
    assert response.json()["status"] == "ready"


def test_not_ready_once_closed(client: TestClient) -> None:
    client.app.state.reader.close()  # type: ignore[attr-defined]
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200


def test_str_keys(service: ModuleType, str_store: tuple[sharedrec.RecommendationStore, str]) -> None:
    store, version = str_store
    with TestClient(service.create_app(store.location, refresh_interval=None)) as client:
        response = client.get("/recommendations/bob", params={"k": 3})
        assert response.status_code == 200
        assert response.json() == {
            "user": "bob",
            "version": version,
            "source": "home",
            "items": [10, 20, 30],
            "scores": SCORES[1, :3].tolist(),
        }
        # A numeric-looking id is still a string key here.
        response = client.get("/recommendations/42")
        assert response.status_code == 200
        assert response.json()["user"] == "42"
        assert response.json()["items"] == [5, 6, 7, 8]
        response = client.get("/recommendations/carol")
        assert response.status_code == 404
        assert "unknown user 'carol'" in response.json()["detail"]


def test_new_version_after_refresh(
    client: TestClient, int_store: tuple[sharedrec.RecommendationStore, str]
) -> None:
    store, old = int_store
    new = store.publish_ranked("home", USERS, ITEMS[::-1].copy(), SCORES, guards=())
    # Not polling: the old version is served until the reader is told to refresh.
    assert client.get("/recommendations/42").json()["version"] == old
    assert client.app.state.reader.refresh()  # type: ignore[attr-defined]
    body = client.get("/recommendations/7").json()
    assert body["version"] == new
    assert body["items"] == [5, 6, 7, 8]
    assert client.get("/readyz").json()["version"] == new


def test_new_version_by_polling(
    service: ModuleType, int_store: tuple[sharedrec.RecommendationStore, str]
) -> None:
    store, old = int_store
    with TestClient(service.create_app(store.location, refresh_interval=0.05)) as client:
        assert client.get("/recommendations/42").json()["version"] == old
        new = store.publish_ranked("home", USERS, ITEMS[::-1].copy(), SCORES, guards=())
        deadline = time.monotonic() + 10
        while client.get("/readyz").json()["version"] != new:
            assert time.monotonic() < deadline, "the service did not move to the new version"
            time.sleep(0.02)
        assert client.get("/recommendations/7").json()["items"] == [5, 6, 7, 8]


def test_store_from_environment(
    service: ModuleType, int_store: tuple[sharedrec.RecommendationStore, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, version = int_store
    monkeypatch.setenv("SHAREDREC_STORE", store.location)
    with TestClient(service.create_app(refresh_interval=None)) as client:
        assert client.get("/readyz").json()["version"] == version


def test_no_store_configured(service: ModuleType) -> None:
    with pytest.raises(RuntimeError, match="SHAREDREC_STORE"):
        service.create_app()


def test_reader_closed_at_shutdown(
    service: ModuleType, int_store: tuple[sharedrec.RecommendationStore, str]
) -> None:
    store, _ = int_store
    app = service.create_app(store.location, refresh_interval=None)
    with TestClient(app):
        reader = app.state.reader
        assert reader.ready
        assert store.leases()  # the reader holds a lease while it serves
    assert not reader.ready
    assert store.leases() == []  # removed at shutdown, before the app stops
