"""Progress reporting for long operations: rich bars on a terminal, nothing otherwise."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

__all__ = ["Reporter", "reporter"]


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


class Reporter:
    """Creates one progress bar per step; silent when disabled."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    @contextmanager
    def task(self, description: str, total_bytes: int) -> Iterator[Task]:
        """A bar counting ``total_bytes`` for the duration of the ``with`` block."""
        if not self.enabled:
            yield _Silent()
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


def reporter(progress: bool | None) -> Reporter:
    """``None`` shows bars only when stderr is a terminal."""
    return Reporter(sys.stderr.isatty() if progress is None else progress)
