"""Other fsspec filesystems through the generic backend (memory:// here)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

import sharedrec
from sharedrec.errors import UnsupportedLocation

from conftest import KEYS, publish


def test_memory_filesystem_round_trip(tmp_path: Path) -> None:
    store = sharedrec.open(f"memory://recs-{uuid.uuid4().hex}", cache_dir=tmp_path / "cache", create=True)
    v1 = publish(store, 1)
    v2 = publish(store, 2)
    reader = store.reader(refresh_interval=None)
    assert reader.version == v2 and int(reader.get("home", int(KEYS[4])).items[0]) == 2000
    assert store.rollback() == v1
    assert reader.refresh() and int(reader.get("home", int(KEYS[4])).items[0]) == 1000
    assert [lease.reader_id for lease in store.leases()] == [
        reader.stats().version and store.leases()[0].reader_id
    ]
    reader.close()
    assert store.gc(keep=0, grace=0).deleted == [v2]
    assert store.verify(v1).ok


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nosuchproto://x/y", "fsspec knows no nosuchproto:// filesystem"),
        ("https://example.invalid/recs", "read-only"),
    ],
)
def test_unsupported_protocols(url: str, message: str) -> None:
    with pytest.raises(UnsupportedLocation, match=message):
        sharedrec.open(url)
