"""The ``sharedrec`` logger of the read path, with `logging` imported at the first message.

`logging` (and the ``traceback`` and ``string`` modules it loads) was a fifth of what a
reader process imported beyond numpy, for messages most processes never log. ``log`` is
``logging.getLogger("sharedrec")`` in all but its type: each attribute is looked up on that
logger, so handlers and levels configured at any time apply as usual.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import logging

__all__ = ["log"]


class _Logger:
    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        import logging

        return getattr(logging.getLogger("sharedrec"), name)


log = cast("logging.Logger", _Logger())
