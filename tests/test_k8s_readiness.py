"""Readiness probes of the readers: an exec command, or an HTTP path the kubelet requests itself.

An HTTP probe starts no process in the pod (an exec `sharedrec ready` costs about 40 ms of
CPU per call, benchmarks/test_ready.py), so it is the one a service that answers HTTP should
use: the example service's own generator command does.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from sharedrec.k8s import ConfigError, K8sConfig, NfsVolume, ReaderSpec, build_objects
from sharedrec.k8s.cli import k8s

README = Path(__file__).resolve().parent.parent / "examples" / "service" / "README.md"
NFS = ["nfs", "--server=10.0.0.5", "--path=/exports/recs"]


def _config_error(*args: str) -> str:
    result = CliRunner().invoke(k8s, list(args))
    assert isinstance(result.exception, ConfigError), result.output
    return str(result.exception)


def _reader_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = [obj for obj in objects if obj["kind"] == "Deployment"]
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def test_an_http_path_gives_an_http_get_probe_on_the_readers_port() -> None:
    config = K8sConfig(
        volume=NfsVolume(server="10.0.0.5", path="/exports/recs"),
        reader=ReaderSpec(image="r:1", port=8080, readiness_http_path="/readyz"),
    )
    container = _reader_container(build_objects(config))
    assert container["ports"] == [{"name": "http", "containerPort": 8080}]
    assert container["readinessProbe"] == {
        "httpGet": {"path": "/readyz", "port": 8080},
        "periodSeconds": 10,
        "failureThreshold": 3,
    }


def test_the_cli_writes_the_http_probe() -> None:
    result = CliRunner().invoke(
        k8s, [*NFS, "--image=r:1", "--port=9000", "--readiness-http-path=/healthz?deep=1"]
    )
    assert result.exit_code == 0, result.output
    (deployment,) = [d for d in yaml.safe_load_all(result.output) if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz?deep=1", "port": 9000}
    assert "exec" not in container["readinessProbe"]


def test_an_http_probe_and_a_readiness_command_are_refused_together() -> None:
    message = _config_error(
        *NFS, "--image=r:1", "--port=8080", "--readiness-http-path=/readyz",
        "--readiness-command=sharedrec ready /mnt/recs",
    )  # fmt: skip
    assert "--readiness-http-path: conflicts with readiness_command (--readiness-command)" in message
    assert "a container has one readiness probe" in message


@pytest.mark.parametrize("patch", [False, True])
def test_an_http_probe_without_a_port_is_refused_naming_the_port_flag(patch: bool) -> None:
    reader = ["--patch-only", "--deployment=recs-api"] if patch else ["--image=r:1"]
    message = _config_error(*NFS, *reader, "--readiness-http-path=/readyz")
    assert "--port: is required by readiness_http_path (--readiness-http-path)" in message


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("readyz", "must start with '/'"),
        ("//readyz", "must not start with '//'"),
        ("/ready z", "must not contain spaces"),
        ("/readyz\n", "must not contain spaces"),
    ],
)
def test_a_path_the_kubelet_cannot_request_is_refused(path: str, expected: str) -> None:
    message = _config_error(*NFS, "--image=r:1", "--port=8080", f"--readiness-http-path={path}")
    assert f"--readiness-http-path: readiness_http_path {expected}" in message


def test_a_patch_takes_the_port_for_its_probe_only() -> None:
    config = K8sConfig(
        volume=NfsVolume(server="10.0.0.5", path="/exports/recs"),
        reader=ReaderSpec(patch=True, deployment="recs-api", port=8080, readiness_http_path="/readyz"),
    )
    container = _reader_container(build_objects(config))
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8080}
    assert "ports" not in container  # the Deployment declares its own ports
    with pytest.raises(ConfigError, match="port: belongs to a Deployment that sharedrec creates"):
        ReaderSpec(patch=True, deployment="recs-api", port=8080)


def _readme_command() -> list[str]:
    text = README.read_text(encoding="utf-8")
    (block,) = re.findall(r"```bash\n(sharedrec k8s .*?)\n(?:kubectl|```)", text, flags=re.DOTALL)
    return shlex.split(block.replace("\\\n", " "))


def test_the_example_service_is_probed_over_http(tmp_path: Path) -> None:
    words = _readme_command()
    assert words[:2] == ["sharedrec", "k8s"]
    at = words.index("--output-dir") + 1
    words[at] = str(tmp_path / words[at])  # the README writes to a relative folder
    result = CliRunner().invoke(k8s, words[2:])
    assert result.exit_code == 0, result.output
    (path,) = tmp_path.glob("**/reader-deployment.yaml")
    deployment = yaml.safe_load(path.read_text(encoding="utf-8"))
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    port = container["ports"][0]["containerPort"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
