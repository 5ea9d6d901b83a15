"""Limits and damage a reader must survive: a flipped bit in a key chunk, a manifest whose
declared sizes or dtypes do not fit its files, rows wider than readers accept, chains of
deltas longer than readers follow. Each is refused with the sharedrec error that names the
file or the limit, before any answer is served and before any large allocation."""

from __future__ import annotations

import json
import shutil
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sharedrec
from sharedrec.errors import CorruptVersion, InvalidInput
from sharedrec.format.layout import MAX_CHAIN, MAX_WIDTH

from ._support import Tally

N = 300
KEYS = np.arange(N, dtype=np.int64) * 11 + 5
NAMES = [f"user-{i:04d}" for i in range(N)]
ITEMS = np.arange(N * 5, dtype=np.int64).reshape(N, 5)
SCORES = np.tile(np.linspace(1.0, 0.1, 5), (N, 1))


def _publish(store: sharedrec.RecommendationStore, **options: Any) -> str:
    options.setdefault("guards", [])
    with store.publish(chunk_bytes=1024, progress=False, **options) as draft:
        draft.add_ranked("home", KEYS, ITEMS, SCORES, default=([7, 8], [0.5, 0.4]))
        draft.add_ranked("named", NAMES, ITEMS, SCORES)
        draft.add_vectors("emb", KEYS, np.arange(N * 4, dtype=np.float32).reshape(N, 4))
    return draft.version_id


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[sharedrec.RecommendationStore, Path, str]:
    root = tmp_path_factory.mktemp("limits") / "store"
    store = sharedrec.open(root, create=True)
    return store, root, _publish(store)


def _clone(
    sample: tuple[sharedrec.RecommendationStore, Path, str],
    name: str,
    change: Callable[[dict[str, Any]], None],
) -> Path:
    """A copy of the sample version named ``name``, its manifest edited by ``change``."""
    _, root, version = sample
    target = root / "versions" / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(root / "versions" / version, target)
    manifest = json.loads((target / "manifest.json").read_bytes())
    manifest["id"] = name
    change(manifest)
    (target / "manifest.json").write_bytes(json.dumps(manifest).encode())
    return target


def _lookups(reader: sharedrec.Reader) -> None:
    """Every kind of lookup on every collection, each of which must raise."""
    for call in (
        lambda: reader.get("home", int(KEYS[-1])),
        lambda: reader.get_many("home", KEYS),
        lambda: reader.get("home", -1),
        lambda: reader.get("named", NAMES[-1]),
        lambda: reader.get_many("named", NAMES),
        lambda: reader.vector("emb", int(KEYS[-1])),
        lambda: reader.vectors("emb", KEYS),
    ):
        call()


