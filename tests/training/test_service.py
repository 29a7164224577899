"""TrainingService through a real gRPC server, training on a local Ray
instance; tests of the service around a run (idempotency, one worker's
cancel) call the run's worker function in-process instead."""

from __future__ import annotations

import os
import signal
import time

import grpc
import pytest

from ctsynth.models.checkpoint import load_model
from ctsynth.processes import pid_alive
from ctsynth.training import runner
from ctsynth.training.loop import stopped_key
from ctsynth.v1 import common_pb2, training_pb2
from tests.training.conftest import (fit_in_this_process, hosted_training_service, progress_step, publish_dataset,
                                    request, run_to_end)

State = common_pb2.JobState


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    os.environ.setdefault("CTSYNTH_RAY_DASHBOARD", "0")
    root = tmp_path_factory.mktemp("training-service")
    with hosted_training_service(root) as (stub, store):
        publish_dataset(store, "clean", root / "clean", with_nodules=False)
        yield stub, store


def test_dcgan_trains_with_two_ray_workers_and_registers_a_model(service):
    stub, store = service
    job = stub.SubmitTraining(request(steps=4, checkpoint_interval=2, scaling=training_pb2.Scaling(workers=2)))
    final, events = run_to_end(stub, job)
    assert final.state == State.JOB_STATE_SUCCEEDED, final.error.message
    assert final.result == "dcgan:1"
    steps = [e.progress.done for e in events if e.progress.stage == "training"]
    assert steps[-1] == 4 and steps == sorted(steps)
    assert any("images_per_s" in e.metrics for e in events)
    assert any(e.artifact.uri.endswith("checkpoints/000000002/samples.png") for e in events)
    model = stub.GetModel(common_pb2.GetModelRequest(model="dcgan:latest"))
    assert model.family == "dcgan" and model.dataset == "tiny:1" and model.step == 4
    assert len(model.weights.sha256) == 64 and model.samples.uri.endswith("samples.png")
    assert [m.name for m in stub.ListModels(common_pb2.ListModelsRequest()).models] == ["dcgan"]
    loaded = load_model(store, "dcgan:1")
    assert loaded.config["workers"] == 2
    import torch
    assert loaded.family.sample(2, torch.Generator().manual_seed(0)).shape == (2, 1, 16, 16)


def test_resubmitting_the_same_request_returns_the_same_job(service, monkeypatch):
    monkeypatch.setattr(runner.ray_driver, "fit", fit_in_this_process)
    stub, _ = service
    first = stub.SubmitTraining(request(steps=2, name="again"))
    run_to_end(stub, first)
    again = stub.SubmitTraining(request(steps=2, name="again"))
    assert again.id == first.id and again.state == State.JOB_STATE_SUCCEEDED


@pytest.mark.parametrize(("req", "code", "text"), [
    (request(family="vqgan"), grpc.StatusCode.INVALID_ARGUMENT, "family: unknown model family 'vqgan'"),
    (request(hyperparameters={"lr_g": 1e-4, "bogus": 1}), grpc.StatusCode.INVALID_ARGUMENT, "bogus: unknown hyperparameter"),
    (request(hyperparameters={"image_size": 4}), grpc.StatusCode.INVALID_ARGUMENT, "image_size"),
    (request(dataset="missing"), grpc.StatusCode.NOT_FOUND, "no dataset named 'missing'"),
    (request(dataset="tiny:7"), grpc.StatusCode.NOT_FOUND, "has no version 7"),
    (request(dataset="Bad Name!"), grpc.StatusCode.INVALID_ARGUMENT, "dataset"),
    (request(family="unet_gan", dataset="clean"), grpc.StatusCode.FAILED_PRECONDITION, "trains on nodule masks"),
    (request(steps=-3), grpc.StatusCode.INVALID_ARGUMENT, "steps"),
    (request(scaling=training_pb2.Scaling(workers=-1)), grpc.StatusCode.INVALID_ARGUMENT, "scaling.workers"),
    (request(split="holdout"), grpc.StatusCode.INVALID_ARGUMENT, "split"),
], ids=["family", "unknown-hyper", "range", "dataset", "version", "bad-ref", "no-masks", "steps", "workers", "split"])
def test_bad_requests_are_refused_naming_the_field(service, req, code, text):
    stub, _ = service
    with pytest.raises(grpc.RpcError) as err:
        stub.SubmitTraining(req)
    assert err.value.code() == code
    assert text in err.value.details()


