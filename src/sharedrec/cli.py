"""The ``sharedrec`` command."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from sharedrec.errors import SharedrecError

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sharedrec")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Share precomputed recommendations through one volume."""
    ctx.obj = {"debug": debug}


@cli.command()
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("sharedrec-demo"),
    show_default=True,
    help="Folder for the demo store and the baseline files (created if needed).",
)
@click.option("--users", type=click.IntRange(min=1), default=1_000_000, show_default=True)
@click.option("--k", "k", type=click.IntRange(min=1, max=10_000), default=100, show_default=True)
def demo(root: Path, users: int, k: int) -> None:
    """Publish a synthetic data set to a local store and serve it from fresh processes."""
    from sharedrec.demo import run_demo

    run_demo(root, users, k)


@cli.command()
@click.argument("store")
def info(store: str) -> None:
    """List the versions of a store and which one is live."""
    import sharedrec

    handle = sharedrec.open(store, create=False)
    versions = handle.versions()
    if not versions:
        click.echo(f"{handle.location}: no versions yet")
    for version in versions:
        live = "  (live)" if version.current else ""
        counts = ", ".join(f"{name}: {count:,} keys" for name, count in version.collections.items())
        click.echo(f"{version.id}  {version.size_bytes / 1e6:,.1f} MB  {counts}{live}")


def main() -> None:
    """Entry point of the console script: one clear line per error unless --debug."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except SharedrecError as exc:
        if "--debug" in sys.argv:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
