"""The pods around the volume: readers (a Deployment or a patch of one), their autoscaler, the writer.

Readers mount the store root read-only. The ``readOnly`` that counts is the one on the
container's volumeMount: a PersistentVolume's ``csi.readOnly`` does not make a pod's
mount read-only, and ``persistentVolumeClaim.readOnly`` on the pod volume would make the
leases mount read-only too. With leases on, the same claim is mounted a second time,
read-write, with ``subPath: leases`` over the store's ``leases/`` folder: a fixed folder,
so subPath's pinning of one directory is harmless there (it would not be for a version).
"""

from __future__ import annotations

from typing import Any

from sharedrec.errors import InvalidInput
from sharedrec.format.layout import LEASES
from sharedrec.k8s._config import K8sConfig, ReaderSpec, Resources, S3Volume

__all__ = ["autoscaler", "disruption_budget", "reader_deployment", "reader_patch", "writer_workload"]

STORE_ENV = "SHAREDREC_STORE"
LEASE_DIR_ENV = "SHAREDREC_LEASE_DIR"
READER_ID_ENV = "SHAREDREC_READER_ID"
REF_ENV = "SHAREDREC_REF"
SINGLE_WRITER_ENV = "SHAREDREC_SINGLE_WRITER"


CACHE_DIR_ENV = "SHAREDREC_CACHE_DIR"
CACHE_PATH = "/var/cache/sharedrec"
"""Where readers that use the S3 API keep their chunk cache (an emptyDir)."""


def _api_readers(config: K8sConfig) -> S3Volume | None:
    volume = config.volume
    return volume if isinstance(volume, S3Volume) and volume.through_api else None


def _region_env(config: K8sConfig) -> list[dict[str, Any]]:
    region = config.volume.region if isinstance(config.volume, S3Volume) else None
    return [{"name": "AWS_REGION", "value": region}] if region else []


