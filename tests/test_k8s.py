"""sharedrec.k8s: configs, driver rules, generated objects, YAML, schema validation, golden files.

Golden files under tests/golden/k8s hold the exact YAML of every backend. To regenerate them
after an intended change, run with SHAREDREC_UPDATE_GOLDEN=1: the tests rewrite the files
and fail, so that the diff is reviewed before the next (normal) run passes.
"""

from __future__ import annotations

import copy
import functools
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml
from kubernetes_validate.utils import all_versions

from sharedrec.errors import InvalidInput
from sharedrec.k8s import (
    EFS_MOUNT_OPTIONS,
    NFS_MOUNT_OPTIONS,
    AutoscalingSpec,
    ConfigError,
    EfsVolume,
    HostPathVolume,
    K8sConfig,
    NfsVolume,
    ReaderSpec,
    Resources,
    S3Volume,
    WriterSpec,
    build_files,
    build_objects,
    check_manifests,
    render,
    to_yaml,
    write_files,
)

GOLDEN = Path(__file__).parent / "golden" / "k8s"
K8S_VERSIONS = ("1.30", "1.32", "1.34")
FS = "fs-0123456789abcdef0"
AP = "fsap-0123456789abcdef0"
READER_IMAGE = "registry.example.com/recs-api:1.4"
WRITER_IMAGE = "registry.example.com/recs-batch:1.4"


def _reader(**extra: Any) -> ReaderSpec:
    return ReaderSpec(
        image=READER_IMAGE,
        port=8080,
        resources=Resources(cpu_request="500m", memory_request="2Gi", memory_limit="4Gi"),
        **extra,
    )


def _writer(**extra: Any) -> WriterSpec:
    return WriterSpec(
        image=WRITER_IMAGE,
        command=("python", "-m", "recs.publish"),
        resources=Resources(cpu_request="2", memory_request="8Gi"),
        **extra,
    )


CASES: dict[str, Callable[[], K8sConfig]] = {
    "efs-static": lambda: K8sConfig(
        name="recs",
        namespace="ml",
        volume=EfsVolume(file_system_id=FS, access_point_id=AP, iam=True),
        run_as_user=1000,
        run_as_group=1000,
        fs_group=1000,
        reader=_reader(readiness_command=("test", "-f", "/mnt/recs/CURRENT"), service_account="recs-reader"),
        autoscaling=AutoscalingSpec(min_replicas=3, max_replicas=30, target_cpu_utilization=60),
        writer=_writer(schedule="15 * * * *", time_zone="Europe/Paris", service_account="recs-writer"),
    ),
    "efs-dynamic": lambda: K8sConfig(
        name="recs",
        namespace="ml",
        volume=EfsVolume(file_system_id=FS, dynamic=True, uid=1000, gid=1000, base_path="/sharedrec"),
        reader=_reader(),
        writer=_writer(),
    ),
    "efs-patch": lambda: K8sConfig(
        name="recs",
        namespace="ml",
        volume=EfsVolume(
            file_system_id=FS, path="/stores/recs", volume_attributes={"encryptInTransit": "true"}
        ),
        reader=ReaderSpec(
            patch=True, deployment="recs-api", container="api", port=8080, readiness_http_path="/readyz"
        ),
        autoscaling=AutoscalingSpec(max_replicas=12),
    ),
    "nfs": lambda: K8sConfig(
        volume=NfsVolume(
            server="nfs.example.internal", path="/exports/recs", mount_options=("nfsvers=4.1", "hard")
        ),
        reader=_reader(replicas=4),
        writer=_writer(schedule="@hourly"),
    ),
    "nfs-csi": lambda: K8sConfig(
        name="recs",
        volume=NfsVolume(server="10.0.0.5", path="/exports/recs", csi=True, capacity="500Gi"),
        mount_path="/data/recs",
        leases=False,
        reader=_reader(command=("recs-api", "--workers", "4")),
    ),
    "s3": lambda: K8sConfig(
        name="recs",
        namespace="ml",
        volume=S3Volume(
            bucket="recs-prod", prefix="stores/recs", region="eu-west-1", authentication_source="pod"
        ),
        run_as_user=1000,
        run_as_group=1000,
        reader=_reader(service_account="recs-reader"),
        writer=_writer(schedule="0 */2 * * *", service_account="recs-writer"),
    ),
    "s3-no-leases": lambda: K8sConfig(
        name="recs",
        volume=S3Volume(bucket="recs-prod", mount_options=("cache /tmp/s3-cache", "metadata-ttl 1")),
        leases=False,
        reader=_reader(),
    ),
    "s3-api": lambda: K8sConfig(
        name="recs",
        namespace="ml",
        volume=S3Volume(bucket="recs-prod", prefix="stores/recs", region="eu-west-1", readers="api"),
        reader=_reader(service_account="recs-reader", readiness_http_path="/readyz"),
        autoscaling=AutoscalingSpec(max_replicas=10),
        writer=_writer(schedule="0 */2 * * *", service_account="recs-writer"),
    ),
    "hostpath": lambda: K8sConfig(
        name="recs-dev",
        volume=HostPathVolume(path="/var/lib/sharedrec/recs", capacity="2Gi"),
        reader=ReaderSpec(image="recs-api:dev", replicas=1),
        writer=WriterSpec(image="recs-batch:dev"),
    ),
}


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> tuple[str, K8sConfig]:
    return request.param, CASES[request.param]()


