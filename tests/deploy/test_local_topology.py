"""The cluster topology on loopback: the four services as separate processes
started through their container entry points (services/<name>/server.py) with
the environment the chart gives them, an S3 server (moto) as their object
store, and a real Prometheus server (Debian's /usr/bin/prometheus) scraping
every service's metrics port. Asserts the metrics of health checks, of an
authenticated call to each service and of a real Sample call arrive in
Prometheus's query API. The Ray head is not needed: the training service
starts Ray only when a job is submitted.

Also exercises the images' helper scripts: wait_for_store.py (the init
container) creates the bucket, grpc_health_probe.py (the TLS-mode probe)
checks each service.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import pytest

from tests.deploy.conftest import ROOT

PROMETHEUS = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
SERVICES = {"ingest": "ctsynth.v1.IngestService", "training": "ctsynth.v1.TrainingService",
            "sampling": "ctsynth.v1.SamplingService", "evaluation": "ctsynth.v1.EvaluationService"}
TOKEN = "topology-test-token"
BUCKET = "ctsynth-topology"

pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is not installed (`make system-deps` "
                                                           "installs Debian's package as root)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, seconds: float, what: str):
    """Poll until `condition()` is truthy (a bound against hangs, not a timing assertion)."""
    deadline = time.monotonic() + seconds
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield {"CTSYNTH_S3_ENDPOINT": f"http://{host}:{port}", "CTSYNTH_S3_ACCESS_KEY": "testing",
           "CTSYNTH_S3_SECRET_KEY": "testing-secret", "CTSYNTH_S3_REGION": "us-east-1", "CTSYNTH_S3_RETRIES": "0"}
    server.stop()


@pytest.fixture(scope="module")
def pod_env(s3, tmp_path_factory) -> dict[str, str]:
    """What the chart's Deployments set, with /tmp standing in for the emptyDir."""
    tmp = tmp_path_factory.mktemp("pod-tmp")
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CTSYNTH_", "AWS_"))},
        **s3,
        "CTSYNTH_STORE": f"s3://{BUCKET}/cluster",
        "CTSYNTH_S3_CREATE_BUCKET": "false",
        "CTSYNTH_HOST": "127.0.0.1",
        "CTSYNTH_GRACE_SECONDS": "1",
        "CTSYNTH_AUTH_TOKEN": TOKEN,
        "CTSYNTH_SAMPLING_DEVICE": "cpu",
        "CTSYNTH_RAY_DASHBOARD": "0",
        "HOME": str(tmp / "home"), "XDG_CACHE_HOME": str(tmp / ".cache"), "MPLCONFIGDIR": str(tmp / "mpl"),
        "RAY_TMPDIR": str(tmp / "ray"), "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture(scope="module")
