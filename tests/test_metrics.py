"""Prometheus metrics read from a real reader."""

from __future__ import annotations

import pytest

import sharedrec

from conftest import KEYS, publish

prometheus_client = pytest.importorskip("prometheus_client")


def test_collector_exposes_reader_stats(store: sharedrec.RecommendationStore) -> None:
    from sharedrec.metrics import register

    vid = publish(store, 1)
    registry = prometheus_client.CollectorRegistry()
    with store.reader(refresh_interval=None) as reader:
        register(reader, store_label="recs", registry=registry)
        reader.get("home", int(KEYS[0]))
        reader.get_many("home", [int(KEYS[1]), -1])
        text = prometheus_client.generate_latest(registry).decode()
    assert 'sharedrec_reader_lookups_total{store="recs"} 3.0' in text
    assert 'sharedrec_reader_misses_total{store="recs"} 1.0' in text
    assert 'sharedrec_reader_ready{store="recs"} 1.0' in text
    assert f'sharedrec_reader_version_info{{store="recs",version="{vid}"}} 1.0' in text
    assert "sharedrec_reader_version_age_seconds" in text
