"""The one schema of manifests, pointers and leases (`sharedrec.format.schema`).

Readers and writers share its records: what a reader parses a writer can build and dump to the
same bytes, whatever the parser accepts the writer-side checks accept too, and a reader process
never imports pydantic at all.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sharedrec
from sharedrec.errors import CorruptVersion
from sharedrec.format.schema import Lease, Manifest, Pointer
from sharedrec.read.leases import LeaseKeeper

from conftest import RankedData, make_ranked


@pytest.fixture(scope="module")
def manifest_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A manifest using every optional field: str and int keys, vectors, default, fallbacks."""
    store = sharedrec.open(tmp_path_factory.mktemp("spec") / "store", create=True)
    data = make_ranked(300, 7, seed=3)
    words = make_ranked(50, 4, str_keys=True, seed=4)
    with store.publish(chunk_bytes=4096, metadata={"model": "als", "n": [1, 2]}) as draft:
        draft.add_ranked("popular", [0], data.items[:1], data.scores[:1], serve_to_all=True)
        draft.add_ranked(
            "home", data.keys, data.items, data.scores, default=([5], [1.0]), fallbacks=["popular"]
        )
        draft.add_ranked("by_word", words.keys, words.items, words.scores)
        draft.add_vectors("emb", data.keys, data.scores.astype(np.float32))
    return (Path(store.location) / "versions" / draft.version_id / "manifest.json").read_bytes()


def _as_plain(view: object) -> Any:
    """A view turned into plain JSON-like values, for comparison with ``model_dump``."""
    if isinstance(view, dict):
        return {key: _as_plain(value) for key, value in view.items()}
    if isinstance(view, list | tuple):
        return [_as_plain(value) for value in view]
    slots = getattr(type(view), "__slots__", None)
    if slots:
        return {name: _as_plain(getattr(view, name)) for name in slots if not name.startswith("_")}
    return view


def test_a_parsed_record_reads_every_field_as_a_built_one_does(manifest_bytes: bytes) -> None:
    view = Manifest.loads(manifest_bytes, "manifest.json")
    model = Manifest(**{name: getattr(view, name) for name in Manifest._FIELDS})  # as a writer builds it
    assert view.to_json() == json.loads(manifest_bytes)
    assert model.dumps() == view.dumps() == manifest_bytes
    assert _as_plain(view) == _as_plain(model)
    assert view.data_bytes == model.data_bytes
    assert view.raw == manifest_bytes
    home = view.collections["home"]
    assert home.fallbacks == ["popular"] and home.default_length == 1
    assert view.collections["by_word"].key_hash == model.collections["by_word"].key_hash is not None
    assert {name: a.n_chunks for name, a in home.arrays.items()} == {
        name: a.n_chunks for name, a in model.collections["home"].arrays.items()
    }


def test_records_slot_exactly_their_fields() -> None:
    from sharedrec.format.schema import ArraySpec, CollectionSpec, FileEntry, PartitionsSpec, PartSpec

    for record in (ArraySpec, CollectionSpec, FileEntry, Lease, Manifest, PartSpec, PartitionsSpec, Pointer):
        assert set(record.__slots__) - {"_raw"} == set(record._FIELDS), record.__name__


def test_records_are_read_only(manifest_bytes: bytes) -> None:
    view = Manifest.loads(manifest_bytes, "m")
    with pytest.raises(AttributeError, match="read-only"):
        view.id = "other"


def _mutations() -> st.SearchStrategy[tuple[list[str], object]]:
    """A path into the manifest and a JSON value to put there (or delete, for ``...``)."""
    paths = st.sampled_from(
        [
            ["id"],
            ["created_at"],
            ["format"],
            ["parent"],
            ["files"],
            ["collections"],
            ["collections", "home", "count"],
            ["collections", "home", "kind"],
            ["collections", "home", "width"],
            ["collections", "home", "key_fences"],
            ["collections", "home", "fallbacks"],
            ["collections", "home", "serve_to_all"],
            ["collections", "popular", "serve_to_all"],
            ["collections", "home", "default_length"],
            ["collections", "home", "arrays", "items", "shape"],
            ["collections", "home", "arrays", "items", "chunks"],
            ["collections", "home", "arrays", "items", "dtype"],
            ["collections", "emb", "arrays", "vectors"],
        ]
    )
    values = st.recursive(
        st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
        max_leaves=6,
    )
    return st.tuples(paths, st.just(...) | values)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(mutation=_mutations())
