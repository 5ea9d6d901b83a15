"""Hostile input: fuzzed manifests, pointers, leases and ingestion files; names that try to
leave the store; huge declared sizes; keys of the wrong type. Errors are sharedrec's own
classes, nothing escapes the store root, nothing crashes the process."""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sharedrec
from sharedrec.errors import CorruptVersion, InvalidInput, SharedrecError
from sharedrec.format.schema import Lease, Manifest, Pointer

from ._support import KEYS, TALLY, Tally, publish_tagged

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[sharedrec.RecommendationStore, Path, str]:
    root = tmp_path_factory.mktemp("hostile") / "store"
    store = sharedrec.open(root, create=True)
    return store, root, publish_tagged(store, 0)


def _valid(sample: tuple[sharedrec.RecommendationStore, Path, str]) -> dict[str, bytes]:
    _, root, version = sample
    return {
        "manifest": (root / "versions" / version / "manifest.json").read_bytes(),
        "pointer": (root / "CURRENT").read_bytes(),
        "lease": Lease(
            reader_id="r",
            host="h",
            pid=1,
            version=version,
            versions=[version],
            started_at=datetime(2026, 1, 1, tzinfo=UTC),
            heartbeat=datetime(2026, 1, 1, tzinfo=UTC),
            expires_at=datetime(2026, 1, 1, 0, 1, tzinfo=UTC),
        ).dumps(),
    }


PARSERS: dict[str, Any] = {
    "manifest": [lambda b: Manifest.loads(b, "m")],
    "pointer": [lambda b: Pointer.loads(b, "p")],
    "lease": [lambda b: Lease.loads(b, "l")],
}

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def _parse_all(kind: str, data: bytes) -> None:
    TALLY.bad_inputs += 1
    for parse in PARSERS[kind]:
        message = "parsed"
        try:
            parse(data)
        except CorruptVersion as exc:
            message = str(exc)
        assert message, "an error without a message"


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _paths(item, (*prefix, i))
    return found


@pytest.mark.parametrize("kind", list(PARSERS))
def test_parsers_on_random_bytes(kind: str, tally: Tally) -> None:
    tally.scenarios += 1

    @FUZZ
    @given(st.binary(max_size=300))
    def run(data: bytes) -> None:
        _parse_all(kind, data)

    run()


@pytest.mark.parametrize("kind", list(PARSERS))
def test_parsers_on_mutated_documents(
    kind: str, sample: tuple[sharedrec.RecommendationStore, Path, str], tally: Tally
) -> None:
    tally.scenarios += 1
    valid = _valid(sample)[kind]
    document = json.loads(valid)
    paths = _paths(document)[1:]

    @FUZZ
    @given(st.sampled_from(paths), JSON, st.integers(0, len(valid)))
    def run(path: tuple[Any, ...], value: Any, cut: int) -> None:
        changed = json.loads(valid)
        target = changed
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
        _parse_all(kind, json.dumps(changed).encode())
        _parse_all(kind, valid[:cut])  # truncated anywhere

    run()


def _hostile_manifest(sample: tuple[sharedrec.RecommendationStore, Path, str], change: Any) -> bytes:
    _, root, version = sample
    manifest = json.loads((root / "versions" / version / "manifest.json").read_bytes())
    change(manifest)
    return json.dumps(manifest).encode()


def _copy_version(
    sample: tuple[sharedrec.RecommendationStore, Path, str], name: str, manifest: bytes
) -> None:
    import shutil

    _, root, version = sample
    target = root / "versions" / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(root / "versions" / version, target)
    (target / "manifest.json").write_bytes(manifest)


def test_manifest_paths_outside_the_version_are_not_read(
    sample: tuple[sharedrec.RecommendationStore, Path, str], tmp_path: Path, tally: Tally
) -> None:
    store, root, version = sample
    secret = root.parent / "secret.txt"
    secret.write_bytes(b"not part of any store")
    escape = "../../../secret.txt"
    assert (root / "versions" / version / escape).resolve() == secret.resolve()

    def point_outside(manifest: dict[str, Any]) -> None:
        manifest["id"] = "escape"
        manifest["files"][escape] = {"size": secret.stat().st_size, "crc32": zlib.crc32(secret.read_bytes())}

    _copy_version(sample, "escape", _hostile_manifest(sample, point_outside))
    tally.scenarios += 1
    tally.bad_inputs += 1
    with pytest.raises(CorruptVersion, match=r"outside the version"):
        store.verify("escape")
    with pytest.raises(CorruptVersion, match=r"outside the version"):
        store.reader("escape", lease=False, verify="sizes")


@pytest.mark.parametrize("where", ["files", "collection", "array"])
def test_parser_refuses_paths_that_leave_the_version(
    sample: tuple[sharedrec.RecommendationStore, Path, str], where: str
) -> None:
    def hostile(manifest: dict[str, Any]) -> None:
        if where == "files":
            manifest["files"]["../../x"] = {"size": 1, "crc32": 0}
        elif where == "collection":
            manifest["collections"]["../../x"] = manifest["collections"].pop("home")
        else:
            arrays = manifest["collections"]["home"]["arrays"]
            arrays["/abs/x"] = arrays["lengths"]

    with pytest.raises(CorruptVersion):
        Manifest.loads(_hostile_manifest(sample, hostile), "m")


