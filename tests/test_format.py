"""The on-disk format: plain zarr v3, a manifest that matches the files, corruption caught."""

from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
import zarr

import sharedrec
from sharedrec.errors import CorruptVersion, VersionNotFound

from conftest import RankedData, make_ranked


@pytest.fixture
def published(store: sharedrec.RecommendationStore) -> tuple[sharedrec.RecommendationStore, str, RankedData]:
    data = make_ranked(700, 9, seed=11)
    with store.publish(chunk_bytes=4096) as draft:
        draft.add_ranked("home", data.keys, data.items, data.scores, default=([1], [1.0]))
        draft.add_vectors("emb", data.keys, data.scores.astype(np.float32))
    return store, draft.version_id, data


def _version_dir(store: sharedrec.RecommendationStore, vid: str) -> Path:
    return Path(store.location) / "versions" / vid


def test_zarr_reads_a_version(published: tuple[sharedrec.RecommendationStore, str, RankedData]) -> None:
    store, vid, data = published
    group = zarr.open_group(_version_dir(store, vid), mode="r")
    home = group["home"]
    assert isinstance(home, zarr.Group)
    order = np.argsort(data.keys)
    np.testing.assert_array_equal(home["keys"][:], np.sort(data.keys))
    np.testing.assert_array_equal(home["items"][:], data.items[order])
    np.testing.assert_array_equal(home["scores"][:], data.scores[order])
    np.testing.assert_array_equal(home["lengths"][:], np.full(700, 9))
    np.testing.assert_array_equal(group["emb"]["vectors"][:], data.scores[order])
    assert home.attrs["sharedrec_kind"] == "ranked"
    assert group.attrs["sharedrec"]["version"] == vid


def test_arrays_are_uncompressed_little_endian_row_chunks(
    published: tuple[sharedrec.RecommendationStore, str, RankedData],
) -> None:
    store, vid, _ = published
    meta = json.loads((_version_dir(store, vid) / "home" / "items" / "zarr.json").read_text())
    assert meta["codecs"] == [{"name": "bytes", "configuration": {"endian": "little"}}]
    assert meta["chunk_grid"]["configuration"]["chunk_shape"][1] == 9  # whole rows per chunk
    assert meta["chunk_key_encoding"] == {"name": "default", "configuration": {"separator": "/"}}


def test_manifest_lists_every_file_with_size_and_crc32(
    published: tuple[sharedrec.RecommendationStore, str, RankedData],
) -> None:
    store, vid, _ = published
    root = _version_dir(store, vid)
    manifest = store.manifest(vid)
    on_disk = {
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != "manifest.json"
    }
    assert set(manifest.files) == on_disk
    for path, entry in manifest.files.items():
        data = (root / path).read_bytes()
        assert entry.size == len(data)
        assert entry.crc32 == zlib.crc32(data)
    items = manifest.collections["home"].arrays["items"]
    assert items.n_chunks > 1
    for chunk in range(items.n_chunks):  # every chunk written, the edge chunk full size
        assert manifest.files[f"home/items/c/{chunk}/0"].size == items.chunk_nbytes


def test_unfinished_version_is_invisible(
    published: tuple[sharedrec.RecommendationStore, str, RankedData],
) -> None:
    store, vid, _ = published
    partial = _version_dir(store, "20300101T000000000000Z-000000")
    shutil.copytree(_version_dir(store, vid), partial)
    (partial / "manifest.json").unlink()
    assert [v.id for v in store.versions()] == [vid]
    with pytest.raises(VersionNotFound, match="never finished"):
        store.reader(version=partial.name)
    with pytest.raises(VersionNotFound, match="never finished"):
        store.set_current(partial.name)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "wrong-field"])
