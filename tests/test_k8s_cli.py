"""The ``sharedrec k8s`` commands, and the generated kustomizations built by a real kubectl."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner, Result

from sharedrec.k8s import ConfigError, check_manifests
from sharedrec.k8s.cli import k8s

from conftest import app_with_component, kustomize_build, needs_kustomize

GOLDEN = Path(__file__).parent / "golden" / "k8s"

EFS_STATIC_ARGS = [
    "efs",
    "--name=recs",
    "--namespace=ml",
    "--file-system-id=fs-0123456789abcdef0",
    "--access-point-id=fsap-0123456789abcdef0",
    "--iam",
    "--run-as-user=1000",
    "--run-as-group=1000",
    "--fs-group=1000",
    "--image=registry.example.com/recs-api:1.4",
    "--port=8080",
    "--cpu-request=500m",
    "--memory-request=2Gi",
    "--memory-limit=4Gi",
    "--readiness-command=test -f /mnt/recs/CURRENT",
    "--service-account=recs-reader",
    "--min-replicas=3",
    "--max-replicas=30",
    "--target-cpu=60",
    "--writer-image=registry.example.com/recs-batch:1.4",
    "--writer-command=python -m recs.publish",
    "--writer-cpu-request=2",
    "--writer-memory-request=8Gi",
    "--schedule=15 * * * *",
    "--time-zone=Europe/Paris",
    "--writer-service-account=recs-writer",
]

EFS_PATCH_ARGS = [
    "efs",
    "--name=recs",
    "--namespace=ml",
    "--file-system-id=fs-0123456789abcdef0",
    "--path=/stores/recs",
    "--volume-attribute=encryptInTransit=true",
    "--patch-only",
    "--deployment=recs-api",
    "--container=api",
    "--port=8080",
    "--readiness-http-path=/readyz",
    "--max-replicas=12",
]


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(k8s, list(args))


def test_efs_prints_the_same_yaml_as_the_api() -> None:
    result = _invoke(*EFS_STATIC_ARGS)
    assert result.exit_code == 0, result.output
    assert result.stdout == (GOLDEN / "efs-static.yaml").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("args", "golden"),
    [
        (EFS_PATCH_ARGS, "efs-patch.yaml"),
        (
            [
                "s3",
                "--name=recs",
                "--bucket=recs-prod",
                "--mount-option=cache /tmp/s3-cache",
                "--mount-option=metadata-ttl 1",
                "--no-leases",
                "--image=registry.example.com/recs-api:1.4",
                "--port=8080",
                "--cpu-request=500m",
                "--memory-request=2Gi",
                "--memory-limit=4Gi",
            ],
            "s3-no-leases.yaml",
        ),
        (
            [
                "nfs",
                "--name=recs",
                "--server=10.0.0.5",
                "--path=/exports/recs",
                "--csi",
                "--capacity=500Gi",
                "--mount-path=/data/recs",
                "--no-leases",
                "--image=registry.example.com/recs-api:1.4",
                "--command=recs-api --workers 4",
                "--port=8080",
                "--cpu-request=500m",
                "--memory-request=2Gi",
                "--memory-limit=4Gi",
            ],
            "nfs-csi.yaml",
        ),
        (
            [
                "hostpath",
                "--name=recs-dev",
                "--path=/var/lib/sharedrec/recs",
                "--capacity=2Gi",
                "--image=recs-api:dev",
                "--replicas=1",
                "--writer-image=recs-batch:dev",
            ],
            "hostpath.yaml",
        ),
    ],
)
def test_each_backend_command_matches_its_golden_file(args: list[str], golden: str) -> None:
    result = _invoke(*args)
    assert result.exit_code == 0, result.output
    assert result.stdout == (GOLDEN / golden).read_text(encoding="utf-8")


def test_output_dir_writes_files_and_kustomization(tmp_path: Path) -> None:
    result = _invoke(*EFS_STATIC_ARGS, f"--output-dir={tmp_path}", "--kustomize")
    assert result.exit_code == 0, result.output
    written = [line.removeprefix("wrote ") for line in result.stdout.splitlines()]
    assert [Path(p).name for p in written] == [
        "pv.yaml",
        "pvc.yaml",
        "reader-deployment.yaml",
        "reader-pdb.yaml",
        "reader-hpa.yaml",
        "writer-cronjob.yaml",
        "kustomizeconfig.yaml",
        "kustomization.yaml",
    ]
    assert (tmp_path / "kustomization.yaml").read_text() == (
        GOLDEN / "efs-static.kustomization.yaml"
    ).read_text()


def test_defaults_give_a_minimal_volume() -> None:
    result = _invoke("hostpath", "--path=/data/recs")
    assert result.exit_code == 0, result.output
    kinds = [doc["kind"] for doc in yaml.safe_load_all(result.stdout)]
    assert kinds == ["PersistentVolume", "PersistentVolumeClaim"]
    assert "name: sharedrec-default" in result.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["efs", "--file-system-id=fs-0123456789abcdef0", "--access-point-id=ap-1"],
            "--access-point-id: 'ap-1'",
        ),
        (["efs", "--file-system-id=fs-1"], "--file-system-id: 'fs-1' is not an EFS file system id"),
        (
            ["efs", "--file-system-id=fs-0123456789abcdef0", "--access-mode=ReadOnlyMany"],
            "--access-mode: EFS needs",
        ),
        (
            ["efs", "--file-system-id=fs-0123456789abcdef0", "--name=Recs"],
            "--name: 'Recs' is not a valid name",
        ),
        (
            ["s3", "--bucket=recs", "--image=x:1", "--max-replicas=4"],
            "--cpu-request: is required with autoscaling",
        ),
        (["s3", "--bucket=recs", "--writer-image=w:1", "--schedule=hourly"], "--schedule: schedule 'hourly'"),
        (
            ["nfs", "--server=nfs", "--path=/x", "--writer-image=w:1", "--writer-memory-request=lots"],
            "--writer-memory",
        ),
        (["efs", "--file-system-id=fs-0123456789abcdef0", "--patch-only"], "--deployment: is required"),
        (
            ["hostpath", "--path=/x", "--no-leases", "--access-mode=ReadOnlyMany", "--writer-image=w:1"],
            "the writer",
        ),
    ],
)
def test_invalid_options_name_the_option_to_fix(args: list[str], expected: str) -> None:
    result = _invoke(*args)
    assert isinstance(result.exception, ConfigError), result.output
    assert expected in str(result.exception)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["efs"], "Missing option '--file-system-id'"),
        (["hostpath", "--path=/x", "--kustomize"], "add --output-dir"),
        (["hostpath", "--path=/x", "--replicas=3"], "need --image"),
        (["hostpath", "--path=/x", "--schedule=@daily"], "need --writer-image"),
        (
            ["efs", "--file-system-id=fs-0123456789abcdef0", "--volume-attribute=encryptInTransit"],
            "KEY=VALUE",
        ),
        (["hostpath", "--path=/x", "--image=x", "--command=python 'unclosed"], "cannot split"),
    ],
)
def test_usage_errors(args: list[str], expected: str) -> None:
    result = _invoke(*args)
    assert result.exit_code == 2
    assert expected in result.output


def test_help_lists_every_backend() -> None:
    result = _invoke("--help")
    assert result.exit_code == 0
    for command in ("efs", "nfs", "s3", "hostpath"):
        assert command in result.output


def test_sharedrec_k8s_runs_as_a_command() -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sharedrec", "k8s", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    ok = run(*EFS_STATIC_ARGS)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == (GOLDEN / "efs-static.yaml").read_text(encoding="utf-8")
    bad = run("efs", "--file-system-id=fs-0123456789abcdef0", "--access-mode=ReadOnlyMany")
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: invalid Kubernetes config: --access-mode: EFS needs ReadWriteMany")
    assert "Traceback" not in bad.stderr


# -- kustomize ------------------------------------------------------------------------------------


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


@needs_kustomize
@pytest.mark.parametrize(
    "backend_args", [EFS_STATIC_ARGS, ["s3", "--bucket=recs", "--image=x:1", "--writer-image=w:1"]]
)
def test_kubectl_kustomize_builds_the_generated_kustomization(
    tmp_path: Path, backend_args: list[str]
) -> None:
    result = _invoke(*backend_args, f"--output-dir={tmp_path}", "--kustomize")
    assert result.exit_code == 0, result.output
    built = sorted(kustomize_build(tmp_path), key=_key)
    expected = sorted(
        (
            yaml.safe_load(p.read_text())
            for p in tmp_path.glob("*.yaml")
            if p.name not in {"kustomization.yaml", "kustomizeconfig.yaml"}
        ),
        key=_key,
    )
    assert built == expected


@needs_kustomize
def test_kubectl_kustomize_applies_the_patch_component_to_an_existing_deployment(tmp_path: Path) -> None:
    component = tmp_path / "sharedrec"
    result = _invoke(*EFS_PATCH_ARGS, f"--output-dir={component}", "--kustomize")
    assert result.exit_code == 0, result.output
    app = app_with_component(
        tmp_path / "app",
        "../sharedrec",
        env=[{"name": "LOG_LEVEL", "value": "info"}],
        volumeMounts=[{"name": "tmp", "mountPath": "/tmp"}],
        volumes=[{"name": "tmp", "emptyDir": {}}],
    )
    built = {_key(obj): obj for obj in kustomize_build(app)}
    assert set(built) == {
        ("PersistentVolume", "recs-ml"),
        ("PersistentVolumeClaim", "recs"),
        ("Deployment", "recs-api"),
        ("HorizontalPodAutoscaler", "recs-api"),
    }
    deployment = built[("Deployment", "recs-api")]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "example/recs-api:7"
    assert {e["name"] for e in container["env"]} == {
        "LOG_LEVEL",
        "SHAREDREC_STORE",
        "SHAREDREC_LEASE_DIR",
        "SHAREDREC_READER_ID",
    }
    assert {m["mountPath"]: m.get("readOnly", False) for m in container["volumeMounts"]} == {
        "/tmp": False,
        "/mnt/recs": True,
        "/mnt/recs/leases": False,
    }
    assert {v["name"] for v in pod["volumes"]} == {"tmp", "recs-store"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8080}
    assert "ports" not in container  # the patch adds no port: the Deployment declares its own
    for version in ("1.30", "1.32", "1.34"):
        assert kubernetes_validate.validate(deployment, version, strict=True) == version
    check_manifests(list(built.values()))
