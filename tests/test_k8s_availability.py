"""Readers stay available through node drains and zone losses; the writer is never BestEffort.

By default a reader Deployment gets a PodDisruptionBudget (``maxUnavailable: 1``) and
topology spread constraints over zones, then nodes; every new object is schema-valid on
the Kubernetes versions the other objects are checked against.
"""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
from click.testing import CliRunner

from sharedrec.k8s import (
    ConfigError,
    EfsVolume,
    K8sConfig,
    ReaderSpec,
    Resources,
    build_files,
    build_objects,
    disruption_budget,
)
from sharedrec.k8s.cli import k8s
from test_k8s import K8S_VERSIONS

FS = "fs-0123456789abcdef0"


def _config(**reader: Any) -> K8sConfig:
    return K8sConfig(
        name="recs",
        namespace="ml",
        volume=EfsVolume(file_system_id=FS),
        reader=ReaderSpec(image="example/recs-api:1", resources=Resources(cpu_request="500m"), **reader),
    )


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector["matchLabels"].items())


def test_readers_get_a_disruption_budget_by_default() -> None:
    files = build_files(_config())
    pdb, deployment = files["reader-pdb.yaml"], files["reader-deployment.yaml"]
    assert pdb["apiVersion"] == "policy/v1" and pdb["kind"] == "PodDisruptionBudget"
    assert pdb["metadata"]["namespace"] == deployment["metadata"]["namespace"] == "ml"
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    # It counts exactly the readers' pods.
    assert _matches(pdb["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"])
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    for version in K8S_VERSIONS:
        assert kubernetes_validate.validate(copy.deepcopy(pdb), version, strict=True) == version


def test_readers_spread_over_zones_then_nodes() -> None:
    deployment = build_files(_config())["reader-deployment.yaml"]
    pod = deployment["spec"]["template"]
    constraints = pod["spec"]["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in constraints] == [
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    ]
    for constraint in constraints:
        assert constraint["maxSkew"] == 1
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"  # never leaves a reader Pending
        assert _matches(constraint["labelSelector"], pod["metadata"]["labels"])
        assert constraint["matchLabelKeys"] == ["pod-template-hash"]
    for version in K8S_VERSIONS:
        assert kubernetes_validate.validate(copy.deepcopy(deployment), version, strict=True) == version


def test_both_can_be_turned_off_or_tuned() -> None:
    files = build_files(_config(disruption_budget=False, topology_spread=False))
    assert "reader-pdb.yaml" not in files
    assert "topologySpreadConstraints" not in files["reader-deployment.yaml"]["spec"]["template"]["spec"]
    assert disruption_budget(_config(max_unavailable="25%"))["spec"]["maxUnavailable"] == "25%"
    assert disruption_budget(_config(max_unavailable="2"))["spec"]["maxUnavailable"] == 2


@pytest.mark.parametrize("value", [0, "0", "0%", "150%", "one", -1])
def test_a_budget_that_blocks_drains_or_makes_no_sense_is_refused(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"max_unavailable: must be a number of pods"):
        _config(max_unavailable=value)


def test_a_patch_cannot_carry_them() -> None:
    with pytest.raises(ConfigError, match=r"disruption_budget: is written for a Deployment that sharedrec"):
        ReaderSpec(patch=True, deployment="recs-api", disruption_budget=True)
    config = K8sConfig(
        volume=EfsVolume(file_system_id=FS), reader=ReaderSpec(patch=True, deployment="recs-api")
    )
    kinds = [obj["kind"] for obj in build_objects(config)]
    assert "PodDisruptionBudget" not in kinds


def test_the_cli_flags() -> None:
    base = ["efs", f"--file-system-id={FS}", "--image=r:1"]
    out = CliRunner().invoke(k8s, [*base, "--max-unavailable=25%"])
    assert out.exit_code == 0, out.output
    assert "kind: PodDisruptionBudget" in out.output and "maxUnavailable: 25%" in out.output
    assert "topologySpreadConstraints" in out.output
    off = CliRunner().invoke(k8s, [*base, "--no-disruption-budget", "--no-topology-spread"])
    assert off.exit_code == 0, off.output
    assert "PodDisruptionBudget" not in off.output and "topologySpreadConstraints" not in off.output
    bad = CliRunner().invoke(k8s, [*base, "--max-unavailable=0"])
    assert isinstance(bad.exception, ConfigError)
    assert str(bad.exception).startswith("invalid Kubernetes config: --max-unavailable: must be")
