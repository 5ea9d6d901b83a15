"""Skewed collections are stored ragged: stored bytes follow the data, lookups stay views."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import sharedrec
from sharedrec.cli import cli
from sharedrec.errors import CorruptVersion
from sharedrec.format.schema import Manifest
from sharedrec.write.arrays import pack_ragged

SHORT, LONG, N = 10, 3000, 1000
"""The skewed shape of the issue, scaled down: one long list among many ten-item lists."""

LONG_KEY = 3 * 500
DEFAULT = (np.arange(20) + 900, np.ones(20, np.float32))


def _skewed(long_at: int = 500) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    keys = np.arange(N, dtype=np.int64) * 3
    items = [np.arange(SHORT, dtype=np.int32) + i for i in range(N)]
    items[long_at] = np.arange(LONG, dtype=np.int32) + 7
    scores = [np.linspace(1.0, 0.0, len(row), dtype=np.float32) for row in items]
    return keys, items, scores


def _chunk_bytes(root: Path, version: str) -> int:
    """The size of every chunk file of a version (what its arrays store)."""
    folder = root / "versions" / version
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file() and "/c/" in str(path))


@pytest.fixture
def skewed(store: sharedrec.RecommendationStore) -> tuple[sharedrec.RecommendationStore, str, Any]:
    keys, items, scores = _skewed()
    version = store.publish_ranked("skew", keys, items, scores, default=DEFAULT)
    return store, version, (keys, items, scores)


def test_stored_bytes_follow_the_data(skewed: Any) -> None:
    store, version, (_, items, _) = skewed
    spec = store.manifest(version).collections["skew"]
    assert spec.layout == "ragged"
    assert store.manifest(version).format == "sharedrec/3"
    data = sum(len(row) for row in items) * (4 + 4)  # int32 items, float32 scores
    stored = _chunk_bytes(Path(store.location), version)
    assert stored <= 1.5 * data, (stored, data)
    assert store.verify(version).ok


def test_get_is_a_view_of_each_list(skewed: Any) -> None:
    store, version, (keys, items, scores) = skewed
    assert store.manifest(version).collections["skew"].layout == "ragged"  # served by the ragged path
    reader = store.reader()
    for key, want, want_scores in zip(keys.tolist(), items, scores, strict=True):
        got = reader.get("skew", key)
        np.testing.assert_array_equal(got.items, want)
        np.testing.assert_array_equal(got.scores, want_scores)
        assert got.source == "skew"
    long = reader.get("skew", LONG_KEY)
    again = reader.get("skew", LONG_KEY, k=5)
    assert np.shares_memory(long.items, again.items) and not long.items.flags.writeable
    assert np.shares_memory(long.scores, again.scores)
    assert again.items.tolist() == [7, 8, 9, 10, 11]
    assert len(reader.get("skew", 3, k=0)) == 0


def test_get_many_is_sized_by_the_lists_asked_for(skewed: Any) -> None:
    store, _, (keys, items, _) = skewed
    reader = store.reader()
    short_keys = keys[:256]
    got, scores, found = reader.get_many("skew", short_keys)
    assert got.shape == scores.shape == (256, SHORT) and found.all()
    np.testing.assert_array_equal(got, np.stack(items[:256]))
    got, _, _ = reader.get_many("skew", [LONG_KEY, 0])
    assert got.shape == (2, LONG)
    np.testing.assert_array_equal(got[0], items[500])
    np.testing.assert_array_equal(got[1, :SHORT], items[0])
    assert (got[1, SHORT:] == -1).all()
    got, scores, _ = reader.get_many("skew", [LONG_KEY, 0], k=4)  # k: exactly k columns
    assert got.shape == (2, 4) and got[0].tolist() == [7, 8, 9, 10]
    assert reader.get_many("skew", [0], k=12)[0].shape == (1, 12)
    assert reader.get_many("skew", [0], k=10**6)[0].shape == (1, LONG)  # at most the longest list
    # A missing key gets the default list, and the batch is as wide as it.
    got, scores, found = reader.get_many("skew", [0, 1])
    assert got.shape == (2, 20) and found.tolist() == [True, False]
    assert got[1].tolist() == list(range(900, 920))
    assert (got[0, SHORT:] == -1).all() and np.isnan(scores[0, SHORT:]).all()


def test_uniform_lists_stay_padded(store: sharedrec.RecommendationStore) -> None:
    keys = np.arange(2000)
    items = np.tile(np.arange(100, dtype=np.int32), (2000, 1))
    version = store.publish_ranked("even", keys, items, np.ones((2000, 100), np.float32))
    manifest = store.manifest(version)
    assert manifest.collections["even"].layout == "padded" and manifest.format == "sharedrec/2"
    assert "offsets" not in manifest.collections["even"].arrays
    assert "layout" not in json.loads(manifest.dumps())["collections"]["even"]


def test_deltas_over_a_ragged_collection(skewed: Any) -> None:
    store, _, (keys, items, scores) = skewed
    want = {int(k): (list(i), list(s)) for k, i, s in zip(keys, items, scores, strict=True)}
    # A small delta (stored padded) over the ragged collection ...
    changed = {3: [1, 2], 6: [5]}
    new_keys = [k for k in want if k != 9]

    def scores_of(key: int, row: list[int]) -> Any:
        return want[key][1] if row is want[key][0] else np.linspace(1, 0, len(row), dtype=np.float32)

    with store.publish(delta=True, guards=[]) as draft:
        lists = [changed.get(k, want[k][0]) for k in new_keys]
        draft.add_ranked(
            "skew",
            new_keys,
            lists,
            [scores_of(k, x) for k, x in zip(new_keys, lists, strict=True)],
            default=DEFAULT,
        )
    first = store.manifest(store.current())
    assert first.base is not None and first.collections["skew"].delta
    # ... then a delta that is ragged itself: the long list changes, and a hundred short ones.
    relisted = {int(k): list(range(50 + i, 40, -1)) for i, k in enumerate(keys[100:200])}
    relisted[LONG_KEY] = list(range(2500, 0, -1))
    with store.publish(delta=True, guards=[]) as draft:
        final = {k: relisted.get(k, changed.get(k, want[k][0])) for k in new_keys}
        draft.add_ranked(
            "skew",
            list(final),
            list(final.values()),
            [scores_of(k, x) for k, x in final.items()],
            default=DEFAULT,
        )
    second = store.manifest(store.current())
    assert second.collections["skew"].delta and second.collections["skew"].layout == "ragged"
    reader = store.reader()
    for key, row in final.items():
        assert reader.get("skew", key).items.tolist() == [int(x) for x in row]
    assert reader.get("skew", 9).source == "skew/default"
    asked = [3, 6, 9, LONG_KEY, int(keys[150])]
    got, _, found = reader.get_many("skew", asked)
    assert found.tolist() == [True, True, False, True, True]
    assert got.shape == (5, 2500)
    assert reader.get_many("skew", [3, 6])[0].shape == (2, 2)  # as wide as the lists asked for
    assert reader.get_many("skew", [3, 9])[0].shape == (2, 20)  # or the default list
    assert reader.get_many("skew", [3, 6], k=7)[0].shape == (2, 7)
    for row, key in zip(got, asked, strict=True):
        expected = final.get(key, list(range(900, 920)))
        assert row[: len(expected)].tolist() == expected and (row[len(expected) :] == -1).all()
    # A delta that leaves the collection alone inherits it, ragged levels and all.
    with store.publish(delta=True, guards=[]) as draft:
        draft.add_ranked("other", [1], [[1]], [[1.0]])
    assert store.manifest(store.current()).collections["skew"].layout == "ragged"
    with store.reader() as inherited:
        assert inherited.get("skew", LONG_KEY).items.tolist() == relisted[LONG_KEY]
        assert inherited.get_many("skew", [3, 6])[0].shape == (2, 2)
    # Compacting the chain gives the same answers from a full version.
    compacted = store.compact()
    assert store.manifest(compacted).collections["skew"].layout == "ragged"
    fresh = store.reader()
    for key, row in final.items():
        assert fresh.get("skew", key).items.tolist() == [int(x) for x in row]


def test_a_missing_flat_chunk_is_named(skewed: Any) -> None:
    store, version, _ = skewed
    chunk = Path(store.location) / "versions" / version / "skew" / "items" / "c" / "0"
    chunk.unlink()
    with pytest.raises(CorruptVersion, match="skew/items/c/0: missing"):
        store.reader(verify="sizes")
    reader = store.reader(verify="lazy")
    assert reader.get("skew", 1).source == "skew/default"  # the default list is a file of its own
    with pytest.raises(CorruptVersion, match=r"chunk file .*skew/items/c/0 is missing"):
        reader.get("skew", 0)


def _rewrite_offsets(store: sharedrec.RecommendationStore, version: str, change: Any) -> None:
    """Change the offsets chunk of a version and its checksum in the manifest (so that only
    the values are wrong, as a buggy or hostile writer would make them)."""
    folder = Path(store.location) / "versions" / version
    chunk = folder / "skew" / "offsets" / "c" / "0"
    offsets = np.frombuffer(chunk.read_bytes(), "<i8").copy()
    change(offsets)
    chunk.write_bytes(offsets.tobytes())
    manifest = json.loads((folder / "manifest.json").read_bytes())
    manifest["chunks"]["skew/offsets"][0] = zlib.crc32(offsets.tobytes())
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda o: o.__setitem__(slice(5, 7), o[5:7][::-1].copy()), "decreases at offset 6"),
        (lambda o: o.__setitem__(slice(600, None), o[600:] + 10**6), "points past the end"),
        (lambda o: o.__setitem__(0, 3), "starts at 3, not 0"),
        (
            lambda o: o.__setitem__(slice(1, 501), 0),
            "gives row 500 a list of 8000 items; the longest is 3000",
        ),
    ],
)
def test_hostile_offsets_are_refused(skewed: Any, change: Any, message: str) -> None:
    store, version, _ = skewed
    _rewrite_offsets(store, version, change)
    reader = store.reader()
    with pytest.raises(CorruptVersion, match=f"offsets chunk .*skew/offsets/c/0 {message}"):
        reader.get("skew", 0)
    with pytest.raises(CorruptVersion, match=message):
        reader.get_many("skew", [0, 3])


def _set_format(store: sharedrec.RecommendationStore, version: str, format: str) -> None:
    path = Path(store.location) / "versions" / version / "manifest.json"
    manifest = json.loads(path.read_bytes())
    manifest["format"] = format
    path.write_text(json.dumps(manifest))


def test_a_ragged_collection_needs_format_3(skewed: Any) -> None:
    store, version, _ = skewed
    _set_format(store, version, "sharedrec/2")
    with pytest.raises(
        CorruptVersion, match=r"collections.skew.layout is ragged, which needs format sharedrec/3"
    ):
        store.reader()


def test_cli_get_and_info_on_a_ragged_collection(skewed: Any) -> None:
    store, version, _ = skewed
    result = CliRunner().invoke(cli, ["get", store.location, "skew", str(LONG_KEY), "-k", "3"])
    assert result.exit_code == 0, result.output
    assert "7" in result.output
    result = CliRunner().invoke(cli, ["manifest", store.location, version])
    assert result.exit_code == 0, result.output
    assert '"layout": "ragged"' in result.output


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 300), min_size=1, max_size=300),
    chunk_bytes=st.sampled_from([64, 1024, 4096, 1 << 20]),
)
def test_packed_lists_never_straddle_or_overlap(lengths: list[int], chunk_bytes: int) -> None:
    array = np.asarray(lengths, np.int64)
    starts, offsets, chunk = pack_ragged(array, 8, chunk_bytes)
    ends = starts + array
    assert offsets[0] == 0 and (np.diff(offsets) >= 0).all() and (offsets[1:] == ends).all()
    assert (starts[1:] >= ends[:-1]).all()  # in order, no overlap
    listed = array > 0
    assert ((starts[listed] // chunk) == ((ends[listed] - 1) // chunk)).all()  # no straddling
    # The reader's rule finds each list's start from the offsets alone.
    crossed = np.maximum(offsets[1:] - 1, 0) // chunk * chunk
    found = np.where(offsets[1:] > offsets[:-1], np.maximum(offsets[:-1], crossed), offsets[1:])
    assert (found[listed] == starts[listed]).all()
    # Every chunk but the last is more than 2/3 full, or one chunk holds everything.
    total = int(array.sum())
    size = int(offsets[-1])
    chunks = -(-size // chunk) if size else 1
    assert chunk >= max(1, int(array.max()))
    if chunks > 1:
        assert chunks * chunk <= 1.5 * total + chunk  # what is stored: every chunk full size
    else:
        assert size == total


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["arrays"]["items"].update(shape=[5, 2], chunks=[5, 2]), "not 1-D arrays chunked alike"),
        (lambda c: c["arrays"]["offsets"].update(shape=[7], chunks=[7]), "offsets has 7 rows for 1000 keys"),
        (lambda c: c["arrays"].pop("offsets"), "lacks offsets, items or scores"),
        (
            lambda c: c["arrays"].update(lengths={"dtype": "<i4", "shape": [1000], "chunks": [1000]}),
            "lengths",
        ),
        (lambda c: c.update(layout="jagged"), "layout"),
    ],
)
def test_ragged_specs_are_checked(skewed: Any, change: Any, message: str) -> None:
    store, version, _ = skewed
    raw = json.loads(store.manifest(version).dumps())
    change(raw["collections"]["skew"])
    with pytest.raises(CorruptVersion, match=message):
        Manifest.loads(json.dumps(raw).encode(), "manifest.json")


def test_str_keys_stored_ragged(store: sharedrec.RecommendationStore) -> None:
    _, items, scores = _skewed()
    keys = [f"user-{i}" for i in range(N)]
    version = store.publish_ranked("skew", keys, items, scores)
    assert store.manifest(version).collections["skew"].layout == "ragged"
    reader = store.reader()
    assert reader.get("skew", "user-500").items.tolist() == items[500].tolist()
    assert reader.get("skew", "user-7", k=3).items.tolist() == items[7][:3].tolist()
    got, _, found = reader.get_many("skew", ["user-1", "nobody", "user-2"])
    assert got.shape == (3, SHORT) and found.tolist() == [True, False, True]
    assert got[1].tolist() == [-1] * SHORT and got[2].tolist() == items[2].tolist()


def test_ragged_on_every_backend(any_store: sharedrec.RecommendationStore) -> None:
    keys, items, scores = _skewed()
    version = any_store.publish_ranked("skew", keys, items, scores, default=DEFAULT)
    assert any_store.manifest(version).collections["skew"].layout == "ragged"
    with any_store.reader() as reader:
        assert reader.get("skew", LONG_KEY, k=4).items.tolist() == [7, 8, 9, 10]
        assert reader.get("skew", 3).items.tolist() == items[1].tolist()
        got, _, found = reader.get_many("skew", [0, 1, LONG_KEY])
        assert got.shape == (3, LONG) and found.tolist() == [True, False, True]
        assert got[1, :20].tolist() == list(range(900, 920))


@pytest.mark.parametrize("longest", [4096, 3000])  # flat chunks of whole pages (mapped back to back), or not
def test_many_flat_chunks(store: sharedrec.RecommendationStore, longest: int) -> None:
    rng = np.random.default_rng(longest)
    lengths = rng.integers(0, 60, 3000)
    lengths[[5, 1000, 2999]] = longest
    items = [rng.integers(0, 10**6, size, dtype=np.int32) for size in lengths]
    scores = [np.sort(rng.random(size, dtype=np.float32))[::-1] for size in lengths]
    keys = rng.permutation(10**6)[:3000]  # not in key order: rows are written sorted
    version = store.publish_ranked("many", keys, items, scores, chunk_bytes=4096)
    spec = store.manifest(version).collections["many"]
    assert spec.layout == "ragged" and spec.arrays["items"].n_chunks > 3
    reader = store.reader()
    for key, want in zip(keys.tolist(), items, strict=True):
        assert reader.get("many", key).items.tolist() == want.tolist()
    got, got_scores, found = reader.get_many("many", keys)
    assert found.all() and got.shape == (3000, longest)
    for row, row_scores, want, want_scores in zip(got, got_scores, items, scores, strict=True):
        assert row[: len(want)].tolist() == want.tolist() and (row[len(want) :] == -1).all()
        np.testing.assert_array_equal(row_scores[: len(want)], want_scores)
    np.testing.assert_array_equal(got_scores[7, : len(scores[7])], scores[7])


def test_a_ragged_collection_reads_in_format_4(skewed: Any) -> None:
    """``sharedrec/4`` (partitions split by fibonacci64) keeps what ``sharedrec/3`` added."""
    store, version, (keys, items, _) = skewed
    _set_format(store, version, "sharedrec/4")
    with store.reader() as reader:
        for key, want in zip(keys.tolist(), items, strict=True):
            np.testing.assert_array_equal(reader.get("skew", key).items, want)
