"""What opening a reader does before its first answer, and what it no longer does.

The lease is written before any chunk is mapped, and it is the same lease file as ever;
but its bytes are made without building (and re-checking) a `Lease` record, the reader id
is checked without a regular expression, and a version folder that is not a link is found
inside the store without resolving every component of its path.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import sharedrec
from sharedrec.errors import CorruptVersion, InvalidInput
from sharedrec.format import schema
from sharedrec.format.schema import Lease
from sharedrec.read.leases import lease_bytes, validate_reader_id

from conftest import make_ranked

_ID_CHARS = "Az09_.-/ é\0"


@given(
    reader_id=st.text(alphabet=_ID_CHARS, min_size=1, max_size=8),
    version=st.text(alphabet=_ID_CHARS, min_size=1, max_size=8),
    versions=st.lists(st.text(alphabet="ab", max_size=2), max_size=3),
    seconds=st.integers(0, 10**9),
    micros=st.integers(0, 999_999),
    ttl=st.floats(0.001, 1e6),
    warming=st.booleans(),
)
def test_a_lease_is_written_as_the_lease_record_writes_it(
    reader_id: str, version: str, versions: list[str], seconds: int, micros: int, ttl: float, warming: bool
) -> None:
    started = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds // 2)
    now = started + timedelta(seconds=seconds // 2, microseconds=micros)
    made = lease_bytes(reader_id, version, versions, started, now, ttl, warming=warming)
    record = Lease(
        reader_id=reader_id,
        host=os.uname().nodename,
        pid=os.getpid(),
        version=version,
        versions=list(dict.fromkeys([version, *versions])),
        started_at=started,
        heartbeat=now,
        expires_at=now + timedelta(seconds=ttl),
        warming=warming,
    )
    assert made == record.dumps()
    assert Lease.loads(made, "the lease") == record


@given(st.text(alphabet="Az09_.-/ é\0\n", max_size=6) | st.sampled_from(["", ".a", "a" * 200, "a" * 201]))
def test_reader_ids_are_checked_as_before(reader_id: str) -> None:
    """The rule is the old regular expression's: 1-200 of [A-Za-z0-9_.-], not starting with '.'."""
    valid = re.fullmatch(r"[A-Za-z0-9_.-]{1,200}", reader_id) is not None and not reader_id.startswith(".")
    if valid:
        assert validate_reader_id(reader_id) == reader_id
    else:
        with pytest.raises(InvalidInput, match="invalid reader id"):
            validate_reader_id(reader_id)


def _store(tmp_path: Path) -> sharedrec.RecommendationStore:
    store = sharedrec.open(tmp_path / "store", create=True)
    data = make_ranked(300, 4, seed=5)
    store.publish_ranked("home", data.keys, data.items, data.scores, progress=False)
    return store


def test_opening_a_reader_builds_no_lease_record_and_resolves_no_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lease still lands before the version is mapped, with the same fields; the open
    neither re-checks the values it made (a `Lease` record) nor calls ``realpath``."""
    store = _store(tmp_path)
    data = make_ranked(300, 4, seed=5)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the open built a Lease record or resolved a path")

    monkeypatch.setattr(schema.Lease, "_check", refuse)
    monkeypatch.setattr(os.path, "realpath", refuse)
    reader = store.reader(reader_id="pod-1")
    try:
        found = reader.get("home", int(data.keys[7]))
        assert np.array_equal(found.items, data.items[7])
        monkeypatch.undo()
        (lease_file,) = (tmp_path / "store" / "leases").iterdir()
        lease = Lease.loads(lease_file.read_bytes(), str(lease_file))
        assert (lease.reader_id, lease.version, lease.versions) == ("pod-1", reader.version, [reader.version])
        assert json.loads(lease_file.read_bytes())["pid"] == os.getpid()
    finally:
        reader.close()


def test_a_versions_folder_that_links_out_of_the_store_is_refused(tmp_path: Path) -> None:
    """The quick check sees only the two last components; a link anywhere among them still
    sends the open to the full check, which refuses a folder outside the store."""
    store = _store(tmp_path)
    version = store.current()
    assert version is not None
    other = tmp_path / "elsewhere"
    (tmp_path / "store" / "versions").rename(other)
    (tmp_path / "store" / "versions").symlink_to(other)
    with pytest.raises(CorruptVersion, match="symbolic link"):
        store.reader(lease=False)
    with pytest.raises(CorruptVersion, match="symbolic link"):
        store.open_version(version)
    # A link that stays inside the store is still followed, as before.
    (tmp_path / "store" / "versions").unlink()
    inside = tmp_path / "store" / "moved"
    other.rename(inside)
    (tmp_path / "store" / "versions").symlink_to(inside)
    reader = store.reader(lease=False)
    assert reader.version == version
    reader.close()


def _reader_imports() -> str:
    """`READER_IMPORTS` of benchmarks/test_startup.py: the lines its child runs before timing."""
    source = Path(__file__).parent.parent / "benchmarks" / "test_startup.py"
    for node in ast.parse(source.read_text()).body:
        if isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["READER_IMPORTS"]:
            value: str = ast.literal_eval(node.value)
            return value
    raise AssertionError(f"{source} has no READER_IMPORTS")


def test_the_start_up_benchmark_imports_everything_an_open_loads(tmp_path: Path) -> None:
    """The benchmark counts imports as imports and times the open after them: so an open and
    a first lookup (int keys) after `READER_IMPORTS` import no module at all. A module the
    open starts to load on first use shows here, and belongs in those lines (and then in
    what `benchmarks/test_import.py` reports), not in the time of the first answer."""
    store = _store(tmp_path)
    key = int(make_ranked(300, 4, seed=5).keys[3])
    script = (
        "import sys, json, dataclasses\n"
        + _reader_imports()
        + "before = set(sys.modules)\n"
        + "def made():\n"
        + "    ours = [(m, mod) for m, mod in list(sys.modules.items()) if m.startswith('sharedrec')]\n"
        + "    return sorted(f'{m}.{n}' for m, mod in ours for n, v in vars(mod).items()\n"
        + "                  if isinstance(v, type) and dataclasses.is_dataclass(v) and v.__module__ == m)\n"
        + f"reader = sharedrec.open({str(tmp_path / 'store')!r}, create=False).reader()\n"
        + f"reader.get('home', {key})\n"
        + "print(json.dumps(sorted(set(sys.modules) - before)))\n"
        # The counters' dataclass is made when asked for, not by every reader's imports.
        + "print(json.dumps(made()))\n"
        + "print(json.dumps(type(reader.stats()) is sharedrec.ReaderStats))\n"
        + "reader.close()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    loaded, made, stats = done.stdout.splitlines()
    assert json.loads(loaded) == []
    # Making a dataclass runs the code it generates: a reader's imports make only these
    # (ReaderStats is made at the first stats() call).
    assert json.loads(made) == [
        "sharedrec.read.checks.VerifyReport",
        "sharedrec.read.collections.RowKind",
        "sharedrec.read.mmap.RowPlan",
    ]
    assert json.loads(stats) is True
    assert store.current() is not None
