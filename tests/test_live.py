"""Live operation: switching versions, leases, the fleet view, stats."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import sharedrec
from sharedrec.errors import CorruptVersion, InvalidInput, SharedrecError

from conftest import KEYS, publish


def tag_of(reader: sharedrec.Reader) -> int:
    return int(reader.get("home", int(KEYS[7])).items[0]) // 1000


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def corrupt_chunk(store: sharedrec.RecommendationStore, vid: str, how: str) -> None:
    chunk = Path(store.location) / "versions" / vid / "home" / "items" / "c" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    if how == "truncate":
        del data[len(data) // 2 :]
    else:
        data[3] ^= 0xFF
    chunk.write_bytes(bytes(data))


def test_refresh_switches_to_new_version(store: sharedrec.RecommendationStore) -> None:
    v1 = publish(store, 1)
    reader = store.reader(refresh_interval=None)
    recs_v1 = reader.get("home", int(KEYS[7]))
    v2 = publish(store, 2)
    assert reader.version == v1 and tag_of(reader) == 1  # nothing moves until a check
    assert reader.refresh() is True
    assert reader.version == v2 and tag_of(reader) == 2
    assert reader.metadata == {"tag": 2}
    assert recs_v1.items[0] == 1000  # views from the old version stay valid
    assert reader.refresh() is False
    store.rollback()
    assert reader.refresh() is True and reader.version == v1
    assert reader.stats().switches == 2
    reader.close()


def test_background_refresh_follows_current(store: sharedrec.RecommendationStore) -> None:
    publish(store, 1)
    with store.reader(refresh_interval=0.02) as reader:
        assert not reader.pinned
        v2 = publish(store, 2)
        wait_for(lambda: reader.version == v2)
        assert tag_of(reader) == 2
        store.rollback()
        wait_for(lambda: tag_of(reader) == 1)


def test_pinned_readers_never_move(store: sharedrec.RecommendationStore) -> None:
    v1 = publish(store, 1)
    pinned = store.reader(pin=True, refresh_interval=0.01)
    by_id = store.reader(version=v1)
    publish(store, 2)
    time.sleep(0.1)
    assert pinned.refresh() is False and by_id.refresh() is False
    assert pinned.version == by_id.version == v1
    assert pinned.pinned and by_id.pinned
    assert tag_of(pinned) == 1
    pinned.close()
    by_id.close()


@pytest.mark.parametrize(("how", "verify"), [("truncate", "sizes"), ("flip", "full")])
def test_damaged_new_version_is_refused(store: sharedrec.RecommendationStore, how: str, verify: str) -> None:
    v1 = publish(store, 1)
    errors: list[Exception] = []
    reader = store.reader(refresh_interval=None, verify=verify, on_refresh_error=errors.append)  # type: ignore[arg-type]
    with store.publish(make_current=False) as draft:
        draft.add_ranked("home", KEYS, np.tile(np.arange(5), (len(KEYS), 1)) + 2000, np.ones((len(KEYS), 5)))
    bad = draft.version_id
    corrupt_chunk(store, bad, how)
    store.set_current(bad)
    with pytest.raises(CorruptVersion, match=bad):
        reader.refresh()
    assert reader.version == v1 and tag_of(reader) == 1  # still serving the old version
    stats = reader.stats()
    assert stats.refresh_failures == 1 and bad in (stats.last_error or "")
    assert len(errors) == 1 and isinstance(errors[0], CorruptVersion)
    assert reader.ready
    v3 = publish(store, 3, guards=[])
    assert reader.refresh() is True and reader.version == v3
    reader.close()


def test_background_refresh_reports_a_failure_once(store: sharedrec.RecommendationStore) -> None:
    publish(store, 1)
    errors: list[Exception] = []
    with store.reader(refresh_interval=0.01, on_refresh_error=errors.append) as reader:
        with store.publish(make_current=False) as draft:
            draft.add_ranked("home", KEYS, np.zeros((len(KEYS), 5), dtype=int), np.ones((len(KEYS), 5)))
        corrupt_chunk(store, draft.version_id, "truncate")
        store.set_current(draft.version_id)
        wait_for(lambda: len(errors) == 1)
        time.sleep(0.1)  # many more polls: the same broken pointer is not retried
        assert len(errors) == 1 and reader.stats().refresh_failures == 1
        assert tag_of(reader) == 1
        v3 = publish(store, 3, guards=[])
        wait_for(lambda: reader.version == v3)


def lease_path(folder: Path, reader_id: str) -> Path:
    """The one lease file of ``reader_id`` in ``folder`` (``<reader-id>.<pid>-<random>.json``)."""
    (path,) = folder.glob(f"{reader_id}.{os.getpid()}-*.json")
    return path


def read_lease(store: sharedrec.RecommendationStore, reader_id: str) -> dict[str, object]:
    data: dict[str, object] = json.loads(lease_path(Path(store.location) / "leases", reader_id).read_text())
    return data


def test_lease_lifecycle(store: sharedrec.RecommendationStore) -> None:
    v1 = publish(store, 1)
    reader = store.reader(reader_id="pod-a", lease_ttl=0.3, refresh_interval=None)
    lease = read_lease(store, "pod-a")
    assert lease["version"] == v1 and lease["versions"] == [v1]
    assert lease["pid"] == os.getpid()
    first_beat = lease["heartbeat"]
    wait_for(lambda: read_lease(store, "pod-a")["heartbeat"] != first_beat)  # renewed every ttl/3
    v2 = publish(store, 2)
    reader.refresh()
    lease = read_lease(store, "pod-a")
    assert lease["version"] == v2
    assert lease["versions"] == [v2, v1]  # the old one stays leased while calls in flight finish
    wait_for(lambda: read_lease(store, "pod-a")["versions"] == [v2])  # ...until the ttl passes
    reader.close()
    assert os.listdir(Path(store.location) / "leases") == []


def test_default_reader_id_and_env(
    store: sharedrec.RecommendationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(store, 1)
    with store.reader() as reader:
        (name,) = os.listdir(Path(store.location) / "leases")
        assert f"-{os.getpid()}-" in name
        assert reader.ready
    monkeypatch.setenv("SHAREDREC_READER_ID", "recs-api-7f9c")
    with store.reader():
        (name,) = os.listdir(Path(store.location) / "leases")
        assert name.startswith(f"recs-api-7f9c.{os.getpid()}-") and name.endswith(".json")
    with pytest.raises(InvalidInput, match="invalid reader id"):
        store.reader(reader_id="../x")


def test_lease_dir_elsewhere(
    store: sharedrec.RecommendationStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(store, 1)
    with store.reader(reader_id="r1", lease_dir=tmp_path / "mine"):
        assert lease_path(tmp_path / "mine", "r1").is_file()
        assert not list((Path(store.location) / "leases").glob("r1*"))  # publishes' leases only
    monkeypatch.setenv("SHAREDREC_LEASE_DIR", str(tmp_path / "env"))
    with store.reader(reader_id="r2"):
        assert lease_path(tmp_path / "env", "r2").is_file()
    with store.reader(reader_id="r3", lease=False):
        assert not list((tmp_path / "env").glob("r3.*"))


def test_lease_write_failure_is_explained(store: sharedrec.RecommendationStore, tmp_path: Path) -> None:
    publish(store, 1)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(SharedrecError, match=r"cannot write reader lease .*lease=False"):
        store.reader(lease_dir=blocker / "sub")


def test_fleet_view(store: sharedrec.RecommendationStore) -> None:
    v1 = publish(store, 1)
    old = store.reader(version=v1, reader_id="old-pod")
    v2 = publish(store, 2)
    new = store.reader(reader_id="new-pod")
    fleet = {lease.reader_id: lease for lease in store.leases()}
    assert set(fleet) == {"old-pod", "new-pod"}
    assert fleet["old-pod"].version == v1 and not fleet["old-pod"].on_current
    assert fleet["new-pod"].version == v2 and fleet["new-pod"].on_current
    assert all(lease.live and lease.seconds_since_heartbeat < 5 for lease in fleet.values())
    old.close()
    new.close()
    assert store.leases() == []


def test_stats(store: sharedrec.RecommendationStore) -> None:
    publish(store, 1)
    with store.reader(refresh_interval=None) as reader:
        reader.get("home", int(KEYS[0]))
        with pytest.raises(KeyError):
            reader.get("home", -1)
        reader.get_many("home", [int(KEYS[1]), -5, -6])
        stats = reader.stats()
        assert (stats.lookups, stats.misses, stats.fallbacks_served) == (5, 3, 0)
        assert stats.version == reader.version
        assert 0 <= stats.version_age_seconds < 60
        assert stats.refresh_failures == 0 and stats.last_error is None
    assert not reader.ready


def test_threads_see_whole_versions_during_switches(store: sharedrec.RecommendationStore) -> None:
    import threading

    publish(store, 0)
    reader = store.reader(refresh_interval=None)
    bad: list[object] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            items, _, found = reader.get_many("home", KEYS[:50])
            tags = set((items[:, 0] // 1000).tolist())
            if not found.all() or len(tags) != 1 or (items % 1000 != np.arange(5)).any():
                bad.append(tags)

    threads = [threading.Thread(target=serve) for _ in range(3)]
    for thread in threads:
        thread.start()
    for tag in range(1, 8):
        publish(store, tag)
        reader.refresh()
    stop.set()
    for thread in threads:
        thread.join()
    assert bad == []
    assert reader.stats().switches == 7
    reader.close()


def test_lease_falls_back_to_overwrite_where_rename_fails(tmp_path: Path) -> None:
    from sharedrec.backends.posix import PosixBackend
    from sharedrec.read.leases import LeaseKeeper

    class NoRename(PosixBackend):
        """A mount that refuses rename(2), as S3 through Mountpoint does (not available here)."""

        def write_atomic(self, path: str, data: bytes, *, durable: bool = True) -> None:
            raise OSError(95, "Operation not supported")

    keeper = LeaseKeeper(NoRename(tmp_path, create=True), "leases", "pod-m", ttl=30)
    (tmp_path / "leases").mkdir()
    keeper.write("v1", [])
    assert json.loads(lease_path(tmp_path / "leases", "pod-m").read_text())["version"] == "v1"
    keeper.write("v2", ["v1"])
    assert json.loads(lease_path(tmp_path / "leases", "pod-m").read_text())["versions"] == ["v2", "v1"]


def test_a_reader_polling_often_renews_its_lease_only_when_due(store: sharedrec.RecommendationStore) -> None:
    """Polling every 20 ms must not rewrite the lease every 20 ms (several round trips each on a
    network volume): it is renewed every third of its time-to-live, or when what it names changes."""
    publish(store, 1)
    leases = Path(store.location) / "leases"
    with store.reader(refresh_interval=0.02, lease_ttl=30, reader_id="pod") as reader:
        (lease,) = leases.glob("pod.*.json")
        first = lease.stat().st_ino
        time.sleep(0.5)  # about 25 polls
        assert lease.stat().st_ino == first, "the lease was rewritten although nothing was due"
        v2 = publish(store, 2)
        wait_for(lambda: reader.version == v2)
        wait_for(lambda: json.loads(lease.read_bytes())["version"] == v2)
