"""The ``sharedrec`` command."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from sharedrec._cli_words import GLOSSARY, CliWords, Interrupted, on_interrupt, speak_cli
from sharedrec.errors import (
    InvalidInput,
    KeyNotFound,
    SharedrecError,
    StoreNotFound,
    UnknownCollection,
    VersionNotFound,
)
from sharedrec.k8s.cli import k8s

if TYPE_CHECKING:
    from pydantic import JsonValue

    from sharedrec._progress import ProgressMode
    from sharedrec.format.schema import CollectionSpec
    from sharedrec.manage.versions import VersionInfo
    from sharedrec.store import RecommendationStore
    from sharedrec.write.draft import Draft

__all__ = ["GLOSSARY", "main", "speak_cli"]

_F = TypeVar("_F", bound=Callable[..., Any])

_UNCHANGED = "interrupted: nothing was changed"


# -- locations -----------------------------------------------------------------------------


def _object_url(location: str) -> bool:
    """An object-store URL (``s3://``, ``gs://``...), not a path or a ``file://`` URL."""
    scheme, sep, _ = location.partition("://")
    return bool(sep) and scheme.lower() not in ("file", "local")


def _endpoint_for(locations: tuple[str, ...], endpoint_url: str | None) -> dict[str, Any] | None:
    """``storage_options`` for these locations: the endpoint only if one is an object-store URL
    (an endpoint belongs to the service it names, not to a local store or input)."""
    if endpoint_url and any(_object_url(location) for location in locations):
        return {"endpoint_url": endpoint_url}
    return None


def _open(location: str, endpoint_url: str | None, *, create: bool) -> RecommendationStore:
    import sharedrec

    options = _endpoint_for((location,), endpoint_url)
    return sharedrec.open(location, create=create, storage_options=options)


def _local_path(location: str) -> str | None:
    if not _object_url(location):
        return location.partition("://")[2] if "://" in location else location
    return None


def _only_what_creation_made(folder: str) -> bool:
    """The folder holds nothing but empty folders and the publish lock: no data, no pointer."""
    return all(name == ".sharedrec.lock" for _, _, files in os.walk(folder) for name in files)


@contextmanager
def _store_for_publish(
    location: str, endpoint_url: str | None, create: bool
) -> Iterator[RecommendationStore]:
    """The store to publish into; with ``create``, a new one that goes away if the publish fails.

    Without ``create`` a location with no store is refused before anything is written: a
    mistyped path must not become a new store.
    """
    made: str | None = None  # the folder this publish created, if any
    marked = False  # an object store this publish created (its marker)
    try:
        handle = _open(location, endpoint_url, create=False)
        # An object store says "no store here" only when asked: read the pointer.
        handle.current()
    except StoreNotFound:
        if not create:
            raise StoreNotFound(
                f"no store at {location}: check the path; to start a new store there, run "
                f"`sharedrec init {location}` first or publish with --create. Nothing was written"
            ) from None
        local = _local_path(location)
        if local is not None and not os.path.exists(local):
            made = local
        marked = local is None
        handle = _open(location, endpoint_url, create=True)
    try:
        yield handle
    except BaseException:
        if made is not None and _only_what_creation_made(made):
            shutil.rmtree(made, ignore_errors=True)
        if marked:
            _unmark_if_empty(location, endpoint_url)
        raise


def _unmark_if_empty(location: str, endpoint_url: str | None) -> None:
    """Remove the marker of an object store this publish created, if it holds nothing else."""
    from sharedrec.backends import backend_for
    from sharedrec.backends.base import STORE_MARKER

    backend = backend_for(location, create=False, storage_options=_endpoint_for((location,), endpoint_url))
    if not any(True for name in backend.listdir("") for _ in backend.walk_files(name)):
        backend.remove_file(STORE_MARKER)


# -- the commands --------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sharedrec")
@click.option(
    "--debug", is_flag=True, help="Show tracebacks instead of one-line errors (also after the command)."
)
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


_endpoint = click.option(
    "--endpoint-url",
    envvar="SHAREDREC_ENDPOINT_URL",
    default=None,
    help="S3-compatible endpoint of an s3:// STORE; ignored for a local or mounted store "
    "($SHAREDREC_ENDPOINT_URL).",
)
_quiet = click.option("--quiet", "-q", is_flag=True, help="No progress output.")
_as_json = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


def _ref_option(help: str) -> Callable[[_F], _F]:
    return click.option("--ref", default="current", show_default=True, help=help)


def _progress(quiet: bool) -> ProgressMode:
    """Bars on a terminal, plain lines otherwise, nothing with --quiet."""
    if quiet:
        return False
    return True if sys.stderr.isatty() else "plain"


def _plain(value: object) -> object:
    """JSON for what the store reports: times in ISO 8601, dataclasses as objects."""
    if isinstance(value, datetime):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _echo_json(data: object) -> None:
    click.echo(json.dumps(_plain(data), indent=1, default=str))


def _version_of(handle: RecommendationStore, version: str | None, ref: str) -> str:
    """VERSION if given, else the version the pointer ``ref`` names."""
    if version is not None:
        if ref != "current":
            raise click.UsageError("give VERSION or --ref, not both")
        return version
    found = handle.current(ref)
    if found is None:
        what = "no version is live" if ref == "current" else f"ref {ref!r} names no version"
        raise VersionNotFound(f"{what} in {handle.location}; `sharedrec refs STORE` lists the refs")
    return found


@cli.command()
@click.argument("store")
@_endpoint
@on_interrupt(_UNCHANGED)
def init(store: str, endpoint_url: str | None) -> None:
    """Create an empty store at STORE (nothing happens if one is there already)."""
    try:
        handle = _open(store, endpoint_url, create=False)
    except StoreNotFound:
        handle = _open(store, endpoint_url, create=True)
        click.echo(f"created an empty store at {handle.location}; publish into it with `sharedrec publish`")
        return
    versions = handle.versions()
    live = handle.current()
    held = f"{len(versions)} versions, live version {live or '(none)'}" if versions else "no versions yet"
    click.echo(f"a store is already at {handle.location} ({held}); nothing was changed")


@cli.command()
@click.argument("store")
@_endpoint
@_as_json
@on_interrupt(_UNCHANGED)
def info(store: str, endpoint_url: str | None, as_json: bool) -> None:
    """Show a store: live version, refs, versions with their collections and sizes, readers."""
    handle = _open(store, endpoint_url, create=False)
    versions = handle.versions()
    leases = handle.leases()
    refs = handle.refs()
    live = refs.get("current")
    if as_json:
        _echo_json(
            {"store": handle.location, "current": live, "refs": refs, "versions": versions, "readers": leases}
        )
        return
    click.echo(f"store: {handle.location}")
    click.echo(f"live version: {live or '(none)'}")
    named = {name: version for name, version in refs.items() if name != "current"}
    if named:
        click.echo("refs: " + ", ".join(f"{name} -> {version}" for name, version in sorted(named.items())))
    if not versions:
        click.echo(f"{handle.location}: no versions yet")
    by_version: dict[str, list[str]] = {}
    for name, target in named.items():
        by_version.setdefault(target, []).append(name)
    for version in versions:
        marks = (["live"] if version.current else []) + sorted(by_version.get(version.id, []))
        mark = f"  ({', '.join(marks)})" if marks else ""
        counts = ", ".join(f"{name}: {count:,} keys" for name, count in version.collections.items())
        if version.newer_format:
            counts = _newer(version.newer_format)
        click.echo(f"{version.id}  {version.size_bytes / 1e6:,.1f} MB  {counts}{mark}")
    if leases:
        click.echo(f"readers ({len(leases)}):")
        for lease in leases:
            state = "live" if lease.live else "EXPIRED"
            current = "on live version" if lease.on_current else f"on {lease.version}"
            beat = f"heartbeat {lease.seconds_since_heartbeat:.0f} s ago"
            # One line per process; a pod's processes share the reader id and come together.
            click.echo(f"  {lease.reader_id}  pid {lease.pid} ({lease.process})  {current}  {beat}  {state}")
    _refuse_newer_live(versions)


def _newer(fmt: str) -> str:
    return f"written by a newer sharedrec (format {fmt}): upgrade sharedrec"


def _refuse_newer_live(versions: list[VersionInfo]) -> None:
    """Exit 1 when the live version is one this sharedrec cannot read: the store is fine,
    this installation is too old to serve or manage it."""
    from sharedrec.errors import NewerFormat
    from sharedrec.format.layout import NEWEST_FORMAT
    from sharedrec.format.schema import newer_message

    for version in versions:
        if version.current and version.newer_format:
            raise NewerFormat(
                newer_message(f"live version {version.id}", version.newer_format, NEWEST_FORMAT)
            )


@cli.command()
@click.argument("store")
@_endpoint
@_as_json
@on_interrupt(_UNCHANGED)
def versions(store: str, endpoint_url: str | None, as_json: bool) -> None:
    """List the committed versions, oldest first, with the refs that name them."""
    handle = _open(store, endpoint_url, create=False)
    found = handle.versions()
    refs = handle.refs()
    if as_json:
        _echo_json(
            [
                {**dataclasses.asdict(v), "refs": sorted(n for n, vid in refs.items() if vid == v.id)}
                for v in found
            ]
        )
        return
    if not found:
        click.echo(f"{handle.location}: no versions yet")
    for version in found:
        names = sorted(name for name, vid in refs.items() if vid == version.id)
        base = f"  delta over {version.base}" if version.base else ""
        mark = f"  ({', '.join(names)})" if names else ""
        what = _newer(version.newer_format) if version.newer_format else ", ".join(version.collections)
        click.echo(
            f"{version.id}  {version.created_at.isoformat(timespec='seconds')}  "
            f"{version.size_bytes / 1e6:,.1f} MB  {what}{base}{mark}"
        )
    _refuse_newer_live(found)


@cli.command()
@click.argument("store")
@_endpoint
@_as_json
@on_interrupt(_UNCHANGED)
def refs(store: str, endpoint_url: str | None, as_json: bool) -> None:
    """List the pointers (current, and named refs such as canary) and the versions they name."""
    handle = _open(store, endpoint_url, create=False)
    found = handle.refs()
    if as_json:
        _echo_json(found)
        return
    if not found:
        click.echo(f"{handle.location}: no refs yet (nothing published)")
    for name, version in sorted(found.items(), key=lambda pair: (pair[0] != "current", pair[0])):
        click.echo(f"{name}  {version}")


@cli.command()
@click.argument("store")
@click.argument("version", required=False)
@_ref_option("Show the version this pointer names (when VERSION is not given).")
@_endpoint
@on_interrupt(_UNCHANGED)
def manifest(store: str, version: str | None, ref: str, endpoint_url: str | None) -> None:
    """Print the manifest of VERSION (default: the one --ref names) as JSON."""
    handle = _open(store, endpoint_url, create=False)
    click.echo(handle.manifest(_version_of(handle, version, ref)).dumps().decode())


@cli.command()
@click.argument("store")
@click.argument("collection")
@click.argument("keys", nargs=-1, required=True)
@click.option("-k", "k", type=click.IntRange(min=0), default=None, help="At most this many items.")
@click.option("--version", "version", default=None, help="Read this version instead of the live one.")
@click.option(
    "--ref",
    default=None,
    help="Read the version this pointer names, e.g. canary (default: $SHAREDREC_REF, else current).",
)
@_endpoint
@on_interrupt(_UNCHANGED)
def get(
    store: str,
    collection: str,
    keys: tuple[str, ...],
    k: int | None,
    version: str | None,
    ref: str | None,
    endpoint_url: str | None,
) -> None:
    """Look up KEYS in COLLECTION and print the lists (or vectors) as JSON."""
    if version is not None and ref is not None:
        raise click.UsageError("give --version or --ref, not both")
    handle = _open(store, endpoint_url, create=False)
    with handle.reader(version=version, ref=ref, lease=False, refresh_interval=None) as reader:
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
@_ref_option("Check the version this pointer names (when VERSION is not given).")
@_endpoint
@_quiet
@on_interrupt(_UNCHANGED)
def verify(store: str, version: str | None, ref: str, endpoint_url: str | None, quiet: bool) -> None:
    """Recompute the checksum of every file of VERSION (default: the one --ref names, the live one)."""
    handle = _open(store, endpoint_url, create=False)
    report = handle.verify(_version_of(handle, version, ref), progress=_progress(quiet))
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
@on_interrupt(
    "interrupted: garbage collection stopped part way; what it deleted is gone, every other "
    "version is intact (run it again to finish)"
)
def gc(store: str, keep: int, grace: str, dry_run: bool, endpoint_url: str | None) -> None:
    """Delete old versions that no reader leases, and unfinished publishes."""
    seconds = _duration(grace)
    report = _open(store, endpoint_url, create=False).gc(keep=keep, grace=seconds, dry_run=dry_run)
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


_POINTER_INTERRUPTED = (
    "interrupted: a pointer moves in one atomic step; `sharedrec refs STORE` shows where it stands"
)


def _pointer_name(ref: str) -> str:
    return "live version" if ref == "current" else f"{ref}"


@cli.command()
@click.argument("store")
@_ref_option("The pointer to move back, e.g. canary.")
@_endpoint
@on_interrupt(_POINTER_INTERRUPTED)
def rollback(store: str, ref: str, endpoint_url: str | None) -> None:
    """Make the previously live version live again (with --ref, the ref's previous version)."""
    version = _open(store, endpoint_url, create=False).rollback(ref=ref)
    click.echo(f"{_pointer_name(ref)}: {version}")


@cli.command("set-current")
@click.argument("store")
@click.argument("version")
@_ref_option("The pointer to move, e.g. canary.")
@_endpoint
@on_interrupt(_POINTER_INTERRUPTED)
def set_current(store: str, version: str, ref: str, endpoint_url: str | None) -> None:
    """Make VERSION live (or the target of --ref)."""
    _open(store, endpoint_url, create=False).set_current(version, ref=ref)
    click.echo(f"{_pointer_name(ref)}: {version}")


@cli.command()
@click.argument("store")
@click.argument("ref")
@click.option("--to", "target", default="current", show_default=True, help="The pointer to move.")
@_endpoint
@on_interrupt(_POINTER_INTERRUPTED)
def promote(store: str, ref: str, target: str, endpoint_url: str | None) -> None:
    """Point TO (default: CURRENT) at the version REF names, e.g. a canary to everyone."""
    version = _open(store, endpoint_url, create=False).promote(ref, to=target)
    click.echo(f"{target}: {version}")


@cli.command()
@click.argument("store")
@_ref_option("The pointer to compact.")
@_endpoint
@_quiet
def compact(store: str, ref: str, endpoint_url: str | None, quiet: bool) -> None:
    """Rewrite the version REF names as a full version if it is a delta, and make it live."""
    handle = _open(store, endpoint_url, create=False)
    before = handle.current(ref)
    try:
        version = handle.compact(ref=ref, progress=_progress(quiet))
    except KeyboardInterrupt:
        after = _current_or_none(handle, ref)
        if after != before:
            raise Interrupted(f"interrupted after the compaction went live: {ref}: {after}") from None
        raise Interrupted(f"interrupted: nothing was compacted; {ref} still names {before}") from None
    click.echo(
        f"{ref}: {version}" + (" (already a full version)" if version == before else f" (was {before})")
    )


def _current_or_none(handle: RecommendationStore, ref: str) -> str | None:
    try:
        return handle.current(ref)
    except SharedrecError:
        return None


@cli.command("diff")
@click.argument("store")
@click.argument("a")
@click.argument("b")
@click.option(
    "-k", "k", type=click.IntRange(min=1), default=10, show_default=True, help="Depth of overlap@k."
)
@_as_json
@_endpoint
@on_interrupt(_UNCHANGED)
def diff_command(store: str, a: str, b: str, k: int, as_json: bool, endpoint_url: str | None) -> None:
    """What changed from A to B, per collection; each is a version id or a ref (current, canary)."""
    result = _open(store, endpoint_url, create=False).diff(a, b, k=k)
    if as_json:
        _echo_json(result)
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
@click.option("--sort", is_flag=True, help="Sort each list by descending score (npz lists in another order).")
@click.option("--pad", type=int, default=None, help="npz: this item id pads short rows (e.g. -1).")
@click.option(
    "--dedupe",
    is_flag=True,
    help="long and lists: keep the best-ranked row of a repeated (user, item) pair "
    "(else repeated pairs are an error).",
)
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
@click.option(
    "--create", is_flag=True, help="Create the store if there is none at STORE (else that is an error)."
)
@click.option(
    "--endpoint-url",
    envvar="SHAREDREC_ENDPOINT_URL",
    default=None,
    help="S3-compatible endpoint of an s3:// STORE, and of s3:// INPUTS unless --input-endpoint-url "
    "is given; ignored for local paths ($SHAREDREC_ENDPOINT_URL).",
)
@click.option(
    "--input-endpoint-url",
    envvar="SHAREDREC_INPUT_ENDPOINT_URL",
    default=None,
    help="S3-compatible endpoint of s3:// INPUTS on another service than the store "
    "($SHAREDREC_INPUT_ENDPOINT_URL).",
)
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
    sort: bool,
    pad: int | None,
    dedupe: bool,
    metadata: tuple[str, ...],
    force: bool,
    no_guards: bool,
    ref: str,
    delta: bool,
    create: bool,
    endpoint_url: str | None,
    input_endpoint_url: str | None,
    quiet: bool,
) -> None:
    """Publish INPUTS (files or folders, local or s3://) as a new version of STORE.

    The new version holds COLLECTION only (with --delta, the other collections of the
    version --ref names are kept); publish every collection a service needs in one call (or
    keep them in separate stores). STORE must hold a store (`sharedrec init STORE`) unless
    --create is given.
    """
    meta: dict[str, JsonValue] = {}
    for pair in metadata:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint="--metadata")
        meta[name] = value
    if pad is not None and fmt != "npz":
        raise click.BadParameter("--pad applies to --format npz only", param_hint="--pad")
    if dedupe and fmt not in ("long", "lists"):
        raise click.BadParameter("--dedupe applies to --format long and lists only", param_hint="--dedupe")
    if fmt == "npz" and len(inputs) != 1:
        raise click.BadParameter("--format npz takes one .npz file or one folder of .npy files")
    source = _Input(
        fmt,
        inputs,
        _endpoint_for(inputs, input_endpoint_url or endpoint_url),
        user_col,
        item_col,
        score_col,
        rank_col,
        vector_col,
        top_k,
        sort,
        pad,
        dedupe,
        _progress(quiet),
    )
    handle: RecommendationStore | None = None
    version_id: str | None = None
    try:
        with (
            _store_for_publish(store, endpoint_url, create) as handle,
            handle.publish(
                metadata=meta,
                ref=ref,
                progress=_progress(quiet),
                force=force,
                guards=[] if no_guards else None,
                delta=delta,
            ) as draft,
        ):
            version_id = draft.version_id
            spec = _add_input(draft, collection, source)
    except KeyboardInterrupt:
        raise Interrupted(_publish_interrupted(handle, ref, version_id)) from None
    if quiet:
        click.echo(draft.version_id)
        return
    where = "live" if ref == "current" else f"named by ref {ref}"
    written = draft.written.get(collection)
    # A delta publish says what it wrote (or why it wrote everything); a plain one, the count.
    what = str(written) if written is not None and delta else f"with {spec.count:,} keys"
    click.echo(f"published version {draft.version_id} ({where}): {collection!r} {what}")


