"""``python -m sharedrec`` and the ``sharedrec`` console script: the ``sharedrec`` command.

A plain ``sharedrec ready`` (the readiness probe, run every few seconds in every reader pod)
is answered before the command itself (click, rich, numpy) loads; see `sharedrec._ready`.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    """Run the ``sharedrec`` command with the process's arguments."""
    from sharedrec._ready import run

    status = run(sys.argv[1:])
    if status is not None:
        sys.exit(status)
    from sharedrec.cli import main as command

    command()


if __name__ == "__main__":
    main()
