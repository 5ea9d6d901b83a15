"""The command speaks its own language: no Python spelling of a fix reaches its errors.

Library messages give Python advice (``force=True``, ``store.rollback()``) and stay as they
are; the command shows them through `sharedrec._cli_words.GLOSSARY`. These tests keep the glossary
honest both ways: every entry still matches a message of the library, and every message
that gives Python advice is covered by an entry.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sharedrec
from sharedrec.cli import GLOSSARY, speak_cli

SOURCE = Path(sharedrec.__file__).parent

# Where the library's messages are not the command's: the Kubernetes generator names its
# own flags (k8s/cli.py maps its config fields to them), the demo prints Python on purpose,
# and the command's own words (cli.py, and the glossary in _cli_words.py) are its own.
NOT_MESSAGES = ("k8s", "demo.py", "cli.py", "_cli_words.py")

PYTHON_ADVICE = (
    re.compile(r"\b\w+=(?:True|False|\[\]|None)\b"),  # force=True, lease=False
    re.compile(r"\bstore\.\w+\("),  # store.rollback()
    re.compile(r"\b(?:pass|give|use|with|or|different)\s+\w+="),  # pass lease_dir=, use pad=
)


def _text(node: ast.expr) -> str:
    """A string expression as the message reads, ``{}`` where a value goes."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(_text(part) if isinstance(part, ast.Constant) else "{}" for part in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _text(node.left) + _text(node.right)
    return "{}"


def library_messages() -> list[tuple[str, str]]:
    """Every string the library builds (messages, log lines), with where it is; no docstrings."""
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        relative = path.relative_to(SOURCE)
        if relative.parts[0] in NOT_MESSAGES:
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        }
        inside: set[int] = set()
        for node in ast.walk(tree):
            if id(node) in inside or id(node) in docstrings:
                continue
            if isinstance(node, ast.BinOp) and not isinstance(node.op, ast.Add):
                continue
            if isinstance(node, ast.Constant | ast.JoinedStr | ast.BinOp):
                inside.update(id(child) for child in ast.walk(node))
                text = _text(node)
                if text != "{}":
                    found.append((f"{relative}:{node.lineno}", text))
    return found


def test_every_glossary_entry_matches_a_library_message() -> None:
    messages = [text for _, text in library_messages()]
    stale = [python for python, _ in GLOSSARY if not any(re.search(python, text) for text in messages)]
    assert not stale, f"glossary entries no message of the library says any more: {stale}"


def test_no_message_keeps_python_advice_through_the_glossary() -> None:
    left = []
    for where, text in library_messages():
        shown = speak_cli(text)
        hits = [match.group(0) for pattern in PYTHON_ADVICE for match in pattern.finditer(shown)]
        if hits:
            left.append(f"{where}: {hits} in {shown!r}")
    assert not left, "Python advice the glossary does not translate:\n" + "\n".join(left)


def test_the_scan_sees_python_advice() -> None:
    # The scan is only worth its silence if it finds the advice it is meant to find.
    said = " ".join(text for _, text in library_messages())
    for phrase in ("force=True", "store.rollback()", "store.set_current(", "lease=False", "sort=True"):
        assert phrase in said
    assert speak_cli("pass force=True (or different guards=) if") == (
        "pass --force (or --no-guards to run no guard) if"
    )
    assert (
        speak_cli("store.set_current('v1') makes it live") == "`sharedrec set-current STORE v1` makes it live"
    )


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sharedrec", *args], capture_output=True, text=True, timeout=300
    )


def no_python(stderr: str) -> None:
    assert "error: " in stderr, stderr
    hits = [match.group(0) for pattern in PYTHON_ADVICE for match in pattern.finditer(stderr)]
    assert not hits, stderr


def publish(store: Path, n_keys: int, *collections: str) -> str:
    keys = np.arange(n_keys)
    handle = sharedrec.open(store, create=True)
    with handle.publish() as draft:
        for name in collections:
            draft.add_ranked(name, keys, np.ones((n_keys, 2), dtype=np.int64), np.ones((n_keys, 2)))
    return draft.version_id


def test_a_guard_refusal_names_the_flags(tmp_path: Path) -> None:
    store = tmp_path / "store"
    publish(store, 100, "home")
    np.savez(
        tmp_path / "small.npz",
        keys=np.arange(10),
        items=np.ones((10, 2), dtype=np.int64),
        scores=np.ones((10, 2)),
    )
    result = run("publish", str(store), str(tmp_path / "small.npz"), "-c", "home", "--format", "npz")
    assert result.returncode == 1 and "publish guard(s)" in result.stderr
    assert "--force" in result.stderr and "--no-guards" in result.stderr
    assert "--delta" not in result.stderr  # a delta would not help: it takes the full data
    no_python(result.stderr)


