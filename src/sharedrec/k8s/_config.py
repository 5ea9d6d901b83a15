"""The pydantic models of a sharedrec deployment on Kubernetes: what the user wants.

A `K8sConfig` holds one volume backend (`EfsVolume`, `NfsVolume`, `S3Volume` or
`HostPathVolume`) and, optionally, the readers (`ReaderSpec`), their autoscaler
(`AutoscalingSpec`) and the writer (`WriterSpec`). Every model checks itself when it is
built, so a config that exists is one the manifests can be generated from; anything wrong
raises `ConfigError` (an `InvalidInput`) naming each field and what to write instead.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sharedrec.errors import InvalidInput
from sharedrec.format.layout import LEASES
from sharedrec.k8s import _rules
from sharedrec.k8s._cron import parse_schedule

__all__ = [
    "AccessMode",
    "AutoscalingSpec",
    "ConfigError",
    "EfsVolume",
    "HostPathVolume",
    "K8sConfig",
    "NfsVolume",
    "ReaderSpec",
    "Resources",
    "S3Volume",
    "Volume",
    "WriterSpec",
]

AccessMode = Literal["ReadWriteMany", "ReadOnlyMany", "ReadWriteOnce", "ReadWriteOncePod"]
"""A PersistentVolume access mode."""

NOMINAL_CAPACITY = "1Gi"
"""What EFS and S3 volumes declare: Kubernetes requires a capacity, those drivers ignore it."""

Location = tuple[str | int, ...]

_BACKENDS = ("efs", "nfs", "s3", "hostpath")
_BACKEND_NAMES = {"efs": "EFS", "nfs": "NFS", "s3": "S3", "hostpath": "hostPath"}
_REQUIRED_HINTS = {
    "file_system_id": "the EFS file system id, fs-… (`aws efs describe-file-systems`)",
    "bucket": "the S3 bucket name",
    "server": "the NFS server's host name or IP address",
    "path": "an absolute path",
    "max_replicas": "the most reader pods the autoscaler may run",
    "image": "a container image reference",
    "volume": "one of EfsVolume, NfsVolume, S3Volume, HostPathVolume (backend: efs, nfs, s3, hostpath)",
}


class ConfigError(InvalidInput):
    """Raised when a Kubernetes config is invalid.

    The message lists every problem as ``field: what is wrong and what to do``; ``issues``
    holds the same as (location, message) pairs, the location being the path of field
    names from the model that was built (``("volume", "file_system_id")``).
    """

    def __init__(self, issues: Sequence[tuple[Location, str]]) -> None:
        self.issues: list[tuple[Location, str]] = list(issues)
        lines = [f"{_where(loc)}: {msg}" if loc else msg for loc, msg in self.issues]
        super().__init__("invalid Kubernetes config: " + "; ".join(lines))


def _where(loc: Location) -> str:
    return ".".join(str(part) for part in loc)


def _issue(field: str, message: str) -> ConfigError:
    return ConfigError([((field,), message)])


def _issues(exc: ValidationError) -> list[tuple[Location, str]]:
    found: list[tuple[Location, str]] = []
    for error in exc.errors():
        loc: Location = tuple(
            part
            for i, part in enumerate(error["loc"])
            if not (part in _BACKENDS and i > 0 and error["loc"][i - 1] == "volume")
        )
        cause = (error.get("ctx") or {}).get("error")
        kind = error["type"]
        if isinstance(cause, ConfigError):
            found.extend((loc + sub, msg) for sub, msg in cause.issues)
        elif isinstance(cause, InvalidInput):
            found.append((loc, str(cause)))
        elif kind == "missing":
            hint = _REQUIRED_HINTS.get(str(loc[-1]) if loc else "", "")
            found.append((loc, "is required" + (f": {hint}" if hint else "")))
        elif kind == "extra_forbidden":
            found.append((loc, "is not a known field: remove it or check its spelling"))
        elif kind in {"union_tag_invalid", "union_tag_not_found"}:
            found.append(((*loc, "backend"), "must be one of " + ", ".join(_BACKENDS)))
        else:
            found.append((loc, error["msg"]))
    return found


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    if not TYPE_CHECKING:
        # Hidden from type checkers so that the pydantic plugin keeps typed signatures.

        def __init__(self, **data: Any) -> None:
            try:
                super().__init__(**data)
            except ValidationError as exc:
                raise ConfigError(_issues(exc)) from None

        @classmethod
        def model_validate(cls, obj: Any, **options: Any) -> Any:
            try:
                return super().model_validate(obj, **options)
            except ValidationError as exc:
                raise ConfigError(_issues(exc)) from None

        @classmethod
        def model_validate_json(cls, data: Any, **options: Any) -> Any:
            try:
                return super().model_validate_json(data, **options)
            except ValidationError as exc:
                raise ConfigError(_issues(exc)) from None


def _refuse_capacity(data: Any, backend: str) -> Any:
    if isinstance(data, dict) and "capacity" in data:
        raise _issue(
            "capacity",
            f"{backend} is elastic and its driver ignores capacity: remove it (sharedrec declares the "
            f"nominal {NOMINAL_CAPACITY} that Kubernetes requires)",
        )
    return data


# -- volumes ---------------------------------------------------------------------------------


class EfsVolume(_Model):
    """Amazon EFS through the ``efs.csi.aws.com`` driver.

    Static (default): a PersistentVolume on an existing file system, optionally through an
    access point (``volumeHandle: fs-…::fsap-…``) and below a path of it. Dynamic
    (``dynamic=True``): a StorageClass with ``provisioningMode: efs-ap`` that creates one
    access point (and its root folder) for the claim.

    Example:
        >>> EfsVolume(file_system_id="fs-0123456789abcdef0", access_point_id="fsap-0123456789abcdef0")
        ... # doctest: +SKIP
    """

    backend: Literal["efs"] = "efs"
    file_system_id: str = Field(description="The file system id, fs-…")
    access_point_id: str | None = Field(None, description="Static only: mount through this access point.")
    path: str | None = Field(
        None, description="Static only: the store root inside the file system (or the access point's root)."
    )
    dynamic: bool = Field(False, description="Provision an access point through an efs-ap StorageClass.")
    directory_perms: str = Field("700", description="Dynamic only: mode of the access point's root folder.")
    uid: int | None = Field(
        None, ge=0, le=2147483647, description="Dynamic only: POSIX user of the access point."
    )
    gid: int | None = Field(
        None, ge=0, le=2147483647, description="Dynamic only: POSIX group of the access point."
    )
    base_path: str | None = Field(
        None, description="Dynamic only: folder under which access points are created."
    )
    iam: bool = Field(
        False, description="Mount with the driver's IAM identity (needed by IAM file system policies)."
    )
    mount_options: tuple[str, ...] = Field(
        (),
        description="More mount options for efs-utils, after sharedrec's (EFS_MOUNT_OPTIONS); one that "
        "sets the same thing as one of those replaces it.",
    )
    volume_attributes: dict[str, str] = Field(
        default_factory=dict, description="Static only: encryptInTransit, mounttargetip or crossaccount."
    )

    @model_validator(mode="before")
    @classmethod
    def _no_capacity(cls, data: Any) -> Any:
        return _refuse_capacity(data, "EFS")

    @field_validator("file_system_id")
    @classmethod
    def _fs(cls, value: str) -> str:
        return _rules.efs_file_system_id(value)

    @field_validator("access_point_id")
    @classmethod
    def _ap(cls, value: str | None) -> str | None:
        return None if value is None else _rules.efs_access_point_id(value)

    @field_validator("path", "base_path")
    @classmethod
    def _paths(cls, value: str | None) -> str | None:
        return None if value is None else _rules.store_root(_rules.absolute_path(value, "path"), "path")

    @field_validator("directory_perms")
    @classmethod
    def _perms(cls, value: str) -> str:
        if not re.fullmatch(r"[0-7]{3,4}", value):
            raise InvalidInput(f"directory_perms must be an octal mode such as 700 or 0750; got {value!r}")
        return value

    @field_validator("mount_options")
    @classmethod
    def _options(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _rules.efs_mount_options(value)

    @field_validator("volume_attributes")
    @classmethod
    def _attributes(cls, value: dict[str, str]) -> dict[str, str]:
        return _rules.efs_volume_attributes(value)

    @model_validator(mode="after")
    def _modes(self) -> EfsVolume:
        issues: list[tuple[Location, str]] = []
        if self.dynamic:
            static_only = (
                "applies to static volumes only: with dynamic=True the driver creates the access point and "
                "its folder; drop it, or set dynamic=False to mount an existing one"
            )
            issues.extend(
                ((field,), static_only)
                for field in ("access_point_id", "path", "volume_attributes")
                if field in self.model_fields_set and getattr(self, field)
            )
            if (self.uid is None) != (self.gid is None):
                issues.append(
                    (
                        ("uid" if self.uid is None else "gid",),
                        "set uid and gid together (the access point enforces both), or neither",
                    )
                )
        else:
            dynamic_only = (
                "applies to dynamic provisioning only: set dynamic=True, or drop it (a static volume "
                "mounts an existing folder or access point)"
            )
            issues.extend(
                ((field,), dynamic_only)
                for field in ("directory_perms", "uid", "gid", "base_path")
                if field in self.model_fields_set
            )
        encrypt = {k.lower(): v for k, v in self.volume_attributes.items()}.get("encryptintransit")
        if self.access_point_id and encrypt is not None and encrypt.lower() in {"0", "f", "false"}:
            issues.append(
                (
                    ("volume_attributes",),
                    "encryptInTransit cannot be false with an access point: the driver "
                    "always mounts access points over TLS; drop the attribute",
                )
            )
        if issues:
            raise ConfigError(issues)
        return self

    @property
    def volume_handle(self) -> str:
        """The ``volumeHandle``: ``fs-…``, ``fs-…:/path``, ``fs-…::fsap-…`` or ``fs-…:/path:fsap-…``."""
        if self.access_point_id:
            return f"{self.file_system_id}:{self.path or ''}:{self.access_point_id}"
        return f"{self.file_system_id}:{self.path}" if self.path else self.file_system_id


class NfsVolume(_Model):
    """An NFS export, through the in-tree ``nfs`` volume or the ``nfs.csi.k8s.io`` driver."""

    backend: Literal["nfs"] = "nfs"
    server: str = Field(description="Host name or IP address of the NFS server.")
    path: str = Field(description="The exported path of the store root on the server.")
    csi: bool = Field(False, description="Use the nfs.csi.k8s.io driver instead of the in-tree nfs volume.")
    capacity: str = Field("10Gi", description="Declared size (NFS does not enforce it; quotas count it).")
    mount_options: tuple[str, ...] = Field(
        (),
        description="More mount options, after sharedrec's (NFS_MOUNT_OPTIONS: nfsvers=4.1, hard, "
        "lookupcache=positive); one that sets the same thing as one of those replaces it.",
    )

    @field_validator("server")
    @classmethod
    def _server(cls, value: str) -> str:
        return _rules.nfs_server(value)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return _rules.store_root(_rules.absolute_path(value, "path"), "path")

    @field_validator("capacity")
    @classmethod
    def _capacity(cls, value: str) -> str:
        return _rules.quantity(value, "capacity")

    @field_validator("mount_options")
    @classmethod
    def _options(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _rules.nfs_mount_options(value)

    @model_validator(mode="after")
    def _resolvable(self) -> NfsVolume:
        if not self.csi:
            try:
                _rules.in_tree_nfs_server(self.server)
            except InvalidInput as exc:
                raise _issue("server", str(exc)) from None
        return self


class S3Volume(_Model):
    """An S3 bucket (or a prefix of it), read through Mountpoint or through the S3 API.

    With ``readers="mount"`` (the default) readers read through the Mountpoint CSI driver
    ``s3.csi.aws.com``. With ``readers="api"`` nothing is mounted: readers open the
    ``s3://`` URL themselves, keep their chunk cache in an ``emptyDir`` of ``cache_size``
    and get their credentials from their service account. The writer always publishes
    through the S3 API (Mountpoint cannot rename, so it cannot replace ``CURRENT``
    atomically) and mounts nothing.
    """

    backend: Literal["s3"] = "s3"
    bucket: str = Field(description="The bucket name.")
    prefix: str | None = Field(None, description="Key prefix of the store root, e.g. recs/prod.")
    region: str | None = Field(None, description="The bucket's region (Mountpoint otherwise detects it).")
    authentication_source: Literal["driver", "pod"] = Field(
        "driver",
        description="Whose IAM identity Mountpoint uses: the driver's, or the pod's service account.",
    )
    mount_options: tuple[str, ...] = Field((), description="More Mountpoint options, e.g. 'cache /tmp/s3'.")
    readers: Literal["mount", "api"] = Field(
        "mount", description="Readers read through a Mountpoint volume, or through the S3 API."
    )
    cache_size: str = Field(
        "12Gi",
        description="readers='api' only: sizeLimit of the readers' cache emptyDir; keep the readers' "
        "cache_max_bytes (10 GiB by default) below it.",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_capacity(cls, data: Any) -> Any:
        return _refuse_capacity(data, "S3")

    @field_validator("cache_size")
    @classmethod
    def _cache_size(cls, value: str) -> str:
        return _rules.quantity(value, "cache_size")

    @model_validator(mode="after")
    def _mode_fields(self) -> S3Volume:
        if self.readers == "api":
            mount_only = (
                "is a Mountpoint setting, and with readers='api' nothing is mounted: drop it, or read "
                "through the mount (readers='mount')"
            )
            fields = ("authentication_source", "mount_options")
            issues: list[tuple[Location, str]] = [
                ((field,), mount_only) for field in fields if field in self.model_fields_set
            ]
        else:
            issues = (
                [
                    (
                        ("cache_size",),
                        "sizes the readers' cache when they use the S3 API: set readers='api' too, or "
                        "drop it",
                    )
                ]
                if "cache_size" in self.model_fields_set
                else []
            )
        if issues:
            raise ConfigError(issues)
        return self

    @property
    def through_api(self) -> bool:
        """Whether readers use the S3 API (and nothing is mounted)."""
        return self.readers == "api"

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        return _rules.s3_bucket(value)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        return None if value is None or value.strip("/") == "" else _rules.s3_prefix(value)

    @field_validator("region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        return None if value is None else _rules.s3_region(value)

    @field_validator("mount_options")
    @classmethod
    def _options(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _rules.s3_mount_options(value)

    @property
    def url(self) -> str:
        """The store's ``s3://bucket/prefix`` URL, for processes that use the S3 API."""
        return f"s3://{self.bucket}/{self.prefix.rstrip('/')}" if self.prefix else f"s3://{self.bucket}"