def test_whatever_the_parser_accepts_a_writer_may_build(
    manifest_bytes: bytes, mutation: tuple[list[str], object]
) -> None:
    path, value = mutation
    raw = json.loads(manifest_bytes)
    target = raw
    for part in path[:-1]:
        target = target[part]
    if value is ...:
        target.pop(path[-1], None)
    else:
        target[path[-1]] = value
    data = json.dumps(raw).encode()
    try:
        view = Manifest.loads(data, "m")
    except CorruptVersion as exc:
        error = str(exc)
        assert error.startswith("m is truncated or invalid (")
        return
    model = Manifest(**{name: getattr(view, name) for name in Manifest._FIELDS})  # must not raise
    assert view.id == model.id and set(view.collections) == set(model.collections)


@pytest.mark.parametrize("cut", [0, 1, 10, 100, -1])
def test_truncated_manifest_is_corrupt(manifest_bytes: bytes, cut: int) -> None:
    with pytest.raises(CorruptVersion, match="truncated or invalid"):
        Manifest.loads(manifest_bytes[:cut], "versions/x/manifest.json")


def test_declared_sizes_are_bounded_by_the_files_listed(manifest_bytes: bytes) -> None:
    raw = json.loads(manifest_bytes)
    raw["collections"]["home"]["arrays"]["items"]["shape"][0] = 10**15
    # (a sharedrec/2 manifest lists one checksum per chunk; a sharedrec/1 one, every chunk file)
    with pytest.raises(CorruptVersion, match=r"must list \d+ checksums, one per chunk file; it holds 3"):
        Manifest.loads(json.dumps(raw).encode(), "m")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("count", True, "count must be an integer"),
        ("count", "5", "count must be an integer"),
        ("count", 0, "count is out of range"),
        ("kind", "graph", "kind must be one of"),
        ("unknown", 1, "unknown fields"),
    ],
)
def test_bad_collection_fields_are_named(
    manifest_bytes: bytes, field: str, value: object, message: str
) -> None:
    raw = json.loads(manifest_bytes)
    raw["collections"]["home"][field] = value
    with pytest.raises(CorruptVersion, match=message):
        Manifest.loads(json.dumps(raw).encode(), "m")


def test_chunks_must_split_rows_only(manifest_bytes: bytes) -> None:
    raw = json.loads(manifest_bytes)
    raw["collections"]["home"]["arrays"]["items"]["chunks"][1] = 3
    with pytest.raises(CorruptVersion, match="must split the rows"):
        Manifest.loads(json.dumps(raw).encode(), "m")


def test_pointer_round_trip_and_limits() -> None:
    from datetime import UTC, datetime

    written = Pointer(version="v2", previous=["v1"], updated_at=datetime.now(UTC)).dumps()
    view = Pointer.loads(written, "CURRENT")
    assert (view.version, view.previous) == ("v2", ["v1"])
    assert view.updated_at == Pointer.loads(written, "CURRENT").updated_at
    too_long = json.dumps({"version": "v", "previous": ["a"] * 33, "updated_at": "2026-01-01T00:00:00Z"})
    with pytest.raises(CorruptVersion, match="at most 32"):
        Pointer.loads(too_long.encode(), "CURRENT")
    for garbage in (b"", b"\xff\xfe", b"[]", b'{"version": 3, "updated_at": "x"}', b"v1\n"):
        with pytest.raises(CorruptVersion, match="CURRENT is truncated or invalid"):
            Pointer.loads(garbage, "CURRENT")


def test_lease_written_without_pydantic_is_a_valid_lease(tmp_path: Path) -> None:
    from sharedrec.backends.posix import PosixBackend

    keeper = LeaseKeeper(PosixBackend(tmp_path, create=True), "", "pod-a", ttl=30)
    keeper.write("v2", ["v1"])
    (path,) = tmp_path.glob("pod-a.*.json")
    lease = Lease.loads(path.read_bytes(), path.name)
    assert (lease.reader_id, lease.version, lease.versions) == ("pod-a", "v2", ["v2", "v1"])
    assert 29 <= (lease.expires_at - lease.heartbeat).total_seconds() <= 30


