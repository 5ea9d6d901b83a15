"""The command's words: library messages in command-line spelling, and Ctrl-C.

Library messages give Python advice (``force=True``, ``store.rollback()``); the Python API
and its docs quote them, so they stay. The command shows them through `GLOSSARY`: each
Python spelling of a fix, as the library writes it, and what to type on the command line
instead. Longer phrases come before the words they contain. The tests check that every
Python phrase still occurs in the library (so the glossary cannot rot) and that no message
keeps a Python spelling the glossary does not cover.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from typing import Any, TypeVar, cast

import click

__all__ = ["GLOSSARY", "CliWords", "Interrupted", "on_interrupt", "speak_cli"]

_F = TypeVar("_F", bound=Callable[..., Any])


def _set_current(match: re.Match[str]) -> str:
    version = match.group("v").strip("'\"")
    return f"`sharedrec set-current STORE {version if version not in ('', 'id') else 'VERSION'}`"


GLOSSARY: tuple[tuple[str, str | Callable[[re.Match[str]], str]], ...] = (
    # guards
    (r"pass force=True \(or different guards=\)", "pass --force (or --no-guards to run no guard)"),
    (r"\(force=True\)", "(--force)"),
    (r"delta=True", "--delta"),
    # creating a store
    (
        r"create the store there with create=True",
        "create it with `sharedrec init STORE` (or publish with --create)",
    ),
    (r"create=True", "--create"),
    # pointers and versions
    (r"store\.set_current\((?P<v>[^()]*)\)", _set_current),
    (r"store\.rollback\(\)", "`sharedrec rollback STORE`"),
    (r"store\.versions\(\)", "`sharedrec versions STORE`"),
    (r"store\.refs\(\)", "`sharedrec refs STORE`"),
    (r"store\.current\(\)", "`sharedrec refs STORE`"),
    (r"add collections inside `with store\.publish\(\) as draft:`", "add collections during a publish"),
    (r"store\.publish\(\)", "`sharedrec publish`"),
    # readers (the command's readers hold no lease; these reach it only through the library)
    (
        r"pass lease_dir= to keep leases elsewhere, or lease=False to read without one",
        "set $SHAREDREC_LEASE_DIR to keep leases elsewhere, or read without a lease",
    ),
    (
        r"give a writable lease_dir, or lease=False to read without one",
        "set $SHAREDREC_LEASE_DIR to a writable folder, or read without a lease",
    ),
    (
        r"publish it with default=\(items, scores\) or fallbacks=\[\.\.\.\]",
        "publish the collection with a default list or fallback collections (Python API)",
    ),
    # ingestion
    (r"pass dedupe=True", "pass --dedupe"),
    (r"\b(user|item|score|rank|vector)_col=", lambda m: f"--{m.group(1)}-col"),
    # lists
    (r"Pass sort=True to sort them", "Pass --sort to sort them"),
    (
        r"use pad= or lengths= for padded rows",
        "give --pad -1 for padded .npz rows, or publish lists of their own length (--format long or lists)",
    ),
    (r"give lengths= or pad=, not both", "give list lengths or --pad, not both"),
    (r"serve_to_all=True needs", "serving one list to every key needs"),
    (
        r"decode the source with errors='replace'",
        "write the input as valid UTF-8 (replace the bad characters)",
    ),
    # object stores
    (
        r"open it with storage_options=\{'[^']*': True\} or (?:\w+|\{\})=1",
        "set $SHAREDREC_SINGLE_WRITER=1 in the writer's environment",
    ),
    (r"\(AWS_\* environment or storage_options\)", "(AWS_* environment; the endpoint: --endpoint-url)"),
    (r"check the location and storage_options", "check the location and --endpoint-url"),
)
_GLOSSARY = [(re.compile(python), cli) for python, cli in GLOSSARY]


def speak_cli(message: str) -> str:
    """A library message with each Python spelling of a fix replaced by the command's."""
    for pattern, replacement in _GLOSSARY:
        message = pattern.sub(replacement, message)
    return message


class CliWords(logging.Filter):
    """Puts the library's log lines in the command's words.

    A filter, not a handler: the lines still reach stderr through Python's last-resort
    handler (warnings and worse), which the library counts on to know they are shown.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = speak_cli(record.getMessage()), ()
        return True


class Interrupted(click.ClickException):
    """Ctrl-C, with what it left behind."""

    exit_code = 130


def on_interrupt(message: str) -> Callable[[_F], _F]:
    """Turn Ctrl-C inside a command into `Interrupted` saying ``message``."""

    def wrap(function: _F) -> _F:
        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except KeyboardInterrupt:
                raise Interrupted(message) from None

        return cast("_F", run)

    return wrap