HOSTILE_NAMES = [
    "../escape",
    "..",
    "/etc/passwd",
    "a/../../b",
    "a\0b",
    "x" * 300,
    " leading-space",
    "back\\slash",
    "new\nline",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=range(len(HOSTILE_NAMES)))
def test_hostile_names_are_refused(
    sample: tuple[sharedrec.RecommendationStore, Path, str], name: str, tmp_path: Path, tally: Tally
) -> None:
    store, root, _ = sample
    before = sorted(p.relative_to(root.parent) for p in root.parent.rglob("*"))
    tally.scenarios += 1
    attempts: list[Callable[[], object]] = [
        lambda: store.publish(version_id=name),
        lambda: store.reader(name, lease=False),
        lambda: store.current(name),
        lambda: store.set_current(name),
        lambda: store.manifest(name),
        lambda: store.verify(name),
        lambda: store.reader(lease=False, ref=name),
        lambda: store.reader(reader_id=name),
    ]
    for attempt in attempts:
        tally.bad_inputs += 1
        with pytest.raises(InvalidInput, match=r"invalid"):
            attempt()
    with store.publish(guards=[]) as draft:
        tally.bad_inputs += 1
        with pytest.raises(InvalidInput, match=r"invalid collection name"):
            draft.add_ranked(name, KEYS[:2], [[1], [2]], [[1.0], [1.0]])
        draft.add_ranked("fine", KEYS[:2], [[1], [2]], [[1.0], [1.0]])
    store.rollback()
    after = sorted(p.relative_to(root.parent) for p in root.parent.rglob("*"))
    added = set(after) - set(before)
    assert all(str(p).startswith("store/versions/") or str(p).startswith("store/leases") for p in added)


def test_trailing_newline_is_refused(sample: tuple[sharedrec.RecommendationStore, Path, str]) -> None:
    store, _, _ = sample
    with pytest.raises(InvalidInput):
        store.publish(version_id="v1\n")


def test_huge_declared_sizes_allocate_nothing(
    sample: tuple[sharedrec.RecommendationStore, Path, str], tally: Tally
) -> None:
    store, _, _ = sample

    def huge_rows(manifest: dict[str, Any]) -> None:
        manifest["id"] = "huge-rows"
        spec = manifest["collections"]["home"]["arrays"]["items"]
        spec["shape"][0] = spec["chunks"][0] = 2**40

    _copy_version(sample, "huge-rows", _hostile_manifest(sample, huge_rows))
    tally.scenarios += 1
    tally.bad_inputs += 1
    with pytest.raises(CorruptVersion, match=r"huge-rows|chunked differently|manifest says"):
        store.reader("huge-rows", lease=False).get("home", int(KEYS[0]))

    def huge_chunks(manifest: dict[str, Any]) -> None:
        spec = manifest["collections"]["home"]["arrays"]["items"]
        spec["shape"][0], spec["chunks"][0] = 2**62, 1

    tally.bad_inputs += 1
    # (sharedrec/2 lists a checksum per chunk: the list is too short; sharedrec/1, the files)
    with pytest.raises(CorruptVersion, match=r"declares .* chunks|must list \d+ checksums, one per chunk"):
        Manifest.loads(_hostile_manifest(sample, huge_chunks), "m")


def test_huge_declared_width(sample: tuple[sharedrec.RecommendationStore, Path, str]) -> None:
    store, _, _ = sample

    def huge_width(manifest: dict[str, Any]) -> None:
        manifest["id"] = "huge-width"
        manifest["collections"]["home"]["width"] = 2**40

    _copy_version(sample, "huge-width", _hostile_manifest(sample, huge_width))
    with pytest.raises(CorruptVersion):
        store.reader("huge-width", lease=False).get_many("home", KEYS[:4])


WRONG_KEYS = [1.0, b"3", None, np.float64(3.0), np.array([3]), "3", [3], 3 + 0j]


def test_keys_of_the_wrong_type(
    sample: tuple[sharedrec.RecommendationStore, Path, str], tally: Tally
) -> None:
    store, _, _ = sample
    reader = store.reader(lease=False)
    tally.scenarios += 1
    for key in WRONG_KEYS:
        for lookup in (lambda k: reader.get("home", k), lambda k: reader.vector("emb", k)):
            tally.bad_inputs += 1
            with pytest.raises(InvalidInput, match=r"int64 keys"):
                lookup(key)
    keys: Any
    for keys in ([1.0, 2.0], [b"3"], [None], np.array([3.0]), ["3"], [[3]]):
        tally.bad_inputs += 1
        with pytest.raises(InvalidInput, match=r"keys must be"):
            reader.get_many("home", keys)
    assert reader.get("home", cast(Any, np.int32(KEYS[1]))).items.size == 5  # numpy integers are integers
    for keys in ([1.5, 2.5], [b"a", b"b"], [None, None], [np.float64(1), np.float64(2)]):
        tally.bad_inputs += 1
        with pytest.raises(InvalidInput, match=r"keys must be"), store.publish(guards=[]) as draft:
            draft.add_ranked("bad", keys, [[1], [2]], [[1.0], [1.0]])


