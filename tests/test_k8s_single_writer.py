"""The writer's single-writer promise: ``--single-writer`` sets SHAREDREC_SINGLE_WRITER=1 on its pod.

On an S3-compatible server that ignores conditional writes, the S3 backend moves CURRENT
only for a writer that declares itself the store's only one. The generated CronJob keeps
that promise with ``concurrencyPolicy: Forbid``; the flag makes the declaration. The last
test runs the generated environment against localbucket, a real server that ignores
If-Match, on 127.0.0.1.
"""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from sharedrec.backends import backend_for
from sharedrec.errors import PublishRejected
from sharedrec.k8s import ConfigError
from sharedrec.k8s.cli import k8s
from test_k8s import K8S_VERSIONS

from conftest import make_bucket, s3_options

WRITER = ["--writer-image=w:1", "--writer-service-account=recs-writer"]


def _writer(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(k8s, list(args))
    assert result.exit_code == 0, result.output
    writers: list[dict[str, Any]] = [
        obj for obj in yaml.safe_load_all(result.output) if obj["kind"] in {"CronJob", "Job"}
    ]
    assert len(writers) == 1
    return writers[0]


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    job = workload["spec"]["jobTemplate"]["spec"] if workload["kind"] == "CronJob" else workload["spec"]
    container: dict[str, Any] = job["template"]["spec"]["containers"][0]
    return container


def _env(workload: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in _container(workload)["env"] if "value" in e}


@pytest.mark.parametrize("schedule", [["--schedule=15 * * * *"], []])
def test_single_writer_sets_the_promise_on_the_writer_pod(schedule: list[str]) -> None:
    workload = _writer("s3", "--bucket=recs-prod", *WRITER, *schedule, "--single-writer")
    assert workload["kind"] == ("CronJob" if schedule else "Job")
    assert _env(workload)["SHAREDREC_SINGLE_WRITER"] == "1"
    if schedule:
        assert workload["spec"]["concurrencyPolicy"] == "Forbid"  # what keeps the promise
    for version in K8S_VERSIONS:
        assert kubernetes_validate.validate(copy.deepcopy(workload), version, strict=True) == version


def test_without_the_flag_the_writer_makes_no_promise() -> None:
    workload = _writer("s3", "--bucket=recs-prod", *WRITER, "--schedule=@hourly")
    assert "SHAREDREC_SINGLE_WRITER" not in _env(workload)


@pytest.mark.parametrize(
    ("volume", "name"),
    [
        (["efs", "--file-system-id=fs-0123456789abcdef0"], "EFS"),
        (["nfs", "--server=10.0.0.5", "--path=/exports/recs"], "NFS"),
        (["hostpath", "--path=/data/recs"], "hostPath"),
    ],
)
def test_single_writer_is_refused_where_the_writer_does_not_use_s3(volume: list[str], name: str) -> None:
    result = CliRunner().invoke(k8s, [*volume, "--writer-image=w:1", "--single-writer"])
    assert isinstance(result.exception, ConfigError), result.output
    message = str(result.exception)
    assert f"--single-writer: applies to S3 stores only: on {name} the writer moves CURRENT" in message
    assert "drop it" in message


def test_the_generated_promise_lets_the_writer_publish_on_a_server_that_ignores_if_match(
    localbucket_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = make_bucket(localbucket_server)
    for flags, allowed in (([], False), (["--single-writer"], True)):
        monkeypatch.delenv("SHAREDREC_SINGLE_WRITER", raising=False)
        env = _env(_writer("s3", f"--bucket={bucket}", f"--prefix=recs{int(allowed)}", *WRITER, *flags))
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        backend = backend_for(
            env["SHAREDREC_STORE"], create=True, storage_options=s3_options(localbucket_server)
        )
        if allowed:
            backend.swap_pointer("CURRENT", b"v1", None)
            assert backend.read_bytes("CURRENT") == b"v1"
        else:
            with pytest.raises(PublishRejected, match="SHAREDREC_SINGLE_WRITER=1"):
                backend.swap_pointer("CURRENT", b"v1", None)