# What a serving process must not load: the heavy packages of publishing, ingest and S3, and
# sharedrec's own writing, managing and integration layers (each import is time at start-up).
_NOT_FOR_READERS = (
    "pydantic",
    "zarr",
    "s3fs",
    "fsspec",
    "pyarrow",
    "pandas",
    "sharedrec.write",
    "sharedrec.manage",
    "sharedrec.integrations",
    "sharedrec.k8s",
    "sharedrec.cli",
    "sharedrec.read.options",  # the option sets, for type checkers and the docs
    "fcntl",  # a writer's pointer lock
    "logging",  # imported at the first message logged (sharedrec._log), with traceback
    "traceback",
    "hashlib",  # blake2b-64 comes from _blake2: hashlib loads OpenSSL
    "xxhash",  # imported at the first lookup of a string key
    "sharedrec.read.cache",  # the chunk cache of object stores
    "sharedrec.backends.s3",
)


def _reader_process(tmp_path: Path, before: str, during: str, after: str) -> tuple[RankedData, str]:
    """The output of a fresh process that runs ``before``, opens a reader of a new store,
    runs ``during`` (``data`` names the published lists), refreshes, closes, runs ``after``."""
    store = sharedrec.open(tmp_path / "store", create=True)
    data = make_ranked(100, 5, seed=1)
    store.publish_ranked("home", data.keys, data.items, data.scores, progress=False)
    script = (
        f"{before}import sharedrec\n"
        f"reader = sharedrec.open({str(tmp_path / 'store')!r}, create=False).reader(refresh_interval=0.05)\n"
        f"{during.format(key0=int(data.keys[0]), key1=int(data.keys[1]))}"
        "reader.refresh(); reader.stats(); repr(reader); reader.close()\n"
        f"{after}"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return data, done.stdout


def test_a_reader_process_never_imports_pydantic(tmp_path: Path) -> None:
    data, out = _reader_process(
        tmp_path,
        "import sys\n",
        "print(reader.get('home', {key0}).items.tolist())\n",
        f"heavy = {_NOT_FOR_READERS!r}\n"
        "print(sorted(m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in heavy)))\n",
    )
    items, heavy = out.splitlines()
    assert json.loads(items) == data.items[0].tolist()
    assert heavy == "[]"


# Everything a reader process imports beyond numpy's own modules, besides sharedrec's read
# path: each module here is time at every start (see benchmarks/test_import.py). A new
# import on the path fails this test; add it here only if the reader cannot do without it.
_READER_STDLIB = frozenset(
    {
        "__future__",
        "_bisect",
        "bisect",  # the key index's fences
        "_json",
        "json",
        "json.decoder",
        "json.encoder",
        "json.scanner",  # pointer, manifest and lease
        "copy",
        "dataclasses",  # VerifyReport, RowKind, RowPlan
        "errno",  # the local backend's retries
        "mmap",
        "zlib",  # chunk checksums
        "threading",
        "atexit",  # the reader's background thread, its finalizer
    }
)


def test_a_reader_process_imports_nothing_beyond_numpy_but_its_own_path(tmp_path: Path) -> None:
    _, out = _reader_process(
        tmp_path,
        "import sys, json\nimport numpy\nbefore = set(sys.modules)\n",
        "reader.get('home', {key0}); reader.get_many('home', [{key1}, -1])\n",
        "print(json.dumps(sorted(set(sys.modules) - before)))\n",
    )
    loaded = json.loads(out)
    assert [
        m for m in loaded if m != "sharedrec" and not m.startswith("sharedrec.") and m not in _READER_STDLIB
    ] == []
    assert [m for m in loaded if any(m == h or m.startswith(h + ".") for h in _NOT_FOR_READERS)] == []


def test_reader_manifest_is_the_schema_record(tmp_path: Path) -> None:
    store = sharedrec.open(tmp_path / "store", create=True)
    data = make_ranked(20, 3)
    store.publish_ranked("home", data.keys, data.items, data.scores, progress=False)
    with store.reader() as reader:
        assert isinstance(reader.manifest, Manifest)
        assert reader.manifest == store.manifest(reader.version)
        assert reader.collections["home"].count == 20
        assert isinstance(reader._v.manifest, Manifest)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=500, deadline=None)
@given(value=_JSON)
def test_json_is_written_as_the_pydantic_models_wrote_it(value: object) -> None:
    # Manifests, pointers and leases keep the bytes of sharedrec 0.1.0, whose pydantic models
    # wrote them: floats such as 1e-7 and 0.000025, non-ASCII text, NaN as null.
    from pydantic import JsonValue, TypeAdapter

    from sharedrec.format.schema import _dumps

    adapter: TypeAdapter[JsonValue] = TypeAdapter(JsonValue)
    assert _dumps(value, indent=1) == adapter.dump_json(value, indent=1)  # type: ignore[arg-type]
    assert _dumps(value, indent=None) == adapter.dump_json(value)  # type: ignore[arg-type]
