"""S3: a fresh process's time to first answer, lazy (sharedrec) against download-and-load.

A real S3 server (moto) runs on 127.0.0.1. The workload is published to it once per size,
and the same arrays are uploaded as .npy objects for the baseline, which downloads them
into memory and builds a dict key -> row. Each sharedrec round starts with an empty chunk
cache, so it pays the requests a new pod pays. The children count their own HTTP requests
(botocore ``before-send`` events), reported in ``extra_info``. A loopback server has no
network latency: on real S3 each request costs milliseconds more, which favours the lazy
reader (few requests) even further.

``test_s3_warm_get`` compares single-key lookups from the warm local chunk cache with the
local-disk reader on the same data.
"""

from __future__ import annotations

import json
import logging
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

import sharedrec
from benchmarks._workload import COLLECTION, Settings, Workload

OPTIONS = {"key": "testing", "secret": "testing", "client_kwargs": {"region_name": "us-east-1"}}

SHAREDREC_CHILD = """\
import time
t0 = time.perf_counter()
import json, sys
import sharedrec
t1 = time.perf_counter()
url, endpoint, cache, collection, key = sys.argv[1:6]
options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing",
           "client_kwargs": {"region_name": "us-east-1"}}
store = sharedrec.open(url, storage_options=options, cache_dir=cache, create=False)
calls = []
store._backend.client.meta.events.register("before-send.s3", lambda request, **kw: calls.append(1))
reader = store.reader(lease=False, refresh_interval=None)
opened, open_requests = time.perf_counter(), len(calls)
found = reader.get(collection, int(key))
t2 = time.perf_counter()
print(json.dumps({"t0": t0, "t1": t1, "t2": t2, "opened": opened, "open_requests": open_requests,
                  "lookup_requests": len(calls) - open_requests, "answer": found.items.tolist()}))
"""

BASELINE_CHILD = """\
import time
t0 = time.perf_counter()
import io, json, sys
import boto3
import numpy as np
t1 = time.perf_counter()
bucket, endpoint, key = sys.argv[1], sys.argv[2], int(sys.argv[3])
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                  aws_secret_access_key="testing", region_name="us-east-1")
arrays = {name: np.load(io.BytesIO(s3.get_object(Bucket=bucket, Key=f"npy/{name}.npy")["Body"].read()))
          for name in ("keys", "items", "scores")}
rows = dict(zip(arrays["keys"].tolist(), range(len(arrays["keys"]))))
answer = arrays["items"][rows[key]].tolist()
t2 = time.perf_counter()
print(json.dumps({"t0": t0, "t1": t1, "t2": t2, "answer": answer, "requests": 3}))
"""


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="module")
def s3_workloads() -> dict[int, tuple[str, str]]:
    return {}


def _on_s3(
    workload: Workload, endpoint: str, cache: dict[int, tuple[str, str]], tmp: Path
) -> tuple[str, str]:
    """Publish the workload to a fresh bucket once; returns (bucket, store URL)."""
    if workload.n_users in cache:
        return cache[workload.n_users]
    import boto3

    bucket = f"bench-{uuid.uuid4().hex[:10]}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=bucket)
    url = f"s3://{bucket}/recs"
    store = sharedrec.open(
        url, storage_options={"endpoint_url": endpoint, **OPTIONS}, cache_dir=tmp / "w", create=True
    )
    store.publish_ranked(COLLECTION, workload.keys, workload.items, workload.scores, progress=False)
    for name in ("keys", "items", "scores"):
        client.put_object(Bucket=bucket, Key=f"npy/{name}.npy", Body=workload.npy_file(name).read_bytes())
    cache[workload.n_users] = (bucket, url)
    return bucket, url


def _child(command: list[str]) -> dict[str, Any]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child failed ({done.returncode}):\n{done.stderr}")
    report: dict[str, Any] = json.loads(done.stdout)
    report["import_s"] = report["t1"] - report["t0"]
    report["first_answer_s"] = report["t2"] - report["t1"]
    report["to_first_answer_s"] = report["t2"] - start
    return report


@pytest.mark.parametrize("system", ["sharedrec-lazy", "download+np.load+dict"])
def test_s3_startup(
    benchmark: BenchmarkFixture,
    workload: Workload,
    settings: Settings,
    s3_endpoint: str,
    s3_workloads: dict[int, tuple[str, str]],
    tmp_path: Path,
    system: str,
) -> None:
    benchmark.group = f"s3-startup-{workload.n_users}"
    bucket, url = _on_s3(workload, s3_endpoint, s3_workloads, tmp_path)
    key = int(workload.sample_keys(1, seed=11)[0])
    expected = workload.expected(np.array([key]))[0][0].tolist()
    reports: list[dict[str, Any]] = []
    rounds = iter(range(10_000))

    def run() -> None:
        if system == "sharedrec-lazy":
            cache = tmp_path / f"cache-{next(rounds)}"  # a new pod: nothing cached yet
            command = [
                sys.executable,
                "-c",
                SHAREDREC_CHILD,
                url,
                s3_endpoint,
                str(cache),
                COLLECTION,
                str(key),
            ]
        else:
            command = [sys.executable, "-c", BASELINE_CHILD, bucket, s3_endpoint, str(key)]
        reports.append(_child(command))

    benchmark.pedantic(run, rounds=settings.startup_rounds, iterations=1)
    assert all(report["answer"] == expected for report in reports)
    info: dict[str, Any] = {
        name: statistics.median(r[name] for r in reports)
        for name in ("import_s", "first_answer_s", "to_first_answer_s")
    }
    if system == "sharedrec-lazy":
        # sharedrec.open(create=False) sends nothing: these are the reader's own requests.
        info["open_requests"] = max(r["open_requests"] for r in reports)
        info["first_lookup_requests"] = max(r["lookup_requests"] for r in reports)
    else:
        info["requests"] = 3
    benchmark.extra_info.update(info, system=system, n_users=workload.n_users, server="moto on loopback")


@pytest.mark.parametrize("system", ["s3-warm-cache", "local-disk"])
def test_s3_warm_get(
    benchmark: BenchmarkFixture,
    workload: Workload,
    settings: Settings,
    s3_endpoint: str,
    s3_workloads: dict[int, tuple[str, str]],
    tmp_path: Path,
    system: str,
) -> None:
    benchmark.group = f"s3-get-{workload.n_users}"
    _, url = _on_s3(workload, s3_endpoint, s3_workloads, tmp_path)
    if system == "local-disk":
        reader = sharedrec.open(workload.store, create=False).reader(lease=False, refresh_interval=None)
    else:
        store = sharedrec.open(
            url, storage_options={"endpoint_url": s3_endpoint, **OPTIONS}, cache_dir=tmp_path / "c"
        )
        reader = store.reader(lease=False, refresh_interval=None)
    reader.prefetch(wait=True, progress=False)  # both warm: files local and in the page cache
    keys = workload.sample_keys(settings.rotation, seed=5).tolist()
    position = iter(range(10**9))

    def one() -> None:
        reader.get(COLLECTION, keys[next(position) % len(keys)])

    benchmark(one)
    probe = keys[0]
    np.testing.assert_array_equal(
        reader.get(COLLECTION, probe).items, workload.expected(np.array([probe]))[0][0]
    )
    benchmark.extra_info.update(system=system, n_users=workload.n_users)
    reader.close()
