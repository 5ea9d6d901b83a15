"""Kubernetes manifests for a sharedrec store: the volume and the workloads around it.

Describe what you want with a `K8sConfig` (one volume backend, and optionally the readers,
their autoscaler and the writer); get plain-dict objects from `build_objects`, YAML from
`render`, or files from `write_files`. Rules that no Kubernetes schema knows (what each
CSI driver accepts, read-only mounts, static binding, names) are checked when the config
is built and again on the objects (`check_manifests`); a broken rule raises `ConfigError`
or `InvalidInput` naming the field and the fix.

Writing YAML needs PyYAML, the ``sharedrec[k8s]`` extra; the models and builders do not.

Example:
    >>> from sharedrec.k8s import EfsVolume, K8sConfig, ReaderSpec, render  # doctest: +SKIP
    >>> config = K8sConfig(
    ...     name="recs",
    ...     namespace="ml",
    ...     volume=EfsVolume(file_system_id="fs-0123456789abcdef0", access_point_id="fsap-0123456789abcdef0"),
    ...     reader=ReaderSpec(image="registry.example.com/recs-api:1.4"),
    ... )
    >>> print(render(config))
"""

from __future__ import annotations

from sharedrec.k8s._config import (
    AccessMode,
    AutoscalingSpec,
    ConfigError,
    EfsVolume,
    HostPathVolume,
    K8sConfig,
    NfsVolume,
    ReaderSpec,
    Resources,
    S3Volume,
    Volume,
    WriterSpec,
)
from sharedrec.k8s._render import (
    MissingDependency,
    build_files,
    build_objects,
    render,
    to_yaml,
    write_files,
)
from sharedrec.k8s._rules import check_manifests
from sharedrec.k8s._volumes import EFS_MOUNT_OPTIONS, NFS_MOUNT_OPTIONS, storage_objects
from sharedrec.k8s._workloads import (
    autoscaler,
    disruption_budget,
    reader_deployment,
    reader_patch,
    writer_workload,
)

__all__ = [
    "EFS_MOUNT_OPTIONS",
    "NFS_MOUNT_OPTIONS",
    "AccessMode",
    "AutoscalingSpec",
    "ConfigError",
    "EfsVolume",
    "HostPathVolume",
    "K8sConfig",
    "MissingDependency",
    "NfsVolume",
    "ReaderSpec",
    "Resources",
    "S3Volume",
    "Volume",
    "WriterSpec",
    "autoscaler",
    "build_files",
    "build_objects",
    "check_manifests",
    "disruption_budget",
    "reader_deployment",
    "reader_patch",
    "render",
    "storage_objects",
    "to_yaml",
    "write_files",
    "writer_workload",
]
