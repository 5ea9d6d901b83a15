"""The ``sharedrec`` command."""

from __future__ import annotations

import dataclasses
import glob
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from sharedrec.errors import InvalidInput, KeyNotFound, SharedrecError, UnknownCollection
from sharedrec.k8s.cli import k8s

if TYPE_CHECKING:
    from pydantic import JsonValue

    from sharedrec._progress import ProgressMode
    from sharedrec.store import RecommendationStore

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


def _open(location: str, endpoint_url: str | None, *, create: bool = False) -> RecommendationStore:
    import sharedrec

    options = {"endpoint_url": endpoint_url} if endpoint_url else None
    return sharedrec.open(location, create=create, storage_options=options)


_endpoint = click.option(
    "--endpoint-url",
    envvar="SHAREDREC_ENDPOINT_URL",
    default=None,
    help="S3-compatible endpoint for s3:// stores and inputs (default: AWS; $SHAREDREC_ENDPOINT_URL).",
)
_quiet = click.option("--quiet", "-q", is_flag=True, help="No progress output.")


def _progress(quiet: bool) -> ProgressMode:
    """Bars on a terminal, plain lines otherwise, nothing with --quiet."""
    if quiet:
        return False
    return True if sys.stderr.isatty() else "plain"


def _echo_json(data: object) -> None:
    click.echo(json.dumps(data, indent=1, default=str))


@cli.command()
@click.argument("store")
@_endpoint
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def info(store: str, endpoint_url: str | None, as_json: bool) -> None:
    """Show a store: live version, versions with their collections and sizes, readers."""
    handle = _open(store, endpoint_url)
    versions = handle.versions()
    leases = handle.leases()
    live = handle.current()
    if as_json:
        _echo_json(
            {
                "store": handle.location,
                "current": live,
                "versions": [dataclasses.asdict(v) for v in versions],
                "readers": [dataclasses.asdict(lease) for lease in leases],
            }
        )
        return
    click.echo(f"store: {handle.location}")
    click.echo(f"live version: {live or '(none)'}")
    if not versions:
        click.echo(f"{handle.location}: no versions yet")
    for version in versions:
        mark = "  (live)" if version.current else ""
        counts = ", ".join(f"{name}: {count:,} keys" for name, count in version.collections.items())
        click.echo(f"{version.id}  {version.size_bytes / 1e6:,.1f} MB  {counts}{mark}")
    if leases:
        click.echo(f"readers ({len(leases)}):")
        for lease in leases:
            state = "live" if lease.live else "EXPIRED"
            current = "on live version" if lease.on_current else f"on {lease.version}"
            beat = f"heartbeat {lease.seconds_since_heartbeat:.0f} s ago"
            # One line per process; a pod's processes share the reader id and come together.
            click.echo(f"  {lease.reader_id}  pid {lease.pid} ({lease.process})  {current}  {beat}  {state}")


@cli.command()
@click.argument("store")
@click.argument("collection")
@click.argument("keys", nargs=-1, required=True)
@click.option("-k", "k", type=click.IntRange(min=0), default=None, help="At most this many items.")
@click.option("--version", "version", default=None, help="Read this version instead of the live one.")
@_endpoint
def get(
    store: str,
    collection: str,
    keys: tuple[str, ...],
    k: int | None,
    version: str | None,
    endpoint_url: str | None,
) -> None:
    """Look up KEYS in COLLECTION and print the lists (or vectors) as JSON."""
    handle = _open(store, endpoint_url)
    with handle.reader(version=version, lease=False, refresh_interval=None) as reader:
        spec = reader.collections.get(collection)
        if spec is None:
            have = sorted(reader.collections)
            raise UnknownCollection(
                f"version {reader.version} has no collection {collection!r}; it has {have}"
            )
        out = []
        for text in keys:
            key: int | str = text
            if spec.key_type == "int64":
                try:
                    key = int(text)
                except ValueError:
                    raise InvalidInput(
                        f"collection {collection!r} has integer keys; {text!r} is not one"
                    ) from None
            try:
                if spec.kind == "vectors":
                    out.append({"key": key, "vector": reader.vector(collection, key).tolist()})
                else:
                    recs = reader.get(collection, key, k)
                    out.append(
                        {
                            "key": key,
                            "source": recs.source,
                            "items": recs.items.tolist(),
                            "scores": recs.scores.tolist(),
                        }
                    )
            except KeyNotFound:
                out.append({"key": key, "found": False})
        _echo_json({"version": reader.version, "collection": collection, "results": out})


@cli.command()
@click.argument("store")
@click.argument("version", required=False)
@_endpoint
@_quiet
def verify(store: str, version: str | None, endpoint_url: str | None, quiet: bool) -> None:
    """Recompute the checksum of every file of VERSION (default: the live one)."""
    report = _open(store, endpoint_url).verify(version, progress=_progress(quiet))
    click.echo(
        f"ok: version {report.version}, {report.files} files, {report.bytes / 1e6:,.1f} MB match the manifest"
    )