def _arrays(collection: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda m: m["collections"][collection]["arrays"]


def _set(
    where: Callable[[dict[str, Any]], dict[str, Any]], key: str, value: Any
) -> Callable[[dict[str, Any]], None]:
    def change(manifest: dict[str, Any]) -> None:
        where(manifest)[key] = value

    return change


def _fewer_rows(array: str, collection: str = "home") -> Callable[[dict[str, Any]], None]:
    def change(manifest: dict[str, Any]) -> None:
        spec = _arrays(collection)(manifest)[array]
        spec["shape"][0] = spec["chunks"][0]  # one chunk's rows: every file listed still fits

    return change


def _drop_defaults(manifest: dict[str, Any]) -> None:
    arrays = _arrays("home")(manifest)
    del arrays["default_items"], arrays["default_scores"]


def _dtype(array: str, dtype: str, collection: str = "home") -> Callable[[dict[str, Any]], None]:
    return lambda m: _arrays(collection)(m)[array].update(dtype=dtype)


CORRUPT_MANIFESTS: dict[str, Callable[[dict[str, Any]], None]] = {
    "fewer item rows than keys": _fewer_rows("items"),
    "fewer length rows than keys": _fewer_rows("lengths"),
    "fewer vector rows than keys": _fewer_rows("vectors", "emb"),
    "fewer span rows than hashes": _fewer_rows("key_spans", "named"),
    "items dtype <i3": _dtype("items", "<i3"),
    "lengths dtype <u0": _dtype("lengths", "<u0"),
    "scores dtype |b8": _dtype("scores", "|b8"),
    "keys dtype <f8": _dtype("keys", "<f8"),
    "default length without default arrays": _drop_defaults,
    "default length past the default arrays": _set(lambda m: m["collections"]["home"], "default_length", 5),
    "more fences than key chunks": _set(
        lambda m: m["collections"]["home"], "key_fences", [5, 600, 1200, 2400]
    ),
}


@pytest.mark.parametrize("case", list(CORRUPT_MANIFESTS))
def test_corrupt_manifest_that_looks_valid_is_refused(
    sample: tuple[sharedrec.RecommendationStore, Path, str], case: str, tally: Tally
) -> None:
    store = sample[0]
    name = "bad-" + case.replace(" ", "-").replace("<", "").replace("|", "")
    _clone(sample, name, CORRUPT_MANIFESTS[case])
    tally.scenarios += 1
    tally.bad_inputs += 1
    with pytest.raises(CorruptVersion, match=rf"{name}/manifest\.json"):
        reader = store.reader(name, lease=False, verify="lazy")
        _lookups(reader)


def test_rows_wider_than_readers_accept_are_refused_when_publishing(tmp_path: Path, tally: Tally) -> None:
    store = sharedrec.open(tmp_path / "store", create=True)
    good = store.publish_vectors("emb", [1], np.ones((1, 4), np.float32), progress=False)
    tally.scenarios += 1
    wide = 1 << 24
    guards: list[Any] | None
    for guards in ([], None):
        with (
            pytest.raises(InvalidInput, match=r"MAX_WIDTH \(16777215\)"),
            store.publish(guards=guards, progress=False) as draft,
        ):
            draft.add_vectors("emb", [1], np.zeros((1, wide), np.float16))
        with (
            pytest.raises(InvalidInput, match=r"list length of 16777216 exceeds MAX_WIDTH"),
            store.publish(guards=guards, progress=False) as draft,
        ):
            draft.add_ranked("home", [1], np.ones((1, wide), np.int32), np.ones((1, wide), np.float32))
    assert store.current() == good
    assert [v.id for v in store.versions()] == [good]


def test_rows_as_wide_as_the_limit_are_served(tmp_path: Path, tally: Tally) -> None:
    store = sharedrec.open(tmp_path / "store", create=True)
    vector = np.zeros((1, MAX_WIDTH), np.float16)
    vector[0, -1] = 3.0
    store.publish_vectors("emb", [1], vector, progress=False, guards=[])
    tally.scenarios += 1
    with store.reader(lease=False) as reader:
        assert reader.vector("emb", 1).shape == (MAX_WIDTH,)
        assert float(reader.vector("emb", 1)[-1]) == 3.0


@pytest.mark.parametrize("max_chain", [MAX_CHAIN + 1, 1000])
def test_writers_refuse_chains_readers_refuse(tmp_path: Path, max_chain: int) -> None:
    store = sharedrec.open(tmp_path / "store", create=True)
    store.publish_ranked("home", KEYS, ITEMS, SCORES, progress=False)
    with pytest.raises(InvalidInput, match=rf"max_chain must be an int from 1 to {MAX_CHAIN}"):
        store.publish(delta=True, max_chain=max_chain)


def test_readers_follow_the_longest_chain_writers_make(tmp_path: Path, tally: Tally) -> None:
    root = tmp_path / "store"
    store = sharedrec.open(root, create=True)
    store.publish_ranked("home", KEYS, ITEMS, SCORES, progress=False)
    changed = ITEMS.copy()
    changed[0] += 1
    first = store.publish_ranked("home", KEYS, changed, SCORES, delta=True, progress=False, guards=[])
    # Copies of the one delta, each over the previous: a chain as long as writers allow, and one more.
    below = first
    for depth in range(2, MAX_CHAIN + 2):
        name = f"delta-{depth:03d}"
        shutil.copytree(root / "versions" / first, root / "versions" / name)
        manifest = json.loads((root / "versions" / name / "manifest.json").read_bytes())
        manifest.update(id=name, base=below, parent=below, depth=depth)
        (root / "versions" / name / "manifest.json").write_bytes(json.dumps(manifest).encode())
        below = name
    tally.scenarios += 1
    with store.reader(f"delta-{MAX_CHAIN:03d}", lease=False) as reader:
        np.testing.assert_array_equal(reader.get("home", int(KEYS[0])).items, changed[0])
    with pytest.raises(CorruptVersion, match="run too long"):
        store.reader(f"delta-{MAX_CHAIN + 1:03d}", lease=False)


# -- point 6: key chunks are checked against their checksum when first mapped --------------


def _flip_bit(path: Path, offset: int, bit: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


@pytest.fixture
def fresh(tmp_path: Path) -> tuple[sharedrec.RecommendationStore, Path, str]:
    root = tmp_path / "store"
    store = sharedrec.open(root, create=True)
    return store, root, _publish(store)


@pytest.mark.parametrize("verify", ["lazy", "sizes"])
def test_a_flipped_bit_in_the_key_array_never_serves_another_key(
    fresh: tuple[sharedrec.RecommendationStore, Path, str], verify: str, tally: Tally
) -> None:
    store, root, version = fresh
    chunk = root / "versions" / version / "home" / "keys" / "c" / "0"
    # Key 16 (row 1) becomes 17, which no list was published for: the sort order still holds,
    # so a binary search finds 17 at row 1 and would serve key 16's list.
    assert int(KEYS[1]) == 16 and 17 not in KEYS
    _flip_bit(chunk, 8, 0)
    tally.faults_injected += 1
    tally.scenarios += 1
    lookup: Callable[[sharedrec.Reader], object]
    for lookup in (
        lambda r: r.get("home", 17),
        lambda r: r.get_many("home", [17, int(KEYS[0])]),
        lambda r: r.get("home", int(KEYS[0])),
    ):
        reader = store.reader(lease=False, verify=verify, refresh_interval=None)  # type: ignore[arg-type]
        with pytest.raises(CorruptVersion, match=r"home/keys/c/0 has crc32 [0-9a-f]{8}, the manifest says"):
            lookup(reader)
        with pytest.raises(CorruptVersion, match=r"home/keys/c/0"):  # and again: never an answer
            lookup(reader)
        reader.close()


@pytest.mark.parametrize(
    ("array", "offset", "bit"),
    [("named/key_hash/c/0", 3, 2), ("named/key_bytes/c/0", 2, 0), ("named/key_spans/c/0/0", 13, 6)],
)
def test_a_flipped_bit_in_a_string_key_index_is_corruption(
    fresh: tuple[sharedrec.RecommendationStore, Path, str], array: str, offset: int, bit: int, tally: Tally
) -> None:
    store, root, version = fresh
    _flip_bit(root / "versions" / version / array, offset, bit)
    tally.faults_injected += 1
    tally.scenarios += 1
    with store.reader(lease=False, refresh_interval=None) as reader:
        for lookup in (
            lambda: [reader.get("named", n) for n in NAMES],
            lambda: reader.get_many("named", NAMES),
        ):
            with pytest.raises(CorruptVersion, match=array):
                lookup()


def test_key_spans_outside_the_key_bytes_are_corruption(
    fresh: tuple[sharedrec.RecommendationStore, Path, str], tally: Tally
) -> None:
    """Even with a checksum that matches (a manifest rewritten to fit), spans are checked."""
    store, root, version = fresh
    relpath = "named/key_spans/c/0/0"
    folder = root / "versions" / version
    _flip_bit(folder / relpath, 13, 6)  # the stop of row 0 jumps by 2**46
    manifest = json.loads((folder / "manifest.json").read_bytes())
    crc = zlib.crc32((folder / relpath).read_bytes())
    if "chunks" in manifest:  # sharedrec/2: one checksum per chunk, in chunk order
        manifest["chunks"]["named/key_spans"][0] = crc
    else:
        manifest["files"][relpath]["crc32"] = crc
    (folder / "manifest.json").write_bytes(json.dumps(manifest).encode())
    tally.faults_injected += 1
    with store.reader(lease=False, refresh_interval=None) as reader:
        for lookup in (
            lambda: [reader.get("named", n) for n in NAMES],
            lambda: reader.get_many("named", NAMES),
        ):
            with pytest.raises(CorruptVersion, match=rf"{relpath} has a key span .* outside the"):
                lookup()


_S3_CHILD = """\
import json, sys
import sharedrec
store = sharedrec.open(sys.argv[1], storage_options=json.loads(sys.argv[2]), cache_dir=sys.argv[3])
reader = store.reader(lease=False, refresh_interval=None)
print(json.dumps(reader.get("home", int(sys.argv[4])).items.tolist()))
"""


def test_a_damaged_key_chunk_in_the_s3_cache_is_fetched_again(
    s3_server: str, tmp_path: Path, tally: Tally
) -> None:
    import os
    import subprocess
    import sys

    from conftest import make_bucket, s3_options

    location = f"s3://{make_bucket(s3_server)}/recs"
    options = s3_options(s3_server)
    cache = tmp_path / "cache"
    store = sharedrec.open(location, storage_options=options, cache_dir=cache, create=True)
    version = _publish(store)
    original = store._backend.read_bytes(f"versions/{version}/home/keys/c/0")
    with store.reader(lease=False, refresh_interval=None) as reader:
        np.testing.assert_array_equal(reader.get("home", 16).items, ITEMS[1])
    # The cached copy of the key chunk (wherever the cache keeps it) gets a flipped bit.
    cached = [p for p in cache.rglob("*") if p.is_file() and p.read_bytes() == original]
    assert len(cached) == 1
    _flip_bit(cached[0], 8, 0)  # key 16 becomes 17
    tally.faults_injected += 1
    tally.scenarios += 1
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for key, want in ((17, None), (16, ITEMS[1])):
        done = subprocess.run(
            [sys.executable, "-c", _S3_CHILD, location, json.dumps(options), str(cache), str(key)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if want is None:  # 17 was never published: the default list, not key 16's
            assert json.loads(done.stdout) == [7, 8], done.stderr
        else:
            assert json.loads(done.stdout) == want.tolist(), done.stderr
        tally.answers_checked += 1
    assert cached[0].read_bytes() == original  # the cache holds the good copy again


# -- point 9: declared sizes never size an allocation before a file backs them ---------------

WIDE = MAX_WIDTH  # 16,777,215: 268 MB per row of int64 items and float64 scores


def _wide(collection: str, arrays: tuple[str, ...], *, files_too: bool) -> Callable[[dict[str, Any]], None]:
    """Declare ``collection`` WIDE wide; with ``files_too`` the listed chunk sizes agree, as a
    manifest rewritten to fit would, while the files on disk stay small."""

    def change(manifest: dict[str, Any]) -> None:
        spec = manifest["collections"][collection]
        spec["width"] = WIDE
        if spec["kind"] == "vectors":
            spec["min_length"] = spec["max_length"] = WIDE
        for name in arrays:
            array = spec["arrays"][name]
            array["shape"][1] = array["chunks"][1] = WIDE
            if files_too:
                nbytes = array["chunks"][0] * WIDE * int(array["dtype"][2:])
                for path, entry in manifest["files"].items():
                    if path.startswith(f"{collection}/{name}/c/"):
                        entry["size"] = nbytes

    return change


@pytest.mark.parametrize("files_too", [False, True], ids=["width only", "width and file sizes"])
@pytest.mark.parametrize("collection", ["home", "emb"])
def test_a_declared_width_allocates_nothing_before_a_file_backs_it(
    sample: tuple[sharedrec.RecommendationStore, Path, str], collection: str, files_too: bool, tally: Tally
) -> None:
    import tracemalloc

    store = sample[0]
    arrays = ("items", "scores") if collection == "home" else ("vectors",)
    name = f"wide-{collection}-{int(files_too)}"
    _clone(sample, name, _wide(collection, arrays, files_too=files_too))
    tally.scenarios += 1
    tally.bad_inputs += 1
    keys = np.concatenate([KEYS[:2], [-1, -2]])  # rows of missing keys are filled: touched memory
    tracemalloc.start()
    try:
        with pytest.raises(CorruptVersion, match=rf"{name}/(manifest\.json|{collection}/)"):
            reader = store.reader(name, lease=False, verify="lazy")
            if collection == "home":
                reader.get_many("home", keys)
            else:
                reader.vectors("emb", keys)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak / 1e6:.0f} MB allocated for a width no file holds"


@pytest.fixture(scope="module")
def partitioned(tmp_path_factory: pytest.TempPathFactory) -> tuple[sharedrec.RecommendationStore, Path, str]:
    """The home lists split into two partitions."""
    root = tmp_path_factory.mktemp("partitioned") / "store"
    store = sharedrec.open(root, create=True)
    handle = store.begin_publish(partitions=2, chunk_bytes=1024)
    owner = handle.partition_of(KEYS)
    receipts = [
        handle.write_ranked("home", part, KEYS[owner == part], ITEMS[owner == part], SCORES[owner == part])
        for part in range(2)
    ]
    return store, root, store.commit_publish(handle, receipts, guards=[])


def _shrink_first_partition(manifest: dict[str, Any]) -> None:
    """Partition 0 claims 5 keys fewer than it holds: its last keys' global rows would fall
    into partition 1, on other keys' lists."""
    spec = manifest["collections"]["home"]
    spec["partitions"]["parts"][0]["count"] -= 5
    spec["count"] -= 5


def _widen_partitions(manifest: dict[str, Any]) -> None:
    spec = manifest["collections"]["home"]
    spec["width"] = WIDE
    for part in spec["partitions"]["parts"]:
        part["width"] = WIDE
        for name in ("items", "scores"):
            array = part["arrays"][name]
            array["shape"][1] = array["chunks"][1] = WIDE
            for path, entry in manifest["files"].items():
                if path.startswith(f"home/{part['path']}/{name}/c/"):
                    entry["size"] = array["chunks"][0] * WIDE * 8


@pytest.mark.parametrize("case", ["partition count", "partition width"])
def test_a_partitioned_manifest_that_does_not_fit_its_files(
    partitioned: tuple[sharedrec.RecommendationStore, Path, str], case: str, tally: Tally
) -> None:
    import tracemalloc

    store = partitioned[0]
    name = case.replace(" ", "-")
    change = _shrink_first_partition if case == "partition count" else _widen_partitions
    _clone(partitioned, name, change)
    tally.scenarios += 1
    tally.bad_inputs += 1
    tracemalloc.start()
    try:
        with pytest.raises(CorruptVersion, match=rf"{name}/(manifest\.json|home/)"):
            reader = store.reader(name, lease=False, verify="lazy")
            reader.get_many("home", np.concatenate([KEYS[:2], [-1, -2]]))
            for key in KEYS.tolist():
                reader.get("home", key)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak / 1e6:.0f} MB allocated for a width no file holds"


@pytest.mark.parametrize("rows", ["no rows", "rows"])
def test_a_delta_wider_than_its_chain_allocates_nothing(tmp_path: Path, rows: str, tally: Tally) -> None:
    import tracemalloc

    root = tmp_path / "store"
    store = sharedrec.open(root, create=True)
    store.publish_ranked("home", KEYS, ITEMS, SCORES, progress=False)
    changed = ITEMS.copy()
    if rows == "rows":
        changed[0] += 1
    delta = store.publish_ranked("home", KEYS, changed, SCORES, delta=True, progress=False, guards=[])
    folder = root / "versions" / delta
    manifest = json.loads((folder / "manifest.json").read_bytes())
    spec = manifest["collections"]["home"]
    assert ("items" in spec["arrays"]) == (rows == "rows")
    spec["width"] = WIDE
    for name in ("items", "scores") if rows == "rows" else ():
        array = spec["arrays"][name]
        array["shape"][1] = array["chunks"][1] = WIDE
        for path, entry in manifest["files"].items():
            if path.startswith(f"home/{name}/c/"):
                entry["size"] = array["chunks"][0] * WIDE * 8
    (folder / "manifest.json").write_bytes(json.dumps(manifest).encode())
    tally.scenarios += 1
    tally.bad_inputs += 1
    tracemalloc.start()
    try:
        with pytest.raises(CorruptVersion, match=rf"{delta}"):
            reader = store.reader(delta, lease=False, verify="lazy")
            reader.get_many("home", np.concatenate([KEYS[:2], [-1, -2]]))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak / 1e6:.0f} MB allocated for a width no file holds"


_LOCAL_CHILD = """\
import json, sys
import sharedrec
reader = sharedrec.open(sys.argv[1], create=False).reader(lease=False, refresh_interval=None)
try:
    print(json.dumps(reader.get("home", int(sys.argv[2])).items.tolist()))
except sharedrec.CorruptVersion as exc:
    print(json.dumps(str(exc)))
"""


def test_every_fresh_process_refuses_a_damaged_key_chunk(
    fresh: tuple[sharedrec.RecommendationStore, Path, str], tally: Tally
) -> None:
    import os
    import subprocess
    import sys

    _, root, version = fresh
    _flip_bit(root / "versions" / version / "home" / "keys" / "c" / "0", 8, 0)  # key 16 becomes 17
    tally.faults_injected += 1
    tally.scenarios += 1
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for key in (17, 16, 17):
        done = subprocess.run(
            [sys.executable, "-c", _LOCAL_CHILD, str(root), str(key)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        answer = json.loads(done.stdout)
        assert isinstance(answer, str) and "home/keys/c/0 has crc32" in answer, (answer, done.stderr)
        tally.answers_checked += 1
