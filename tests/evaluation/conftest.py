"""A store with a tiny dataset and tiny trained models (2D unconditional,
2D conditional, 3D), and the evaluation service over it on a real
in-process gRPC server."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import grpc
import pytest

from ctsynth.config import ServerSettings
from ctsynth.evaluation.settings import EvaluationSettings
from ctsynth.rpc.server import ServiceHost, ServiceSpec, build_server
from ctsynth.sampling.settings import SamplingSettings
from ctsynth.servicers import SERVICES
from ctsynth.servicers.evaluation import EvaluationServicer
from ctsynth.storage import open_store
from ctsynth.v1 import common_pb2, evaluation_pb2_grpc
from tests.served_models import train
from tests.training.conftest import publish_dataset

State = common_pb2.JobState


def tiny_settings(root) -> EvaluationSettings:
    """Budgets for seconds, not for meaningful numbers."""
    return EvaluationSettings(device="cpu", batch_size=16, extractor_steps=4, utility_steps=3, utility_repeats=2,
                              kid_subsets=5, slices_per_axis=3, weights_cache=str(root / "weights"))


@pytest.fixture(scope="session")
def store_root(tmp_path_factory):
    """The dataset `tiny` (16² slices, 8³ volumes, 8 slices and 4 volumes per
    split) and models dcgan:1, unet-gan:1 (conditional) and ddpm3d:1."""
    root = tmp_path_factory.mktemp("evaluation")
    store = open_store((root / "store").as_uri())
    dataset = publish_dataset(store, "tiny", root / "tiny")
    for family in ("dcgan", "unet_gan", "ddpm3d"):
        train(store, dataset, family)
    return root


@pytest.fixture(scope="session")
def store(store_root):
    return open_store((store_root / "store").as_uri())


@pytest.fixture(scope="session")
def host(store_root, tmp_path_factory) -> Iterator[ServiceHost]:
    """Weights files the tests write lie under pytest's base temp dir: the service's one import root."""
    settings = dataclasses.replace(ServerSettings.from_env(store_uri=(store_root / "store").as_uri()),
                                   host="127.0.0.1", port=0, metrics_port=None, grace_seconds=1.0, auth_token=None,
                                   import_roots=(str(tmp_path_factory.getbasetemp()),))
    sampling = SamplingSettings.from_env({}, device="cpu", max_batch=8)
    base = SERVICES["evaluation"]
    spec = ServiceSpec(base.name, base.full_name,
                       lambda opened, server: EvaluationServicer(opened, server, tiny_settings(store_root), sampling),
                       base.register)
    host = build_server([spec], settings)
    yield host
    host.stop(0)


@pytest.fixture(scope="session")
def stub(host) -> Iterator[evaluation_pb2_grpc.EvaluationServiceStub]:
    with grpc.insecure_channel(host.address) as channel:
        yield evaluation_pb2_grpc.EvaluationServiceStub(channel)


def finish(stub, job: common_pb2.Job, seconds: float = 240) -> tuple[common_pb2.Job, list[common_pb2.JobEvent]]:
    """Watch a job to its end (the bound is a guard against hangs, not a timing assertion)."""
    deadline = time.monotonic() + seconds
    events = list(stub.WatchJob(common_pb2.WatchJobRequest(job_id=job.id), timeout=seconds))
    final = stub.GetJob(common_pb2.GetJobRequest(job_id=job.id))
    assert time.monotonic() < deadline
    return final, events