@cli.command()
@click.argument("store")
@click.option(
    "--keep",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Newest versions kept whatever their age.",
)
@click.option(
    "--grace", default="1h", show_default=True, help="Minimum age before deletion: 90s, 30m, 6h, 2d."
)
@click.option("--dry-run", is_flag=True, help="Only list what would be deleted.")
@_endpoint
def gc(store: str, keep: int, grace: str, dry_run: bool, endpoint_url: str | None) -> None:
    """Delete old versions that no reader leases, and unfinished publishes."""
    report = _open(store, endpoint_url).gc(keep=keep, grace=_duration(grace), dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    for version in report.deleted:
        click.echo(f"{verb} version {version}")
    for folder in report.unfinished:
        click.echo(f"{verb} unfinished {folder}")
    for version, reason in sorted(report.kept.items()):
        click.echo(f"kept {version}: {reason}")
    click.echo(
        f"{verb} {len(report.deleted)} versions and {len(report.unfinished)} unfinished folders "
        f"({report.freed_bytes / 1e6:,.1f} MB)"
    )


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1:] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a duration such as 90s, 30m, 6h or 2d") from None


@cli.command()
@click.argument("store")
@_endpoint
def rollback(store: str, endpoint_url: str | None) -> None:
    """Make the previously live version live again."""
    version = _open(store, endpoint_url).rollback()
    click.echo(f"live version: {version}")


@cli.command()
@click.argument("store")
@click.argument("ref")
@click.option("--to", "target", default="current", show_default=True, help="The pointer to move.")
@_endpoint
def promote(store: str, ref: str, target: str, endpoint_url: str | None) -> None:
    """Point TO (default: CURRENT) at the version REF names, e.g. a canary to everyone."""
    version = _open(store, endpoint_url).promote(ref, to=target)
    click.echo(f"{target}: {version}")


@cli.command()
@click.argument("store")
@click.option("--ref", default="current", show_default=True, help="The pointer to compact.")
@_endpoint
@_quiet
def compact(store: str, ref: str, endpoint_url: str | None, quiet: bool) -> None:
    """Rewrite the version REF names as a full version if it is a delta, and make it live."""
    handle = _open(store, endpoint_url, create=True)
    before = handle.current(ref)
    version = handle.compact(ref=ref, progress=_progress(quiet))
    click.echo(
        f"{ref}: {version}" + (" (already a full version)" if version == before else f" (was {before})")
    )


