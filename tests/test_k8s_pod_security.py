"""Every pod sharedrec generates passes Pod Security "restricted" by default.

The rules are those of the Pod Security Standards page (kubernetes.io/docs/concepts/security/
pod-security-standards/), baseline and restricted, written out field by field; the pods are
those of every backend, with and without leases, readers (a Deployment or a patch merged into
an existing one) and writer (a CronJob or a Job), as root-less images or with a given uid.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from sharedrec.k8s import (
    HostPathVolume,
    K8sConfig,
    NfsVolume,
    ReaderSpec,
    Resources,
    WriterSpec,
    build_files,
)
from test_k8s import EXISTING_DEPLOYMENT, _strategic_merge

FS = "fs-0123456789abcdef0"
AP = "fsap-0123456789abcdef0"

VOLUMES: dict[str, dict[str, Any]] = {
    "efs": {"backend": "efs", "file_system_id": FS},
    "efs-ap": {"backend": "efs", "file_system_id": FS, "access_point_id": AP},
    "efs-dynamic": {"backend": "efs", "file_system_id": FS, "dynamic": True, "uid": 1000, "gid": 1000},
    "nfs": {"backend": "nfs", "server": "10.0.0.5", "path": "/exports/recs"},
    "nfs-csi": {"backend": "nfs", "server": "10.0.0.5", "path": "/exports/recs", "csi": True},
    "s3": {"backend": "s3", "bucket": "recs-prod", "prefix": "recs"},
    "s3-api": {"backend": "s3", "bucket": "recs-prod", "readers": "api"},
    "hostpath": {"backend": "hostpath", "path": "/data/recs"},
}
READERS: dict[str, dict[str, Any] | None] = {
    "no-reader": None,
    "deployment": {
        "image": "example/recs-api:1",
        "resources": {"cpu_request": "500m"},
        "service_account": "recs-reader",
    },
    "patch": {"patch": True, "deployment": "recs-api", "container": "api"},
}
WRITERS: dict[str, dict[str, Any] | None] = {
    "no-writer": None,
    "cronjob": {"image": "example/recs-batch:1", "schedule": "15 * * * *"},
    "job": {"image": "example/recs-batch:1"},
}
USERS: dict[str, dict[str, Any]] = {
    "image-user": {},
    "uid": {"run_as_user": 1000, "run_as_group": 1000, "fs_group": 1000},
}


def _combinations() -> Iterator[tuple[str, K8sConfig]]:
    for (vol, volume), leases, (rd, reader), (wr, writer), (us, user) in itertools.product(
        VOLUMES.items(), (True, False), READERS.items(), WRITERS.items(), USERS.items()
    ):
        if reader is None and writer is None:
            continue
        data: dict[str, Any] = {"name": "recs", "namespace": "ml", "volume": volume, "leases": leases, **user}
        if reader is not None:
            data["reader"] = reader
        if writer is not None:
            data["writer"] = writer
        name = "-".join((vol, "leases" if leases else "no-leases", rd, wr, us))
        yield name, K8sConfig.model_validate(data)


COMBINATIONS = dict(_combinations())


def _pods(config: K8sConfig) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, obj in build_files(config).items():
        if name == "reader-patch.yaml":
            obj = _strategic_merge(copy.deepcopy(EXISTING_DEPLOYMENT), obj)
        kind = obj["kind"]
        if kind == "Deployment" or kind == "Job":
            yield name, obj["spec"]["template"]["spec"]
        elif kind == "CronJob":
            yield name, obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]


# -- the Pod Security Standards, baseline then restricted -----------------------------------------

_BASELINE_CAPABILITIES = {
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
}
_SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
_SELINUX_TYPES = {None, "", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
_RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("containers", []), *pod.get("initContainers", []), *pod.get("ephemeralContainers", [])]


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What a pod spec breaks of Pod Security "restricted" (which includes "baseline")."""
    found: list[str] = []
    pod_ctx = pod.get("securityContext") or {}
    containers = _containers(pod)
    contexts = [(c["name"], c.get("securityContext") or {}) for c in containers]
    # baseline
    if (pod_ctx.get("windowsOptions") or {}).get("hostProcess") or any(
        (ctx.get("windowsOptions") or {}).get("hostProcess") for _, ctx in contexts
    ):
        found.append("HostProcess")
    found.extend(f"host namespace {key}" for key in ("hostNetwork", "hostPID", "hostIPC") if pod.get(key))
    found.extend(f"{name}: privileged" for name, ctx in contexts if ctx.get("privileged"))
    for name, ctx in contexts:
        added = set((ctx.get("capabilities") or {}).get("add", []))
        if added - _BASELINE_CAPABILITIES:
            found.append(f"{name}: capabilities beyond baseline {sorted(added - _BASELINE_CAPABILITIES)}")
        if added - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: capabilities.add beyond NET_BIND_SERVICE")
        if "ALL" not in (ctx.get("capabilities") or {}).get("drop", []):
            found.append(f"{name}: capabilities.drop lacks ALL")
        if ctx.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation is not false")
        if ctx.get("procMount") not in (None, "Default"):
            found.append(f"{name}: procMount")
    found.extend(
        f"volume {volume['name']}: hostPath" for volume in pod.get("volumes", []) if "hostPath" in volume
    )
    found.extend(
        f"volume {volume['name']}: type not allowed"
        for volume in pod.get("volumes", [])
        if not (set(volume) - {"name"}) <= _RESTRICTED_VOLUMES
    )
    found.extend(
        f"{c['name']}: hostPort"
        for c in containers
        for port in c.get("ports", [])
        if port.get("hostPort") not in (None, 0)
    )
    for where, ctx in [("pod", pod_ctx), *contexts]:
        apparmor = (ctx.get("appArmorProfile") or {}).get("type")
        if apparmor not in (None, "RuntimeDefault", "Localhost"):
            found.append(f"{where}: appArmorProfile")
        selinux = ctx.get("seLinuxOptions") or {}
        if selinux.get("type") not in _SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
            found.append(f"{where}: seLinuxOptions")
        if ctx.get("runAsUser") == 0:
            found.append(f"{where}: runAsUser 0")
        if (ctx.get("seccompProfile") or {}).get("type") == "Unconfined":
            found.append(f"{where}: seccomp Unconfined")
    found.extend(
        f"sysctl {sysctl['name']}"
        for sysctl in pod_ctx.get("sysctls", [])
        if sysctl["name"] not in _SAFE_SYSCTLS
    )
    # restricted: non-root and seccomp, at the pod level or on every container
    for name, ctx in contexts:
        if ctx.get("runAsNonRoot") is False or not (ctx.get("runAsNonRoot") or pod_ctx.get("runAsNonRoot")):
            found.append(f"{name}: runAsNonRoot is not true")
        seccomp = (ctx.get("seccompProfile") or pod_ctx.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile is not RuntimeDefault or Localhost")
    return found


# -- the tests ---------------------------------------------------------------------------------------


def test_the_combinations_cover_every_backend_and_workload() -> None:
    assert len(COMBINATIONS) == len(VOLUMES) * 2 * 8 * 2  # every combination is a valid config
    for part in (*VOLUMES, *READERS, *WRITERS):
        assert any(f"-{part}-" in f"-{name}-" for name in COMBINATIONS), part


@pytest.mark.parametrize("name", sorted(COMBINATIONS))
def test_every_generated_pod_passes_pod_security_restricted(name: str) -> None:
    pods = list(_pods(COMBINATIONS[name]))
    assert pods
    for file_name, pod in pods:
        assert restricted_violations(pod) == [], f"{name}, {file_name}"


def test_the_checker_catches_what_restricted_refuses() -> None:
    config = COMBINATIONS["nfs-leases-deployment-cronjob-uid"]
    _, pod = next(_pods(config))
    assert restricted_violations(pod) == []
    broken = copy.deepcopy(pod)
    broken["securityContext"].pop("seccompProfile")
    broken["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    broken["containers"][0]["securityContext"]["capabilities"] = {"add": ["SYS_ADMIN"]}
    broken["volumes"].append({"name": "node", "hostPath": {"path": "/"}})
    broken["hostNetwork"] = True
    assert len(restricted_violations(broken)) >= 6


def test_fs_group_and_run_as_group_reach_the_pod() -> None:
    config = K8sConfig(
        volume=NfsVolume(server="10.0.0.5", path="/exports/recs"),
        run_as_user=1000,
        run_as_group=2000,
        fs_group=3000,
        reader=ReaderSpec(image="example/recs-api:1"),
        writer=WriterSpec(image="example/recs-batch:1", resources=Resources(memory_request="1Gi")),
    )
    for _, pod in _pods(config):
        ctx = pod["securityContext"]
        assert (ctx["runAsUser"], ctx["runAsGroup"], ctx["fsGroup"]) == (1000, 2000, 3000)
        assert ctx["fsGroupChangePolicy"] == "OnRootMismatch"


def test_run_as_non_root_false_is_the_one_way_out() -> None:
    config = K8sConfig(
        volume=HostPathVolume(path="/data/recs"),
        run_as_non_root=False,
        reader=ReaderSpec(image="example/recs-api:1"),
    )
    _, pod = next(_pods(config))
    assert [v for v in restricted_violations(pod) if "runAsNonRoot" in v]
    assert [v for v in restricted_violations(pod) if "runAsNonRoot" not in v] == []