def _check_golden(path: Path, text: str) -> None:
    if os.environ.get("SHAREDREC_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        pytest.fail(f"regenerated {path.name}: review the diff, then rerun without SHAREDREC_UPDATE_GOLDEN")
    if not path.exists():
        pytest.fail(f"golden file {path} is missing: run once with SHAREDREC_UPDATE_GOLDEN=1 and review it")
    assert text == path.read_text(encoding="utf-8"), (
        f"{path.name} differs; see the module docstring to update"
    )


# -- golden files and YAML -----------------------------------------------------------------------


def test_render_matches_golden(case: tuple[str, K8sConfig]) -> None:
    name, config = case
    _check_golden(GOLDEN / f"{name}.yaml", render(config))


@pytest.mark.parametrize("name", ["efs-static", "efs-patch"])
def test_kustomization_matches_golden(name: str) -> None:
    files = build_files(CASES[name](), kustomize=True)
    _check_golden(GOLDEN / f"{name}.kustomization.yaml", to_yaml(files["kustomization.yaml"]))


def test_yaml_round_trips_to_the_objects(case: tuple[str, K8sConfig]) -> None:
    _, config = case
    text = render(config)
    assert list(yaml.safe_load_all(text)) == build_objects(config)
    assert "&id" not in text and "*id" not in text  # no anchors or aliases
    assert render(config) == text


def test_every_object_is_labelled_and_namespaced(case: tuple[str, K8sConfig]) -> None:
    _, config = case
    for obj in build_objects(config):
        if config.reader is not None and config.reader.patch and obj["kind"] == "Deployment":
            continue  # the patch leaves the user's labels alone
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == config.name
        assert labels["app.kubernetes.io/managed-by"] == "sharedrec"
        assert labels["app.kubernetes.io/component"] in {"storage", "reader", "writer"}
        cluster_scoped = obj["kind"] in {"PersistentVolume", "StorageClass"}
        assert ("namespace" in obj["metadata"]) != cluster_scoped


# -- schema validation ---------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def _schemas_read_once() -> Iterator[None]:
    # kubernetes-validate reads and parses its schema files (the definitions are megabytes)
    # at every call; the files never change, so read each once for this module.
    utils = kubernetes_validate.utils
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(utils, "schema_contents", functools.cache(utils.schema_contents))
        yield


def _validate(obj: dict[str, Any]) -> None:
    for version in K8S_VERSIONS:
        assert f"{version}.0" in all_versions(), f"kubernetes-validate has no schemas for {version}"
        # Strict: unknown fields fail. A missing schema raises SchemaNotFoundError, also a failure.
        used = kubernetes_validate.validate(copy.deepcopy(obj), version, strict=True)
        assert used == version, f"{obj['kind']} validated against {used}, not {version}"


def _strategic_merge(base: Any, patch: Any, key: str = "") -> Any:
    """Enough of Kubernetes' strategic merge for Deployments: lists merge by name or mountPath."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for k, v in patch.items():
            merged[k] = _strategic_merge(base[k], v, k) if k in base else v
        return merged
    merge_key = {"containers": "name", "volumes": "name", "env": "name", "volumeMounts": "mountPath"}.get(key)
    if merge_key and isinstance(base, list):
        by_key = {item[merge_key]: item for item in base}
        out = [
            _strategic_merge(by_key[item[merge_key]], item) if item[merge_key] in by_key else item
            for item in patch
        ]
        return out + [item for item in base if item[merge_key] not in {p[merge_key] for p in patch}]
    return patch


EXISTING_DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "recs-api", "namespace": "ml"},
    "spec": {
        "replicas": 3,
        "selector": {"matchLabels": {"app": "recs-api"}},
        "template": {
            "metadata": {"labels": {"app": "recs-api"}},
            "spec": {
                "containers": [
                    {
                        "name": "api",
                        "image": "example/recs-api:7",
                        "env": [{"name": "LOG_LEVEL", "value": "info"}],
                        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                    }
                ],
                "volumes": [{"name": "tmp", "emptyDir": {}}],
            },
        },
    },
}


def test_every_object_validates_against_the_kubernetes_schemas(case: tuple[str, K8sConfig]) -> None:
    _, config = case
    for name, obj in build_files(config).items():
        if name == "reader-patch.yaml":
            obj = _strategic_merge(EXISTING_DEPLOYMENT, obj)
            check_manifests([*build_objects(config)[:2], obj])
        _validate(obj)


def test_an_object_without_a_schema_fails_validation() -> None:
    kustomization = build_files(CASES["nfs"](), kustomize=True)["kustomization.yaml"]
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        _validate(kustomization)


def test_validation_catches_a_bad_object() -> None:
    deployment = build_files(CASES["nfs"]())["reader-deployment.yaml"]
    deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["readonly"] = True
    with pytest.raises(kubernetes_validate.ValidationError, match="readonly"):
        _validate(deployment)


# -- what the objects say --------------------------------------------------------------------------


def _pod(obj: dict[str, Any]) -> dict[str, Any]:
    job = obj["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else obj["spec"]
    pod: dict[str, Any] = job["template"]["spec"]
    return pod


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_efs_static_binding_and_handle() -> None:
    pv, pvc, *_ = build_objects(CASES["efs-static"]())
    assert pv["spec"]["csi"] == {"driver": "efs.csi.aws.com", "volumeHandle": f"{FS}::{AP}"}
    assert pv["spec"]["accessModes"] == pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pv["spec"]["storageClassName"] == pvc["spec"]["storageClassName"] == ""
    assert pv["spec"]["claimRef"] == {"namespace": "ml", "name": "recs"}
    assert pvc["spec"]["volumeName"] == pv["metadata"]["name"] == "recs-ml"
    assert pv["spec"]["mountOptions"] == ["iam", *EFS_MOUNT_OPTIONS]
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"


@pytest.mark.parametrize("name", ["efs-static", "efs-dynamic", "efs-patch", "nfs", "nfs-csi"])
def test_nfs_and_efs_volumes_mount_with_what_keeps_the_pointer_fresh(name: str) -> None:
    storage = build_objects(CASES[name]())[0]
    spec = storage if storage["kind"] == "StorageClass" else storage["spec"]
    options = spec["mountOptions"]
    # Readers poll CURRENT by open + read, which NFS revalidates on every open: the attribute
    # cache is left at its default (actimeo only adds round trips), close-to-open stays on
    # (nocto would hide a new CURRENT), and lookupcache=positive stops a node that once saw a
    # name missing (the first CURRENT, a new ref, a gc mark) from believing it for a minute.
    assert {"nfsvers=4.1", "hard", "lookupcache=positive"} <= set(options)
    assert not [o for o in options if o.split("=")[0] in {"actimeo", "acregmax", "noac", "nocto", "soft"}]
    # noresvport for EFS only: a plain NFS server may insist on reserved ports.
    assert ("noresvport" in options) == name.startswith("efs")
    if name.startswith("efs"):
        assert {"rsize=1048576", "wsize=1048576", "timeo=600", "retrans=2"} <= set(options)


def test_a_given_mount_option_replaces_the_default_that_sets_the_same_thing() -> None:
    nfs = NfsVolume(
        server="nfs.example.internal",
        path="/exports/recs",
        mount_options=("vers=4.2", "soft,timeo=100", "lookupcache=all"),
    )
    pv = build_objects(K8sConfig(volume=nfs))[0]
    assert NFS_MOUNT_OPTIONS == ("nfsvers=4.1", "hard", "lookupcache=positive")
    assert pv["spec"]["mountOptions"] == ["vers=4.2", "soft", "lookupcache=all", "timeo=100"]
    efs = EfsVolume(file_system_id=FS, mount_options=("rsize=65536", "resvport", "actimeo=1"))
    pv = build_objects(K8sConfig(volume=efs))[0]
    expected = [*EFS_MOUNT_OPTIONS, "actimeo=1"]
    expected[expected.index("rsize=1048576")] = "rsize=65536"
    expected[expected.index("noresvport")] = "resvport"
    assert pv["spec"]["mountOptions"] == expected


@pytest.mark.parametrize(
    ("volume", "handle"),
    [
        (EfsVolume(file_system_id=FS), FS),
        (EfsVolume(file_system_id=FS, path="/recs"), f"{FS}:/recs"),
        (EfsVolume(file_system_id=FS, access_point_id=AP), f"{FS}::{AP}"),
        (EfsVolume(file_system_id=FS, path="/recs", access_point_id=AP), f"{FS}:/recs:{AP}"),
    ],
)
def test_efs_volume_handle_forms(volume: EfsVolume, handle: str) -> None:
    assert volume.volume_handle == handle


def test_efs_dynamic_storage_class() -> None:
    sc, pvc, *_ = build_objects(CASES["efs-dynamic"]())
    assert sc["kind"] == "StorageClass" and sc["provisioner"] == "efs.csi.aws.com"
    assert sc["parameters"] == {
        "provisioningMode": "efs-ap",
        "fileSystemId": FS,
        "directoryPerms": "700",
        "uid": "1000",
        "gid": "1000",
        "basePath": "/sharedrec",
        # A claim created again finds the same folder, and the data, rather than an empty one.
        "subPathPattern": "${.PVC.namespace}/${.PVC.name}",
        "ensureUniqueDirectory": "false",
    }
    assert pvc["spec"]["storageClassName"] == sc["metadata"]["name"] and "volumeName" not in pvc["spec"]


def test_readers_mount_the_root_read_only_and_leases_read_write(case: tuple[str, K8sConfig]) -> None:
    name, config = case
    if name == "s3-api":
        pytest.skip("readers use the S3 API and mount nothing (tests/test_k8s_s3_api.py)")
    if name == "s3":
        pytest.skip("the leases have a volume of their own (test_s3_leases_have_a_volume_of_their_own)")
    files = build_files(config)
    deployment = files.get("reader-deployment.yaml") or files["reader-patch.yaml"]
    container = _pod(deployment)["containers"][0]
    root = {"name": config.pod_volume_name, "mountPath": config.mount_path, "readOnly": True}
    env = _env(container)
    assert env["SHAREDREC_STORE"] == config.mount_path
    if config.leases:
        leases = {
            "name": config.pod_volume_name,
            "mountPath": f"{config.mount_path}/leases",
            "subPath": "leases",
        }
        assert container["volumeMounts"] == [root, leases]
        assert env["SHAREDREC_LEASE_DIR"] == f"{config.mount_path}/leases"
        assert env["SHAREDREC_READER_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    else:
        assert container["volumeMounts"] == [root]
        assert set(env) == {"SHAREDREC_STORE"}
    claim = _pod(deployment)["volumes"][0]["persistentVolumeClaim"]
    assert claim == {"claimName": config.claim_name}  # never readOnly here: it would cover the leases too


def test_s3_leases_have_a_volume_of_their_own() -> None:
    # A subPath of a Mountpoint volume vanishes with the last object under it (S3 has no
    # folders): the leases/ prefix is mounted whole, as a volume whose root always exists.
    config = CASES["s3"]()
    deployment = build_files(config)["reader-deployment.yaml"]
    pod = _pod(deployment)
    assert pod["volumes"] == [
        {"name": "recs-store", "persistentVolumeClaim": {"claimName": "recs"}},
        {"name": "recs-leases", "persistentVolumeClaim": {"claimName": "recs-leases"}},
    ]
    container = pod["containers"][0]
    assert container["volumeMounts"] == [
        {"name": "recs-store", "mountPath": "/mnt/recs", "readOnly": True},
        {"name": "recs-leases", "mountPath": "/mnt/recs/leases"},
    ]
    assert all("subPath" not in mount for mount in container["volumeMounts"])
    assert _env(container)["SHAREDREC_LEASE_DIR"] == "/mnt/recs/leases"
    objects = build_objects(config)
    broken = copy.deepcopy(objects)
    broken[4]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][1]["readOnly"] = True
    with pytest.raises(InvalidInput, match="the leases volume must be mounted read-write"):
        check_manifests(broken)


def test_s3_writer_publishes_through_the_api_and_mounts_nothing() -> None:
    objects = build_objects(CASES["s3"]())
    pv = objects[0]
    writer = objects[-1]
    assert pv["spec"]["csi"]["volumeAttributes"] == {"bucketName": "recs-prod", "authenticationSource": "pod"}
    assert pv["spec"]["csi"]["volumeHandle"] == pv["metadata"]["name"]
    assert pv["spec"]["mountOptions"] == [
        "region eu-west-1",
        "prefix stores/recs/",
        "uid=1000",
        "gid=1000",
        "allow-other",
    ]
    assert pv["spec"]["accessModes"] == ["ReadOnlyMany"]  # nothing writes through the store's mount
    # The leases' own volume: the leases/ prefix, where readers may overwrite and delete.
    leases_pv, leases_pvc = objects[2], objects[3]
    assert leases_pv["metadata"]["name"] == "recs-ml-leases"
    assert leases_pv["spec"]["csi"]["volumeHandle"] == "recs-ml-leases"
    assert leases_pv["spec"]["claimRef"] == {"namespace": "ml", "name": "recs-leases"}
    assert leases_pv["spec"]["accessModes"] == ["ReadWriteMany"]
    assert leases_pv["spec"]["mountOptions"] == [
        "region eu-west-1",
        "prefix stores/recs/leases/",
        "allow-delete",
        "allow-overwrite",
        "uid=1000",
        "gid=1000",
        "allow-other",
    ]
    assert leases_pvc["spec"]["volumeName"] == "recs-ml-leases"
    pod = _pod(writer)
    assert "volumes" not in pod and "volumeMounts" not in pod["containers"][0]
    assert _env(pod["containers"][0]) == {
        "SHAREDREC_STORE": "s3://recs-prod/stores/recs",
        "AWS_REGION": "eu-west-1",
    }


def test_s3_without_leases_is_read_only_many() -> None:
    pv, pvc, *_ = build_objects(CASES["s3-no-leases"]())
    assert pv["spec"]["accessModes"] == pvc["spec"]["accessModes"] == ["ReadOnlyMany"]
    assert pv["spec"]["mountOptions"] == ["cache /tmp/s3-cache", "metadata-ttl 1"]


def test_autoscaler_owns_the_replica_count() -> None:
    objects = build_objects(CASES["efs-static"]())
    deployment, hpa = objects[2], objects[4]
    assert "replicas" not in deployment["spec"]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "recs-reader",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 30)
    assert build_objects(CASES["nfs"]())[2]["spec"]["replicas"] == 4


def test_writer_cronjob_and_one_off_job() -> None:
    cron = build_objects(CASES["efs-static"]())[-1]
    assert cron["kind"] == "CronJob"
    assert (cron["spec"]["schedule"], cron["spec"]["timeZone"]) == ("15 * * * *", "Europe/Paris")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    mounts = _pod(cron)["containers"][0]["volumeMounts"]
    assert mounts == [{"name": "recs-store", "mountPath": "/mnt/recs"}]  # read-write
    job = build_objects(CASES["hostpath"]())[-1]
    assert job["kind"] == "Job" and job["metadata"]["name"] == "recs-dev-writer"


def test_write_files_writes_each_object_and_a_kustomization(tmp_path: Path) -> None:
    config = CASES["efs-static"]()
    paths = write_files(config, tmp_path / "out", kustomize=True)
    names = [path.name for path in paths]
    assert names == [
        "pv.yaml",
        "pvc.yaml",
        "reader-deployment.yaml",
        "reader-pdb.yaml",
        "reader-hpa.yaml",
        "writer-cronjob.yaml",
        "kustomizeconfig.yaml",
        "kustomization.yaml",
    ]
    kustomization = yaml.safe_load((tmp_path / "out" / "kustomization.yaml").read_text())
    assert kustomization["resources"] == names[:-2]
    assert kustomization["configurations"] == ["kustomizeconfig.yaml"]
    for path, obj in zip(paths, build_objects(config), strict=False):
        assert yaml.safe_load(path.read_text()) == obj


# -- invalid input ---------------------------------------------------------------------------------


def _efs(**volume: Any) -> dict[str, Any]:
    return {"backend": "efs", "file_system_id": FS, **volume}


BAD_CONFIGS: list[tuple[str, dict[str, Any], list[str]]] = [
    ("bad name", {"name": "Recs_API", "volume": _efs()}, ["name:", "DNS-1123", "'recs-api'"]),
    ("long name", {"name": "r" * 46, "volume": _efs()}, ["name:", "1-45 lowercase"]),
    ("bad namespace", {"namespace": "ML Team", "volume": _efs()}, ["namespace:", "'ml-team'"]),
    ("missing fs id", {"volume": {"backend": "efs"}}, ["volume.file_system_id: is required", "fs-"]),
    ("bad fs id", {"volume": _efs(file_system_id="fs-12")}, ["volume.file_system_id", "8-40 hex digits"]),
    (
        "fs arn",
        {"volume": _efs(file_system_id=f"arn:aws:elasticfilesystem:us-east-1:123456789012:file-system/{FS}")},
        ["not the ARN", f"use '{FS}'"],
    ),
    (
        "bad access point",
        {"volume": _efs(access_point_id="ap-0123456789abcdef0")},
        ["volume.access_point_id", "fsap-"],
    ),
    (
        "efs rox",
        {"volume": _efs(), "access_mode": "ReadOnlyMany"},
        ["access_mode", "EFS needs ReadWriteMany"],
    ),
    ("efs rwo", {"volume": _efs(), "access_mode": "ReadWriteOnce"}, ["EFS needs ReadWriteMany", "one node"]),
    ("efs capacity", {"volume": _efs(capacity="100Ti")}, ["volume.capacity", "ignores capacity"]),
    (
        "efs path attribute",
        {"volume": _efs(volume_attributes={"path": "/x"})},
        ["deprecated", "volumeHandle"],
    ),
    ("efs unknown attribute", {"volume": _efs(volume_attributes={"fsType": "efs"})}, ["'fsType' is refused"]),
    (
        "efs bool attribute",
        {"volume": _efs(volume_attributes={"encryptInTransit": "yes"})},
        ["'true' or 'false'"],
    ),
    ("efs ip attribute", {"volume": _efs(volume_attributes={"mounttargetip": "efs.local"})}, ["IP address"]),
    ("efs tls option", {"volume": _efs(mount_options=["tls"])}, ["'tls'", "encryptInTransit"]),
    ("efs ap option", {"volume": _efs(mount_options=["accesspoint=fsap-1"])}, ["set access_point_id"]),
    ("efs ro option", {"volume": _efs(mount_options=["ro"])}, ["volumeMounts.readOnly"]),
    ("efs iam option", {"volume": _efs(mount_options=["iam"])}, ["iam=True"]),
    (
        "dynamic with ap",
        {"volume": _efs(dynamic=True, access_point_id=AP)},
        ["access_point_id", "static volumes only"],
    ),
    ("static with uid", {"volume": _efs(uid=1000, gid=1000)}, ["volume.uid", "dynamic provisioning only"]),
    ("uid without gid", {"volume": _efs(dynamic=True, uid=1000)}, ["volume.gid", "together"]),
    (
        "no tls with ap",
        {"volume": _efs(access_point_id=AP, volume_attributes={"encryptInTransit": "false"})},
        ["always mounts access points over TLS"],
    ),
    (
        "per-version path",
        {"volume": _efs(path="/recs/versions/20261129T000000000000Z-abcdef")},
        ["volume.path", "never one version"],
    ),
    ("relative mount", {"volume": _efs(), "mount_path": "mnt/recs"}, ["mount_path", "absolute"]),
    ("root mount", {"volume": _efs(), "mount_path": "/"}, ["mount_path must not be '/'"]),
    ("etc mount", {"volume": _efs(), "mount_path": "/etc"}, ["system folder"]),
    ("unknown field", {"volume": _efs(), "mountpath": "/x"}, ["mountpath: is not a known field"]),
    (
        "unknown backend",
        {"volume": {"backend": "gcs"}},
        ["volume.backend: must be one of efs, nfs, s3, hostpath"],
    ),
    ("bad bucket", {"volume": {"backend": "s3", "bucket": "My_Bucket"}}, ["volume.bucket", "S3 bucket name"]),
    (
        "s3 prefix option",
        {"volume": {"backend": "s3", "bucket": "recs", "mount_options": ["prefix x/"]}},
        ["managed by sharedrec", "set prefix"],
    ),
    (
        "s3 -o option",
        {"volume": {"backend": "s3", "bucket": "recs", "mount_options": ["-o allow_other"]}},
        ["refused"],
    ),
    (
        "s3 stale CURRENT",
        {"volume": {"backend": "s3", "bucket": "recs", "mount_options": ["metadata-ttl indefinite"]}},
        ["old CURRENT forever"],
    ),
    (
        # On S3 the leases have a volume of their own, so the store is ReadOnlyMany there.
        "nfs rox with leases",
        {"volume": {"backend": "nfs", "server": "10.0.0.5", "path": "/x"}, "access_mode": "ReadOnlyMany"},
        ["ReadOnlyMany cannot carry leases"],
    ),
    (
        "nfs rox with writer",
        {
            "volume": {"backend": "nfs", "server": "nfs", "path": "/x"},
            "leases": False,
            "access_mode": "ReadOnlyMany",
            "writer": {"image": "w:1"},
        },
        ["cannot carry the writer"],
    ),
    (
        "nfs rwo",
        {"volume": {"backend": "nfs", "server": "nfs", "path": "/x"}, "access_mode": "ReadWriteOnce"},
        ["one node"],
    ),
    (
        "nfs server with path",
        {"volume": {"backend": "nfs", "server": "nfs:/x", "path": "/x"}},
        ["volume.server"],
    ),
    (
        "rwop",
        {"volume": {"backend": "hostpath", "path": "/x"}, "access_mode": "ReadWriteOncePod"},
        ["one pod"],
    ),
    ("reader without image", {"volume": _efs(), "reader": {"replicas": 3}}, ["reader.image: is required"]),
    (
        "patch without deployment",
        {"volume": _efs(), "reader": {"patch": True}},
        ["reader.deployment: is required"],
    ),
    (
        "patch with image",
        {"volume": _efs(), "reader": {"patch": True, "deployment": "api", "image": "x:1"}},
        ["reader.image", "keeps its own"],
    ),
    (
        "hpa without cpu request",
        {"volume": _efs(), "reader": {"image": "x:1"}, "autoscaling": {"max_replicas": 5}},
        ["reader.resources.cpu_request", "measured against the request"],
    ),
    (
        "hpa and replicas",
        {
            "volume": _efs(),
            "reader": {"image": "x:1", "replicas": 3, "resources": {"cpu_request": "1"}},
            "autoscaling": {"max_replicas": 5},
        },
        ["reader.replicas", "min_replicas"],
    ),
    (
        "hpa bounds",
        {"volume": _efs(), "autoscaling": {"min_replicas": 6, "max_replicas": 5}},
        ["must not exceed"],
    ),
    (
        "hpa without reader",
        {"volume": _efs(), "autoscaling": {"max_replicas": 5}},
        ["autoscaling: scales the readers"],
    ),
    (
        "bad schedule",
        {"volume": _efs(), "writer": {"image": "w:1", "schedule": "every hour"}},
        ["five fields"],
    ),
    (
        "inline time zone",
        {"volume": _efs(), "writer": {"image": "w:1", "schedule": "CRON_TZ=UTC 0 * * * *"}},
        ["put the zone in time_zone"],
    ),
    (
        "bad cpu",
        {"volume": _efs(), "reader": {"image": "x:1", "resources": {"cpu_request": "fast"}}},
        ["250m"],
    ),
    ("bad image", {"volume": _efs(), "reader": {"image": "my image"}}, ["reader.image", "image reference"]),
]


@pytest.mark.parametrize(
    ("data", "expected"), [case[1:] for case in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
)
def test_invalid_config_says_what_to_fix(data: dict[str, Any], expected: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        K8sConfig.model_validate(data)
    message = str(info.value)
    assert isinstance(info.value, InvalidInput)
    assert message.startswith("invalid Kubernetes config: ")
    for part in expected:
        assert part in message


def test_direct_construction_raises_config_error_too() -> None:
    with pytest.raises(ConfigError, match=r"file_system_id: is required: the EFS file system id"):
        EfsVolume()  # type: ignore[call-arg]
    with pytest.raises(ConfigError) as info:
        EfsVolume(file_system_id=FS, access_point_id="fsap-xyz")
    assert info.value.issues[0][0] == ("access_point_id",)
    with pytest.raises(ConfigError, match="EFS needs ReadWriteMany"):
        K8sConfig(volume=EfsVolume(file_system_id=FS), access_mode="ReadOnlyMany")


def test_json_and_yaml_configs_are_checked_the_same_way() -> None:
    text = f'{{"volume": {{"backend": "efs", "file_system_id": "{FS}"}}, "access_mode": "ReadOnlyMany"}}'
    with pytest.raises(ConfigError, match="access_mode: EFS needs ReadWriteMany"):
        K8sConfig.model_validate_json(text)
    config = K8sConfig.model_validate(
        yaml.safe_load(
            "name: recs\nvolume:\n  backend: nfs\n  server: nfs.example.internal\n  path: /exports/recs\n"
        )
    )
    assert isinstance(config.volume, NfsVolume)


def test_several_problems_are_reported_together() -> None:
    with pytest.raises(ConfigError) as info:
        K8sConfig.model_validate({"name": "Bad Name", "volume": {"backend": "efs", "file_system_id": "x"}})
    assert [loc for loc, _ in info.value.issues] == [("name",), ("volume", "file_system_id")]


def test_valid_variants_are_accepted() -> None:
    assert K8sConfig(volume=HostPathVolume(path="/x")).effective_access_mode == "ReadWriteOnce"
    assert K8sConfig(volume=NfsVolume(server="nfs", path="/x"), leases=False, access_mode="ReadOnlyMany")
    s3 = S3Volume(bucket="recs", prefix="/a/b/")
    assert (s3.prefix, s3.url) == ("a/b/", "s3://recs/a/b")
    assert S3Volume(bucket="recs").url == "s3://recs"
    efs = EfsVolume(
        file_system_id=FS, volume_attributes={"mounttargetip": "use1-az1:10.0.1.5,use1-az2:10.0.2.5"}
    )
    assert efs.volume_attributes["mounttargetip"].startswith("use1-az1")
    assert K8sConfig(volume=efs, mount_path="/var/lib/recs/").mount_path == "/var/lib/recs"


# -- rules on objects ---------------------------------------------------------------------------------


def _objects(name: str) -> list[dict[str, Any]]:
    return copy.deepcopy(build_objects(CASES[name]()))


def _reader_mounts(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    deployment = next(obj for obj in objects if obj["kind"] == "Deployment")
    mounts: list[dict[str, Any]] = _pod(deployment)["containers"][0]["volumeMounts"]
    return mounts


def _break_root_read_only(objects: list[dict[str, Any]]) -> None:
    del _reader_mounts(objects)[0]["readOnly"]


def _per_version_subpath(objects: list[dict[str, Any]]) -> None:
    _reader_mounts(objects)[0]["subPath"] = "versions/20261129T000000000000Z-abcdef"


def _read_only_leases(objects: list[dict[str, Any]]) -> None:
    _reader_mounts(objects)[1]["readOnly"] = True


def _read_only_claim(objects: list[dict[str, Any]]) -> None:
    deployment = next(obj for obj in objects if obj["kind"] == "Deployment")
    _pod(deployment)["volumes"][0]["persistentVolumeClaim"]["readOnly"] = True


def _wrong_claim_namespace(objects: list[dict[str, Any]]) -> None:
    objects[0]["spec"]["claimRef"]["namespace"] = "default"


def _default_storage_class(objects: list[dict[str, Any]]) -> None:
    del objects[1]["spec"]["storageClassName"]


def _efs_read_only_many(objects: list[dict[str, Any]]) -> None:
    objects[0]["spec"]["accessModes"] = ["ReadOnlyMany"]
    objects[1]["spec"]["accessModes"] = ["ReadOnlyMany"]


def _pv_read_only(objects: list[dict[str, Any]]) -> None:
    objects[0]["spec"]["csi"]["readOnly"] = True


def _bad_efs_attribute(objects: list[dict[str, Any]]) -> None:
    objects[0]["spec"]["csi"]["volumeAttributes"] = {"subPath": "/recs"}


def _claim_asks_more(objects: list[dict[str, Any]]) -> None:
    objects[1]["spec"]["accessModes"] = ["ReadWriteMany", "ReadOnlyMany"]


def _s3_writer_mounts(objects: list[dict[str, Any]]) -> None:
    pod = _pod(objects[-1])
    pod["volumes"] = [{"name": "recs-store", "persistentVolumeClaim": {"claimName": "recs"}}]
    pod["containers"][0]["volumeMounts"] = [{"name": "recs-store", "mountPath": "/mnt/recs"}]


@pytest.mark.parametrize(
    ("name", "breaks", "expected"),
    [
        ("efs-static", _break_root_read_only, "readOnly: true on the volumeMount"),
        ("efs-static", _per_version_subpath, "per-version subPath"),
        ("nfs", _read_only_leases, "leases mount must be read-write"),
        ("nfs", _read_only_claim, "persistentVolumeClaim.readOnly"),
        ("efs-static", _wrong_claim_namespace, "reserved for claim default/recs"),
        ("hostpath", _default_storage_class, 'storageClassName: ""'),
        ("efs-static", _efs_read_only_many, "EFS volumes must be ReadWriteMany"),
        ("efs-static", _pv_read_only, "csi.readOnly"),
        ("efs-static", _bad_efs_attribute, "'subPath' is refused"),
        ("nfs-csi", _claim_asks_more, "does not offer"),
        ("s3", _s3_writer_mounts, "Mountpoint cannot rename"),
    ],
)
def test_check_manifests_catches_broken_rules(
    name: str, breaks: Callable[[list[dict[str, Any]]], None], expected: str
) -> None:
    objects = _objects(name)
    check_manifests(objects)
    breaks(objects)
    with pytest.raises(InvalidInput, match=expected):
        check_manifests(objects)


def test_check_manifests_refuses_shared_volume_handles() -> None:
    one = build_objects(K8sConfig(name="a", volume=EfsVolume(file_system_id=FS, access_point_id=AP)))
    two = build_objects(K8sConfig(name="b", volume=EfsVolume(file_system_id=FS, access_point_id=AP)))
    with pytest.raises(InvalidInput, match="share volumeHandle"):
        check_manifests(one + two)
    other = build_objects(K8sConfig(name="b", volume=EfsVolume(file_system_id=FS, path="/b")))
    check_manifests(one + other)


# -- optional dependency --------------------------------------------------------------------------------


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60, check=False
    )


def test_models_work_without_pyyaml_and_yaml_asks_for_the_extra() -> None:
    result = _python(
        """
        import sys
        sys.modules["yaml"] = None  # what Python does for a module that cannot be imported
        from sharedrec.k8s import HostPathVolume, K8sConfig, MissingDependency, build_objects, render
        config = K8sConfig(volume=HostPathVolume(path="/data/recs"))
        print(len(build_objects(config)))
        try:
            render(config)
        except MissingDependency as exc:
            print(exc)
        """
    )
    assert result.returncode == 0, result.stderr
    count, message = result.stdout.strip().splitlines()
    assert count == "2"
    assert "pip install 'sharedrec[k8s]'" in message


def test_importing_sharedrec_does_not_import_k8s() -> None:
    result = _python("import sys, sharedrec; print('sharedrec.k8s' in sys.modules, 'yaml' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


def test_canary_deployment_follows_its_ref() -> None:
    config = K8sConfig(
        name="recs",
        namespace="ml",
        volume=EfsVolume(file_system_id=FS, access_point_id=AP),
        reader=_reader(deployment="recs-canary", ref="canary", replicas=1),
    )
    objects = build_objects(config)
    deployment = next(obj for obj in objects if obj["kind"] == "Deployment")
    assert deployment["metadata"]["name"] == "recs-canary"
    assert _env(_pod(deployment)["containers"][0])["SHAREDREC_REF"] == "canary"
    for obj in objects:
        _validate(obj)
    with pytest.raises(InvalidInput, match="invalid ref name"):
        _reader(ref="../x")