@cli.command("diff")
@click.argument("store")
@click.argument("a")
@click.argument("b")
@click.option(
    "-k", "k", type=click.IntRange(min=1), default=10, show_default=True, help="Depth of overlap@k."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@_endpoint
def diff_command(store: str, a: str, b: str, k: int, as_json: bool, endpoint_url: str | None) -> None:
    """What changed from version (or ref) A to B, per collection."""
    result = _open(store, endpoint_url).diff(a, b, k=k)
    if as_json:
        _echo_json(dataclasses.asdict(result))
        return
    click.echo(f"{result.a} -> {result.b}")
    for name, change in result.collections.items():
        overlap = (
            "" if change.overlap_at_k is None else f", overlap@{k} of changed lists {change.overlap_at_k:.3f}"
        )
        shift = (
            ""
            if change.top_score_shift is None
            else f", median top-score shift {change.top_score_shift:+.4g}"
        )
        click.echo(
            f"{name}: +{change.added} -{change.removed} ~{change.changed} "
            f"(unchanged {change.unchanged}){overlap}{shift}"
        )
    for name in result.only_in_a:
        click.echo(f"{name}: only in {result.a}")
    for name in result.only_in_b:
        click.echo(f"{name}: only in {result.b}")


@cli.command("set-current")
@click.argument("store")
@click.argument("version")
@_endpoint
def set_current(store: str, version: str, endpoint_url: str | None) -> None:
    """Make VERSION live."""
    _open(store, endpoint_url).set_current(version)
    click.echo(f"live version: {version}")


@cli.command()
@click.argument("store")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--collection", "-c", required=True, help="Collection to publish.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["long", "lists", "vectors", "npz"]),
    default="long",
    show_default=True,
    help="long: one row per (user, item, score); lists: list columns per user; "
    "vectors: a list column of floats; npz: arrays in .npz / .npy files.",
)
@click.option("--user-col", default="user", show_default=True)
@click.option("--item-col", default=None, help="Default: item (long), items (lists), items (npz).")
@click.option("--score-col", default=None, help="Default: score (long), scores (lists), scores (npz).")
@click.option("--rank-col", default=None, help="Order by this column (ascending) instead of by score.")
@click.option("--vector-col", default="vector", show_default=True)
@click.option("--top-k", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--metadata", "-m", multiple=True, help="key=value kept in the manifest (repeatable).")
@click.option("--force", is_flag=True, help="Publish even if a guard fails.")
@click.option("--no-guards", is_flag=True, help="Run no publish guard.")
@click.option("--ref", default="current", show_default=True, help="Pointer to move, e.g. canary.")
@click.option(
    "--delta",
    is_flag=True,
    help="Write only the keys added, changed or removed since the version the ref names; "
    "other collections of that version are kept.",
)
@_endpoint
@_quiet
def publish(
    store: str,
    inputs: tuple[str, ...],
    collection: str,
    fmt: str,
    user_col: str,
    item_col: str | None,
    score_col: str | None,
    rank_col: str | None,
    vector_col: str,
    top_k: int,
    metadata: tuple[str, ...],
    force: bool,
    no_guards: bool,
    ref: str,
    delta: bool,
    endpoint_url: str | None,
    quiet: bool,
) -> None:
    """Publish INPUTS (files or folders, local or s3://) as a new version of STORE.

    The new version holds COLLECTION only; publish every collection a service needs in
    one call (or keep them in separate stores).
    """
    from sharedrec.integrations import ingest

    meta: dict[str, JsonValue] = {}
    for pair in metadata:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint="--metadata")
        meta[name] = value
    options = {"endpoint_url": endpoint_url} if endpoint_url else None
    handle = _open(store, endpoint_url, create=True)
    progress = _progress(quiet)
    with handle.publish(
        metadata=meta,
        ref=ref,
        progress=progress,
        force=force,
        guards=[] if no_guards else None,
        delta=delta,
    ) as draft:
        if fmt == "vectors":
            keys, vectors = ingest.read_vectors(
                inputs, user_col=user_col, vector_col=vector_col, storage_options=options
            )
            spec = draft.add_vectors(collection, keys, vectors)
        elif fmt == "npz":
            if len(inputs) != 1:
                raise click.BadParameter("--format npz takes one .npz file or one folder of .npy files")
            keys, items, scores = ingest.read_npz(
                inputs[0],
                [user_col if user_col != "user" else "keys", item_col or "items", score_col or "scores"],
            )
            spec = draft.add_ranked(collection, keys, items, scores, top_k=top_k)
        else:
            if fmt == "long":
                ranked = ingest.read_long(
                    inputs,
                    user_col=user_col,
                    item_col=item_col or "item",
                    score_col=score_col or "score",
                    rank_col=rank_col,
                    top_k=top_k,
                    storage_options=options,
                )
            else:
                ranked = ingest.read_lists(
                    inputs,
                    user_col=user_col,
                    item_col=item_col or "items",
                    score_col=score_col or "scores",
                    top_k=top_k,
                    storage_options=options,
                )
            # Lists come out best first (ingestion orders them); a --rank-col that disagrees with
            # the scores is then refused by the order check rather than silently reordered.
            spec = draft.add_ranked(
                collection, ranked.keys, ranked.items, ranked.scores, lengths=ranked.lengths
            )
    if not quiet:
        click.echo(f"published version {draft.version_id}: {collection!r} with {spec.count:,} keys")
    else:
        click.echo(draft.version_id)


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
    """Readiness probe: exit 0 when a process of READER-ID holds a fresh lease on an existing version.

    Not ready while a process of READER-ID still prefetches (``store.reader(prefetch=...)``).
    """
    from datetime import UTC, datetime

    import sharedrec
    from sharedrec.format.layout import LEASES
    from sharedrec.format.schema import Lease

    handle = sharedrec.open(store, create=False)
    folder = Path(lease_dir) if lease_dir else Path(handle.location) / LEASES
    # Every process of the pod holds its own lease, <reader-id>.<pid>-<random>.json.
    leases = []
    for path in sorted(folder.glob(f"{glob.escape(reader_id)}.*json")):
        try:
            lease = Lease.loads(path.read_bytes(), str(path))
        except FileNotFoundError:
            continue  # its reader closed meanwhile
        if lease.reader_id == reader_id:  # not a reader whose id merely starts like this one
            leases.append(lease)
    if not leases:
        raise SharedrecError(
            f"not ready: no lease of reader {reader_id} in {folder} (the reader has not opened a version yet)"
        )
    now = datetime.now(UTC)
    # Ready while one process serves: the file of a killed worker expires but stays behind.
    fresh = [lease for lease in leases if lease.expires_at > now]
    if not fresh:
        newest = max(lease.expires_at for lease in leases)
        raise SharedrecError(
            f"not ready: the lease of {reader_id} expired {(now - newest).total_seconds():.0f} s "
            "ago (its process is stuck or gone)"
        )
    warming = [lease for lease in fresh if lease.warming]
    if warming:
        # The page cache is the node's: one process's prefetch warms it for all, and one that
        # still reads means the node is not warm yet.
        started = min(lease.started_at for lease in warming)
        raise SharedrecError(
            f"not ready: {reader_id} is still warming its cache (prefetch of version "
            f"{warming[0].version}, reader started {(now - started).total_seconds():.0f} s ago); "
            "it is ready once the prefetch has read every file"
        )
    for lease in fresh:
        handle.manifest(lease.version)
    lease = max(fresh, key=lambda lease: lease.heartbeat)
    age = (now - lease.heartbeat).total_seconds()
    processes = f", {len(fresh)} processes" if len(fresh) > 1 else ""
    click.echo(f"ready: {reader_id} serves version {lease.version} (heartbeat {age:.1f} s ago{processes})")


cli.add_command(k8s)


def main() -> None:
    """Entry point of the console script: one clear line per error unless --debug."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except SharedrecError as exc:
        if "--debug" in sys.argv:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