def bucket(pod_env):
    """The init container's job: wait for the store and (here) create the bucket."""
    script = ROOT / "deploy" / "docker" / "wait_for_store.py"
    result = subprocess.run([sys.executable, str(script), "--timeout", "30"], capture_output=True, text=True,
                            env={**pod_env, "CTSYNTH_S3_CREATE_BUCKET": "true"}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"store s3://{BUCKET}/cluster is ready" in result.stdout
    return BUCKET


@pytest.fixture(scope="module")
def tiny_model(pod_env, bucket, tmp_path_factory):
    """A dataset and a one-step DCGAN published in the S3 store, for a real Sample call."""
    from ctsynth.storage import open_store

    from tests.served_models import train
    from tests.training.conftest import publish_dataset

    store = open_store(pod_env["CTSYNTH_STORE"], env=pod_env)
    dataset = publish_dataset(store, "tiny", tmp_path_factory.mktemp("tiny"))
    with pytest.MonkeyPatch.context() as patch:  # the training loop opens the store from the environment
        for key in ("CTSYNTH_S3_ENDPOINT", "CTSYNTH_S3_ACCESS_KEY", "CTSYNTH_S3_SECRET_KEY", "CTSYNTH_S3_REGION"):
            patch.setenv(key, pod_env[key])
        return train(store, dataset, "dcgan")


@pytest.fixture(scope="module")
def services(pod_env, bucket):
    """name -> (grpc address, metrics port) of the four service processes."""
    processes, found = {}, {}
    try:
        for name in SERVICES:
            processes[name] = subprocess.Popen(
                [sys.executable, str(ROOT / "services" / name / "server.py"), "--port", "0", "--metrics-port", "0"],
                env=pod_env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for name, process in processes.items():
            line = process.stdout.readline()  # "ctsynth serving <name> on 127.0.0.1:PORT metrics=M"
            assert line.startswith(f"ctsynth serving {name} on "), f"{name} did not start: {line!r}"
            address, metrics = line.split()[-2:]
            found[name] = (address, int(metrics.removeprefix("metrics=")))
        yield found
    finally:
        for process in processes.values():
            process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="module")
def prometheus(services, tmp_path_factory):
    """A Prometheus server on loopback scraping every service each second; yields its URL."""
    root = tmp_path_factory.mktemp("prometheus")
    targets = [{"targets": [f"127.0.0.1:{metrics}"], "labels": {"component": name}}
               for name, (_, metrics) in services.items()]
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "scrape_configs": [{"job_name": "ctsynth", "scrape_interval": "1s", "static_configs": targets}]}
    (root / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    port = free_port()
    process = subprocess.Popen([PROMETHEUS, f"--config.file={root / 'prometheus.yml'}",
                                f"--storage.tsdb.path={root / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                                "--log.level=warn"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"

    def ready():
        if process.poll() is not None:
            raise AssertionError(f"prometheus exited: {process.stderr.read().decode()[-2000:]}")
        try:
            return urllib.request.urlopen(f"{url}/-/ready", timeout=1).status == 200
        except OSError:
            return False

    try:
        wait_for(ready, 30, "prometheus to be ready")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def query(url: str, promql: str) -> list[dict]:
    with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}", timeout=5) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]["result"]


def call_each_service(services, model: str) -> str:
    """One authenticated call per service, and a Sample call that returns items;
    returns the status code name of the evaluation call."""
    from ctsynth.client import SamplingClient, open_channel
    from ctsynth.v1 import (
        evaluation_pb2,
        evaluation_pb2_grpc,
        ingest_pb2,
        ingest_pb2_grpc,
        training_pb2,
        training_pb2_grpc,
    )

    def channel(name):
        return open_channel(services[name][0], token=TOKEN)

    with channel("ingest") as ch:
        ingest_pb2_grpc.IngestServiceStub(ch).ListDatasets(ingest_pb2.ListDatasetsRequest(), timeout=120)
    with channel("training") as ch:
        families = training_pb2_grpc.TrainingServiceStub(ch).ListFamilies(training_pb2.ListFamiliesRequest(),
                                                                           timeout=120)
        assert any(f.name == "dcgan" for f in families.families)
    with channel("sampling") as ch:
        items = list(SamplingClient(ch).sample(model, 3, seed=7))
        assert [item.index for item in items] == [0, 1, 2] and items[0].array is not None
    with channel("evaluation") as ch:
        try:
            evaluation_pb2_grpc.EvaluationServiceStub(ch).ListReports(evaluation_pb2.ListReportsRequest(),
                                                                      timeout=120)
            return "OK"
        except grpc.RpcError as exc:  # a service whose RPCs have not landed answers UNIMPLEMENTED, after auth
            assert exc.code() == grpc.StatusCode.UNIMPLEMENTED, exc
            return exc.code().name


def test_prometheus_receives_every_services_metrics(services, prometheus, tiny_model):
    # The kubelet's probe, as the chart configures it in TLS mode, on each service.
    probe = ROOT / "deploy" / "docker" / "grpc_health_probe.py"
    for name, (address, _) in services.items():
        result = subprocess.run([sys.executable, str(probe), "--addr", address, "--service", SERVICES[name],
                                 "--timeout", "60"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, (name, result.stderr)
    # Health needs no token; every other call does.
    with grpc.insecure_channel(services["sampling"][0]) as ch:
        from ctsynth.v1 import common_pb2, sampling_pb2_grpc

        with pytest.raises(grpc.RpcError) as refused:
            sampling_pb2_grpc.SamplingServiceStub(ch).ListModels(common_pb2.ListModelsRequest(), timeout=120)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    evaluation_code = call_each_service(services, tiny_model)

    def scraped():
        health = query(prometheus, 'ctsynth_grpc_requests_total{service="grpc.health.v1.Health"}')
        own = query(prometheus, 'sum by (component, service, code) (ctsynth_grpc_requests_total'
                                '{service=~"ctsynth.v1.*"})')
        items = query(prometheus, "ctsynth_sampling_items_total")
        done = ({r["metric"]["component"] for r in health} == set(SERVICES)
                and {r["metric"]["component"] for r in own} == set(SERVICES) and items)
        return (health, own, items) if done else None

    health, own, items = wait_for(scraped, 60, "Prometheus to scrape every service after the calls")
    up = query(prometheus, 'up{job="ctsynth"}')
    assert {r["metric"]["component"]: r["value"][1] for r in up} == {name: "1" for name in SERVICES}
    for result in health:
        assert result["metric"]["code"] == "OK" and float(result["value"][1]) >= 1
    codes = {(r["metric"]["component"], r["metric"]["service"]): r["metric"]["code"] for r in own}
    assert codes[("ingest", SERVICES["ingest"])] == "OK"
    assert codes[("training", SERVICES["training"])] == "OK"
    assert codes[("evaluation", SERVICES["evaluation"])] == evaluation_code
    assert ("sampling", SERVICES["sampling"]) in codes
    by_component = {r["metric"]["component"]: float(r["value"][1]) for r in items}
    assert by_component == {"sampling": 3.0}  # the three items of the Sample call, and only there


def test_wait_for_store_gives_up_on_an_unreachable_store(pod_env):
    script = ROOT / "deploy" / "docker" / "wait_for_store.py"
    env = {**pod_env, "CTSYNTH_S3_ENDPOINT": f"http://127.0.0.1:{free_port()}", "CTSYNTH_S3_CONNECT_TIMEOUT": "0.2"}
    result = subprocess.run([sys.executable, str(script), "--timeout", "1", "--interval", "0.3"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1
    assert "not ready (attempt 1)" in result.stderr and "unavailable" in result.stderr.lower()