@dataclasses.dataclass(frozen=True)
class _Input:
    """What `publish` reads, and how (its options)."""

    fmt: str
    paths: tuple[str, ...]
    storage_options: dict[str, Any] | None
    user_col: str
    item_col: str | None
    score_col: str | None
    rank_col: str | None
    vector_col: str
    top_k: int
    sort: bool
    pad: int | None
    dedupe: bool
    progress: ProgressMode


def _add_input(draft: Draft, collection: str, source: _Input) -> CollectionSpec:
    """Read the input and add it to the draft as ``collection``."""
    from sharedrec.integrations import ingest

    if source.fmt == "vectors":
        keys, vectors = ingest.read_vectors(
            source.paths,
            user_col=source.user_col,
            vector_col=source.vector_col,
            storage_options=source.storage_options,
            progress=source.progress,
        )
        return draft.add_vectors(collection, keys, vectors)
    if source.fmt == "npz":
        names = [
            source.user_col if source.user_col != "user" else "keys",
            source.item_col or "items",
            source.score_col or "scores",
        ]
        keys, items, scores = ingest.read_npz(source.paths[0], names)
        return draft.add_ranked(
            collection, keys, items, scores, top_k=source.top_k, sort=source.sort, pad=source.pad
        )
    if source.fmt == "long":
        ranked = ingest.read_long(
            source.paths,
            user_col=source.user_col,
            item_col=source.item_col or "item",
            score_col=source.score_col or "score",
            rank_col=source.rank_col,
            top_k=source.top_k,
            storage_options=source.storage_options,
            dedupe=source.dedupe,
            progress=source.progress,
        )
    else:
        ranked = ingest.read_lists(
            source.paths,
            user_col=source.user_col,
            item_col=source.item_col or "items",
            score_col=source.score_col or "scores",
            top_k=source.top_k,
            storage_options=source.storage_options,
            dedupe=source.dedupe,
            progress=source.progress,
        )
    # Lists come out best first (ingestion orders them); a --rank-col that disagrees with the
    # scores is then refused by the order check rather than silently reordered (unless --sort).
    return draft.add_ranked(
        collection, ranked.keys, ranked.items, ranked.scores, lengths=ranked.lengths, sort=source.sort
    )


