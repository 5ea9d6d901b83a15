"""Configs that contradict themselves are refused, naming the CLI flag and the fix.

Readiness through `sharedrec ready` without leases, or with S3 readers that use the S3 API
(their leases are objects, not files of the pod); NFS mount options that make the
writers' lock local to one node or drop the NFSv4 default; an in-tree NFS server named in
cluster DNS, which the node that mounts it cannot resolve.
"""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from sharedrec.k8s import (
    ConfigError,
    EfsVolume,
    K8sConfig,
    NfsVolume,
    ReaderSpec,
    build_objects,
)
from sharedrec.k8s.cli import k8s

FS = "fs-0123456789abcdef0"


def _config_error(*args: str) -> str:
    result = CliRunner().invoke(k8s, list(args))
    assert isinstance(result.exception, ConfigError), result.output
    return str(result.exception)


@pytest.mark.parametrize(
    "command",
    [
        "sharedrec ready /mnt/recs",
        "/usr/local/bin/sharedrec ready /mnt/recs",
        "python -m sharedrec ready /mnt/recs",
        "sh -c 'sharedrec ready /mnt/recs || exit 1'",
    ],
)
def test_a_lease_readiness_probe_without_leases_is_refused(command: str) -> None:
    message = _config_error(
        "nfs", "--server=10.0.0.5", "--path=/exports/recs", "--image=r:1", "--no-leases",
        f"--readiness-command={command}",
    )  # fmt: skip
    assert "--readiness-command: runs `sharedrec ready`" in message
    assert "--no-leases" in message and "the pods would never be ready" in message


@pytest.mark.parametrize("leases", [[], ["--no-leases"]])
def test_a_lease_readiness_probe_with_s3_api_readers_is_refused(leases: list[str]) -> None:
    message = _config_error(
        "s3", "--bucket=recs-prod", "--readers=api", "--image=r:1", "--service-account=recs-reader",
        "--readiness-command=sharedrec ready s3://recs-prod", *leases,
    )  # fmt: skip
    assert (
        "--readiness-command: runs `sharedrec ready`, which reads the pod's leases from a folder" in message
    )
    assert "--readers api" in message and "--readiness-http-path /readyz" in message
    assert "--no-leases" not in message  # turning leases on would not help: one message, the right fix


def test_an_http_probe_with_s3_api_readers_is_fine() -> None:
    result = CliRunner().invoke(
        k8s,
        [
            "s3", "--bucket=recs-prod", "--readers=api", "--image=r:1", "--service-account=recs-reader",
            "--port=8080", "--readiness-http-path=/readyz",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "path: /readyz" in result.output


def test_other_probes_and_leases_on_are_fine() -> None:
    volume = NfsVolume(server="10.0.0.5", path="/exports/recs")
    K8sConfig(
        volume=volume, leases=False, reader=ReaderSpec(image="r:1", readiness_command=("test", "-f", "/x"))
    )
    K8sConfig(
        volume=volume, reader=ReaderSpec(image="r:1", readiness_command=("sharedrec", "ready", "/mnt/recs"))
    )


@pytest.mark.parametrize("option", ["nolock", "local_lock=flock", "local_lock=all", "hard,local_lock=posix"])
@pytest.mark.parametrize("backend", ["nfs", "efs"])
def test_mount_options_that_make_the_lock_local_are_refused(option: str, backend: str) -> None:
    volume = (
        ["nfs", "--server=10.0.0.5", "--path=/exports/recs"]
        if backend == "nfs"
        else ["efs", f"--file-system-id={FS}"]
    )
    message = _config_error(*volume, f"--mount-option={option}")
    assert "--mount-option: mount option" in message
    assert "keeps file locks on each node" in message


@pytest.mark.parametrize("option", ["nfsvers=3", "vers=3", "vers=2", "nfsvers=3,hard"])
def test_an_nfs_version_below_4_is_refused(option: str) -> None:
    message = _config_error("nfs", "--server=10.0.0.5", "--path=/exports/recs", f"--mount-option={option}")
    assert "--mount-option: mount option" in message
    assert "would replace the default nfsvers=4.1 with an NFS version below 4" in message


@pytest.mark.parametrize("option", ["nfsvers=4.2", "vers=4.1", "nfsvers=4", "local_lock=none"])
def test_nfsv4_options_are_accepted(option: str) -> None:
    config = K8sConfig(volume=NfsVolume(server="10.0.0.5", path="/exports/recs", mount_options=(option,)))
    (pv,) = [obj for obj in build_objects(config) if obj["kind"] == "PersistentVolume"]
    assert option in pv["spec"]["mountOptions"]
    assert EfsVolume(file_system_id=FS, mount_options=("nfsvers=4.1",)).mount_options == ("nfsvers=4.1",)


@pytest.mark.parametrize(
    "server", ["nfs-server.storage.svc", "nfs-server.storage.svc.cluster.local", "nfs.cluster.local"]
)
def test_an_in_tree_nfs_server_in_cluster_dns_is_refused(server: str) -> None:
    message = _config_error("nfs", f"--server={server}", "--path=/exports/recs")
    assert f"--server: server {server!r} is a cluster DNS name" in message
    assert "ClusterIP" in message and "--csi" in message
    # The CSI driver's node plugin resolves cluster names: accepted there.
    config: dict[str, Any] = {"server": server, "path": "/exports/recs", "csi": True}
    assert NfsVolume(**config).server == server


def test_other_nfs_server_names_are_accepted() -> None:
    for server in ("nfs.example.internal", "10.0.0.5", "svc.example.com", "fs-1.efs.eu-west-1.amazonaws.com"):
        assert NfsVolume(server=server, path="/exports/recs").server == server
