"""Publish guards: checks that run on a finished draft before ``CURRENT`` moves.

A broken batch job rarely crashes; it writes an empty, shrunken or scrambled output that
looks valid. Guards compare the new version with the live one and refuse the publish
(`PublishRejected`) before any reader sees it. Their results are
recorded in the manifest (``checks``). ``force=True`` publishes anyway, logged.

A guard is a `Guard` object or any callable ``(new, live) -> bool | str | None``
taking two `Reader` objects (``live`` is None for the first
version): ``None`` or ``True`` passes, ``False`` or a message fails.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from sharedrec.errors import InvalidInput

if TYPE_CHECKING:
    from pydantic import JsonValue

    from sharedrec.read.reader import Reader

__all__ = [
    "DEFAULT_GUARDS",
    "CheckResult",
    "Guard",
    "GuardLike",
    "ListSimilarity",
    "MaxEmptyLists",
    "MaxShrink",
    "MinKeys",
    "run_guards",
]


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one guard."""

    name: str
    passed: bool
    message: str
    values: dict[str, JsonValue] = field(default_factory=dict)


@runtime_checkable
class Guard(Protocol):
    """A named check of a new version against the live one."""

    @property
    def name(self) -> str:
        """The key of the result in the manifest's ``checks``."""
        ...

    def check(self, new: Reader, live: Reader | None) -> CheckResult:
        """Compare ``new`` with ``live`` (None for a store's first version)."""
        ...


GuardLike = Guard | Callable[["Reader", "Reader | None"], "bool | str | None"]


def _fraction(value: float, what: str) -> float:
    if not 0.0 <= value <= 1.0:
        raise InvalidInput(f"{what} must be a fraction between 0 and 1; got {value!r}")
    return float(value)


@dataclass(frozen=True)
class MinKeys:
    """Every collection (or the named ones) holds at least ``minimum`` keys."""

    minimum: int
    collections: Sequence[str] | None = None
    name: str = "min_keys"

    def check(self, new: Reader, live: Reader | None) -> CheckResult:
        """Count keys of the new version."""
        names = self.collections or list(new.collections)
        counts = {n: new.collections[n].count if n in new.collections else 0 for n in names}
        low = {n: c for n, c in counts.items() if c < self.minimum}
        message = (
            f"collections below {self.minimum:,} keys: "
            + ", ".join(f"{n!r} has {c:,}" for n, c in low.items())
            if low
            else f"every collection has at least {self.minimum:,} keys"
        )
        return CheckResult(self.name, not low, message, {"counts": dict(counts), "minimum": self.minimum})


@dataclass(frozen=True)
class MaxShrink:
    """No collection of the live version loses more than ``max_drop`` of its keys, or vanishes."""

    max_drop: float = 0.5
    name: str = "max_shrink"

    def __post_init__(self) -> None:
        _fraction(self.max_drop, "MaxShrink.max_drop")

    def check(self, new: Reader, live: Reader | None) -> CheckResult:
        """Compare key counts collection by collection."""
        if live is None:
            return CheckResult(self.name, True, "first version: nothing to compare with")
        drops: dict[str, JsonValue] = {}
        failures = []
        for name, spec in live.collections.items():
            after = new.collections[name].count if name in new.collections else 0
            drop = 1.0 - after / spec.count
            drops[name] = round(drop, 6)
            if drop > self.max_drop:
                failures.append(
                    f"{name!r} would go from {spec.count:,} to {after:,} keys (-{drop:.0%})"
                    if after
                    else f"{name!r} ({spec.count:,} keys) is missing from the new version"
                )
        message = (
            "; ".join(failures) + f", more than the allowed {self.max_drop:.0%} drop"
            if failures
            else f"no collection lost more than {self.max_drop:.0%} of its keys"
        )
        return CheckResult(self.name, not failures, message, {"drop": drops, "max_drop": self.max_drop})


@dataclass(frozen=True)
class MaxEmptyLists:
    """In every ranked collection at most ``max_ratio`` of the keys have an empty list."""

    max_ratio: float = 0.5
    name: str = "max_empty_lists"

    def __post_init__(self) -> None:
        _fraction(self.max_ratio, "MaxEmptyLists.max_ratio")

    def check(self, new: Reader, live: Reader | None) -> CheckResult:
        """Read the empty-list counts recorded at publish time."""
        ratios: dict[str, JsonValue] = {}
        failures = []
        for name, spec in new.collections.items():
            if spec.kind != "ranked":
                continue
            ratio = spec.empty_lists / spec.count
            ratios[name] = round(ratio, 6)
            if ratio > self.max_ratio:
                failures.append(
                    f"{name!r} has {spec.empty_lists:,} empty lists of {spec.count:,} ({ratio:.0%})"
                )
        message = (
            "; ".join(failures) + f", more than the allowed {self.max_ratio:.0%}"
            if failures
            else f"empty lists stay within {self.max_ratio:.0%} of the keys"
        )
        return CheckResult(
            self.name, not failures, message, {"empty_ratio": ratios, "max_ratio": self.max_ratio}
        )


