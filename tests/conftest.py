"""Shared fixtures: a local store, a synthetic data generator, tagged versions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

import sharedrec


@dataclass
class RankedData:
    """Ranked lists in input order, with the expected list of every key."""

    keys: NDArray[np.int64] | list[str]
    items: NDArray[np.int32]
    scores: NDArray[np.float32]

    def expected(self, row: int, k: int | None = None) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        return self.items[row, :k], self.scores[row, :k]


def make_ranked(n: int, k: int, *, str_keys: bool = False, seed: int = 0) -> RankedData:
    """``n`` keys (sparse int64 ids, or strings) with ``k`` distinct items each, best first."""
    rng = np.random.default_rng(seed)
    ids = rng.choice(10**12, size=n, replace=False).astype(np.int64)
    keys: NDArray[np.int64] | list[str] = [f"user-{i}" for i in ids.tolist()] if str_keys else ids
    gaps = rng.geometric(0.2, size=(n, k))
    items = np.cumsum(gaps, axis=1).astype(np.int32)
    scores = np.sort(rng.random((n, k), dtype=np.float32), axis=1)[:, ::-1].copy()
    return RankedData(keys, items, scores)


@pytest.fixture
def store(tmp_path: Path) -> sharedrec.Store:
    """An empty store in a temporary folder."""
    return sharedrec.open(tmp_path / "store")


@pytest.fixture
def ranked() -> RankedData:
    """500 int64 keys x 20 items."""
    return make_ranked(500, 20)


KEYS = np.arange(200, dtype=np.int64) * 3


def publish(store: sharedrec.Store, tag: int, **options: object) -> str:
    """A version whose every item is ``tag * 1000 + position``."""
    items = np.tile(np.arange(5), (len(KEYS), 1)) + tag * 1000
    scores = np.tile(np.linspace(1, 0, 5), (len(KEYS), 1))
    return store.publish_ranked("home", KEYS, items, scores, metadata={"tag": tag}, **options)  # type: ignore[arg-type]
