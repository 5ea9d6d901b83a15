"""The reliability suite's tally, printed at the end of the run."""

from __future__ import annotations

import pytest

from ._support import TALLY, Tally


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "reliability" in item.nodeid.split("/"):
            item.add_marker(pytest.mark.reliability)


@pytest.fixture
def tally() -> Tally:
    """The suite-wide counters (scenarios, faults, bad inputs, wrong answers, data lost)."""
    return TALLY


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TALLY.scenarios == 0:
        return
    terminalreporter.write_sep("=", "sharedrec reliability summary")
    for line in TALLY.lines():
        terminalreporter.write_line(line)
