"""The ``sharedrec k8s`` commands: print or write the Kubernetes manifests of a store.

One subcommand per volume backend (``efs``, ``nfs``, ``s3``, ``hostpath``), each with the
same options for the readers, their autoscaler, the writer and the output. Options map
one-to-one onto `K8sConfig` fields; errors name the option to fix.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from sharedrec.k8s._config import ConfigError, K8sConfig, Location
from sharedrec.k8s._render import render, write_files

__all__ = ["k8s"]

F = TypeVar("F", bound=Callable[..., Any])


def _words(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    try:
        words = tuple(shlex.split(value))
    except ValueError as exc:
        raise click.BadParameter(f"cannot split {value!r} into words: {exc}") from None
    if not words:
        raise click.BadParameter("give at least one word")
    return words


def _pairs(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> dict[str, str] | None:
    pairs = {}
    for item in value:
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE; got {item!r}")
        pairs[key] = val
    return pairs or None


_COMMON = [
    click.option(
        "--name", help="Base name of every object (PVC NAME, Deployment NAME-reader…).  [default: sharedrec]"
    ),
    click.option("--namespace", help="Namespace of the claim and the workloads.  [default: default]"),
    click.option("--mount-path", help="Where pods see the store.  [default: /mnt/recs]"),
    click.option(
        "--no-leases", is_flag=True, default=None, help="Readers keep no leases (no read-write mount)."
    ),
    click.option(
        "--access-mode",
        type=click.Choice(["ReadWriteMany", "ReadOnlyMany", "ReadWriteOnce", "ReadWriteOncePod"]),
        help="PV/PVC access mode.  [default: what the backend needs]",
    ),
    click.option("--run-as-user", type=int, help="UID of the reader and writer pods."),
    click.option("--run-as-group", type=int, help="GID of the reader and writer pods."),
    click.option(
        "--fs-group",
        type=int,
        help="Supplementary group of the pods (fsGroup), for a group-writable NFS export or EFS folder.",
    ),
    # readers
    click.option("--image", help="Reader image: write a Deployment of it."),
    click.option("--patch-only", is_flag=True, default=None, help="Patch an existing Deployment instead."),
    click.option("--deployment", help="Name of the readers' Deployment (required with --patch-only)."),
    click.option(
        "--container", help="Reader container name (the one patched with --patch-only).  [default: reader]"
    ),
    click.option("--command", callback=_words, help="Reader command line (shell words)."),
    click.option("--replicas", type=int, help="Reader pods without an autoscaler.  [default: 2]"),
    click.option("--port", type=int, help="Reader container port (named http)."),
    click.option("--cpu-request", help="Reader CPU request, e.g. 500m (needed by the autoscaler)."),
    click.option("--cpu-limit", help="Reader CPU limit."),
    click.option("--memory-request", help="Reader memory request, e.g. 2Gi."),
    click.option("--memory-limit", help="Reader memory limit."),
    click.option("--readiness-command", callback=_words, help="Reader exec readiness probe (shell words)."),
    click.option(
        "--readiness-http-path",
        help="Reader HTTP readiness probe: the kubelet requests this path (e.g. /readyz) on --port; "
        "cheaper than an exec probe. Not with --readiness-command.",
    ),
    click.option("--service-account", help="Service account of the reader pods."),
    click.option("--ref", help="Readers follow this named ref (e.g. canary) instead of CURRENT."),
    click.option(
        "--max-unavailable",
        help="Readers a node drain may evict at once (PodDisruptionBudget): a count or a percentage.  "
        "[default: 1]",
    ),
    click.option(
        "--no-disruption-budget",
        "disruption_budget",
        flag_value=False,
        default=None,
        help="Write no PodDisruptionBudget for the readers.",
    ),
    click.option(
        "--no-topology-spread",
        "topology_spread",
        flag_value=False,
        default=None,
        help="Do not spread the readers over zones and nodes.",
    ),
    # autoscaler
    click.option("--min-replicas", type=int, help="Autoscaler minimum.  [default: 2]"),
    click.option("--max-replicas", type=int, help="Autoscaler maximum: adds a HorizontalPodAutoscaler."),
    click.option("--target-cpu", type=int, help="Autoscaler CPU utilization target, percent.  [default: 70]"),
    # writer
    click.option("--writer-image", help="Writer image: add a CronJob (with --schedule) or a Job."),
    click.option("--writer-command", callback=_words, help="Writer command line (shell words)."),
    click.option("--schedule", help="Writer cron schedule, e.g. '15 * * * *'."),
    click.option("--time-zone", help="Time zone of the schedule, e.g. Europe/Paris."),
    click.option("--writer-cpu-request", help="Writer CPU request."),
    click.option("--writer-cpu-limit", help="Writer CPU limit."),
    click.option("--writer-memory-request", help="Writer memory request."),
    click.option("--writer-memory-limit", help="Writer memory limit."),
    click.option("--writer-service-account", help="Service account of the writer pods."),
    click.option(
        "--active-deadline-seconds",
        type=int,
        help="Stop a writer Job (every attempt) after this long, so that a hung publish does not block "
        "the next ones.  [default with --schedule: the shortest interval between runs minus the starting "
        "deadline]",
    ),
    click.option(
        "--starting-deadline-seconds",
        type=int,
        help="Skip a scheduled run that cannot start within this long.  [default: a quarter of the "
        "shortest interval, 10 s to 1 h]",
    ),
    click.option(
        "--single-writer",
        is_flag=True,
        default=None,
        help="S3 only: promise that the writer job is the store's only writer (sets "
        "SHAREDREC_SINGLE_WRITER=1), for S3-compatible servers that ignore conditional writes.",
    ),
    # output
    click.option(
        "--output-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Write one file per object here instead of printing one YAML stream.",
    ),
    click.option("--kustomize", is_flag=True, help="Also write kustomization.yaml (needs --output-dir)."),
]


def _common(function: F) -> F:
    for option in reversed(_COMMON):
        function = option(function)
    return function


def _given(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def _section(options: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    return _given(**{field: options.pop(option) for option, field in names.items()})


_RESOURCE_FIELDS = ("cpu_request", "cpu_limit", "memory_request", "memory_limit")


def _config_data(volume: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    reader = _section(
        options,
        {
            "image": "image",
            "patch_only": "patch",
            "deployment": "deployment",
            "container": "container",
            "command": "command",
            "replicas": "replicas",
            "port": "port",
            "readiness_command": "readiness_command",
            "readiness_http_path": "readiness_http_path",
            "service_account": "service_account",
            "ref": "ref",
            "max_unavailable": "max_unavailable",
            "disruption_budget": "disruption_budget",
            "topology_spread": "topology_spread",
        },
    )
    reader_resources = _section(options, {name: name for name in _RESOURCE_FIELDS})
    if reader_resources:
        reader["resources"] = reader_resources
    scaling = _section(
        options,
        {
            "min_replicas": "min_replicas",
            "max_replicas": "max_replicas",
            "target_cpu": "target_cpu_utilization",
        },
    )
    writer = _section(
        options,
        {
            "writer_image": "image",
            "writer_command": "command",
            "schedule": "schedule",
            "time_zone": "time_zone",
            "writer_service_account": "service_account",
            "active_deadline_seconds": "active_deadline_seconds",
            "starting_deadline_seconds": "starting_deadline_seconds",
            "single_writer": "single_writer",
        },
    )
    writer_resources = _section(options, {f"writer_{name}": name for name in _RESOURCE_FIELDS})
    if writer_resources:
        writer["resources"] = writer_resources
    data = _given(
        name=options.pop("name"),
        namespace=options.pop("namespace"),
        mount_path=options.pop("mount_path"),
        access_mode=options.pop("access_mode"),
        run_as_user=options.pop("run_as_user"),
        run_as_group=options.pop("run_as_group"),
        fs_group=options.pop("fs_group"),
    )
    if options.pop("no_leases"):
        data["leases"] = False
    data["volume"] = volume
    if reader and not ({"image", "patch"} & reader.keys()):
        raise click.UsageError(
            "reader options need --image (a new Deployment) or --patch-only (an existing one)"
        )
    if writer and "image" not in writer:
        raise click.UsageError("writer options need --writer-image")
    for section, values in (("reader", reader), ("autoscaling", scaling), ("writer", writer)):
        if values:
            data[section] = values
    return data


_OPTION_NAMES: dict[Location, str] = {
    ("leases",): "--no-leases",
    ("reader", "disruption_budget"): "--no-disruption-budget",
    ("reader", "topology_spread"): "--no-topology-spread",
    ("autoscaling",): "--max-replicas",
    ("volume", "mount_options"): "--mount-option",
    ("volume", "volume_attributes"): "--volume-attribute",
    ("reader", "patch"): "--patch-only",
    ("autoscaling", "target_cpu_utilization"): "--target-cpu",
    ("writer", "image"): "--writer-image",
    ("writer", "command"): "--writer-command",
    ("writer", "service_account"): "--writer-service-account",
    ("writer", "schedule"): "--schedule",
    ("writer", "time_zone"): "--time-zone",
    ("writer", "active_deadline_seconds"): "--active-deadline-seconds",
    ("writer", "starting_deadline_seconds"): "--starting-deadline-seconds",
    ("writer", "single_writer"): "--single-writer",
}


def _option_name(loc: Location) -> Location:
    if loc in _OPTION_NAMES:
        return (_OPTION_NAMES[loc],)
    parts = [str(part) for part in loc]
    if len(parts) >= 2 and parts[-2] == "resources":
        return ("--" + ("writer-" if parts[0] == "writer" else "") + parts[-1].replace("_", "-"),)
    if (len(parts) == 2 and parts[0] in {"volume", "reader", "autoscaling"}) or len(parts) == 1:
        return ("--" + parts[-1].replace("_", "-"),)
    return loc


def _emit(volume: dict[str, Any], options: dict[str, Any]) -> None:
    output_dir: Path | None = options.pop("output_dir")
    kustomize: bool = options.pop("kustomize")
    if kustomize and output_dir is None:
        raise click.UsageError(
            "--kustomize writes kustomization.yaml next to the manifests: add --output-dir"
        )
    try:
        config = K8sConfig.model_validate(_config_data(volume, options))
    except ConfigError as exc:
        raise ConfigError([(_option_name(loc), msg) for loc, msg in exc.issues]) from None
    if output_dir is None:
        click.echo(render(config), nl=False)
        return
    for path in write_files(config, output_dir, kustomize=kustomize):
        click.echo(f"wrote {path}")


@click.group(name="k8s")
def k8s() -> None:
    """Write Kubernetes manifests for a store: its volume, the readers, their autoscaler, the writer.

    Prints one YAML stream, or with --output-dir one file per object (and with --kustomize a
    kustomization.yaml). Readers mount the store root read-only and, unless --no-leases, its
    leases/ folder read-write; they find both in $SHAREDREC_STORE and $SHAREDREC_LEASE_DIR.
    """


@k8s.command()
@click.option("--file-system-id", required=True, help="EFS file system id, fs-….")
@click.option("--access-point-id", help="Static: mount through this access point, fsap-….")
@click.option("--path", help="Static: store root inside the file system (or access point).")
@click.option(
    "--dynamic", is_flag=True, default=None, help="Provision an access point through an efs-ap StorageClass."
)
@click.option("--directory-perms", help="Dynamic: mode of the access point's root folder.  [default: 700]")
@click.option("--uid", type=int, help="Dynamic: POSIX user of the access point (with --gid).")
@click.option("--gid", type=int, help="Dynamic: POSIX group of the access point (with --uid).")
@click.option("--base-path", help="Dynamic: folder under which access points are created.")
@click.option(
    "--iam", is_flag=True, default=None, help="Mount with IAM authorization (for IAM file system policies)."
)
@click.option(
    "--mount-option",
    multiple=True,
    help="Another efs-utils mount option (repeatable); after the ones AWS recommends and "
    "lookupcache=positive, replacing the one that sets the same thing.",
)
@click.option(
    "--volume-attribute",
    multiple=True,
    callback=_pairs,
    help="Static: KEY=VALUE volumeAttribute: encryptInTransit, mounttargetip or crossaccount (repeatable).",
)
@_common
def efs(
    file_system_id: str,
    access_point_id: str | None,
    path: str | None,
    dynamic: bool | None,
    directory_perms: str | None,
    uid: int | None,
    gid: int | None,
    base_path: str | None,
    iam: bool | None,
    mount_option: tuple[str, ...],
    volume_attribute: dict[str, str] | None,
    **options: Any,
) -> None:
    """Amazon EFS through efs.csi.aws.com (static PV, or dynamic access points with --dynamic)."""
    volume = _given(
        backend="efs",
        file_system_id=file_system_id,
        access_point_id=access_point_id,
        path=path,
        dynamic=dynamic,
        directory_perms=directory_perms,
        uid=uid,
        gid=gid,
        base_path=base_path,
        iam=iam,
        mount_options=mount_option or None,
        volume_attributes=volume_attribute,
    )
    _emit(volume, options)


@k8s.command()
@click.option("--server", required=True, help="NFS server host name or IP address.")
@click.option("--path", required=True, help="Exported path of the store root.")
@click.option(
    "--csi", is_flag=True, default=None, help="Use nfs.csi.k8s.io instead of the in-tree nfs volume."
)
@click.option("--capacity", help="Declared size.  [default: 10Gi]")
@click.option(
    "--mount-option",
    multiple=True,
    help="Another NFS mount option (repeatable); after nfsvers=4.1, hard and lookupcache=positive, "
    "replacing the one that sets the same thing.",
)
@_common
def nfs(
    server: str,
    path: str,
    csi: bool | None,
    capacity: str | None,
    mount_option: tuple[str, ...],
    **options: Any,
) -> None:
    """An NFS export, in-tree or through nfs.csi.k8s.io (--csi)."""
    volume = _given(
        backend="nfs",
        server=server,
        path=path,
        csi=csi,
        capacity=capacity,
        mount_options=mount_option or None,
    )
    _emit(volume, options)


@k8s.command()
@click.option("--bucket", required=True, help="S3 bucket name.")
@click.option("--prefix", help="Key prefix of the store root, e.g. recs/prod.")
@click.option("--region", help="The bucket's region, e.g. us-east-1.")
@click.option(
    "--authentication-source",
    type=click.Choice(["driver", "pod"]),
    help="Mountpoint uses the driver's IAM identity or the pod's.  [default: driver]",
)
@click.option("--mount-option", multiple=True, help="Another Mountpoint option (repeatable).")
@click.option(
    "--readers",
    type=click.Choice(["mount", "api"]),
    help="Readers read through a Mountpoint volume, or through the S3 API (no volume; a cache "
    "emptyDir; credentials from --service-account).  [default: mount]",
)
@click.option(
    "--cache-size", help="With --readers api: sizeLimit of the readers' cache emptyDir.  [default: 12Gi]"
)
@_common
def s3(
    bucket: str,
    prefix: str | None,
    region: str | None,
    authentication_source: str | None,
    mount_option: tuple[str, ...],
    readers: str | None,
    cache_size: str | None,
    **options: Any,
) -> None:
    """An S3 bucket, read through Mountpoint (s3.csi.aws.com) or the S3 API; the writer uses the S3 API."""
    volume = _given(
        backend="s3",
        bucket=bucket,
        prefix=prefix,
        region=region,
        authentication_source=authentication_source,
        mount_options=mount_option or None,
        readers=readers,
        cache_size=cache_size,
    )
    _emit(volume, options)


@k8s.command()
@click.option("--path", required=True, help="Store root on the node.")
@click.option("--capacity", help="Declared size.  [default: 10Gi]")
@_common
def hostpath(path: str, capacity: str | None, **options: Any) -> None:
    """A folder of the node, for single-node development clusters."""
    _emit(_given(backend="hostpath", path=path, capacity=capacity), options)