def _reader_env(config: K8sConfig) -> list[dict[str, Any]]:
    api = _api_readers(config)
    if api is not None:
        # Leases go through the S3 API too, under the store's leases/ prefix: no lease dir.
        env: list[dict[str, Any]] = [{"name": STORE_ENV, "value": api.url}, *_region_env(config)]
        env.append({"name": CACHE_DIR_ENV, "value": CACHE_PATH})
        if config.leases:
            env.append({"name": READER_ID_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
        if config.reader is not None and config.reader.ref is not None:
            env.append({"name": REF_ENV, "value": config.reader.ref})
        return env
    env = [{"name": STORE_ENV, "value": config.mount_path}]
    if config.leases:
        env.append({"name": LEASE_DIR_ENV, "value": config.lease_path})
        # The pod name names the lease file: unique, and readable in the fleet view.
        env.append({"name": READER_ID_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    if config.reader is not None and config.reader.ref is not None:
        # A canary Deployment follows its own pointer (refs/<ref>) instead of CURRENT.
        env.append({"name": REF_ENV, "value": config.reader.ref})
    return env


def _cache_volume_name(config: K8sConfig) -> str:
    return f"{config.name}-cache"


def _reader_mounts(config: K8sConfig) -> list[dict[str, Any]]:
    if _api_readers(config) is not None:
        return [{"name": _cache_volume_name(config), "mountPath": CACHE_PATH}]
    mounts: list[dict[str, Any]] = [
        {"name": config.pod_volume_name, "mountPath": config.mount_path, "readOnly": True}
    ]
    if config.separate_leases_volume:
        mounts.append({"name": _leases_volume_name(config), "mountPath": config.lease_path})
    elif config.leases:
        mounts.append({"name": config.pod_volume_name, "mountPath": config.lease_path, "subPath": LEASES})
    return mounts


def _leases_volume_name(config: K8sConfig) -> str:
    return f"{config.name}-{LEASES}"


def _pod_volumes(config: K8sConfig) -> list[dict[str, Any]]:
    api = _api_readers(config)
    if api is not None:
        # On the node's disk, bounded: past sizeLimit the kubelet evicts the pod.
        return [{"name": _cache_volume_name(config), "emptyDir": {"sizeLimit": api.cache_size}}]
    volumes = [{"name": config.pod_volume_name, "persistentVolumeClaim": {"claimName": config.claim_name}}]
    if config.separate_leases_volume:
        claim = {"claimName": config.leases_claim_name}
        volumes.append({"name": _leases_volume_name(config), "persistentVolumeClaim": claim})
    return volumes


def _security_context(config: K8sConfig) -> dict[str, Any]:
    """The pod's securityContext: what Pod Security "restricted" asks of a pod."""
    context: dict[str, Any] = {}
    if config.run_as_non_root:
        context["runAsNonRoot"] = True
    if config.run_as_user is not None:
        context["runAsUser"] = config.run_as_user
    if config.run_as_group is not None:
        context["runAsGroup"] = config.run_as_group
    if config.fs_group is not None:
        # The group joins every container process, so a group-writable store (an NFS export,
        # an EFS folder) is writable without running as its owner. OnRootMismatch: the kubelet
        # would otherwise walk the whole store to chown it at every mount, where it can.
        context["fsGroup"] = config.fs_group
        context["fsGroupChangePolicy"] = "OnRootMismatch"
    context["seccompProfile"] = {"type": "RuntimeDefault"}
    return context


def _container_security_context() -> dict[str, Any]:
    # Pod Security "restricted", per container: no setuid escalation, no Linux capabilities.
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def _resources(resources: Resources) -> dict[str, Any]:
    out: dict[str, Any] = {}
    requests = {k: v for k, v in (("cpu", resources.cpu_request), ("memory", resources.memory_request)) if v}
    limits = {k: v for k, v in (("cpu", resources.cpu_limit), ("memory", resources.memory_limit)) if v}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _readiness(reader: ReaderSpec) -> dict[str, Any] | None:
    if reader.readiness_http_path is not None:
        # The kubelet sends the request itself: no process starts in the container.
        check: dict[str, Any] = {"httpGet": {"path": reader.readiness_http_path, "port": reader.port}}
    elif reader.readiness_command:
        check = {"exec": {"command": list(reader.readiness_command)}}
    else:
        return None
    return {**check, "periodSeconds": 10, "failureThreshold": 3}


def _pod_spec(
    config: K8sConfig, container: dict[str, Any], service_account: str | None, *, volumes: bool
) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if service_account:
        spec["serviceAccountName"] = service_account
    spec["securityContext"] = _security_context(config)
    spec["containers"] = [container]
    if volumes:
        spec["volumes"] = _pod_volumes(config)
    return spec


def reader_deployment(config: K8sConfig) -> dict[str, Any]:
    """The readers' Deployment, built from ``config.reader.image``.

    Its ``replicas`` is left out when an autoscaler owns the count, so that re-applying
    the manifest does not scale the readers back.

    Args:
        config: A validated config whose ``reader`` is not a patch.

    Returns:
        An ``apps/v1`` Deployment as a plain dict.
    """
    reader = config.reader
    if reader is None or reader.image is None:
        raise InvalidInput("reader_deployment needs config.reader with an image")
    container: dict[str, Any] = {"name": reader.container, "image": reader.image}
    if reader.command:
        container["command"] = list(reader.command)
    if reader.port:
        container["ports"] = [{"name": "http", "containerPort": reader.port}]
    container["env"] = _reader_env(config)
    resources = _resources(reader.resources)
    if resources:
        container["resources"] = resources
    probe = _readiness(reader)
    if probe is not None:
        container["readinessProbe"] = probe
    container["volumeMounts"] = _reader_mounts(config)
    container["securityContext"] = _container_security_context()
    labels = config.labels("reader")
    selector = _reader_selector(config)
    spec: dict[str, Any] = {}
    if config.autoscaling is None:
        spec["replicas"] = reader.replicas
    spec["selector"] = {"matchLabels": selector}
    pod = _pod_spec(config, container, reader.service_account, volumes=True)
    if reader.topology_spread:
        pod["topologySpreadConstraints"] = [_spread(key, selector) for key in (ZONE, HOSTNAME)]
    spec["template"] = {"metadata": {"labels": labels}, "spec": pod}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": config.deployment_name, "namespace": config.namespace, "labels": labels},
        "spec": spec,
    }


ZONE = "topology.kubernetes.io/zone"
HOSTNAME = "kubernetes.io/hostname"


def _reader_selector(config: K8sConfig) -> dict[str, str]:
    labels = config.labels("reader")
    return {key: labels[key] for key in ("app.kubernetes.io/name", "app.kubernetes.io/component")}


def _spread(key: str, selector: dict[str, str]) -> dict[str, Any]:
    # ScheduleAnyway: a preference, never a pod left Pending (a zone out of capacity, nodes
    # without a zone label). pod-template-hash: during a rollout, old and new pods are
    # spread each on their own rather than the new ones piling where the old ones leave.
    return {
        "maxSkew": 1,
        "topologyKey": key,
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": dict(selector)},
        "matchLabelKeys": ["pod-template-hash"],
    }


def disruption_budget(config: K8sConfig) -> dict[str, Any]:
    """The ``policy/v1`` PodDisruptionBudget of the readers' Deployment.

    A node drain (an upgrade, a scale-down) evicts at most ``reader.max_unavailable``
    readers at once. Pods that are not ready may always be evicted
    (``unhealthyPodEvictionPolicy: AlwaysAllow``), so a crash-looping reader never blocks a
    drain.

    Args:
        config: A validated config whose ``reader`` is not a patch.

    Returns:
        A PodDisruptionBudget as a plain dict.
    """
    reader = config.reader
    if reader is None or reader.patch:
        raise InvalidInput("disruption_budget needs config.reader with an image (not a patch)")
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": config.deployment_name,
            "namespace": config.namespace,
            "labels": config.labels("reader"),
        },
        "spec": {
            "maxUnavailable": reader.max_unavailable,
            "selector": {"matchLabels": _reader_selector(config)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def reader_patch(config: K8sConfig) -> dict[str, Any]:
    """A strategic merge patch that adds the store to an existing Deployment.

    It adds the pod volume, the container's mounts and environment (merged by name and
    mount path, so the rest of the Deployment stays as it is) and, if given, the readiness
    probe, service account and security context. Apply it with ``kubectl patch deployment
    NAME --patch-file FILE`` or through the kustomize Component that `write_files` writes.

    Args:
        config: A validated config whose ``reader.patch`` is true.

    Returns:
        A partial ``apps/v1`` Deployment (not an object to create).
    """
    reader = config.reader
    if reader is None or not reader.patch:
        raise InvalidInput("reader_patch needs config.reader with patch=True")
    container: dict[str, Any] = {"name": reader.container, "env": _reader_env(config)}
    probe = _readiness(reader)
    if probe is not None:
        container["readinessProbe"] = probe
    container["volumeMounts"] = _reader_mounts(config)
    container["securityContext"] = _container_security_context()
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": config.deployment_name, "namespace": config.namespace},
        "spec": {"template": {"spec": _pod_spec(config, container, reader.service_account, volumes=True)}},
    }


def autoscaler(config: K8sConfig) -> dict[str, Any]:
    """The ``autoscaling/v2`` HorizontalPodAutoscaler of the readers' Deployment.

    Args:
        config: A validated config with ``autoscaling``.

    Returns:
        A HorizontalPodAutoscaler on average CPU utilization, as a plain dict.
    """
    scaling = config.autoscaling
    if scaling is None:
        raise InvalidInput("autoscaler needs config.autoscaling")
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": config.deployment_name,
            "namespace": config.namespace,
            "labels": config.labels("reader"),
        },
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": config.deployment_name},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": scaling.target_cpu_utilization,
                        },
                    },
                }
            ],
        },
    }