def test_a_guard_refusal_for_a_missing_collection_offers_delta(tmp_path: Path) -> None:
    store = tmp_path / "store"
    publish(store, 100, "home", "similar")
    np.savez(
        tmp_path / "home.npz",
        keys=np.arange(100),
        items=np.ones((100, 2), dtype=np.int64),
        scores=np.ones((100, 2)),
    )
    result = run("publish", str(store), str(tmp_path / "home.npz"), "-c", "home", "--format", "npz")
    assert result.returncode == 1
    assert "keep ['similar'] of the live version, publish with --delta" in result.stderr
    assert "--force" in result.stderr and "--no-guards" in result.stderr
    no_python(result.stderr)
    done = run("publish", str(store), str(tmp_path / "home.npz"), "-c", "home", "--format", "npz", "--delta")
    assert done.returncode == 0, done.stderr
    assert sharedrec.open(store, create=False).versions()[-1].collections == {"home": 100, "similar": 100}


def test_python_api_guard_message_says_delta_true(tmp_path: Path) -> None:
    publish(tmp_path, 100, "home", "similar")
    with pytest.raises(sharedrec.PublishRejected, match=r"publish with delta=True"):
        publish(tmp_path, 100, "home")


def test_npz_lists_out_of_order_and_padded(tmp_path: Path) -> None:
    store = tmp_path / "store"
    np.savez(
        tmp_path / "u.npz",
        keys=np.array([1, 2]),
        items=np.array([[1, 2], [3, -1]]),
        scores=np.array([[1.0, 2.0], [2.0, 0.0]]),
    )
    args = ("publish", str(store), str(tmp_path / "u.npz"), "-c", "home", "--format", "npz", "--create")
    padded = run(*args)
    assert padded.returncode == 1 and "--pad -1" in padded.stderr
    no_python(padded.stderr)
    unsorted = run(*args, "--pad", "-1")
    assert unsorted.returncode == 1 and "Pass --sort to sort them" in unsorted.stderr
    no_python(unsorted.stderr)
    assert run(*args, "--pad", "-1", "--sort").returncode == 0
    got = run("get", str(store), "home", "1", "2")
    assert [hit["items"] for hit in __import__("json").loads(got.stdout)["results"]] == [[2, 1], [3]]


def test_a_missing_store_and_a_corrupt_pointer(tmp_path: Path) -> None:
    missing = run("get", str(tmp_path / "nowhere"), "home", "1")
    assert "`sharedrec init STORE` (or publish with --create)" in missing.stderr
    no_python(missing.stderr)
    vid = publish(tmp_path / "store", 5, "home")
    (tmp_path / "store" / "CURRENT").write_text("{not json")
    for args in (["info", str(tmp_path / "store")], ["get", str(tmp_path / "store"), "home", "1"]):
        result = run(*args)
        assert result.returncode == 1 and "`sharedrec set-current STORE VERSION`" in result.stderr
        no_python(result.stderr)
    fixed = run("set-current", str(tmp_path / "store"), vid)
    assert fixed.returncode == 0 and fixed.stdout.strip() == f"live version: {vid}"
    assert "replacing it" in fixed.stderr and "`sharedrec set-current STORE VERSION`" in fixed.stderr
    assert "store.set_current" not in fixed.stderr  # the warning is in the command's words too


def test_ingestion_errors_name_the_command_flags(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    store = tmp_path / "store"
    assert run("init", str(store)).returncode == 0
    doubled = tmp_path / "doubled.parquet"
    pq.write_table(pa.table({"user": [1, 1, 2], "item": [7, 7, 8], "score": [0.9, 0.8, 0.5]}), doubled)
    done = run("publish", str(store), str(doubled), "-c", "home")
    assert done.returncode == 1
    no_python(done.stderr)
    assert "--dedupe" in done.stderr and "dedupe=True" not in done.stderr
    renamed = tmp_path / "renamed.parquet"
    pq.write_table(pa.table({"uid": [1], "iid": [7], "s": [0.9]}), renamed)
    done = run("publish", str(store), str(renamed), "-c", "home")
    assert done.returncode == 1
    no_python(done.stderr)
    assert "--user-col" in done.stderr and "--item-col" in done.stderr and "--score-col" in done.stderr
    # With the flag, the best row of the pair is kept and the publish goes through.
    done = run("publish", str(store), str(doubled), "-c", "home", "--dedupe")
    assert done.returncode == 0, done.stderr
    assert json_get(store, "1") == [7]


def json_get(store: Path, key: str) -> list[int]:
    import json

    done = run("get", str(store), "home", key)
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)["results"]
    assert str(result["key"]) == key
    return list(result["items"])
