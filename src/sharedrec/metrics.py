"""Prometheus metrics for readers (``pip install 'sharedrec[prometheus]'``).

The collector reads `stats()` when Prometheus scrapes, so lookups pay nothing
for it::

    from prometheus_client import start_http_server
    from sharedrec.metrics import register

    reader = store.reader()
    register(reader, store_label="recs")
    start_http_server(9100)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sharedrec.errors import SharedrecError

if TYPE_CHECKING:
    from sharedrec.read.reader import Reader

__all__ = ["ReaderCollector", "register"]


def _prometheus() -> Any:
    try:
        import prometheus_client
        from prometheus_client import core
    except ImportError:
        raise SharedrecError(
            "Prometheus metrics need prometheus-client: pip install 'sharedrec[prometheus]'"
        ) from None
    return prometheus_client, core


class ReaderCollector:
    """A Prometheus collector exposing one reader's counters, labelled by ``store``."""

    def __init__(self, reader: Reader, store_label: str) -> None:
        self._reader = reader
        self._label = store_label

    def collect(self) -> Iterator[Any]:
        """Yield the metric families (called by the Prometheus client on every scrape)."""
        _, core = _prometheus()
        stats = self._reader.stats()
        labels = ["store"]
        values = [self._label]

        def counter(name: str, doc: str, value: float) -> Any:
            family = core.CounterMetricFamily(f"sharedrec_reader_{name}", doc, labels=labels)
            family.add_metric(values, value)
            return family

        def gauge(name: str, doc: str, value: float) -> Any:
            family = core.GaugeMetricFamily(f"sharedrec_reader_{name}", doc, labels=labels)
            family.add_metric(values, value)
            return family

        yield counter("lookups", "Keys looked up.", stats.lookups)
        yield counter("misses", "Keys not found in the collection asked for.", stats.misses)
        yield counter("fallbacks", "Misses answered by a fallback or default list.", stats.fallbacks_served)
        yield counter("switches", "Moves to another version.", stats.switches)
        yield counter(
            "refresh_failures", "Refreshes that failed or refused a version.", stats.refresh_failures
        )
        yield gauge(
            "version_age_seconds", "Age of the served version (staleness).", stats.version_age_seconds
        )
        yield gauge(
            "ready", "1 while the reader serves a verified version.", 1.0 if self._reader.ready else 0.0
        )
        info = core.InfoMetricFamily("sharedrec_reader_version", "The served version.", labels=labels)
        info.add_metric(values, {"version": stats.version})
        yield info


def register(reader: Reader, store_label: str = "default", registry: Any = None) -> ReaderCollector:
    """Register a collector for ``reader`` (default: the global Prometheus registry)."""
    prometheus_client, _ = _prometheus()
    collector = ReaderCollector(reader, store_label)
    (registry if registry is not None else prometheus_client.REGISTRY).register(collector)
    return collector
