"""``sharedrec ready``, the readiness probe, as the kubelet runs it: a fresh process each time.

The probe runs every few seconds in every reader pod, under the pod's CPU limit: it must
load only what it needs (no numpy, click, rich or pydantic), and say exactly what the full
command says.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

import sharedrec
from sharedrec._ready import run

HEAVY = {"numpy", "click", "rich", "pydantic", "zarr", "fsspec", "s3fs", "yaml"}

# The full command, bypassing the entry point's fast path: what `sharedrec ready` printed
# before the probe had one.
FULL_COMMAND = "import sys; from sharedrec.cli import main; sys.argv[0] = 'sharedrec'; main()"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("SHAREDREC_READER_ID", "SHAREDREC_LEASE_DIR")}


def probe(*args: str, full: bool = False, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run the probe in a fresh process: exit status, stdout, stderr."""
    head = ["-c", FULL_COMMAND] if full else ["-m", "sharedrec"]
    done = subprocess.run(
        [sys.executable, *head, "ready", *args],
        capture_output=True,
        text=True,
        env=env or _env(),
        timeout=120,
    )
    return done.returncode, done.stdout, done.stderr


def imported(*args: str) -> set[str]:
    """The top-level packages a ``sharedrec ready`` process imports (``python -X importtime``)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "sharedrec", "ready", *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    found = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+([\w.]+)$", done.stderr, flags=re.MULTILINE)
    assert found, done.stderr
    return {name.split(".")[0] for name in found}


@pytest.fixture
def store(tmp_path: Path) -> sharedrec.RecommendationStore:
    handle = sharedrec.open(tmp_path / "store", create=True)
    handle.publish_vectors("emb", [1, 2], np.ones((2, 2), dtype=np.float32))
    return handle


@pytest.fixture
def serving(store: sharedrec.RecommendationStore) -> Iterator[sharedrec.Reader]:
    with store.reader(reader_id="pod-1", refresh_interval=None) as reader:
        yield reader


def test_a_ready_probe_loads_nothing_heavy(store: sharedrec.RecommendationStore, serving: object) -> None:
    loaded = imported(store.location, "--reader-id", "pod-1")
    assert not loaded & HEAVY, sorted(loaded & HEAVY)
    # Nor pathlib, which with urllib.parse behind it cost a tenth of the probe's CPU time.
    assert "pathlib" not in loaded


def test_a_failing_probe_loads_no_numpy_nor_pydantic(store: sharedrec.RecommendationStore) -> None:
    # Not ready (no reader yet): the message goes through the command's words, which load click.
    loaded = imported(store.location, "--reader-id", "pod-1")
    assert not loaded & {"numpy", "rich", "pydantic", "zarr"}, sorted(loaded & HEAVY)


def _same(text: str) -> str:
    # The heartbeat's age and the lease's expiry differ between two runs.
    return re.sub(r"\d+(\.\d+)? s ago", "N s ago", text)


def test_the_probe_says_what_the_full_command_says(
    store: sharedrec.RecommendationStore, tmp_path: Path
) -> None:
    location = store.location
    cases: list[tuple[tuple[str, ...], dict[str, str]]] = [
        ((str(tmp_path / "nowhere"), "--reader-id", "pod-1"), {}),  # no store
        ((location, "--reader-id", "pod-1"), {}),  # no lease yet
        ((location,), {}),  # which reader?
        ((location,), {"SHAREDREC_READER_ID": "pod-1"}),
        ((location, "--reader-id=pod-1", f"--lease-dir={tmp_path / 'elsewhere'}"), {}),
        ((location, "--lease-dir", str(tmp_path / "elsewhere")), {"SHAREDREC_READER_ID": "pod-1"}),
    ]
    answers = []
    for args, extra in cases:
        env = {**_env(), **extra}
        lean, full = probe(*args, env=env), probe(*args, env=env, full=True)
        assert (lean[0], _same(lean[1]), _same(lean[2])) == (full[0], _same(full[1]), _same(full[2])), args
        answers.append(lean)
    assert [code for code, _, _ in answers] == [1, 1, 2, 1, 1, 1]
    assert answers[0][2].startswith("error: no store at") and "sharedrec init STORE" in answers[0][2]
    with store.reader(reader_id="pod-1", refresh_interval=None) as reader:
        for args in ((location, "--reader-id", "pod-1"), (location, "--reader-id=pod-1")):
            lean, full = probe(*args), probe(*args, full=True)
            assert lean[0] == full[0] == 0, lean[2]
            assert (
                _same(lean[1])
                == _same(full[1])
                == f"ready: pod-1 serves version {reader.version} (heartbeat N s ago)\n"
            )


def test_the_probe_sees_expired_and_warming_leases_as_the_command_does(
    store: sharedrec.RecommendationStore,
) -> None:
    folder = Path(store.location) / "leases"
    folder.mkdir(exist_ok=True)
    version = store.current()
    now = datetime.now(UTC)
    lease = {
        "reader_id": "pod-w",
        "host": "h",
        "pid": 7,
        "version": version,
        "versions": [version],
        "started_at": now.isoformat(),
        "heartbeat": now.isoformat(),
        "expires_at": (now + timedelta(minutes=10)).isoformat(),
        "warming": True,
    }
    (folder / "pod-w.7-aaaaaa.json").write_text(json.dumps(lease))
    expired = {
        **lease,
        "reader_id": "pod-x",
        "warming": False,
        "expires_at": (now - timedelta(hours=1)).isoformat(),
    }
    (folder / "pod-x.7-aaaaaa.json").write_text(json.dumps(expired))
    for reader_id, said in (("pod-w", "still warming its cache"), ("pod-x", "expired")):
        lean, full = (
            probe(store.location, "--reader-id", reader_id),
            probe(store.location, "--reader-id", reader_id, full=True),
        )
        assert lean[0] == full[0] == 1
        assert said in lean[2] and _same(lean[2]) == _same(full[2])


@pytest.mark.parametrize(
    "args",
    [
        ["info", "STORE"],
        ["ready"],
        ["ready", "--help"],
        ["ready", "STORE", "--debug"],
        ["ready", "STORE", "--reader-id"],
        ["ready", "STORE", "--reader-id="],
        ["ready", "STORE", "--reader-id", "--lease-dir", "x"],
        ["ready", "STORE", "--reader-id", "a", "--reader-id", "b"],
        ["ready", "STORE", "OTHER"],
        ["ready", "STORE", "--unknown"],
        ["ready", "--", "STORE"],
    ],
)
def test_anything_but_a_plain_probe_goes_to_the_full_command(args: list[str]) -> None:
    # Help, --debug and mistakes get the full command's parsing and messages.
    assert run(args) is None


def test_help_and_mistakes_still_get_the_full_command(store: sharedrec.RecommendationStore) -> None:
    code, out, _ = probe("--help")
    assert code == 0 and "Readiness probe" in out and "--reader-id" in out
    code, _, err = probe(store.location, "--unknown")
    assert code == 2 and "--unknown" in err
