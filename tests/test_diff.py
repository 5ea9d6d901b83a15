"""store.diff: what changed between two versions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sharedrec


@pytest.fixture
def store(any_store: sharedrec.RecommendationStore) -> sharedrec.RecommendationStore:
    """Every test here runs on a local folder and on S3."""
    return any_store


def lists(n: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    items = np.arange(n)[:, None] * 100 + np.arange(k)[None, :]
    scores = np.tile(np.linspace(1.0, 0.1, k), (n, 1))
    return items, scores


def test_added_removed_changed_and_overlap(store: sharedrec.RecommendationStore) -> None:
    keys = np.arange(1000) * 3
    items, scores = lists(1000)
    a = store.publish_ranked("home", keys, items, scores, guards=[])
    new_items = items.copy()
    new_items[:50, 5:] += 10_000  # 50 lists keep their top 5 of 10
    keys_b = np.concatenate([keys[10:], np.arange(20) * 3 + 1])  # 10 removed, 20 added
    items_b = np.concatenate([new_items[10:], lists(20)[0]])
    scores_b = np.concatenate([scores[10:], lists(20)[1]])
    b = store.publish_ranked("home", keys_b, items_b, scores_b, guards=[], ref="canary")
    result = store.diff("current", "canary", k=10)
    assert (result.a, result.b) == (a, b)
    home = result.collections["home"]
    assert (home.added, home.removed, home.changed, home.unchanged) == (20, 10, 40, 950)
    assert home.overlap_at_k == pytest.approx(0.5)
    assert home.top_score_shift == pytest.approx(0.0)
    assert home.removed_sample == keys[:10].tolist()


def test_score_shift_str_keys_and_vectors(store: sharedrec.RecommendationStore) -> None:
    names = [f"user-{i}" for i in range(200)]
    items, scores = lists(200)
    with store.publish(guards=[]) as draft:
        draft.add_ranked("home", names, items, scores)
        draft.add_vectors("emb", names, np.ones((200, 4)))
        draft.add_vectors("gone", [1], np.ones((1, 2)))
    with store.publish(guards=[]) as draft:
        draft.add_ranked("home", names, items, scores + 0.25)
        emb = np.ones((200, 4))
        emb[:7] = 2.0
        draft.add_vectors("emb", names, emb)
    versions = [v.id for v in store.versions()]
    result = store.diff(versions[0], versions[1])
    assert result.collections["home"].changed == 200
    assert result.collections["home"].overlap_at_k == pytest.approx(1.0)
    assert result.collections["home"].top_score_shift == pytest.approx(0.25)
    assert result.collections["emb"].changed == 7
    assert result.only_in_a == ["gone"] and result.only_in_b == []


def test_diff_command(tmp_path: Path) -> None:
    store = sharedrec.open(tmp_path / "s", create=True)
    items, scores = lists(30)
    a = store.publish_ranked("home", np.arange(30), items, scores)
    b = store.publish_ranked("home", np.arange(30), items[::-1].copy(), scores)
    done = subprocess.run(
        [sys.executable, "-m", "sharedrec", "diff", str(tmp_path / "s"), a, b, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["collections"]["home"]["changed"] == 30
    text = subprocess.run(
        [sys.executable, "-m", "sharedrec", "diff", str(tmp_path / "s"), a, b], capture_output=True, text=True
    ).stdout
    assert "home: +0 -0 ~30" in text
