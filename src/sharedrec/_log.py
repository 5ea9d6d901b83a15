"""The ``sharedrec`` logger of the read path, with `logging` imported at the first message.

`logging` (and the ``traceback`` and ``string`` modules it loads) was a fifth of what a
reader process imported beyond numpy, for messages most processes never log. ``log`` is
``logging.getLogger("sharedrec")`` in all but its type: each attribute is looked up on that
logger, so handlers and levels configured at any time apply as usual.

A message must never replace the error it reports: when `logging` cannot be imported by
then (the process dropped the rights to read the standard library, or its installation
changed under it), the message goes to standard error instead.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import logging

__all__ = ["log"]


class _Logger:
    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            import logging
        except ImportError:
            return _to_stderr
        return getattr(logging.getLogger("sharedrec"), name)


def _to_stderr(message: object, *args: object, **_: object) -> None:
    """A log call's message on standard error, for a process that cannot import `logging`."""
    try:
        text = str(message) % args if args else str(message)
    except (TypeError, ValueError):
        text = f"{message} {args}"
    print(f"sharedrec: {text}", file=sys.stderr)


log = cast("logging.Logger", _Logger())
