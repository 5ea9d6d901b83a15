"""Kustomize overlays that rename the claim keep the PersistentVolume's claimRef in step.

An overlay's ``namespace:`` and ``namePrefix:`` rename the PVC (and kustomize updates the
PVC's volumeName and the pods' claimName by itself) but not the PV's ``claimRef``; the
``kustomizeconfig.yaml`` that sharedrec writes next to the kustomization teaches kustomize
that field. Built with a real ``kubectl kustomize`` (or, where kubectl is missing, the standalone
kustomize that ``make system-deps`` installs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from sharedrec.errors import InvalidInput
from sharedrec.k8s import EfsVolume, K8sConfig, ReaderSpec, build_objects, check_manifests
from sharedrec.k8s.cli import k8s

from conftest import app_with_component, kustomize_build, needs_kustomize

FS = "fs-0123456789abcdef0"
AP = "fsap-0123456789abcdef0"


def _generate(folder: Path, *args: str) -> None:
    result = CliRunner().invoke(k8s, [*args, f"--output-dir={folder}", "--kustomize"])
    assert result.exit_code == 0, result.output


def _build(folder: Path) -> dict[tuple[str, str], dict[str, Any]]:
    built = kustomize_build(folder)
    return {(d["kind"], d["metadata"]["name"]): d for d in built}


def _overlay(folder: Path, base: str, **fields: Any) -> Path:
    folder.mkdir()
    (folder / "kustomization.yaml").write_text(yaml.safe_dump({"resources": [base], **fields}))
    return folder


@needs_kustomize
@pytest.mark.parametrize(
    ("fields", "claim", "namespace", "volume"),
    [
        ({"namespace": "staging"}, "recs", "staging", "recs-ml"),
        ({"namePrefix": "eu-"}, "eu-recs", "ml", "eu-recs-ml"),
        (
            {"namespace": "prod", "namePrefix": "eu-", "nameSuffix": "-v2"},
            "eu-recs-v2",
            "prod",
            "eu-recs-ml-v2",
        ),
    ],
)
def test_an_overlay_renames_the_claim_and_its_claim_ref_together(
    tmp_path: Path, fields: dict[str, Any], claim: str, namespace: str, volume: str
) -> None:
    _generate(
        tmp_path / "base", "efs", "--name=recs", "--namespace=ml", f"--file-system-id={FS}",
        f"--access-point-id={AP}", "--image=r:1", "--writer-image=w:1", "--schedule=@hourly",
    )  # fmt: skip
    built = _build(_overlay(tmp_path / "overlay", "../base", **fields))
    pv = built[("PersistentVolume", volume)]
    pvc = built[("PersistentVolumeClaim", claim)]
    assert pv["spec"]["claimRef"] == {"namespace": namespace, "name": claim}
    assert pvc["metadata"]["namespace"] == namespace
    assert pvc["spec"]["volumeName"] == volume
    for kind, name in built:
        if kind in {"Deployment", "CronJob"}:
            obj = built[(kind, name)]
            job = obj["spec"]["jobTemplate"]["spec"] if kind == "CronJob" else obj["spec"]
            claims = [v["persistentVolumeClaim"]["claimName"] for v in job["template"]["spec"]["volumes"]]
            assert claims == [claim]
    check_manifests(list(built.values()))  # the pre-binding holds both ways


@needs_kustomize
def test_without_the_configuration_the_claim_ref_goes_stale(tmp_path: Path) -> None:
    # What the configuration is for: plain kustomize leaves claimRef on the old claim.
    _generate(tmp_path / "base", "efs", "--name=recs", "--namespace=ml", f"--file-system-id={FS}")
    kustomization = tmp_path / "base" / "kustomization.yaml"
    data = yaml.safe_load(kustomization.read_text())
    del data["configurations"]
    kustomization.write_text(yaml.safe_dump(data))
    built = _build(_overlay(tmp_path / "overlay", "../base", namespace="prod", namePrefix="eu-"))
    assert built[("PersistentVolume", "eu-recs-ml")]["spec"]["claimRef"] == {
        "namespace": "ml",
        "name": "recs",
    }
    with pytest.raises(InvalidInput, match="is reserved for claim ml/recs"):
        check_manifests(list(built.values()))


@needs_kustomize
def test_the_patch_component_keeps_claim_ref_in_step_in_a_renaming_app(tmp_path: Path) -> None:
    _generate(
        tmp_path / "sharedrec", "nfs", "--name=recs", "--namespace=ml", "--server=10.0.0.5",
        "--path=/exports/recs", "--patch-only", "--deployment=recs-api", "--container=api",
    )  # fmt: skip
    app_with_component(tmp_path / "app", "../sharedrec")
    built = _build(_overlay(tmp_path / "prod", "../app", namespace="prod", namePrefix="eu-"))
    assert built[("PersistentVolume", "eu-recs-ml")]["spec"]["claimRef"] == {
        "namespace": "prod",
        "name": "eu-recs",
    }
    pod = built[("Deployment", "eu-recs-api")]["spec"]["template"]["spec"]
    assert [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]] == ["eu-recs"]
    check_manifests(list(built.values()))


def test_one_efs_store_in_two_namespaces_needs_two_access_points() -> None:
    def objects(namespace: str, access_point: str) -> list[dict[str, Any]]:
        volume = EfsVolume(file_system_id=FS, access_point_id=access_point)
        config = K8sConfig(name="recs", namespace=namespace, volume=volume, reader=ReaderSpec(image="r:1"))
        return build_objects(config)

    ml, staging = objects("ml", AP), objects("staging", AP)
    assert {o["metadata"]["name"] for o in ml + staging if o["kind"] == "PersistentVolume"} == {
        "recs-ml",
        "recs-staging",
    }
    with pytest.raises(InvalidInput) as caught:
        check_manifests(ml + staging)
    message = str(caught.value)
    assert f"share volumeHandle '{FS}::{AP}'" in message and "ContainerCreating" in message
    assert f"aws efs create-access-point --file-system-id {FS} --root-directory" in message
    check_manifests(ml + objects("staging", "fsap-0fedcba9876543210"))