class HostPathVolume(_Model):
    """A folder of the node, for single-node development clusters (kind, minikube, k3d)."""

    backend: Literal["hostpath"] = "hostpath"
    path: str = Field(description="The store root on the node.")
    capacity: str = Field("10Gi", description="Declared size (not enforced).")

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return _rules.store_root(_rules.absolute_path(value, "path"), "path")

    @field_validator("capacity")
    @classmethod
    def _capacity(cls, value: str) -> str:
        return _rules.quantity(value, "capacity")


Volume = Annotated[EfsVolume | NfsVolume | S3Volume | HostPathVolume, Field(discriminator="backend")]
"""Any volume backend, told apart by its ``backend`` field."""


# -- workloads -------------------------------------------------------------------------------


class Resources(_Model):
    """CPU and memory of a container (Kubernetes quantities)."""

    cpu_request: str | None = None
    cpu_limit: str | None = None
    memory_request: str | None = None
    memory_limit: str | None = None

    @field_validator("cpu_request", "cpu_limit")
    @classmethod
    def _cpu(cls, value: str | None) -> str | None:
        return None if value is None else _rules.cpu(value, "cpu")

    @field_validator("memory_request", "memory_limit")
    @classmethod
    def _memory(cls, value: str | None) -> str | None:
        return None if value is None else _rules.quantity(value, "memory")

    @model_validator(mode="after")
    def _request_within_limit(self) -> Resources:
        issues: list[tuple[Location, str]] = []
        for what in ("cpu", "memory"):
            request, limit = getattr(self, f"{what}_request"), getattr(self, f"{what}_limit")
            if request and limit and _rules.quantity_value(request) > _rules.quantity_value(limit):
                issues.append(
                    (
                        (f"{what}_request",),
                        f"({request}) is above {what}_limit ({limit}), which the API server refuses: "
                        "lower the request or raise the limit",
                    )
                )
        if issues:
            raise ConfigError(issues)
        return self


