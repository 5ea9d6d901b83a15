"""A skewed collection: one 100k-item list among 1,000 ten-item lists.

Padded to the longest list, such a collection stores a hundred times its data and every
batch is as wide as the longest list; stored ragged, it stores about its data and a batch
is as wide as the lists asked for. ``extra_info`` records the stored bytes (every chunk
file of the version), the bytes of the lists (items and scores), and the bytes a 256-key
``get_many`` returns without and with ``k``; the timed figure is ``get`` of a short list,
beside the same call on ``even``, the same short lists without the long one (stored padded),
as the baseline of the same run. ``--smoke`` makes the long list 5,000 items.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

import sharedrec

SHORT_LISTS, SHORT = 1000, 10
LONG_FULL, LONG_SMOKE = 100_000, 5_000
BATCH = 256
LONG_KEY = -1
"""The key of the long list (the short ones are 0..999)."""


@pytest.fixture(scope="module")
def skewed(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, int]]:
    """A store holding the skewed collection ``skew``, and the length of its long list."""
    long = LONG_SMOKE if pytestconfig.getoption("smoke") else LONG_FULL
    folder = tmp_path_factory.mktemp("skewed")
    keys = [LONG_KEY, *range(SHORT_LISTS)]
    items = [np.arange(long, dtype=np.int32)] + [
        np.arange(SHORT, dtype=np.int32) + i for i in range(SHORT_LISTS)
    ]
    scores = [np.linspace(1.0, 0.0, len(row), dtype=np.float32) for row in items]
    store = sharedrec.open(folder / "store", create=True)
    with store.publish(progress=False) as draft:
        draft.add_ranked("skew", keys, items, scores)
        draft.add_ranked("even", keys[1:], items[1:], scores[1:])
    yield folder / "store", long
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("collection", ["skew", "even"])
def test_skewed_get(benchmark: BenchmarkFixture, skewed: tuple[Path, int], collection: str) -> None:
    root, long = skewed
    store = sharedrec.open(root, create=False)
    folders = (root / "versions").glob(f"*/{collection}")
    stored = sum(p.stat().st_size for f in folders for p in f.rglob("*") if p.is_file() and "/c/" in str(p))
    data = (SHORT_LISTS * SHORT + (long if collection == "skew" else 0)) * (4 + 4)
    with store.reader() as reader:
        batch = np.random.default_rng(0).choice(SHORT_LISTS, BATCH, replace=False)
        items, scores, found = reader.get_many(collection, batch)
        assert found.all() and (items[:, :SHORT] >= 0).all()
        fitted = items.nbytes + scores.nbytes
        items, scores, _ = reader.get_many(collection, batch, k=SHORT)
        with_k = items.nbytes + scores.nbytes
        assert len(reader.get("skew", LONG_KEY)) == long
        keys = itertools.cycle(range(SHORT_LISTS))
        for key in range(SHORT_LISTS):  # every chunk mapped before timing
            reader.get(collection, key)
        result = benchmark(lambda: reader.get(collection, next(keys)))
        assert len(result) == SHORT
    benchmark.extra_info.update(
        collection=collection,
        long_list=long if collection == "skew" else 0,
        data_bytes=data,
        stored_bytes=stored,
        stored_over_data=round(stored / data, 3),
        get_many_256_bytes=fitted,
        get_many_256_k10_bytes=with_k,
    )
