"""The node's S3 cache and staging folders: a cached file is only ever served for the exact
publish it came from (a version id used again never brings back the deleted version's
lists), and a SIGKILLed publisher's staging copy is removed by the next publish or gc on
the node, while a live publisher's staging is never touched."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sharedrec

from ._support import BASE, DIM, KEYS, N_KEYS, SCORES, TAG, Tally

REUSED = "daily-2026-11-28"


def _publish(
    store: sharedrec.Store, keys: np.ndarray[Any, Any], tag: int, version_id: str | None = None
) -> str:
    """Version ``tag`` over ``keys``: every item and vector value derived from ``tag``."""
    with store.publish(
        version_id=version_id, metadata={"tag": tag}, chunk_bytes=1024, progress=False, guards=[]
    ) as draft:
        draft.add_ranked("home", keys, BASE + tag * TAG, np.tile(SCORES, (len(keys), 1)))
        draft.add_vectors("emb", keys, np.full((len(keys), DIM), float(tag), dtype=np.float32))
    return draft.version_id


def test_a_reused_version_id_never_serves_the_deleted_versions_cached_chunks(
    s3_server: str, tmp_path: Path, tally: Tally
) -> None:
    from conftest import make_bucket, s3_options

    url = f"s3://{make_bucket(s3_server)}/recs"
    options = s3_options(s3_server)
    cache = tmp_path / "node-cache"
    store = sharedrec.open(url, storage_options=options, cache_dir=cache)
    old_keys = KEYS
    new_keys = KEYS + 1  # the same count: every file of the republished id has the same size
    _publish(store, old_keys, 1, REUSED)
    reader = store.reader(lease=False, refresh_interval=None)
    rows = np.arange(0, N_KEYS, 3)
    for row in rows.tolist():  # their chunks land in the node's cache
        assert int(reader.get("home", int(old_keys[row])).items[0]) == BASE[row, 0] + TAG
        reader.vector("emb", int(old_keys[row]))
    reader.get_many("home", old_keys)
    reader.close()
    _publish(store, old_keys, 2)
    report = store.gc(keep=0, grace=0)
    assert REUSED in report.deleted
    _publish(store, new_keys, 3, REUSED)
    assert store.current() == REUSED
    tally.scenarios += 1

    # Another process on the node, sharing the cache: what it serves is the new publish.
    for fresh in (
        sharedrec.open(url, storage_options=options, cache_dir=cache).reader(
            lease=False, refresh_interval=None
        ),
        sharedrec.open(url, storage_options=options, cache_dir=cache).reader(
            lease=False, version=REUSED, verify="sizes"
        ),
    ):
        wrong = 0
        for row in range(N_KEYS):
            recs = fresh.get("home", int(new_keys[row]))
            if not np.array_equal(recs.items, BASE[row] + 3 * TAG):
                wrong += 1
            if not np.all(fresh.vector("emb", int(new_keys[row])) == 3.0):
                wrong += 1
            with pytest.raises(KeyError):  # no longer published: not a neighbour's list either
                fresh.get("home", int(old_keys[row]))
        items, _, found = fresh.get_many("home", new_keys)
        if not (found.all() and np.array_equal(items, BASE + 3 * TAG)):
            wrong += 1
        tally.answers_checked += N_KEYS * 3 + 1
        tally.wrong_answers += wrong
        assert wrong == 0
        fresh.close()
    # The manifest in CURRENT and manifest.json name one cache folder; the old one is apart.
    folders = sorted(p.name for p in cache.glob("*/*") if p.name.startswith(f"{REUSED}@"))
    assert len(folders) == 2, folders
    pointer = json.loads(store._backend.read_bytes("CURRENT"))  # type: ignore[attr-defined]
    written = store._backend.read_bytes(f"versions/{REUSED}/manifest.json")  # type: ignore[attr-defined]
    from sharedrec._spec import parse_manifest, parse_pointer
    from sharedrec.cache import publish_folder

    inline = parse_pointer(json.dumps(pointer).encode(), "CURRENT").manifest
    assert inline is not None
    assert publish_folder(inline) == publish_folder(parse_manifest(written, "manifest.json"))
    assert publish_folder(store.manifest(REUSED)) == publish_folder(inline)