def test_a_failure_inside_the_workers_fails_the_job_without_retries(service):
    stub, _ = service
    final, _ = run_to_end(stub, stub.SubmitTraining(request(steps=2, batch_size=64, name="toolarge")))
    assert final.state == State.JOB_STATE_FAILED
    assert final.error.code == "FAILED_PRECONDITION" and "fewer than batch size 64" in final.error.message


def test_cancel_stops_training_and_keeps_checkpoints(service, monkeypatch):
    monkeypatch.setattr(runner.ray_driver, "fit", fit_in_this_process)
    stub, store = service
    job = stub.SubmitTraining(request(steps=100000, checkpoint_interval=3, name="cancelled"))
    deadline = time.monotonic() + 120
    while progress_step(store, "models/cancelled/1") < 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stub.CancelJob(common_pb2.CancelJobRequest(job_id=job.id)).state in (
        State.JOB_STATE_CANCELLING, State.JOB_STATE_CANCELLED)
    final, _ = run_to_end(stub, job)
    assert final.state == State.JOB_STATE_CANCELLED
    assert any(info.key.endswith("manifest.json") for info in store.list("models/cancelled/1/checkpoints/"))
    assert not store.exists("models/cancelled/1/manifest.json")


def test_cancel_stops_both_workers_of_a_two_worker_job_at_the_same_step(service):
    stub, store = service
    prefix = "models/cancelled-pair/1"
    job = stub.SubmitTraining(request(steps=100000, checkpoint_interval=20, name="cancelled-pair",
                                      scaling=training_pb2.Scaling(workers=2)))
    deadline = time.monotonic() + 180  # hang guard only
    while progress_step(store, prefix) < 10 and time.monotonic() < deadline:
        time.sleep(0.2)
    before = progress_step(store, prefix)
    assert before >= 10, "the two-worker job did not start training"
    stub.CancelJob(common_pb2.CancelJobRequest(job_id=job.id))
    final, _ = run_to_end(stub, job)  # without agreement rank 1 waits in DDP's all-reduce and this never ends
    assert final.state == State.JOB_STATE_CANCELLED
    records = [store.get_json(stopped_key(prefix, rank)) for rank in range(2)]
    assert [(r["rank"], r["world_size"]) for r in records] == [(0, 2), (1, 2)]
    stop = records[0]["step"]
    assert stop >= before and all(r["step"] == stop and r["last_trained"] == stop - 1 for r in records), records
    assert progress_step(store, prefix) <= stop, "no step after the agreed stop was trained"
    assert all(int(info.key.split("/")[-2]) <= stop
               for info in store.list(f"{prefix}/checkpoints/") if info.key.endswith("/manifest.json"))
    assert not store.exists(f"{prefix}/manifest.json")
    pids = {r["pid"] for r in records}  # this job's own two worker processes, from their stop records
    assert len(pids) == 2
    deadline = time.monotonic() + 120  # hang guard: Ray takes the finished worker group down
    while any(pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in pids if pid_alive(pid)], "a worker process outlived the cancelled job"


def test_a_killed_worker_resumes_from_the_last_checkpoint(service):
    stub, store = service
    steps = 60
    job = stub.SubmitTraining(request(steps=steps, checkpoint_interval=5, name="killed"))
    deadline = time.monotonic() + 120
    while progress_step(store, "models/killed/1") < 7 and time.monotonic() < deadline:
        time.sleep(0.1)
    progress = store.get_json("models/killed/1/progress.json")
    assert progress["worker"]["rank"] == 0
    os.kill(progress["worker"]["pid"], signal.SIGKILL)  # this job's own rank-0 worker, from its progress record
    final, _ = run_to_end(stub, job)
    assert final.state == State.JOB_STATE_SUCCEEDED, final.error.message
    history = store.get_json("models/killed/1/metrics.json")["history"]
    assert history[-1]["step"] == steps
    recorded = [h["step"] for h in history]
    interval = recorded[0]
    assert recorded == list(range(interval, steps + 1, interval)), "every logged step once, the early ones kept"
    resumed_at = store.get_json("models/killed/1/metrics.json")["resumed_at"]
    assert len(resumed_at) == 1 and 0 < resumed_at[0] < steps and resumed_at[0] % 5 == 0, (
        f"resumed from {resumed_at}, not from one checkpoint after step 0")
