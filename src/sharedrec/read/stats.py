"""`ReaderStats`, the counters `Reader.stats()` returns.

A module of its own, loaded at the first ``stats()`` call: making a dataclass runs the code
it generates, time that every reader process paid at import while few ask for counters.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ReaderStats"]


@dataclass(frozen=True)
class ReaderStats:
    """Counters of one reader (approximate under heavy multi-threading)."""

    version: str
    """The version served."""
    version_age_seconds: float
    """How long ago the served version was published: how stale its data is."""
    lookups: int
    """Keys looked up (``get`` calls plus keys of ``get_many``, ``vector``, ``vectors``)."""
    misses: int
    """Keys not found in the collection asked for."""
    fallbacks_served: int
    """Misses answered by a fallback collection or a default list."""
    switches: int
    """Times the reader moved to another version."""
    refresh_failures: int
    """Checks of ``CURRENT`` that failed, or versions refused because they did not verify."""
    last_error: str | None
    """The last refresh failure, if any."""
