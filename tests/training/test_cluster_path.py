"""The cluster path (issue 13, item 12): with CTSYNTH_RAY_ADDRESS set, the
training service submits each run through the Ray Jobs API of a separate
Ray head, as it would to a KubeRay head, instead of joining a local one.

One head for the module, started like the local one (`ray_head`, every port
on loopback) with its dashboard, which serves the Jobs API. Its job agent
runs the entrypoint `python -m ctsynth.training.ray_driver SPEC_JSON`, so its
environment resolves `python` to this interpreter and carries the package on
PYTHONPATH, as a cluster image would. The service keeps a file store under
the test's tmp directory, which the cluster's workers on this machine reach.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ctsynth
from ctsynth.training.loop import stopped_key
from ctsynth.v1 import common_pb2
from tests.training.conftest import hosted_training_service, progress_step, request, run_to_end

State = common_pb2.JobState
ACTIVE = ("PENDING", "RUNNING")
HEAD_START_S = 240  # hang guards only, not performance limits
JOB_VISIBLE_S = 120


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _cluster_env(root: Path) -> dict[str, str]:
    """The head's environment: this venv's `python` first on PATH and the
    package (and the repository, for `tests`) on PYTHONPATH."""
    package_root = str(Path(ctsynth.__file__).resolve().parent.parent)
    repo = str(Path(__file__).resolve().parents[2])
    paths = [package_root, repo] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {**os.environ,
           "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
           "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)),
           "CTSYNTH_RAY_STORAGE": str(root / "ray-storage")}
    for name in ("CTSYNTH_RAY_ADDRESS", "RAY_ADDRESS"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A separate Ray head on loopback with its dashboard; yields
    (the Jobs API address, a JobSubmissionClient)."""
    from ray.job_submission import JobSubmissionClient

    root = tmp_path_factory.mktemp("ray-cluster")
    dashboard_port = _free_port()
    address = f"http://127.0.0.1:{dashboard_port}"
    with open(root / "head.log", "wb") as log:
        head = subprocess.Popen(
            [sys.executable, "-m", "ctsynth.training.ray_head", f"--parent-pid={os.getpid()}",
             f"--port={_free_port()}", f"--client-server-port={_free_port()}", "--num-cpus=2",
             f"--dashboard-port={dashboard_port}"],
            env=_cluster_env(root), stdout=log, stderr=subprocess.STDOUT)
        try:
            client = JobSubmissionClient(address) if _jobs_api_up(address, head) else None
            if client is None:
                log.flush()
                pytest.fail(f"the Ray head's Jobs API did not come up at {address}:\n"
                            f"{(root / 'head.log').read_text(errors='replace')[-3000:]}")
            yield address, client
        finally:
            head.terminate()  # by its PID: ray_head takes the Ray process group it started down with it
            try:
                head.wait(60)
            except subprocess.TimeoutExpired:
                head.kill()
                head.wait(10)


def _jobs_api_up(address: str, head: subprocess.Popen) -> bool:
    """Wait for the head's Jobs API to answer; False if the head exits or never answers."""
    from ray.job_submission import JobSubmissionClient

    deadline = time.monotonic() + HEAD_START_S
    while head.poll() is None and time.monotonic() < deadline:
        try:
            JobSubmissionClient(address).list_jobs()
            return True
        except Exception:  # noqa: BLE001 - the dashboard is not up yet
            time.sleep(1.0)
    return False


@pytest.fixture(scope="module")
def cluster_service(cluster, tmp_path_factory):
    """The training service with CTSYNTH_RAY_ADDRESS naming the cluster's
    Jobs API, for this module's tests only; yields (stub, store, client)."""
    address, client = cluster
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CTSYNTH_RAY_ADDRESS", address)
        with hosted_training_service(tmp_path_factory.mktemp("cluster-service")) as (stub, store):
            yield stub, store, client


def _ray_job(client, job_id: str):
    """The Ray job ctsynth submitted for service job `job_id` (its metadata names
    the job), waiting for it to appear; None when it never does."""
    deadline = time.monotonic() + JOB_VISIBLE_S
    while time.monotonic() < deadline:
        jobs = [info for info in client.list_jobs() if (info.metadata or {}).get("ctsynth_job") == job_id]
        if jobs:
            assert len(jobs) == 1, jobs
            return jobs[0]
        time.sleep(0.5)
    return None


