"""Progress reporting for long operations: rich bars on a terminal, plain lines or nothing
otherwise.

Short steps stay quiet: a step shows nothing until it has run for `QUIET_SECONDS` (measured
with `clock`, which tests may replace), so verifying a small version or writing a small
collection prints no progress at all, while a step that runs longer shows its bar or lines
from then on, and always its end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal, Protocol

__all__ = ["QUIET_SECONDS", "ProgressMode", "Reporter", "clock", "reporter"]

ProgressMode = bool | Literal["plain"] | None
"""True: bars; "plain": a line at every quarter (logs, CI); False: nothing; None: bars on a
terminal, nothing otherwise."""

QUIET_SECONDS = 0.5
"""A step shows progress only once it has run this long; shorter steps print nothing."""

clock: Callable[[], float] = time.monotonic
"""The clock steps are timed with (seconds; only differences matter)."""


class Task(Protocol):
    def advance(self, amount: int) -> None: ...


class _Silent:
    def advance(self, amount: int) -> None:
        pass


class _Shown(Protocol):
    def advance(self, amount: int) -> None: ...

    def close(self) -> None: ...


class _RichBar:
    def __init__(self, description: str, total: int, done: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        self._progress = Progress(*columns, console=Console(stderr=True), transient=False)
        self._progress.start()
        self._id = self._progress.add_task(description, total=total, completed=done)

    def advance(self, amount: int) -> None:
        self._progress.advance(self._id, amount)

    def close(self) -> None:
        self._progress.stop()


class _PlainLines:
    """Prints a line when shown, then one when each further quarter of the work is done."""

    def __init__(
        self, description: str, total: int, done: int, started: float, now: Callable[[], float]
    ) -> None:
        self._description = description
        self._total = max(total, 1)
        self._done = done
        self._started = started
        self._now = now
        # Quarters passed before the step was shown are summed up in the first line.
        self._next = 0.25
        while self._done / self._total >= self._next and self._next < 1.0:
            self._next += 0.25
        print(
            f"{description}: {min(done / self._total, 1.0):.0%} of {total / 1e6:,.1f} MB in "
            f"{now() - started:.1f} s",
            file=sys.stderr,
            flush=True,
        )

    def advance(self, amount: int) -> None:
        self._done += amount
        while self._done / self._total >= self._next and self._next <= 1.0:
            seconds = self._now() - self._started
            print(f"{self._description}: {self._next:.0%} in {seconds:.1f} s", file=sys.stderr, flush=True)
            self._next += 0.25

    def close(self) -> None:
        pass


class _Deferred:
    """Counts the work, and shows it (bar or lines) only once the step has run long enough."""

    def __init__(
        self, description: str, total: int, plain: bool, quiet: float, now: Callable[[], float]
    ) -> None:
        self._description = description
        self._total = total
        self._plain = plain
        self._quiet = quiet
        self._now = now
        self._started = now()
        self._done = 0
        self._shown: _Shown | None = None

    def advance(self, amount: int) -> None:
        if self._shown is not None:
            self._shown.advance(amount)
            return
        self._done += amount
        if self._now() - self._started >= self._quiet:
            if self._plain:
                self._shown = _PlainLines(
                    self._description, self._total, self._done, self._started, self._now
                )
            else:
                self._shown = _RichBar(self._description, self._total, self._done)

    def close(self) -> None:
        if self._shown is not None:
            self._shown.close()


class Reporter:
    """Creates one progress bar (or plain progress lines) per step; silent when disabled.

    A step shows nothing until it has run for ``quiet_seconds`` by ``now`` (default: the
    module's `QUIET_SECONDS` and `clock`, read when the reporter is made).
    """

    def __init__(
        self,
        enabled: bool,
        plain: bool = False,
        *,
        quiet_seconds: float | None = None,
        now: Callable[[], float] | None = None,
    ) -> None:
        self.enabled = enabled
        self.plain = plain
        self.quiet_seconds = QUIET_SECONDS if quiet_seconds is None else quiet_seconds
        self.now = clock if now is None else now

    @contextmanager
    def task(self, description: str, total_bytes: int) -> Iterator[Task]:
        """A bar counting ``total_bytes`` for the duration of the ``with`` block."""
        if not self.enabled:
            yield _Silent()
            return
        deferred = _Deferred(description, total_bytes, self.plain, self.quiet_seconds, self.now)
        try:
            yield deferred
        finally:
            deferred.close()


def reporter(progress: ProgressMode) -> Reporter:
    """``None`` shows bars only when stderr is a terminal; ``"plain"`` prints lines."""
    if progress == "plain":
        return Reporter(True, plain=True)
    return Reporter(sys.stderr.isatty() if progress is None else bool(progress))
