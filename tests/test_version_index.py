"""The version catalog (``catalog.json``): listing and garbage collection read it instead of
every manifest, and it never lies.

A catalog is a cache: a store without one (written before it), a catalog missing entries (a
publish by an older sharedrec, a crash, a race), with entries of versions gone, damaged, or
of a newer sharedrec, must all list and collect exactly as reading every manifest does.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sharedrec
from sharedrec.backends.base import Backend
from sharedrec.format.layout import CATALOG, MANIFEST, VERSIONS
from sharedrec.format.schema import Manifest

FIXTURE = Path(__file__).parent / "fixtures" / "store-0.1.0" / "store"


def publish(store: sharedrec.RecommendationStore, count: int, **options: Any) -> list[str]:
    """Publish ``count`` tiny versions; their ids, oldest first."""
    ids = []
    for i in range(count):
        keys = np.arange(5) + i
        items = np.arange(15).reshape(5, 3)
        scores = np.ones((5, 3), dtype=np.float32)
        ids.append(store.publish_ranked("home", keys, items, scores, metadata={"i": i}, **options))
    return ids


def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The manifests parsed from now on (a spy on `Manifest.loads`: each parse still runs)."""
    seen: list[str] = []
    original: Callable[[type[Manifest], bytes, str], Manifest] = Manifest.loads.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Manifest], data: bytes, where: str) -> Manifest:
        seen.append(where)
        return original(cls, data, where)

    monkeypatch.setattr(Manifest, "loads", classmethod(counting))
    return seen


def backend(store: sharedrec.RecommendationStore) -> Backend:
    return store._backend  # noqa: SLF001  (the files themselves, as another process sees them)


def catalog(store: sharedrec.RecommendationStore) -> dict[str, Any]:
    return json.loads(backend(store).read_bytes(CATALOG))  # type: ignore[no-any-return]


def write_catalog(store: sharedrec.RecommendationStore, raw: dict[str, Any]) -> None:
    backend(store).write_atomic(CATALOG, json.dumps(raw).encode())


def truth(store: sharedrec.RecommendationStore) -> list[str]:
    """Committed versions as every manifest says, oldest first (what a catalog must match)."""
    found = []
    for name in backend(store).listdir(VERSIONS):
        try:
            data = backend(store).read_bytes(f"{VERSIONS}/{name}/{MANIFEST}")
        except FileNotFoundError:
            continue
        manifest = Manifest.loads(data, name)
        found.append((manifest.created_at, manifest.id))
    return [version for _, version in sorted(found)]