class ReaderSpec(_Model):
    """The pods that serve lookups: a new Deployment from ``image``, or a patch of an existing one.

    Either give ``image`` (sharedrec writes the Deployment ``deployment`` or
    ``<name>-reader``), or ``patch=True`` with the ``deployment`` and ``container`` to
    patch (sharedrec writes a strategic merge patch adding the volume, the mounts and the
    environment).
    """

    image: str | None = None
    patch: bool = False
    deployment: str | None = None
    container: str = "reader"
    command: tuple[str, ...] | None = None
    replicas: int = Field(2, ge=1)
    port: int | None = Field(None, ge=1, le=65535)
    resources: Resources = Field(default_factory=Resources)
    readiness_command: tuple[str, ...] | None = Field(
        None, description="Exec readiness probe; none unless given."
    )
    readiness_http_path: str | None = Field(
        None,
        description="HTTP readiness probe: the kubelet requests this path (e.g. /readyz) on port; "
        "none unless given, and not with readiness_command.",
    )
    service_account: str | None = None
    ref: str | None = Field(
        None, description="Follow this named ref (e.g. canary) instead of CURRENT: $SHAREDREC_REF."
    )
    disruption_budget: bool = Field(
        True, description="A PodDisruptionBudget keeps all but max_unavailable readers through a drain."
    )
    max_unavailable: int | str = Field(
        1, description="Readers a voluntary disruption may take at once: a count, or a percentage ('25%')."
    )
    topology_spread: bool = Field(
        True, description="Spread readers over zones, then nodes (topologySpreadConstraints)."
    )

    @field_validator("max_unavailable")
    @classmethod
    def _max_unavailable(cls, value: int | str) -> int | str:
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if isinstance(value, int) and value >= 1:
            return value
        if (
            isinstance(value, str)
            and value.endswith("%")
            and value[:-1].isdigit()
            and 1 <= int(value[:-1]) <= 100
        ):
            return value
        raise InvalidInput(
            f"must be a number of pods (1 or more) or a percentage from 1% to 100%, such as 25%; got "
            f"{value!r} (0 would block every node drain; for no budget at all, set disruption_budget=False, "
            "--no-disruption-budget)"
        )

    @field_validator("ref")
    @classmethod
    def _ref(cls, value: str | None) -> str | None:
        if value is not None:
            from sharedrec.format.layout import ref_path

            ref_path(value)  # raises InvalidInput naming the rule
        return value

    @field_validator("image")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        return None if value is None else _rules.image(value, "image")

    @field_validator("deployment", "service_account")
    @classmethod
    def _names(cls, value: str | None) -> str | None:
        return None if value is None else _rules.dns_subdomain(value, "Kubernetes object name")

    @field_validator("container")
    @classmethod
    def _container(cls, value: str) -> str:
        return _rules.dns_label(value, "container name")

    @field_validator("command", "readiness_command")
    @classmethod
    def _command(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if value is None else _rules.command(value, "command")

    @field_validator("readiness_http_path")
    @classmethod
    def _http_path(cls, value: str | None) -> str | None:
        return None if value is None else _rules.http_path(value, "readiness_http_path")

    @model_validator(mode="after")
    def _mode(self) -> ReaderSpec:
        issues: list[tuple[Location, str]] = []
        if self.readiness_http_path is not None:
            if self.readiness_command is not None:
                issues.append(
                    (
                        ("readiness_http_path",),
                        "conflicts with readiness_command (--readiness-command): a container has one "
                        "readiness probe; keep the HTTP one (readiness_http_path, --readiness-http-path) "
                        "for a service that answers it, or the command",
                    )
                )
            if self.port is None:
                issues.append(
                    (
                        ("port",),
                        "is required by readiness_http_path (--readiness-http-path): the kubelet requests "
                        "the path on this port; give the port the service listens on (port, --port)",
                    )
                )
        if self.patch:
            if self.deployment is None:
                issues.append(
                    (("deployment",), "is required with patch=True: the name of the Deployment to patch")
                )
            own = (
                "belongs to a Deployment that sharedrec creates; with patch=True the existing Deployment "
                "keeps its own: drop it"
            )
            # With an HTTP probe, port says where the probe calls; the patch adds no port to
            # the container, which declares its own.
            issues.extend(
                ((field,), own)
                for field in ("image", "command", "replicas", "port", "resources")
                if field in self.model_fields_set
                and not (field == "port" and self.readiness_http_path is not None)
            )
            # Both need the Deployment's pod labels, which a patch does not know.
            issues.extend(
                (
                    (field,),
                    "is written for a Deployment that sharedrec creates (it needs its pod labels); with "
                    "patch=True add it to your own manifests: drop it",
                )
                for field in ("disruption_budget", "max_unavailable", "topology_spread")
                if field in self.model_fields_set
            )
        elif self.image is None:
            issues.append(
                (("image",), "is required: the image of the reader pods (or patch=True with deployment=…)")
            )
        if issues:
            raise ConfigError(issues)
        return self


class AutoscalingSpec(_Model):
    """An ``autoscaling/v2`` HorizontalPodAutoscaler on the readers' CPU utilization."""

    min_replicas: int = Field(2, ge=1)
    max_replicas: int = Field(ge=1)
    target_cpu_utilization: int = Field(70, ge=1, le=1000, description="Percent of the CPU request.")

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise _issue(
                "min_replicas", f"({self.min_replicas}) must not exceed max_replicas ({self.max_replicas})"
            )
        return self


class WriterSpec(_Model):
    """The batch job that publishes versions: a CronJob on ``schedule``, or a one-off Job.

    A CronJob runs one publish at a time (``concurrencyPolicy: Forbid``), so a publish that
    hangs (on a ``hard`` NFS mount, a stalled upload) would block every later one. Its Job
    therefore ends after ``active_deadline_seconds`` and a run that could not start on time
    is skipped after ``starting_deadline_seconds``; both default from the schedule's shortest
    interval between runs (see `deadlines`).
    """

    image: str
    command: tuple[str, ...] | None = None
    schedule: str | None = Field(None, description="Cron schedule; none gives a one-off Job.")
    time_zone: str | None = None
    resources: Resources = Field(
        default_factory=Resources,
        description="Default: cpu_request 1, memory_request 2Gi, memory_limit = memory_request.",
    )
    service_account: str | None = None
    active_deadline_seconds: int | None = Field(
        None,
        description="The Job (every attempt) is stopped after this many seconds. Default with a "
        "schedule: the shortest interval between runs minus the starting deadline; none for a one-off Job.",
    )
    starting_deadline_seconds: int | None = Field(
        None,
        description="Schedule only: a run that cannot start within this many seconds of its time is "
        "skipped. Default: a quarter of the shortest interval, between 10 s and one hour.",
    )
    single_writer: bool = Field(
        False,
        description="S3 only: promise that this job is the store's only writer "
        "($SHAREDREC_SINGLE_WRITER=1), for S3-compatible servers that ignore conditional writes.",
    )

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        return _rules.image(value, "image")

    @field_validator("command")
    @classmethod
    def _command(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if value is None else _rules.command(value, "command")

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        return None if value is None else _rules.schedule(value)

    @field_validator("time_zone")
    @classmethod
    def _tz(cls, value: str | None) -> str | None:
        return None if value is None else _rules.time_zone(value)

    @field_validator("service_account")
    @classmethod
    def _sa(cls, value: str | None) -> str | None:
        return None if value is None else _rules.dns_subdomain(value, "service account name")

    @field_validator("active_deadline_seconds")
    @classmethod
    def _active(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise InvalidInput(f"must be a positive number of seconds; got {value}")
        return value

    @field_validator("starting_deadline_seconds")
    @classmethod
    def _starting(cls, value: int | None) -> int | None:
        if value is not None and value < 10:
            raise InvalidInput(
                f"must be at least 10 seconds (the CronJob controller looks every 10 s, so a shorter "
                f"deadline can skip every run); got {value}"
            )
        return value

    @model_validator(mode="after")
    def _needs_schedule(self) -> WriterSpec:
        issues: list[tuple[Location, str]] = [
            ((field,), "applies to a schedule: set schedule too, or drop it")
            for field in ("time_zone", "starting_deadline_seconds")
            if getattr(self, field) is not None and not self.schedule
        ]
        if issues:
            raise ConfigError(issues)
        return self

    def deadlines(self) -> tuple[int | None, int | None]:
        """``(activeDeadlineSeconds, startingDeadlineSeconds)`` as written, defaults filled in.

        With a schedule whose shortest interval between runs is ``gap`` seconds, the
        starting deadline defaults to ``gap / 4`` (at least 10 s, at most an hour) and the
        active deadline to ``gap`` minus the starting deadline: a run that starts late and
        hangs is stopped before the next one is due, so a hung publish costs one run, not all.
        """
        if self.schedule is None:
            return self.active_deadline_seconds, None
        gap = parse_schedule(self.schedule).shortest_interval()
        starting = self.starting_deadline_seconds
        if starting is None:
            starting = max(10, min(gap // 4, 3600))
        active = self.active_deadline_seconds
        if active is None:
            active = gap - starting
        return active, starting

    @property
    def effective_resources(self) -> Resources:
        """The resources written: the ones given, with a request and a memory limit by default.

        A writer without requests would be BestEffort, the first pod evicted when its node
        runs short, in the middle of a publish.
        """
        given = self.resources
        memory_request = given.memory_request or (given.memory_limit if given.memory_limit else "2Gi")
        return Resources(
            cpu_request=given.cpu_request or given.cpu_limit or "1",
            cpu_limit=given.cpu_limit,
            memory_request=memory_request,
            memory_limit=given.memory_limit or memory_request,
        )


def _needs_lease(command: tuple[str, ...] | None) -> bool:
    """Whether a readiness command runs ``sharedrec ready`` (directly, through ``python -m`` or a shell)."""
    words = list(command or ())
    names = [word.rsplit("/", 1)[-1] for word in words]
    return any(name == "sharedrec" and later == "ready" for name, later in itertools.pairwise(names)) or any(
        re.search(r"(^|[\s/])sharedrec\s+ready(\s|$)", word) for word in words
    )


class K8sConfig(_Model):
    """Everything sharedrec writes manifests from: the volume and the workloads around it.

    Names: the PersistentVolumeClaim is ``name`` in ``namespace``; the cluster-scoped
    PersistentVolume and StorageClass are ``<name>-<namespace>``; the readers'
    Deployment (and its autoscaler) ``<name>-reader`` unless ``reader.deployment`` says
    otherwise; the writer ``<name>-writer``; on S3 through Mountpoint with leases, the
    leases' own claim ``<name>-leases`` and volume ``<name>-<namespace>-leases``. Every
    object carries the labels
    ``app.kubernetes.io/name: <name>``, ``app.kubernetes.io/component`` and
    ``app.kubernetes.io/managed-by: sharedrec``.

    Example:
        >>> config = K8sConfig(  # doctest: +SKIP
        ...     name="recs",
        ...     namespace="ml",
        ...     volume=EfsVolume(file_system_id="fs-0123456789abcdef0"),
        ...     reader=ReaderSpec(image="registry.example.com/recs-api:1.4"),
        ... )
    """

    name: str = "sharedrec"
    namespace: str = "default"
    volume: Volume
    mount_path: str = "/mnt/recs"
    leases: bool = Field(True, description="Readers keep leases in the store's leases/ folder.")
    access_mode: AccessMode | None = Field(None, description="Default: what the backend needs.")
    run_as_user: int | None = Field(None, ge=0, le=2147483647)
    run_as_group: int | None = Field(None, ge=0, le=2147483647)
    fs_group: int | None = Field(
        None,
        ge=0,
        le=2147483647,
        description="Supplementary group of every container process (fsGroup): the group that may "
        "write a group-writable store (an NFS export, an EFS folder).",
    )
    run_as_non_root: bool = Field(
        True,
        description="Pods refuse to start as root (runAsNonRoot): the image sets a non-root USER "
        "or run_as_user gives one.",
    )
    reader: ReaderSpec | None = None
    autoscaling: AutoscalingSpec | None = None
    writer: WriterSpec | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _rules.dns_label(value, "name", _rules.MAX_NAME)

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        return _rules.dns_label(value, "namespace")

    @field_validator("mount_path")
    @classmethod
    def _mount_path(cls, value: str) -> str:
        return _rules.mount_path(value)

    @model_validator(mode="after")
    def _consistent(self) -> K8sConfig:
        issues = self._access_issues() + self._autoscaling_issues()
        if (
            isinstance(self.volume, S3Volume)
            and self.volume.through_api
            and self.reader is not None
            and not self.reader.patch
            and self.reader.service_account is None
        ):
            issues.append(
                (
                    ("reader", "service_account"),
                    "is required when readers use the S3 API (readers='api'): their credentials come from "
                    "it (IRSA or EKS Pod Identity), with read access to the store and write access to its "
                    "leases/ prefix",
                )
            )
        if self.writer is not None and self.writer.single_writer and self.volume.backend != "s3":
            issues.append(
                (
                    ("writer", "single_writer"),
                    f"applies to S3 stores only: on {_BACKEND_NAMES[self.volume.backend]} the writer "
                    "moves CURRENT under a file lock on the mounted volume, which serialises any "
                    "number of writers, and nothing reads $SHAREDREC_SINGLE_WRITER: drop it",
                )
            )
        probes_leases = self.reader is not None and _needs_lease(self.reader.readiness_command)
        if probes_leases and isinstance(self.volume, S3Volume) and self.volume.through_api:
            issues.append(
                (
                    ("reader", "readiness_command"),
                    "runs `sharedrec ready`, which reads the pod's leases from a folder of the pod, "
                    "but readers that use the S3 API (readers='api', --readers api) keep their leases "
                    "as objects under the store's leases/ prefix and mount no folder: the pods would "
                    "never be ready. Probe the service over HTTP instead (readiness_http_path, "
                    "--readiness-http-path /readyz)",
                )
            )
        elif probes_leases and not self.leases:
            issues.append(
                (
                    ("reader", "readiness_command"),
                    "runs `sharedrec ready`, which is ready only when the pod's reader holds a lease, "
                    "but leases are off (leases=False, --no-leases): the pods would never be ready. "
                    "Turn leases on, or probe the service another way (an HTTP readiness endpoint)",
                )
            )
        if self.run_as_non_root and self.run_as_user == 0:
            issues.append(
                (
                    ("run_as_user",),
                    "run_as_user=0 is root, which run_as_non_root forbids: give a non-root "
                    "uid, or run_as_non_root=False",
                )
            )
        if issues:
            raise ConfigError(issues)
        return self

    def _access_issues(self) -> list[tuple[Location, str]]:
        mode, backend = self.access_mode, self.volume.backend
        where: Location = ("access_mode",)
        if mode is None or mode == "ReadWriteMany":
            return []
        if mode == "ReadWriteOncePod":
            return [(where, "ReadWriteOncePod allows one pod; readers are many: use ReadWriteMany")]
        if backend == "efs":
            return [
                (
                    where,
                    f"EFS needs ReadWriteMany: the EFS CSI driver refuses ReadOnlyMany at mount time "
                    f"and ReadWriteOnce would keep every reader on one node; got {mode}. Readers still "
                    "mount the store read-only (on their volumeMount)",
                )
            ]
        if mode == "ReadWriteOnce" and backend != "hostpath":
            return [(where, "ReadWriteOnce keeps every pod on one node: use ReadWriteMany")]
        if mode == "ReadOnlyMany":
            leases_here = self.leases and not self.separate_leases_volume
            writes = [
                what for what, on in (("leases", leases_here), ("the writer", self._writer_mounts)) if on
            ]
            if writes:
                return [
                    (
                        where,
                        f"ReadOnlyMany cannot carry {' and '.join(writes)}, which write to the volume: "
                        "use ReadWriteMany (readers still mount the store read-only), or set "
                        "leases=False and run the writer elsewhere",
                    )
                ]
        return []

    def _autoscaling_issues(self) -> list[tuple[Location, str]]:
        if self.autoscaling is None:
            return []
        if self.reader is None:
            return [(("autoscaling",), "scales the readers: add reader (an image, or patch=True)")]
        issues: list[tuple[Location, str]] = []
        if "replicas" in self.reader.model_fields_set:
            issues.append(
                (
                    ("reader", "replicas"),
                    "conflicts with autoscaling, which owns the replica count: set "
                    "autoscaling.min_replicas instead",
                )
            )
        if not self.reader.patch and self.reader.resources.cpu_request is None:
            issues.append(
                (
                    ("reader", "resources", "cpu_request"),
                    "is required with autoscaling: CPU utilization is "
                    "measured against the request (e.g. 500m)",
                )
            )
        return issues

    @property
    def _writer_mounts(self) -> bool:
        return self.writer is not None and self.volume.backend != "s3"

    @property
    def effective_access_mode(self) -> AccessMode:
        """The access mode written: the one given, else what the backend and the workloads need."""
        if self.access_mode is not None:
            return self.access_mode
        if self.volume.backend == "hostpath":
            return "ReadWriteOnce"
        if self.volume.backend == "s3":
            return "ReadOnlyMany"  # the writer uses the S3 API, the leases have their own volume
        return "ReadWriteMany"

    @property
    def claim_name(self) -> str:
        """Name of the PersistentVolumeClaim (in ``namespace``)."""
        return self.name

    @property
    def cluster_name(self) -> str:
        """Name of the cluster-scoped PersistentVolume or StorageClass."""
        return f"{self.name}-{self.namespace}"

    @property
    def pod_volume_name(self) -> str:
        """Name of the store volume inside pod specs."""
        return f"{self.name}-store"

    @property
    def deployment_name(self) -> str:
        """Name of the readers' Deployment (created or patched)."""
        if self.reader is not None and self.reader.deployment:
            return self.reader.deployment
        return f"{self.name}-reader"

    @property
    def writer_name(self) -> str:
        """Name of the writer's CronJob or Job."""
        return f"{self.name}-writer"

    def labels(self, component: str) -> dict[str, str]:
        """The labels of every object of ``component`` (storage, reader or writer)."""
        return {
            "app.kubernetes.io/name": self.name,
            "app.kubernetes.io/component": component,
            "app.kubernetes.io/managed-by": "sharedrec",
        }

    @property
    def lease_path(self) -> str:
        """Where readers see the store's ``leases/`` folder (mounted read-write)."""
        return f"{self.mount_path}/{LEASES}"

    @property
    def separate_leases_volume(self) -> bool:
        """Whether the leases get a volume of their own (S3 through Mountpoint, leases on).

        A ``subPath: leases`` of a Mountpoint volume would vanish with the last lease object
        (S3 has no folders), so the readers' leases/ prefix is mounted as a volume of its own,
        whose root always exists.
        """
        volume = self.volume
        return self.leases and volume.backend == "s3" and getattr(volume, "readers", "mount") == "mount"

    @property
    def leases_claim_name(self) -> str:
        """Name of the leases' own claim (see `separate_leases_volume`)."""
        return f"{self.name}-{LEASES}"

    @property
    def leases_cluster_name(self) -> str:
        """Name of the leases' own PersistentVolume (see `separate_leases_volume`)."""
        return f"{self.cluster_name}-{LEASES}"
