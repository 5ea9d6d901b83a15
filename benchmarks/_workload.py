"""Synthetic ranked lists for the benchmarks, published once and saved as .npy baselines.

Users have sparse random int64 ids; every user has ``k`` distinct items drawn from a
catalogue whose popularity follows a Zipf law (exponent 1), listed most popular first,
with scores descending along the list.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

import sharedrec

__all__ = ["COLLECTION", "N_ITEMS", "K", "Settings", "Workload", "build_workload", "make_arrays", "write_npy"]

COLLECTION = "home"
K = 100
N_ITEMS = 200_000
"""Size of the item catalogue."""

_BLOCK_ROWS = 1 << 16
"""Users generated at once: bounds the temporaries to a few hundred MB."""


@dataclass(frozen=True)
class Workload:
    """One size of the benchmark data: the arrays in memory and their two copies on disk.

    ``keys``, ``items`` and ``scores`` are in publish input order (random key order).
    ``store`` is a sharedrec store holding them as collection ``home``; ``npy`` holds
    ``keys.npy`` (sorted ascending) and ``items.npy`` / ``scores.npy`` with rows in the
    same sorted-key order, for the numpy baselines.
    """

    n_users: int
    k: int
    keys: NDArray[np.int64]
    items: NDArray[np.int32]
    scores: NDArray[np.float32]
    store: Path
    npy: Path
    sorted_keys: NDArray[np.int64]
    order: NDArray[np.intp]
    """``keys[order]`` is ``sorted_keys``."""

    @property
    def input_bytes(self) -> int:
        """Bytes of the three input arrays."""
        return self.keys.nbytes + self.items.nbytes + self.scores.nbytes

    def npy_file(self, name: str) -> Path:
        """The baseline file of ``keys``, ``items`` or ``scores``."""
        return self.npy / f"{name}.npy"

    def sample_keys(self, count: int, seed: int) -> NDArray[np.int64]:
        """``count`` existing keys drawn at random (with replacement)."""
        rng = np.random.default_rng(seed)
        return self.keys[rng.integers(0, self.n_users, size=count)]

    def expected(self, keys: NDArray[np.int64]) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """The items and scores rows of existing ``keys``."""
        rows = self.order[np.searchsorted(self.sorted_keys, keys)]
        assert np.array_equal(self.keys[rows], keys), "expected() asked for a key that does not exist"
        return self.items[rows], self.scores[rows]


@dataclass(frozen=True)
class Settings:
    """How hard every benchmark works; smoke mode keeps the whole run to seconds."""

    startup_rounds: int
    publish_rounds: int
    rotation: int
    """Keys drawn up front that single-key lookups cycle through."""
    latency_calls: int
    """Individually timed calls behind the p50/p99 figures in ``extra_info``."""
    batch: int
    batches: int


def make_arrays(
    n_users: int, k: int, *, n_items: int = N_ITEMS, seed: int = 0
) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.float32]]:
    """``(keys, items, scores)``: sparse int64 user ids, ``(n_users, k)`` items and scores."""
    if k > n_items:
        raise ValueError(f"k={k} distinct items need a catalogue of at least k items, not {n_items}")
    rng = np.random.default_rng(seed)
    keys = _sparse_ids(rng, n_users)
    # Popularity rank -> item id, so that popular items are not simply the small ids.
    catalogue = rng.permutation(n_items).astype(np.int32)
    items = np.empty((n_users, k), dtype=np.int32)
    for start in range(0, n_users, _BLOCK_ROWS):
        stop = min(n_users, start + _BLOCK_ROWS)
        items[start:stop] = catalogue[_distinct_ranks(rng, stop - start, k, n_items)]
    # 1 - cumulative positive gaps: non-increasing along every row, even after float32 rounding.
    scores = rng.random((n_users, k), dtype=np.float32)
    np.cumsum(scores, axis=1, out=scores)
    scores *= np.float32(-1.0 / k)
    scores += np.float32(1.0)
    return keys, items, scores


def build_workload(n_users: int, folder: Path, *, k: int = K, seed: int = 0) -> Workload:
    """Generate the arrays, publish them to ``folder/store`` and save ``folder/npy/*.npy``."""
    keys, items, scores = make_arrays(n_users, k, seed=seed)
    store = folder / "store"
    sharedrec.open(store, create=True).publish_ranked(COLLECTION, keys, items, scores, progress=False)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    npy = folder / "npy"
    npy.mkdir()
    np.save(npy / "keys.npy", sorted_keys)
    np.save(npy / "items.npy", items[order])
    np.save(npy / "scores.npy", scores[order])
    return Workload(n_users, k, keys, items, scores, store, npy, sorted_keys, order)


def write_npy(folder: Path, arrays: dict[str, NDArray[np.generic]]) -> None:
    """``np.save`` every array to ``folder/<name>.npy``, fsynced like a publish."""
    folder.mkdir()
    for name, array in arrays.items():
        with open(folder / f"{name}.npy", "wb") as f:
            np.save(f, array)
            f.flush()
            os.fsync(f.fileno())
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sparse_ids(rng: np.random.Generator, n: int) -> NDArray[np.int64]:
    """``n`` distinct random ids spread over the int64 range, in random order."""
    ids = np.unique(rng.integers(1, 2**62, size=n + n // 64 + 64, dtype=np.int64))
    while len(ids) < n:  # a collision among 2**62 values: practically never
        ids = np.unique(np.concatenate([ids, rng.integers(1, 2**62, size=n, dtype=np.int64)]))
    return rng.permutation(ids)[:n]


def _distinct_ranks(rng: np.random.Generator, rows: int, k: int, n_items: int) -> NDArray[np.int32]:
    """``k`` distinct popularity ranks per row, most popular (smallest) first."""
    out = np.empty((rows, k), dtype=np.int32)
    todo = np.arange(rows)
    draws = 2 * k
    log_n = np.log(n_items)
    while todo.size:
        # floor(n_items ** u) - 1 for uniform u draws rank r with probability ~ 1 / (r + 1).
        ranks = np.exp(rng.random((todo.size, draws)) * log_n).astype(np.int32) - 1
        np.minimum(ranks, n_items - 1, out=ranks)
        ranks.sort(axis=1)
        # Repeats move past the end (n_items sorts last), leaving each row's distinct ranks first.
        ranks[:, 1:][ranks[:, 1:] == ranks[:, :-1]] = n_items
        ranks.sort(axis=1)
        done = ranks[:, k - 1] < n_items
        out[todo[done]] = ranks[done, :k]
        todo = todo[~done]
        draws *= 2
    return out
