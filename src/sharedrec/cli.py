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


@cli.command()
@click.argument("store")
@click.option(
    "--reader-id",
    envvar="SHAREDREC_READER_ID",
    required=True,
    help="The reader to check (default: $SHAREDREC_READER_ID, e.g. the pod name).",
)
@click.option(
    "--lease-dir",
    envvar="SHAREDREC_LEASE_DIR",
    default=None,
    help="Where the reader keeps its lease (default: $SHAREDREC_LEASE_DIR, else STORE/leases).",
)
def ready(store: str, reader_id: str, lease_dir: str | None) -> None:
    """Readiness probe: exit 0 when READER-ID holds a fresh lease on an existing version."""
    from datetime import UTC, datetime

    import sharedrec
    from sharedrec.format import LEASES, Lease

    handle = sharedrec.open(store, create=False)
    folder = Path(lease_dir) if lease_dir else Path(handle.location) / LEASES
    path = folder / f"{reader_id}.json"
    try:
        lease = Lease.loads(path.read_bytes(), str(path))
    except FileNotFoundError:
        raise SharedrecError(
            f"not ready: no lease {path} (the reader has not opened a version yet)"
        ) from None
    now = datetime.now(UTC)
    if lease.expires_at <= now:
        raise SharedrecError(
            f"not ready: the lease of {reader_id} expired {(now - lease.expires_at).total_seconds():.0f} s "
            "ago (its process is stuck or gone)"
        )
    handle.manifest(lease.version)
    age = (now - lease.heartbeat).total_seconds()
    click.echo(f"ready: {reader_id} serves version {lease.version} (heartbeat {age:.1f} s ago)")


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
