"""A publish SIGKILLed between its manifest and its catalog entry: the version is committed,
and listing and garbage collection see it all the same (the catalog is only a cache)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import sharedrec
from sharedrec.format.layout import CATALOG

from ._support import publish_tagged
from .test_crash import Publisher, census, publisher  # noqa: F401  (the fork server fixture)


def test_killed_before_its_catalog_entry(publisher: Publisher, tmp_path: Path) -> None:  # noqa: F811
    root = tmp_path / "store"
    store = sharedrec.open(root, create=True)
    publish_tagged(store, 0)
    points = census(publisher, tmp_path, str(root), 1)
    at = points.index(f"before swap_pointer({CATALOG})")
    assert points.index("after rename of manifest.json") < at < points.index("before rename of CURRENT")
    before = json.loads((root / CATALOG).read_bytes())["versions"]
    answer = publisher.publish(root=str(root), tag=2, kill_at=at, events=None)
    assert answer == {"signal": signal.SIGKILL}
    assert json.loads((root / CATALOG).read_bytes())["versions"] == before  # no entry for it
    listed = [info.id for info in store.versions()]
    assert len(listed) == 3 and sorted(listed[:2]) == sorted(before)
    killed = listed[2]
    assert store.manifest(killed).metadata["tag"] == 2 and store.current() == listed[1]
    assert killed in json.loads((root / CATALOG).read_bytes())["versions"]  # the listing added it
    report = store.gc(keep=0, grace=0)
    assert report.deleted == [listed[0]]
    assert "leased" in report.kept[killed]  # the killed publish's lease has yet to expire
    assert [info.id for info in store.versions()] == listed[1:]
    assert sorted(json.loads((root / CATALOG).read_bytes())["versions"]) == sorted(listed[1:])