def writer_workload(config: K8sConfig) -> dict[str, Any]:
    """The writer: a CronJob on ``writer.schedule``, or a one-off Job without one.

    On EFS, NFS and hostPath it mounts the store read-write at ``mount_path``. On S3 it
    mounts nothing and gets the ``s3://`` URL: Mountpoint cannot rename, so publishing
    (which replaces ``CURRENT`` atomically) goes through the S3 API.

    Args:
        config: A validated config with ``writer``.

    Returns:
        A ``batch/v1`` CronJob or Job as a plain dict.
    """
    writer = config.writer
    if writer is None:
        raise InvalidInput("writer_workload needs config.writer")
    on_s3 = isinstance(config.volume, S3Volume)
    store = config.volume.url if isinstance(config.volume, S3Volume) else config.mount_path
    container: dict[str, Any] = {"name": "writer", "image": writer.image}
    if writer.command:
        container["command"] = list(writer.command)
    container["env"] = [{"name": STORE_ENV, "value": store}, *_region_env(config)]
    if writer.single_writer:
        # The promise that lets the S3 backend move CURRENT on a server that ignores
        # conditional writes; the CronJob's Forbid is what keeps it.
        container["env"].append({"name": SINGLE_WRITER_ENV, "value": "1"})
    container["resources"] = _resources(writer.effective_resources)
    if not on_s3:
        container["volumeMounts"] = [{"name": config.pod_volume_name, "mountPath": config.mount_path}]
    container["securityContext"] = _container_security_context()
    labels = config.labels("writer")
    pod = _pod_spec(config, container, writer.service_account, volumes=not on_s3)
    pod = {"restartPolicy": "Never", **pod}
    active, starting = writer.deadlines()
    job_spec: dict[str, Any] = {"backoffLimit": 2}
    if active is not None:
        # Counts every attempt: a publish hung on a hard mount or a stalled upload is stopped,
        # and the next scheduled one can run (Forbid would otherwise skip them all).
        job_spec["activeDeadlineSeconds"] = active
    job_spec["template"] = {"metadata": {"labels": labels}, "spec": pod}
    metadata = {"name": config.writer_name, "namespace": config.namespace, "labels": labels}
    if writer.schedule is None:
        # Lets the same manifest be applied again for the next run once this one is gone.
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": metadata,
            "spec": {"ttlSecondsAfterFinished": 86400, **job_spec},
        }
    spec: dict[str, Any] = {"schedule": writer.schedule}
    if writer.time_zone:
        spec["timeZone"] = writer.time_zone
    # Two publishes at once would race for CURRENT; the second would fail anyway.
    spec["concurrencyPolicy"] = "Forbid"
    # A run that could not start on time is skipped rather than started late; it also spares
    # the controller's count of missed runs, which stops the CronJob past 100.
    spec["startingDeadlineSeconds"] = starting
    spec["successfulJobsHistoryLimit"] = 3
    spec["failedJobsHistoryLimit"] = 3
    spec["jobTemplate"] = {"metadata": {"labels": labels}, "spec": job_spec}
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": metadata, "spec": spec}