def _publish_interrupted(handle: RecommendationStore | None, ref: str, version_id: str | None) -> str:
    """What a Ctrl-C during a publish left: the commit is one atomic pointer move."""
    pointer = "the live version" if ref == "current" else f"ref {ref}"
    if handle is not None and version_id is not None and _current_or_none(handle, ref) == version_id:
        return f"interrupted after the publish finished: version {version_id} is {pointer}"
    return f"interrupted: nothing was published; {pointer} is unchanged"


@cli.command()
@click.argument("store")
@click.option(
    "--reader-id",
    envvar="SHAREDREC_READER_ID",
    default=None,
    help="The reader to check (default: $SHAREDREC_READER_ID, e.g. the pod name).",
)
@click.option(
    "--lease-dir",
    envvar="SHAREDREC_LEASE_DIR",
    default=None,
    help="Where the reader keeps its lease (default: $SHAREDREC_LEASE_DIR, else STORE/leases).",
)
@on_interrupt(_UNCHANGED)
def ready(store: str, reader_id: str | None, lease_dir: str | None) -> None:
    """Readiness probe: exit 0 when a process of READER-ID holds a fresh lease on an existing version.

    Not ready while a process of READER-ID still warms its cache (a reader opened with prefetch).
    """
    # A plain `sharedrec ready` never gets here: the entry point runs it without loading this
    # module (see sharedrec._ready). Help, --debug and mistakes come here, to the same check.
    from sharedrec._ready import NO_READER, check

    if not reader_id:
        raise click.UsageError(NO_READER)
    click.echo(check(store, reader_id, lease_dir))


cli.add_command(k8s)


def _debug_first(args: list[str]) -> tuple[list[str], bool]:
    """Accept --debug anywhere before a ``--``: it belongs to the group, so move it first."""
    options = args[: args.index("--")] if "--" in args else args
    if "--debug" not in options:
        return args, False
    index = options.index("--debug")
    return ["--debug", *args[:index], *args[index + 1 :]], True


def main() -> None:
    """Entry point of the console script: one clear line per error unless --debug."""
    args, debug = _debug_first(sys.argv[1:])
    logging.getLogger("sharedrec").addFilter(CliWords())
    try:
        cli.main(args=args, standalone_mode=False)
    except Interrupted as exc:
        click.echo(exc.format_message(), err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"error: {speak_cli(exc.format_message())}", err=True)
        sys.exit(exc.exit_code)
    except SharedrecError as exc:
        if debug:
            raise
        click.echo(f"error: {speak_cli(str(exc))}", err=True)
        sys.exit(1)