def test_corrupt_manifest(
    published: tuple[sharedrec.RecommendationStore, str, RankedData], damage: str
) -> None:
    store, vid, _ = published
    path = _version_dir(store, vid) / "manifest.json"
    text = path.read_bytes()
    path.write_bytes(
        {
            "truncate": text[: len(text) // 2],
            "garbage": b"\x00\xff" * 10,
            "empty": b"",
            "wrong-field": text.replace(b'"count"', b'"cnt"'),
        }[damage]
    )
    with pytest.raises(CorruptVersion, match=r"manifest.json is truncated or invalid"):
        store.reader()
    assert store.versions() == []  # a damaged version is not offered


def test_manifest_of_another_version(
    published: tuple[sharedrec.RecommendationStore, str, RankedData],
) -> None:
    store, vid, _ = published
    shutil.copytree(_version_dir(store, vid), _version_dir(store, "copied"))
    with pytest.raises(CorruptVersion, match="renamed or copied"):
        store.reader(version="copied")


def test_missing_chunk_file(published: tuple[sharedrec.RecommendationStore, str, RankedData]) -> None:
    store, vid, data = published
    reader = store.reader()
    (_version_dir(store, vid) / "home" / "items" / "c" / "0" / "0").unlink()
    first = int(np.sort(data.keys)[0])
    with pytest.raises(CorruptVersion, match=r"chunk file .*home/items/c/0/0 is missing"):
        reader.get("home", first)
    with pytest.raises(CorruptVersion, match="is missing"):
        reader.get_many("home", [first])


def test_truncated_chunk_file(published: tuple[sharedrec.RecommendationStore, str, RankedData]) -> None:
    store, vid, data = published
    chunk = _version_dir(store, vid) / "home" / "scores" / "c" / "1" / "0"
    chunk.write_bytes(chunk.read_bytes()[:100])
    with pytest.raises(CorruptVersion, match=r"home/scores/c/1/0: 100 bytes, manifest says \d+"):
        store.reader(verify="sizes")  # every size checked on open
    reader = store.reader()  # by default, when the chunk is first mapped
    rows_per_chunk = store.manifest(vid).collections["home"].arrays["scores"].rows_per_chunk
    key = int(np.sort(data.keys)[rows_per_chunk])
    with pytest.raises(CorruptVersion, match=r"has 100 bytes, the manifest says \d+"):
        reader.get("home", key)


def test_verify_finds_flipped_bytes(published: tuple[sharedrec.RecommendationStore, str, RankedData]) -> None:
    store, vid, _ = published
    report = store.verify()
    assert report.ok and report.version == vid
    assert report.files == len(store.manifest(vid).files)
    assert report.bytes == store.manifest(vid).data_bytes
    chunk = _version_dir(store, vid) / "home" / "items" / "c" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[10] ^= 0xFF
    chunk.write_bytes(bytes(data))
    store.reader()  # same size: the cheap check on open passes
    with pytest.raises(CorruptVersion, match=r"home/items/c/0/0: crc32 [0-9a-f]{8}, manifest says"):
        store.verify(vid)
    with pytest.raises(CorruptVersion, match="crc32"):
        store.reader(verify="full")


def test_current_names_missing_version(
    published: tuple[sharedrec.RecommendationStore, str, RankedData],
) -> None:
    store, vid, _ = published
    shutil.rmtree(_version_dir(store, vid))
    with pytest.raises(VersionNotFound, match=rf"CURRENT names version {vid}.*does not exist"):
        store.reader()


@pytest.mark.parametrize("content", [b"", b"{", b'{"version": 3}', b"\xff\xfe"])
def test_corrupt_pointer(
    published: tuple[sharedrec.RecommendationStore, str, RankedData], content: bytes
) -> None:
    store, _, _ = published
    (Path(store.location) / "CURRENT").write_bytes(content)
    with pytest.raises(CorruptVersion, match="CURRENT is truncated or invalid"):
        store.current()
    with pytest.raises(CorruptVersion, match="set_current"):
        store.reader()


def test_pointer_format(published: tuple[sharedrec.RecommendationStore, str, RankedData]) -> None:
    store, vid, _ = published
    pointer = json.loads((Path(store.location) / "CURRENT").read_bytes())
    assert pointer["format"] == "sharedrec-pointer/1"
    assert pointer["version"] == vid
    assert pointer["previous"] == []


def test_unknown_key_hash_is_refused(
    published: tuple[sharedrec.RecommendationStore, str, RankedData],
) -> None:
    store, _, _ = published
    data = make_ranked(5, 2, str_keys=True)
    vid = store.publish_ranked("s", data.keys, data.items, data.scores, guards=[])
    path = _version_dir(store, vid) / "manifest.json"
    path.write_text(path.read_text().replace('"xxh3-64"', '"fnv-99"'))
    with pytest.raises(CorruptVersion, match="'fnv-99', which this version of sharedrec does not know"):
        store.reader()
