"""Security defaults: read-only readers, non-root pods, no credentials in errors, logs or reprs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import sharedrec

from ._support import Tally, publish_tagged

SECRET_KEY = "AKIARELIABILITYSUITE7"
SECRET = "s3cr3t/Reliability+Suite/NeverPrintMe"


@pytest.mark.parametrize(
    "check",
    [
        "read-only",
        "non-root",
    ],
)
def test_generated_manifests_mount_read_only_and_run_as_non_root(check: str, tally: Tally) -> None:
    from sharedrec.k8s import EfsVolume, K8sConfig, ReaderSpec, WriterSpec, build_objects

    config = K8sConfig(
        name="recs",
        namespace="ml",
        volume=EfsVolume(file_system_id="fs-0123456789abcdef0"),
        reader=ReaderSpec(image="registry.example.com/recs-api:1.0"),
        writer=WriterSpec(image="registry.example.com/recs-batch:1.0", schedule="0 * * * *"),
    )
    objects = build_objects(config)
    tally.scenarios += 1
    pods = {}
    for obj in objects:
        spec = obj.get("spec", {})
        template = spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template")
        if template:
            pods[obj["kind"]] = template["spec"]
    assert set(pods) == {"Deployment", "CronJob"}
    if check == "non-root":
        for kind, pod in pods.items():
            assert pod.get("securityContext", {}).get("runAsNonRoot") is True, kind
        return
    (reader,) = pods["Deployment"]["containers"]
    root_mounts = [m for m in reader["volumeMounts"] if "subPath" not in m]
    assert [m["readOnly"] for m in root_mounts] == [True]
    # Only the leases folder is writable, through its own mount.
    assert [m["subPath"] for m in reader["volumeMounts"] if not m.get("readOnly")] == ["leases"]


def _credentials(endpoint: str) -> dict[str, Any]:
    return {
        "endpoint_url": endpoint,
        "key": SECRET_KEY,
        "secret": SECRET,
        "client_kwargs": {"region_name": "us-east-1"},
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1},
    }


@pytest.mark.slow
def test_credentials_never_appear(
    s3_server: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, tally: Tally
) -> None:
    from conftest import make_bucket

    caplog.set_level(logging.DEBUG, logger="sharedrec")
    seen: list[str] = []
    url = f"s3://{make_bucket(s3_server)}/recs"
    store = sharedrec.open(
        url, storage_options=_credentials(s3_server), cache_dir=tmp_path / "c", create=True
    )
    publish_tagged(store, 0)
    reader = store.reader(lease=False)
    seen += [repr(store), str(store.location), repr(reader), repr(reader.stats()), repr(store.versions())]
    failures: list[Callable[[], object]] = [
        lambda: sharedrec.open(
            "s3://no-such-bucket-here/x", storage_options=_credentials(s3_server), create=True
        ),
        lambda: sharedrec.open(url, storage_options=_credentials("http://127.0.0.1:9")).current(),
        lambda: store.reader("no-such-version", lease=False),
        lambda: store.set_current("missing"),
    ]
    for fail in failures:
        tally.scenarios += 1
        with pytest.raises(sharedrec.SharedrecError) as caught:
            fail()
        seen += [str(caught.value), repr(caught.value)]
    seen += [record.getMessage() for record in caplog.records]
    assert len(seen) > 10
    leaks = [text for text in seen if SECRET in text or SECRET_KEY in text]
    assert leaks == []
