"""The storage objects of each backend: PersistentVolume, PersistentVolumeClaim, StorageClass.

Static volumes are pre-bound both ways, as the Kubernetes documentation on reserving a
PersistentVolume describes: the PV's ``claimRef`` names the claim and its namespace, the
claim's ``volumeName`` names the PV, and both set ``storageClassName: ""`` so that no
default StorageClass provisions a fresh, empty volume instead. Volumes are retained when
their claim goes: a store is data, not scratch space.
"""

from __future__ import annotations

from typing import Any

from sharedrec.format.layout import LEASES
from sharedrec.k8s._config import (
    NOMINAL_CAPACITY,
    EfsVolume,
    HostPathVolume,
    K8sConfig,
    NfsVolume,
    S3Volume,
)
from sharedrec.k8s._rules import EFS_DRIVER, NFS_DRIVER, S3_DRIVER

__all__ = ["EFS_MOUNT_OPTIONS", "NFS_MOUNT_OPTIONS", "storage_objects"]

# What a reader needs from an NFS client: readers poll CURRENT by open + read, which NFS
# revalidates on every open (close-to-open), so the attribute cache (actimeo) never hides a
# moved pointer and is left at its default; lowering it only adds round trips. A name the
# client saw missing is another matter: the client remembers "no such file" until the
# folder's attributes expire (acdirmin-acdirmax, 30-60 s by default), which hides a new
# pointer (the first CURRENT, a new ref) and garbage collection's mark in a version folder
# from a node that looked before. lookupcache=positive keeps found names cached and asks the
# server again for missing ones. hard: a reader waits out a server outage instead of
# failing reads (and SIGBUS in mapped chunks). nfsvers=4.1: flock across hosts for publishes.
NFS_MOUNT_OPTIONS: tuple[str, ...] = ("nfsvers=4.1", "hard", "lookupcache=positive")
"""Mount options of every NFS volume; ``NfsVolume.mount_options`` add to them or replace one."""
# The options AWS recommends for EFS (efs-utils applies the same ones unless told otherwise),
# plus lookupcache=positive as above. noresvport lets the client reconnect from a new port
# after a network interruption; a plain NFS server may insist on reserved ports, so NFS
# volumes do not get it.
EFS_MOUNT_OPTIONS: tuple[str, ...] = (
    "nfsvers=4.1",
    "rsize=1048576",
    "wsize=1048576",
    "hard",
    "timeo=600",
    "retrans=2",
    "noresvport",
    "lookupcache=positive",
)
"""Mount options of every EFS volume; ``EfsVolume.mount_options`` add to them or replace one."""
# Options that set one thing under two names: a user's option replaces ours of either name.
_SAME_SETTING = {"vers": "nfsvers", "soft": "hard", "softerr": "hard", "resvport": "noresvport"}


def storage_objects(config: K8sConfig) -> list[dict[str, Any]]:
    """The StorageClass (dynamic EFS only) or PersistentVolume, then the claim.

    None for S3 read through the API (``readers="api"``): nothing is mounted.

    Args:
        config: A validated config.

    Returns:
        Plain dicts in the order to apply them.
    """
    volume = config.volume
    if isinstance(volume, S3Volume) and volume.through_api:
        return []  # every pod uses the S3 API: nothing to mount
    if isinstance(volume, EfsVolume) and volume.dynamic:
        return [_efs_storage_class(config, volume), _claim(config, NOMINAL_CAPACITY, config.cluster_name)]
    if isinstance(volume, EfsVolume):
        source = _efs_source(volume)
        capacity, options = NOMINAL_CAPACITY, _efs_mount_options(volume)
    elif isinstance(volume, NfsVolume):
        source = _nfs_source(config, volume)
        capacity, options = volume.capacity, _with_defaults(NFS_MOUNT_OPTIONS, volume.mount_options)
    elif isinstance(volume, S3Volume):
        source = _s3_source(config, volume, config.cluster_name)
        capacity, options = NOMINAL_CAPACITY, _s3_mount_options(config, volume, leases=False)
    else:
        source = _host_path_source(volume)
        capacity, options = volume.capacity, []
    objects = [_persistent_volume(config, capacity, options, source), _claim(config, capacity, "")]
    if isinstance(volume, S3Volume) and config.separate_leases_volume:
        leases = _persistent_volume(
            config,
            NOMINAL_CAPACITY,
            _s3_mount_options(config, volume, leases=True),
            _s3_source(config, volume, config.leases_cluster_name),
            name=config.leases_cluster_name,
            claim=config.leases_claim_name,
            mode="ReadWriteMany",
        )
        objects += [
            leases,
            _claim(
                config,
                NOMINAL_CAPACITY,
                "",
                name=config.leases_claim_name,
                volume=config.leases_cluster_name,
                mode="ReadWriteMany",
            ),
        ]
    return objects


def _persistent_volume(
    config: K8sConfig,
    capacity: str,
    mount_options: list[str],
    source: dict[str, Any],
    *,
    name: str | None = None,
    claim: str | None = None,
    mode: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "capacity": {"storage": capacity},
        "volumeMode": "Filesystem",
        "accessModes": [mode or config.effective_access_mode],
        "persistentVolumeReclaimPolicy": "Retain",
        "storageClassName": "",
        "claimRef": {"namespace": config.namespace, "name": claim or config.claim_name},
    }
    if mount_options:
        spec["mountOptions"] = mount_options
    spec.update(source)
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name or config.cluster_name, "labels": config.labels("storage")},
        "spec": spec,
    }