def test_listing_and_gc_parse_no_manifest(
    any_store: sharedrec.RecommendationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = publish(any_store, 30)
    seen = parses(monkeypatch)
    listed = any_store.versions()
    assert [info.id for info in listed] == ids
    assert [info.metadata for info in listed] == [{"i": i} for i in range(30)]
    assert [info.collections for info in listed] == [{"home": 5}] * 30
    assert [info.current for info in listed] == [False] * 29 + [True]
    report = any_store.gc(keep=3, grace=0, dry_run=True)
    assert sorted(report.deleted) == ids[:27]
    assert seen == []  # every summary came from the catalog, none from a manifest


def test_store_written_before_the_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "store"
    shutil.copytree(FIXTURE, root)
    assert not (root / CATALOG).exists()
    store = sharedrec.open(root, create=False)
    seen = parses(monkeypatch)
    assert [v.id for v in store.versions()] == ["v1-full", "v2-delta", "v3-parts"]
    assert len(seen) == 3  # no catalog: every manifest is read, and the catalog written
    assert sorted(catalog(store)["versions"]) == ["v1-full", "v2-delta", "v3-parts"]
    seen.clear()
    assert [v.id for v in store.versions()] == ["v1-full", "v2-delta", "v3-parts"]
    assert seen == []
    report = store.gc(keep=0, grace=0, dry_run=True)
    assert report.deleted == []  # live, a ref's, and the base of the live delta


def test_a_version_missing_from_the_catalog_is_listed(
    any_store: sharedrec.RecommendationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A publish by an older sharedrec, or a crash between the manifest and the catalog."""
    ids = publish(any_store, 5)
    raw = catalog(any_store)
    del raw["versions"][ids[2]]
    write_catalog(any_store, raw)
    seen = parses(monkeypatch)
    assert [info.id for info in any_store.versions()] == ids
    assert len(seen) == 1 and ids[2] in seen[0]
    assert sorted(catalog(any_store)["versions"]) == ids  # repaired
    report = any_store.gc(keep=1, grace=0)
    assert sorted(report.deleted) == ids[:4]
    assert [info.id for info in any_store.versions()] == ids[4:] == truth(any_store)
    assert sorted(catalog(any_store)["versions"]) == ids[4:]


def test_an_entry_without_its_folder_is_not_listed(any_store: sharedrec.RecommendationStore) -> None:
    ids = publish(any_store, 3)
    raw = catalog(any_store)
    ghost = "20200101T000000000000Z-000000"
    raw["versions"][ghost] = raw["versions"][ids[0]]
    write_catalog(any_store, raw)
    assert [info.id for info in any_store.versions()] == ids
    assert ghost not in catalog(any_store)["versions"]
    report = any_store.gc(keep=0, grace=0, dry_run=True)
    assert ghost not in report.deleted and ghost not in report.kept


@pytest.mark.parametrize("damage", [b"", b"{not json", b'{"format": "sharedrec-catalog/1"}', b"[]"])
def test_a_damaged_catalog_is_ignored_and_rewritten(
    any_store: sharedrec.RecommendationStore, damage: bytes
) -> None:
    ids = publish(any_store, 3)
    backend(any_store).write_atomic(CATALOG, damage)
    assert [info.id for info in any_store.versions()] == ids
    assert sorted(catalog(any_store)["versions"]) == ids


def test_a_catalog_of_a_newer_sharedrec_is_neither_used_nor_replaced(
    any_store: sharedrec.RecommendationStore,
) -> None:
    ids = publish(any_store, 2)
    newer = {"format": "sharedrec-catalog/2", "versions": {"x": 1}}
    write_catalog(any_store, newer)
    assert [info.id for info in any_store.versions()] == ids
    ids += publish(any_store, 1)
    assert [info.id for info in any_store.versions()] == ids
    assert catalog(any_store) == newer


def test_a_manifest_changed_in_place_is_read_again(store: sharedrec.RecommendationStore) -> None:
    """On a file system, an entry holds only while the manifest's size and time are unchanged."""
    ids = publish(store, 2)
    path = Path(store.location) / VERSIONS / ids[0] / MANIFEST
    path.write_bytes(path.read_bytes().replace(b'"i": 0', b'"i": 100'))
    assert [info.metadata for info in store.versions()] == [{"i": 100}, {"i": 1}]


def test_gc_spares_a_version_whose_manifest_is_not_the_catalogued_one(
    any_store: sharedrec.RecommendationStore,
) -> None:
    """A version published again under the same id after the entry was written (a stale
    writer put the old entry back): the entry's CRC tells, and gc deletes nothing it did not list."""
    ids = publish(any_store, 3)
    raw = catalog(any_store)
    raw["versions"][ids[0]]["manifest_crc32"] ^= 1
    write_catalog(any_store, raw)
    report = any_store.gc(keep=1, grace=0)
    assert report.deleted == [ids[1]]
    assert "manifest changed since it was listed" in report.kept[ids[0]]
    assert [info.id for info in any_store.versions()] == [ids[0], ids[2]] == truth(any_store)


def test_gc_drops_the_entries_of_what_it_deletes(any_store: sharedrec.RecommendationStore) -> None:
    ids = publish(any_store, 6)
    report = any_store.gc(keep=2, grace=0)
    assert sorted(report.deleted) == ids[:4]
    assert sorted(catalog(any_store)["versions"]) == ids[4:]


WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    import sharedrec
    root, tag, count, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    store = sharedrec.open(root, create=False)
    while time.time() < start:
        time.sleep(0.001)
    for i in range(count):
        keys = np.arange(5) + i
        store.publish_ranked(
            "home", keys, np.arange(15).reshape(5, 3), np.ones((5, 3), dtype=np.float32),
            metadata={"writer": tag}, make_current=False, guards=[],
        )
    """
)


def _writers(root: Path, count: int, writers: int) -> list[subprocess.Popen[bytes]]:
    import time

    start = time.time() + 1.5  # every process imported and opened before the first publish
    return [
        subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(tag), str(count), str(start)])
        for tag in range(writers)
    ]


def test_racing_writers_lose_no_entry(store: sharedrec.RecommendationStore) -> None:
    publish(store, 1)
    root = Path(store.location)
    for process in _writers(root, 8, 3):
        assert process.wait(timeout=120) == 0
    listed = truth(store)
    assert len(listed) == 25
    assert sorted(catalog(store)["versions"]) == sorted(listed)  # none lost in the races
    assert [info.id for info in store.versions()] == listed


def test_gc_racing_publishes_never_lies(store: sharedrec.RecommendationStore) -> None:
    publish(store, 2)
    processes = _writers(Path(store.location), 10, 2)
    while any(process.poll() is None for process in processes):
        report = store.gc(keep=1, grace=0)
        listed = [info.id for info in store.versions()]
        # Everything the listing names was committed, and nothing gc deleted is listed.
        assert not set(report.deleted) & set(listed)
        assert set(listed) <= set(truth(store))
    assert all(process.returncode == 0 for process in processes)
    assert [info.id for info in store.versions()] == truth(store)
    assert sorted(catalog(store)["versions"]) == sorted(truth(store))


def test_a_catalog_that_cannot_be_written_fails_nothing(
    store: sharedrec.RecommendationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A catalog is a cache: a publish, a listing and a collection succeed without one."""
    ids = publish(store, 2)
    path = Path(store.location) / CATALOG
    path.unlink()
    path.mkdir()  # neither readable nor replaceable as a file
    ids += publish(store, 2)
    assert truth(store) == ids
    seen = parses(monkeypatch)
    assert [info.id for info in store.versions()] == ids
    assert len(seen) == 4  # every manifest, as in a store without a catalog
    report = store.gc(keep=1, grace=0)
    assert sorted(report.deleted) == ids[:3]
    assert [info.id for info in store.versions()] == ids[3:]


def test_gc_deletes_nothing_whose_entry_it_cannot_remove(store: sharedrec.RecommendationStore) -> None:
    """Else the entry would outlive the version: listed from the catalog, though deleted."""
    ids = publish(store, 3)
    lock = Path(store.location) / ".sharedrec.lock"
    lock.unlink()
    lock.mkdir()  # no compare-and-swap can take the lock: the catalog cannot change
    report = store.gc(keep=1, grace=0)
    assert report.deleted == []
    assert all("version catalog could not be removed" in report.kept[v] for v in ids[:2])
    assert [info.id for info in store.versions()] == ids == truth(store)
    lock.rmdir()
    assert sorted(store.gc(keep=1, grace=0).deleted) == ids[:2]
    assert sorted(catalog(store)["versions"]) == ids[2:]


def test_an_entry_that_outlived_its_manifest_is_dropped_by_gc(
    any_store: sharedrec.RecommendationStore,
) -> None:
    """A manifest deleted by hand: the folder is an unfinished publish from then on."""
    ids = publish(any_store, 3)
    backend(any_store).remove_file(f"{VERSIONS}/{ids[0]}/{MANIFEST}")
    report = any_store.gc(keep=1, grace=0)
    assert ids[0] not in report.deleted and ids[1] in report.deleted
    assert ids[0] not in catalog(any_store)["versions"]
    assert [info.id for info in any_store.versions()] == ids[2:]
    # On a file system the listing already saw the manifest gone (its stamp), on S3 the next gc.
    assert [*report.unfinished, *any_store.gc(keep=1, grace=0).unfinished] == [ids[0]]