@dataclass(frozen=True)
class ListSimilarity:
    """Compare the new lists with the live ones on a random sample of live keys.

    Measures, per ranked collection present in both versions:

    * ``coverage``: the share of sampled live keys that the new version still has;
    * ``overlap``: the mean share of the top ``k`` items kept (overlap@k);
    * ``score_shift``: how far the median top score moved, in units of the live
      interquartile range of top scores.

    Each value is checked only when its threshold is set; all are recorded. The sample is
    ``blocks`` runs of consecutive stored rows (rows are in key or key-hash order), so it
    touches a few chunks of each array: on S3 the check downloads a few chunks of the live
    version, not all of it.
    """

    sample: int = 1000
    blocks: int = 8
    k: int = 10
    min_coverage: float | None = 0.5
    min_overlap: float | None = None
    max_score_shift: float | None = None
    seed: int = 0
    name: str = "list_similarity"

    def __post_init__(self) -> None:
        if self.sample < 1 or self.k < 1 or self.blocks < 1:
            raise InvalidInput("ListSimilarity.sample, .blocks and .k must be positive")
        for what in ("min_coverage", "min_overlap"):
            value = getattr(self, what)
            if value is not None:
                _fraction(value, f"ListSimilarity.{what}")

    def check(self, new: Reader, live: Reader | None) -> CheckResult:
        """Sample live keys, look them up in both versions and compare."""
        if live is None:
            return CheckResult(self.name, True, "first version: nothing to compare with")
        rng = np.random.default_rng(self.seed)
        values: dict[str, JsonValue] = {}
        failures = []
        for name, spec in live.collections.items():
            if spec.kind != "ranked" or name not in new.collections:
                continue
            if new.collections[name].kind != "ranked":
                continue
            rows = _clustered_sample(rng, spec.count, self.sample, self.blocks)
            stats = _compare(new, live, name, [live.key_at(name, int(row)) for row in rows], self.k)
            values[name] = dict(stats)
            for label, value, limit, below in (
                ("coverage", stats["coverage"], self.min_coverage, True),
                ("overlap@k", stats["overlap"], self.min_overlap, True),
                ("score shift", stats["score_shift"], self.max_score_shift, False),
            ):
                if limit is None or value is None:
                    continue
                if (value < limit) if below else (abs(value) > limit):
                    bound = "minimum" if below else "maximum"
                    failures.append(f"{name!r} {label} {value:.3f} ({bound} {limit})")
        message = "; ".join(failures) if failures else f"sampled lists agree ({len(values)} collections)"
        thresholds: dict[str, JsonValue] = {
            "min_coverage": self.min_coverage,
            "min_overlap": self.min_overlap,
            "max_score_shift": self.max_score_shift,
            "k": self.k,
        }
        return CheckResult(self.name, not failures, message, {"collections": values, **thresholds})


def _clustered_sample(rng: np.random.Generator, count: int, sample: int, blocks: int) -> list[int]:
    """``sample`` distinct rows of ``range(count)`` in ``blocks`` runs of consecutive rows."""
    if sample >= count:
        return list(range(count))
    run = max(1, sample // max(1, blocks))
    starts = rng.choice(max(1, count - run + 1), size=min(blocks, max(1, count - run + 1)), replace=False)
    return sorted({int(row) for start in starts.tolist() for row in range(start, min(count, start + run))})


def _compare(new: Reader, live: Reader, name: str, keys: list[Any], k: int) -> dict[str, float | None]:
    kept, overlaps, new_top, old_top = 0, [], [], []
    for key in keys:
        old = live.get(name, key, k=k)
        try:
            covered = new.contains(name, key)
        except InvalidInput:  # key type changed: nothing is covered
            covered = False
        if not covered:
            continue
        kept += 1
        fresh = new.get(name, key, k=k)
        if len(old):
            overlaps.append(len(np.intersect1d(old.items, fresh.items)) / min(k, len(old)))
            old_top.append(float(old.scores[0]))
        if len(fresh):
            new_top.append(float(fresh.scores[0]))
    shift = None
    if old_top and new_top:
        q1, q3 = np.percentile(old_top, [25, 75])
        spread = float(q3 - q1) or float(np.std(old_top)) or 1.0
        shift = round((float(np.median(new_top)) - float(np.median(old_top))) / spread, 6)
    return {
        "sampled": len(keys),
        "coverage": round(kept / len(keys), 6) if keys else None,
        "overlap": round(float(np.mean(overlaps)), 6) if overlaps else None,
        "score_shift": shift,
    }


DEFAULT_GUARDS: tuple[Guard, ...] = (MaxShrink(), MaxEmptyLists(), ListSimilarity())
"""Run on every publish unless ``guards=`` says otherwise."""


@dataclass(frozen=True)
class _CallableGuard:
    function: Callable[[Reader, Reader | None], bool | str | None]
    name: str

    def check(self, new: Reader, live: Reader | None) -> CheckResult:
        outcome = self.function(new, live)
        if outcome is None or outcome is True:
            return CheckResult(self.name, True, "passed")
        if outcome is False:
            return CheckResult(self.name, False, "returned False")
        return CheckResult(self.name, False, str(outcome))


def as_guard(guard: GuardLike) -> Guard:
    """Wrap a plain callable as a `Guard`."""
    if isinstance(guard, Guard):
        return guard
    if callable(guard):
        return _CallableGuard(guard, getattr(guard, "__name__", type(guard).__name__))
    raise InvalidInput(f"a guard must be a Guard or a callable (new, live); got {guard!r}")


def run_guards(guards: Sequence[GuardLike], new: Reader, live: Reader | None) -> list[CheckResult]:
    """Run every guard; a guard that raises counts as failed with the exception's message."""
    results = []
    for guard in map(as_guard, guards):
        try:
            results.append(guard.check(new, live))
        except Exception as exc:
            results.append(CheckResult(guard.name, False, f"raised {type(exc).__name__}: {exc}"))
    return results
