"""SubmitTraining refuses malformed numbers and enums before any job exists
(no Ray: a refused request never reaches it)."""

from __future__ import annotations

import math

import grpc
import pytest
from google.protobuf import struct_pb2

from ctsynth.client import open_channel
from ctsynth.config import ServerSettings
from ctsynth.errors import InvalidArgument
from ctsynth.servicers import host_services
from ctsynth.training import runner
from ctsynth.v1 import common_pb2, training_pb2, training_pb2_grpc
from tests.training.conftest import publish_dataset


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    root = tmp_path_factory.mktemp("training-validation")
    host = host_services(["training"], ServerSettings(store_uri=(root / "store").as_uri(), port=0))
    store = host.servicers["training"]._store
    publish_dataset(store, "tiny", root / "tiny")
    channel = open_channel(host.address)
    yield training_pb2_grpc.TrainingServiceStub(channel), store
    channel.close()
    host.stop(0)


def request(**fields) -> training_pb2.SubmitTrainingRequest:
    hyper = struct_pb2.Struct()
    hyper.update(fields.pop("hyperparameters", {}))
    return training_pb2.SubmitTrainingRequest(family="dcgan", dataset="tiny", hyperparameters=hyper, **fields)


@pytest.mark.parametrize(("req", "field"), [
    (request(budget=training_pb2.Budget(epochs=math.nan)), "budget.epochs"),
    (request(budget=training_pb2.Budget(epochs=math.inf)), "budget.epochs"),
    (request(budget=training_pb2.Budget(kimg=math.nan)), "budget.kimg"),
    (request(budget=training_pb2.Budget(kimg=-math.inf)), "budget.kimg"),
    (request(scaling=training_pb2.Scaling(gpus_per_worker=math.inf)), "scaling.gpus_per_worker"),
    (request(hyperparameters={"lr_g": math.nan}), "hyperparameters.lr_g"),
    (request(precision=7), "precision"),
], ids=["nan-epochs", "inf-epochs", "nan-kimg", "-inf-kimg", "inf-gpus", "nan-hyper", "unknown-precision"])
def test_non_finite_numbers_and_unknown_enums_are_invalid_argument(service, req, field):
    stub, _ = service
    with pytest.raises(grpc.RpcError) as err:
        stub.SubmitTraining(req, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(f"{field}: ")
    assert not stub.ListJobs(common_pb2.ListJobsRequest(), timeout=30).jobs  # no job was started


@pytest.mark.parametrize(("precision", "mode"), [
    ("PRECISION_UNSPECIFIED", "fp32"), ("PRECISION_FP32", "fp32"), ("PRECISION_BF16", "bf16"),
    ("PRECISION_FP16", "fp16"),
])
def test_plan_maps_every_precision_name(service, precision, mode):
    _, store = service
    values = {"family": "dcgan", "dataset": "tiny", "precision": precision, "budget": {"kimg": 0.016}}
    spec = runner.plan(values, store, job_id="j", version="1")
    assert spec.precision == mode and spec.steps == 2  # 16 images at the default batch size of 8


def test_plan_refuses_an_unknown_precision_rather_than_training_in_fp32(service):
    _, store = service
    with pytest.raises(InvalidArgument) as err:
        runner.plan({"family": "dcgan", "dataset": "tiny", "precision": 7}, store, job_id="j", version="1")
    assert err.value.field == "precision"


@pytest.mark.parametrize(("family", "steps"), [("dcgan", 4), ("wgan", 2)])
def test_an_epoch_budget_counts_every_real_row_a_step_takes(service, family, steps):
    _, store = service
    hyper = {"n_critic": 2} if family == "wgan" else {}
    values = {"family": family, "dataset": "tiny", "batchSize": 2, "budget": {"epochs": 1}, "hyperparameters": hyper}
    # 8 train slices: dcgan takes 2 a step, wgan 2 x n_critic (one batch per critic update).
    assert runner.plan(values, store, job_id="j", version="1").steps == steps
