"""The service bootstrap through a real in-process gRPC server."""

from __future__ import annotations

import datetime
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from prometheus_client import REGISTRY

from ctsynth.client import open_channel
from ctsynth.config import ServerSettings
from ctsynth.rpc.server import build_server
from ctsynth.servicers import SERVICES, host_services
from ctsynth.v1 import common_pb2, ingest_pb2_grpc
from tests.rpc.servicers import SCRIPTED

REPO = Path(__file__).resolve().parents[2]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def settings(tmp_path, **overrides) -> ServerSettings:
    return ServerSettings(store_uri=(tmp_path / "store").as_uri(), port=0, grace_seconds=2.0, **overrides)


@pytest.fixture
def host(tmp_path):
    server = build_server([SCRIPTED], settings(tmp_path))
    yield server
    server.stop(0)


@pytest.fixture
def stub(host):
    with open_channel(host.address) as channel:
        yield ingest_pb2_grpc.IngestServiceStub(channel)


def health_status(channel, service: str = "") -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def test_health_goes_from_not_serving_to_serving(tmp_path):
    host = host_services(list(SERVICES), settings(tmp_path), ready=False)
    try:
        with open_channel(host.address) as channel:
            assert health_status(channel) == NOT_SERVING
            assert health_status(channel, SERVICES["ingest"].full_name) == NOT_SERVING
            for name in SERVICES:
                host.set_serving(name)
            assert health_status(channel) == SERVING
            assert health_status(channel, SERVICES["sampling"].full_name) == SERVING
            host.set_serving("sampling", False)
            assert health_status(channel, SERVICES["sampling"].full_name) == NOT_SERVING
            assert health_status(channel) == NOT_SERVING
    finally:
        host.stop(0)


def test_reflection_lists_every_ctsynth_service(tmp_path):
    host = host_services(list(SERVICES), settings(tmp_path))
    try:
        with open_channel(host.address) as channel:
            services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    finally:
        host.stop(0)
    assert {
        "ctsynth.v1.IngestService",
        "ctsynth.v1.TrainingService",
        "ctsynth.v1.SamplingService",
        "ctsynth.v1.EvaluationService",
        "grpc.health.v1.Health",
    } <= services


@pytest.mark.parametrize(
    ("action", "code", "text"),
    [
        ("invalid", grpc.StatusCode.INVALID_ARGUMENT, "job_id: must be a job id"),
        ("missing", grpc.StatusCode.NOT_FOUND, "jobs/missing.json"),
        ("crash", grpc.StatusCode.INTERNAL, "internal error (request id"),
    ],
)
def test_exceptions_become_precise_statuses(stub, action, code, text):
    with pytest.raises(grpc.RpcError) as err:
        stub.GetJob(common_pb2.GetJobRequest(job_id=action), timeout=5)
    assert err.value.code() == code
    assert text in err.value.details()
    assert "boom" not in err.value.details()  # internals are logged, not sent
    assert "/srv/" not in err.value.details()  # nor are server paths


def test_streaming_error_after_items_keeps_items_and_status(stub):
    call = stub.WatchJob(common_pb2.WatchJobRequest(job_id="fail-after-3"), timeout=5)
    received = []
    with pytest.raises(grpc.RpcError) as err:
        for event in call:
            received.append(event.sequence)
    assert received == [0, 1, 2]
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_requests_are_counted_and_exported_on_metrics_port(tmp_path):
    host = build_server([SCRIPTED], settings(tmp_path, metrics_port=0))
    labels = {"service": "ctsynth.v1.IngestService", "method": "GetJob", "code": "OK"}
    before = REGISTRY.get_sample_value("ctsynth_grpc_requests_total", labels) or 0.0
    try:
        with open_channel(host.address) as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            for _ in range(3):
                stub.GetJob(common_pb2.GetJobRequest(job_id="ok"), timeout=5)
        body = urllib.request.urlopen(f"http://127.0.0.1:{host.metrics_port}/metrics", timeout=5).read().decode()
    finally:
        host.stop(0)
    assert REGISTRY.get_sample_value("ctsynth_grpc_requests_total", labels) == before + 3
    assert 'ctsynth_grpc_requests_total{code="OK",method="GetJob",service="ctsynth.v1.IngestService"}' in body
    assert "ctsynth_grpc_request_duration_seconds_bucket" in body


def test_bearer_token_is_required_except_for_health(tmp_path):
    host = build_server([SCRIPTED], settings(tmp_path, auth_token="s3cret"))
    request = common_pb2.GetJobRequest(job_id="ok")
    try:
        for token in (None, "wrong", "s3cret-but-longer"):
            with open_channel(host.address, token=token) as channel, pytest.raises(grpc.RpcError) as err:
                ingest_pb2_grpc.IngestServiceStub(channel).GetJob(request, timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with open_channel(host.address) as channel:
            assert health_status(channel) == SERVING
        with open_channel(host.address, token="s3cret") as channel:
            assert ingest_pb2_grpc.IngestServiceStub(channel).GetJob(request, timeout=5).id == "ok"
    finally:
        host.stop(0)


def _call_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "ctsynth.rpc" and r.getMessage() == "call"]


