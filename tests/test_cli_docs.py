"""Every ``$ sharedrec ...`` line of the docs names a command and options that exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from sharedrec.cli import cli

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])


def console_lines(page: Path) -> list[str]:
    """The ``$ sharedrec`` lines of a page's console blocks, continuations joined."""
    text = page.read_text(encoding="utf-8").replace("\\\n", " ")
    return [match.group(1) for match in re.finditer(r"(?m)^\$ sharedrec (.*)$", text)]


def options_of(command: click.Command) -> set[str]:
    names = {"--help", "-h"}
    for param in command.params:
        names.update(param.opts)
        names.update(param.secondary_opts)
    return names


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_console_lines_use_real_commands_and_options(page: Path) -> None:
    for line in console_lines(page):
        words = shlex.split(line, comments=True)
        command: click.Command = cli
        allowed = options_of(cli)
        while isinstance(command, click.Group) and words and words[0] in command.commands:
            command = command.commands[words.pop(0)]
            allowed |= options_of(command)
        assert command is not cli, f"{page.name}: `sharedrec {line}` names no command"
        unknown = [
            word.split("=")[0] for word in words if word.startswith("-") and word.split("=")[0] not in allowed
        ]
        assert not unknown, f"{page.name}: `sharedrec {line}`: no option {unknown}"


def test_the_cli_page_shows_every_command() -> None:
    page = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    missing = [name for name in cli.commands if f"`sharedrec {name}" not in page]
    assert not missing, f"docs/cli.md does not describe {missing}"