@pytest.mark.parametrize("call", ["bool key", "str k"])
def test_bool_key_and_str_k(sample: tuple[sharedrec.RecommendationStore, Path, str], call: str) -> None:
    store, _, _ = sample
    reader = store.reader(lease=False)
    with pytest.raises(InvalidInput):
        if call == "bool key":
            reader.get("home", True)
        else:
            reader.get("home", int(KEYS[0]), k="3")  # type: ignore[arg-type]


# -- ingestion ----------------------------------------------------------------------------------


def _ingest_cases(folder: Path) -> list[tuple[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sharedrec.integrations import ingest

    good = pa.table({"user": [1, 1, 2], "item": [5, 6, 7], "score": [0.9, 0.5, 0.7]})
    pq.write_table(good, folder / "good.parquet")
    raw = (folder / "good.parquet").read_bytes()
    cases: list[tuple[str, Any]] = []

    def file(name: str, data: bytes) -> Path:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    for name, data in {
        "garbage.parquet": b"\x00\x01 not parquet",
        "truncated.parquet": raw[: len(raw) // 2],
        "empty.parquet": b"",
        "flipped.parquet": raw[:20] + bytes([raw[20] ^ 0xFF]) + raw[21:],
        "garbage.csv": b"\xff\xfe\x00 not, csv\n\x00\x00",
        "nocols.csv": b"a,b\n1,2\n",
        "nulls.csv": b"user,item,score\n1,,0.5\n",
        "text.csv": b"user,item,score\n1,apple,0.5\n",
        "nan.csv": b"user,item,score\n1,2,nan\n",
        "header.csv": b"user,item,score\n",
        "garbage.arrow": b"ARROW1\x00\x00garbage",
    }.items():
        path = file(f"in/{name}", data)
        cases.append((name, lambda p=path: ingest.read_long([p])))
        cases.append((f"lists {name}", lambda p=path: ingest.read_lists([p])))
        cases.append((f"vectors {name}", lambda p=path: ingest.read_vectors([p])))
    npz = file("bad.npz", b"PK\x03\x04 not a zip")
    cases.append(("bad npz", lambda: ingest.read_npz(npz, ["keys"])))
    folder_npy = folder / "npy"
    folder_npy.mkdir()
    (folder_npy / "keys.npy").write_bytes(b"\x93NUMPY garbage")
    cases.append(("bad npy", lambda: ingest.read_npz(folder_npy, ["keys"])))
    np.save(folder / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    obj = folder / "objnpy"
    obj.mkdir()
    (folder / "obj.npy").rename(obj / "keys.npy")
    cases.append(("pickled npy", lambda: ingest.read_npz(obj, ["keys"])))
    np.savez(folder / "pickled.npz", keys=np.array([{"a": 1}], dtype=object))
    cases.append(("pickled npz", lambda: ingest.read_npz(folder / "pickled.npz", ["keys"])))
    cases.append(("missing", lambda: ingest.read_long([folder / "nope.parquet"])))
    return cases


def test_ingestion_of_malformed_files(tmp_path: Path, tally: Tally) -> None:
    pytest.importorskip("pyarrow")
    tally.scenarios += 1
    escaped = []
    for name, read in _ingest_cases(tmp_path):
        tally.bad_inputs += 1
        try:
            read()
        except SharedrecError as exc:
            if not str(exc):
                escaped.append(f"{name}: an error without a message")
        except Exception as exc:
            escaped.append(f"{name}: {type(exc).__name__}: {exc}")
    assert escaped == []


def test_ingestion_of_fuzzed_csv(tmp_path: Path, tally: Tally) -> None:
    pytest.importorskip("pyarrow")
    from sharedrec.integrations import ingest

    tally.scenarios += 1
    cell = st.one_of(st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=6), st.just(""))

    @settings(max_examples=80, deadline=None)
    @given(st.lists(st.tuples(cell, cell, cell), max_size=6), st.booleans())
    def run(rows: list[tuple[Any, Any, Any]], header: bool) -> None:
        TALLY.bad_inputs += 1
        lines = (["user,item,score"] if header else []) + [
            ",".join(str(c).replace(",", ";").replace("\n", " ") for c in row) for row in rows
        ]
        path = tmp_path / "fuzz.csv"
        path.write_text("\n".join(lines))
        try:
            result = ingest.read_long([path], top_k=3)
        except SharedrecError:
            return
        assert len(result.keys) == len(result.items) == len(result.lengths)

    run()
