"""S3 readers through the S3 API: no volume, a bounded cache emptyDir, credentials from a service account."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
from click.testing import CliRunner

from sharedrec.k8s import ConfigError, K8sConfig, ReaderSpec, S3Volume, WriterSpec, build_objects
from sharedrec.k8s.cli import k8s
from test_k8s import K8S_VERSIONS


def _config(**volume: Any) -> K8sConfig:
    return K8sConfig(
        name="recs",
        namespace="ml",
        volume=S3Volume(bucket="recs-prod", prefix="stores/recs", readers="api", **volume),
        reader=ReaderSpec(image="r:1", service_account="recs-reader"),
        writer=WriterSpec(image="w:1", schedule="@hourly", service_account="recs-writer"),
    )


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_readers_open_the_url_and_cache_in_a_bounded_empty_dir() -> None:
    objects = build_objects(_config(region="eu-west-1", cache_size="40Gi"))
    kinds = [obj["kind"] for obj in objects]
    assert "PersistentVolume" not in kinds and "PersistentVolumeClaim" not in kinds  # nothing mounted
    (deployment,) = [obj for obj in objects if obj["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "recs-reader"
    assert pod["volumes"] == [{"name": "recs-cache", "emptyDir": {"sizeLimit": "40Gi"}}]
    (container,) = pod["containers"]
    assert container["volumeMounts"] == [{"name": "recs-cache", "mountPath": "/var/cache/sharedrec"}]
    env = _env(container)
    assert env["SHAREDREC_STORE"] == "s3://recs-prod/stores/recs"
    assert env["AWS_REGION"] == "eu-west-1"
    assert env["SHAREDREC_CACHE_DIR"] == "/var/cache/sharedrec"
    assert env["SHAREDREC_READER_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert "SHAREDREC_LEASE_DIR" not in env  # leases are objects under the store's leases/ prefix
    for obj in objects:
        for version in K8S_VERSIONS:
            assert kubernetes_validate.validate(copy.deepcopy(obj), version, strict=True) == version


def test_the_api_mode_needs_a_service_account_and_refuses_mount_settings() -> None:
    with pytest.raises(
        ConfigError, match=r"reader\.service_account: is required when readers use the S3 API"
    ):
        K8sConfig(volume=S3Volume(bucket="recs-prod", readers="api"), reader=ReaderSpec(image="r:1"))
    with pytest.raises(ConfigError, match="mount_options: is a Mountpoint setting"):
        S3Volume(bucket="recs-prod", readers="api", mount_options=("cache /tmp/x",))
    with pytest.raises(ConfigError, match="cache_size: sizes the readers' cache when they use the S3 API"):
        S3Volume(bucket="recs-prod", cache_size="20Gi")


def test_the_cli_writes_the_api_mode() -> None:
    result = CliRunner().invoke(
        k8s,
        [
            "s3", "--bucket=recs-prod", "--readers=api", "--cache-size=20Gi", "--image=r:1",
            "--service-account=recs-reader", "--region=us-east-1",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "kind: PersistentVolume" not in result.output
    assert "sizeLimit: 20Gi" in result.output and "value: s3://recs-prod" in result.output
    missing = CliRunner().invoke(k8s, ["s3", "--bucket=recs-prod", "--readers=api", "--image=r:1"])
    assert isinstance(missing.exception, ConfigError)
    assert "--service-account: is required when readers use the S3 API" in str(missing.exception)