def test_refused_calls_are_logged_and_counted_without_the_token(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="ctsynth.rpc")
    labels = {"service": "ctsynth.v1.IngestService", "method": "GetJob", "code": "UNAUTHENTICATED"}
    before = REGISTRY.get_sample_value("ctsynth_grpc_requests_total", labels) or 0.0
    host = build_server([SCRIPTED], settings(tmp_path, auth_token="s3cret"))
    try:
        for token in (None, "guessed-token"):
            with open_channel(host.address, token=token) as channel, pytest.raises(grpc.RpcError) as err:
                ingest_pb2_grpc.IngestServiceStub(channel).GetJob(common_pb2.GetJobRequest(job_id="ok"), timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        host.stop(0)
    assert REGISTRY.get_sample_value("ctsynth_grpc_requests_total", labels) == before + 2
    refused = [r for r in _call_records(caplog) if r.code == "UNAUTHENTICATED"]
    assert [r.method for r in refused] == ["ctsynth.v1.IngestService/GetJob"] * 2
    assert not any("guessed-token" in str(vars(r)) or "s3cret" in str(vars(r)) for r in caplog.records)


@pytest.mark.parametrize("value", ["bearer s3cret", "BEARER s3cret", "Bearer  s3cret"])
def test_the_bearer_scheme_is_accepted_in_any_case(tmp_path, value):
    host = build_server([SCRIPTED], settings(tmp_path, auth_token="s3cret"))
    try:
        with open_channel(host.address) as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            job = stub.GetJob(common_pb2.GetJobRequest(job_id="ok"), metadata=[("authorization", value)], timeout=5)
            assert job.id == "ok"
            with pytest.raises(grpc.RpcError) as err:  # the scheme, not the token, is case-insensitive
                stub.GetJob(common_pb2.GetJobRequest(job_id="ok"), metadata=[("authorization", value.upper())],
                            timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        host.stop(0)


def test_a_call_past_its_deadline_is_logged_as_deadline_exceeded(host, stub, caplog):
    caplog.set_level(logging.INFO, logger="ctsynth.rpc")
    with pytest.raises(grpc.RpcError) as err:
        # A call whose deadline passes before a handler thread takes it is
        # dropped by gRPC without reaching any handler; 5 s leaves a loaded
        # 2-core machine time to dispatch it (1 s once did not).
        stub.GetJob(common_pb2.GetJobRequest(job_id="until-ended"), timeout=5)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    host.stop(10)  # returns once every handler has finished, and so has been logged
    assert [r.code for r in _call_records(caplog)] == ["DEADLINE_EXCEEDED"]


def test_messages_over_the_size_limit_are_refused(tmp_path):
    host = build_server([SCRIPTED], settings(tmp_path, max_message_bytes=4096))
    try:
        with open_channel(host.address) as channel, pytest.raises(grpc.RpcError) as err:
            ingest_pb2_grpc.IngestServiceStub(channel).GetJob(common_pb2.GetJobRequest(job_id="x" * 10_000), timeout=5)
    finally:
        host.stop(0)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def _self_signed(tmp_path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_server_accepts_tls_clients_and_refuses_plaintext(tmp_path):
    cert, key = _self_signed(tmp_path)
    host = build_server([SCRIPTED], settings(tmp_path, host="localhost", tls_cert=cert, tls_key=key))
    try:
        with open_channel(f"localhost:{host.port}", tls_ca=cert) as channel:
            assert ingest_pb2_grpc.IngestServiceStub(channel).GetJob(common_pb2.GetJobRequest(job_id="ok"), timeout=5).id == "ok"
        with open_channel(f"localhost:{host.port}") as channel, pytest.raises(grpc.RpcError) as err:
            ingest_pb2_grpc.IngestServiceStub(channel).GetJob(common_pb2.GetJobRequest(job_id="ok"), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        host.stop(0)


def test_sigterm_lets_an_in_flight_call_finish(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.rpc.slow_server_main", (tmp_path / "store").as_uri()],
        cwd=REPO, env=env, stdout=subprocess.PIPE, text=True,
    )
    try:
        port = int(process.stdout.readline().split()[1])
        marker = tmp_path / "entered"
        result: dict = {}
        with open_channel(f"127.0.0.1:{port}") as channel:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10, wait_for_ready=True)
            stub = ingest_pb2_grpc.IngestServiceStub(channel)

            def call():
                try:
                    result["job"] = stub.GetJob(common_pb2.GetJobRequest(job_id=f"sleep:2:{marker}"), timeout=20)
                except grpc.RpcError as exc:
                    result["error"] = exc.code()

            caller = threading.Thread(target=call)
            caller.start()
            for _ in range(200):
                if marker.exists():
                    break
                time.sleep(0.05)
            assert marker.exists(), "the call never reached the servicer"
            process.send_signal(signal.SIGTERM)
            caller.join(30)
        assert result.get("job") is not None, f"in-flight call failed: {result}"
        assert result["job"].id.startswith("sleep:2:")
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
