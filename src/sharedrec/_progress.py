"""Progress reporting for long operations: rich bars on a terminal, plain lines or nothing
otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal, Protocol

__all__ = ["ProgressMode", "Reporter", "reporter"]

ProgressMode = bool | Literal["plain"] | None
"""True: bars; "plain": a line at every quarter (logs, CI); False: nothing; None: bars on a
terminal, nothing otherwise."""


class Task(Protocol):
    def advance(self, amount: int) -> None: ...


class _Silent:
    def advance(self, amount: int) -> None:
        pass


class _RichTask:
    def __init__(self, progress: Any, task_id: Any) -> None:
        self._progress = progress
        self._id = task_id

    def advance(self, amount: int) -> None:
        self._progress.advance(self._id, amount)


class _PlainTask:
    """Prints a line when each quarter of the work is done."""

    def __init__(self, description: str, total: int) -> None:
        self._description = description
        self._total = max(total, 1)
        self._done = 0
        self._next = 0.25
        self._started = time.monotonic()
        print(f"{description}: started ({total / 1e6:,.1f} MB)", file=sys.stderr, flush=True)

    def advance(self, amount: int) -> None:
        self._done += amount
        while self._done / self._total >= self._next and self._next <= 1.0:
            seconds = time.monotonic() - self._started
            print(f"{self._description}: {self._next:.0%} in {seconds:.1f} s", file=sys.stderr, flush=True)
            self._next += 0.25


class Reporter:
    """Creates one progress bar (or plain progress lines) per step; silent when disabled."""

    def __init__(self, enabled: bool, plain: bool = False) -> None:
        self.enabled = enabled
        self.plain = plain

    @contextmanager
    def task(self, description: str, total_bytes: int) -> Iterator[Task]:
        """A bar counting ``total_bytes`` for the duration of the ``with`` block."""
        if not self.enabled:
            yield _Silent()
            return
        if self.plain:
            yield _PlainTask(description, total_bytes)
            return
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
        with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
            yield _RichTask(progress, progress.add_task(description, total=total_bytes))


def reporter(progress: ProgressMode) -> Reporter:
    """``None`` shows bars only when stderr is a terminal; ``"plain"`` prints lines."""
    if progress == "plain":
        return Reporter(True, plain=True)
    return Reporter(sys.stderr.isatty() if progress is None else bool(progress))
