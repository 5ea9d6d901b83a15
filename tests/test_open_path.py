"""What opening a reader reads: a manifest whose size does not grow with a file per chunk.

A version written now is ``sharedrec/2``: each array's chunk files are listed as one CRC-32
per chunk in ``chunks`` (their size is the geometry's), and ``files`` lists only the other
files. Readers still see every file in ``Manifest.files``, check a key chunk's checksum when
they first map it, and open ``sharedrec/1`` versions as before; an older sharedrec refuses a
``sharedrec/2`` manifest as newer (upgrade), never as damage.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import sharedrec
from sharedrec.errors import CorruptVersion
from sharedrec.format.schema import Manifest, _Bad, _file, _files, _path, newer_format

from conftest import make_ranked

FIXTURE = Path(__file__).parent / "fixtures" / "store-0.1.0" / "store"


def _checked(check: object) -> object:
    try:
        return check()  # type: ignore[operator]
    except _Bad as exc:
        return f"refused: {exc}"


_VALUES = (
    st.none() | st.booleans() | st.integers(-3, 2**33) | st.floats(allow_nan=False) | st.text(max_size=3)
)


@given(
    path=st.text(alphabet="ab_9.-/\\\0 é", max_size=12)
    | st.sampled_from(["a/c/0", "a/../b", "a/.b", "a" * 129]),
    entry=st.fixed_dictionaries({"size": _VALUES, "crc32": _VALUES})
    | st.dictionaries(st.sampled_from(["size", "crc32", "other"]), _VALUES, max_size=3)
    | _VALUES,
)
def test_the_quick_file_check_agrees_with_the_field_checks(path: str, entry: object) -> None:
    quick = _checked(lambda: _files({path: entry}))
    slow = _checked(lambda: {_path(path, "files"): _file(entry, f"files.{path}")})
    assert quick == slow


def _publish(tmp_path: Path, n: int, chunk_bytes: int = 4096) -> tuple[sharedrec.RecommendationStore, Path]:
    store = sharedrec.open(tmp_path / "store", create=True)
    data = make_ranked(n, 8, seed=3)
    store.publish_ranked("home", data.keys, data.items, data.scores, chunk_bytes=chunk_bytes, progress=False)
    version = store.current()
    assert version is not None
    return store, tmp_path / "store" / "versions" / version


def test_a_new_manifest_lists_a_checksum_per_chunk_not_a_file_entry(tmp_path: Path) -> None:
    store, folder = _publish(tmp_path, 3000)
    raw = json.loads((folder / "manifest.json").read_bytes())
    assert raw["format"] == "sharedrec/2"
    assert all("/c/" not in path for path in raw["files"]), "chunk files are listed in chunks only"
    arrays = raw["collections"]["home"]["arrays"]
    assert set(raw["chunks"]) == {f"home/{name}" for name in arrays}
    # Every file on disk has its entry in Manifest.files, with its true size and checksum.
    on_disk = {
        str(path.relative_to(folder)): (path.stat().st_size, zlib.crc32(path.read_bytes()))
        for path in folder.rglob("*")
        if path.is_file() and path.name != "manifest.json" and not path.name.startswith(".")
    }
    manifest = store.manifest(store.current() or "")
    assert {path: (entry.size, entry.crc32) for path, entry in manifest.files.items()} == on_disk
    assert len(manifest.files) == len(on_disk) and manifest.data_bytes == sum(s for s, _ in on_disk.values())
    assert store.verify().ok
    # One number per chunk: the manifest grows by a few bytes per chunk file, not an object.
    chunk_files = sum(len(crcs) for crcs in raw["chunks"].values())
    assert chunk_files > 40
    assert len(json.dumps(raw["chunks"])) < 14 * chunk_files


def test_an_older_sharedrec_sees_a_newer_manifest_not_a_damaged_one(tmp_path: Path) -> None:
    # What sharedrec/1 readers do before any other check: a higher number of the same
    # family is a newer format (NewerFormat: upgrade), whatever else the file holds.
    _, folder = _publish(tmp_path, 500)
    raw = json.loads((folder / "manifest.json").read_bytes())
    assert newer_format(raw, "sharedrec/1") == "sharedrec/2"


def test_a_new_version_answers_and_checks_its_key_chunks(tmp_path: Path) -> None:
    store, folder = _publish(tmp_path, 3000)
    data = make_ranked(3000, 8, seed=3)
    reader = store.reader(refresh_interval=None, lease=False)
    for i in (0, 1234, 2999):
        found = reader.get("home", int(data.keys[i]))
        assert found.items.tolist() == data.items[i].tolist()
    reader.close()
    # A flipped bit in a key chunk (its size kept) is refused when the chunk is first mapped.
    chunk = folder / "home" / "keys" / "c" / "1"
    damaged = bytearray(chunk.read_bytes())
    damaged[3] ^= 1
    chunk.write_bytes(bytes(damaged))
    reader = store.reader(refresh_interval=None, lease=False)
    keys = np.sort(data.keys)
    per_chunk = json.loads((folder / "manifest.json").read_bytes())["collections"]["home"]["arrays"]["keys"]
    key = int(keys[per_chunk["chunks"][0] + 1])  # a key of chunk 1
    with pytest.raises(CorruptVersion, match=r"keys/c/1 has crc32 [0-9a-f]{8}, the manifest says"):
        reader.get("home", key)
    reader.close()
    chunk.unlink()
    reader = store.reader(refresh_interval=None, lease=False)
    with pytest.raises(CorruptVersion, match=r"chunk file .*keys/c/1 is missing"):
        reader.get("home", key)
    reader.close()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda raw: raw["chunks"]["home/keys"].append(1), r"chunks.home/keys must list \d+ checksums"),
        (lambda raw: raw["chunks"]["home/keys"].__setitem__(0, 2**32), "not a CRC-32"),
        (lambda raw: raw["chunks"].__setitem__("home/other", [1]), "no array of the manifest"),
        (
            lambda raw: raw["files"].__setitem__("home/keys/c/0", {"size": 8, "crc32": 1}),
            "whose checksum chunks.home/keys already gives",
        ),
        (lambda raw: raw.__setitem__("format", "sharedrec/1"), "chunks is a field of sharedrec/2"),
    ],
)
def test_bad_chunk_lists_are_named(tmp_path: Path, change: object, message: str) -> None:
    _, folder = _publish(tmp_path, 500)
    raw = json.loads((folder / "manifest.json").read_bytes())
    change(raw)  # type: ignore[operator]
    with pytest.raises(CorruptVersion, match=message):
        Manifest.loads(json.dumps(raw).encode(), "m")


def test_a_sharedrec_1_manifest_reads_and_dumps_as_it_was_written() -> None:
    for path in sorted(FIXTURE.glob("versions/*/manifest.json")):
        data = path.read_bytes()
        manifest = Manifest.loads(data, str(path))
        assert manifest.format == "sharedrec/1"
        assert manifest.dumps() == data
        assert "chunks" not in json.loads(data)