def _ray_logs(client, submission_id: str) -> str:
    try:
        return client.get_job_logs(submission_id)[-3000:]
    except Exception as exc:  # noqa: BLE001 - only for a failure message
        return f"(no logs: {exc})"


def _checkpoint_steps(store, prefix: str) -> list[int]:
    return sorted(int(info.key.split("/")[-2]) for info in store.list(f"{prefix}/checkpoints/")
                  if info.key.endswith("/manifest.json"))


def test_a_job_submitted_to_the_cluster_trains_and_registers_the_model(cluster_service):
    stub, store, client = cluster_service
    job = stub.SubmitTraining(request(steps=4, checkpoint_interval=2, name="on-cluster"))
    info = _ray_job(client, job.id)
    assert info is not None, "no Ray job names the service job in its metadata"
    assert info.submission_id == f"{job.id}-1"
    assert info.metadata == {"ctsynth_job": job.id, "model": "on-cluster:1"}
    assert info.entrypoint.startswith("python -m ctsynth.training.ray_driver ")
    final, events = run_to_end(stub, job)
    ray_status = client.get_job_status(info.submission_id).value
    assert final.state == State.JOB_STATE_SUCCEEDED, (final.error.message, ray_status,
                                                      _ray_logs(client, info.submission_id))
    assert ray_status == "SUCCEEDED"
    assert final.result == "on-cluster:1"
    steps = [e.progress.done for e in events if e.progress.stage == "training"]
    assert steps and steps[-1] == 4 and steps == sorted(steps), steps  # the follower polls once a second
    assert any("images_per_s" in e.metrics for e in events), "no progress metrics reached the job's events"
    prefix = "models/on-cluster/1"
    checkpoints = _checkpoint_steps(store, prefix)
    assert checkpoints and checkpoints[0] > 0, checkpoints
    assert any(e.artifact.uri.endswith(f"checkpoints/{checkpoints[0]:09d}/samples.png") for e in events)
    assert store.exists(f"{prefix}/manifest.json")
    model = stub.GetModel(common_pb2.GetModelRequest(model="on-cluster:latest"))
    assert model.family == "dcgan" and model.dataset == "tiny:1" and model.step == 4
    assert "on-cluster" in [m.name for m in stub.ListModels(common_pb2.ListModelsRequest()).models]


def test_cancelling_a_cluster_job_stops_its_ray_job_and_keeps_checkpoints(cluster_service):
    stub, store, client = cluster_service
    prefix = "models/on-cluster-cancelled/1"
    job = stub.SubmitTraining(request(steps=100000, checkpoint_interval=3, name="on-cluster-cancelled"))
    info = _ray_job(client, job.id)
    assert info is not None, "no Ray job names the service job in its metadata"
    deadline = time.monotonic() + HEAD_START_S  # hang guard only
    while progress_step(store, prefix) < 4 and time.monotonic() < deadline:
        assert client.get_job_status(info.submission_id).value in ACTIVE, _ray_logs(client, info.submission_id)
        time.sleep(0.2)
    assert progress_step(store, prefix) >= 4, "the cluster job did not start training"
    assert client.get_job_status(info.submission_id).value == "RUNNING"
    before = _checkpoint_steps(store, prefix)
    assert before and before[0] > 0, before
    assert stub.CancelJob(common_pb2.CancelJobRequest(job_id=job.id)).state in (
        State.JOB_STATE_CANCELLING, State.JOB_STATE_CANCELLED)
    final, _ = run_to_end(stub, job)
    assert final.state == State.JOB_STATE_CANCELLED, final.error.message
    deadline = time.monotonic() + 60  # hang guard: the service only ends the job after Ray's
    while client.get_job_status(info.submission_id).value in ACTIVE and time.monotonic() < deadline:
        time.sleep(0.5)
    assert client.get_job_status(info.submission_id).value in ("SUCCEEDED", "STOPPED"), \
        _ray_logs(client, info.submission_id)
    assert set(before) <= set(_checkpoint_steps(store, prefix)), "a checkpoint written before the cancel is gone"
    stopped = store.get_json(stopped_key(prefix, 0))  # the worker left its loop at the cancel marker
    assert stopped["step"] >= before[-1] and stopped["world_size"] == 1, stopped
    assert not store.exists(f"{prefix}/manifest.json")