def _claim(
    config: K8sConfig,
    capacity: str,
    storage_class: str,
    *,
    name: str | None = None,
    volume: str | None = None,
    mode: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": [mode or config.effective_access_mode],
        "volumeMode": "Filesystem",
        "storageClassName": storage_class,
    }
    if not storage_class:
        spec["volumeName"] = volume or config.cluster_name
    spec["resources"] = {"requests": {"storage": capacity}}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": name or config.claim_name,
            "namespace": config.namespace,
            "labels": config.labels("storage"),
        },
        "spec": spec,
    }


# -- EFS -------------------------------------------------------------------------------------


def _efs_mount_options(volume: EfsVolume) -> list[str]:
    # `iam` makes efs-utils authenticate with the driver's IAM identity, which a file system
    # policy that denies anonymous clients requires (aws-efs-csi-driver docs/parameters.md).
    return (["iam"] if volume.iam else []) + _with_defaults(EFS_MOUNT_OPTIONS, volume.mount_options)


def _setting(option: str) -> str:
    key = option.strip().lower().split("=", 1)[0]
    return _SAME_SETTING.get(key, key)


def _with_defaults(defaults: tuple[str, ...], given: tuple[str, ...]) -> list[str]:
    """``defaults``, each replaced in place by a given option that sets the same thing, then
    the other given options in their order."""
    options = [part.strip() for option in given for part in option.split(",") if part.strip()]
    chosen = {_setting(option): option for option in options}
    merged = [chosen.get(_setting(default), default) for default in defaults]
    ours = {_setting(default) for default in defaults}
    return merged + [option for option in options if _setting(option) not in ours]


def _efs_source(volume: EfsVolume) -> dict[str, Any]:
    csi: dict[str, Any] = {"driver": EFS_DRIVER, "volumeHandle": volume.volume_handle}
    if volume.volume_attributes:
        csi["volumeAttributes"] = dict(volume.volume_attributes)
    return {"csi": csi}


def _efs_storage_class(config: K8sConfig, volume: EfsVolume) -> dict[str, Any]:
    parameters = {
        "provisioningMode": "efs-ap",
        "fileSystemId": volume.file_system_id,
        "directoryPerms": volume.directory_perms,
    }
    if volume.uid is not None and volume.gid is not None:
        parameters["uid"] = str(volume.uid)
        parameters["gid"] = str(volume.gid)
    if volume.base_path:
        parameters["basePath"] = volume.base_path
    # The driver's defaults name the folder after the PV (a new uuid) and add another uuid
    # (ensureUniqueDirectory), so a claim deleted and created again would get an empty store
    # and orphan the old one. Named after the claim instead, the folder outlives it: a
    # re-created claim gets a new access point on the same folder, with the data.
    parameters["subPathPattern"] = "${.PVC.namespace}/${.PVC.name}"
    parameters["ensureUniqueDirectory"] = "false"
    storage_class: dict[str, Any] = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": config.cluster_name, "labels": config.labels("storage")},
        "provisioner": EFS_DRIVER,
        "parameters": parameters,
        "reclaimPolicy": "Retain",
        "volumeBindingMode": "Immediate",
    }
    options = _efs_mount_options(volume)
    if options:
        storage_class["mountOptions"] = options
    return storage_class


# -- NFS, S3, hostPath -------------------------------------------------------------------------


def _nfs_source(config: K8sConfig, volume: NfsVolume) -> dict[str, Any]:
    if not volume.csi:
        return {"nfs": {"server": volume.server, "path": volume.path}}
    # csi-driver-nfs reads server and share from volumeAttributes; the handle only has to be
    # unique, so its fourth field (where dynamic volumes keep a uuid) carries the PV's name.
    handle = f"{volume.server}#{volume.path.strip('/')}##{config.cluster_name}"
    return {
        "csi": {
            "driver": NFS_DRIVER,
            "volumeHandle": handle,
            "volumeAttributes": {"server": volume.server, "share": volume.path},
        }
    }


def _s3_mount_options(config: K8sConfig, volume: S3Volume, *, leases: bool) -> list[str]:
    options = []
    if volume.region:
        options.append(f"region {volume.region}")
    if leases:
        options.append(f"prefix {volume.prefix or ''}{LEASES}/")
    elif volume.prefix:
        options.append(f"prefix {volume.prefix}")
    if leases:
        # A lease is rewritten at every heartbeat and removed on close; Mountpoint refuses
        # both unless told (mountpoint-s3 doc/SEMANTICS.md).
        options += ["allow-delete", "allow-overwrite"]
    if config.run_as_user is not None:
        # Mountpoint's files belong to the user that mounted them (root) unless told.
        options.append(f"uid={config.run_as_user}")
        if config.run_as_group is not None:
            options.append(f"gid={config.run_as_group}")
        options.append("allow-other")
    return options + list(volume.mount_options)


def _s3_source(config: K8sConfig, volume: S3Volume, handle: str) -> dict[str, Any]:
    attributes = {"bucketName": volume.bucket}
    if volume.authentication_source == "pod":
        attributes["authenticationSource"] = "pod"
    # The driver needs a unique volumeHandle per PV; the PV's own name is one.
    return {"csi": {"driver": S3_DRIVER, "volumeHandle": handle, "volumeAttributes": attributes}}


def _host_path_source(volume: HostPathVolume) -> dict[str, Any]:
    return {"hostPath": {"path": volume.path, "type": "DirectoryOrCreate"}}
