"""The training servicer's boundary: SubmitTraining parses its request once
into a TrainRequest and refuses malformed numbers and enums before any job
exists (no Ray: a refused request never reaches it)."""

from __future__ import annotations

import math

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from ctsynth.client import open_channel
from ctsynth.config import ServerSettings
from ctsynth.errors import InvalidArgument
from ctsynth.servicers import host_services
from ctsynth.servicers.training import train_request
from ctsynth.training import runner
from ctsynth.training.loop import WorkerContext, train_worker
from ctsynth.training.request import TrainRequest
from ctsynth.training.spec import TrainSpec
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
    return training_pb2.SubmitTrainingRequest(**{"family": "dcgan", "dataset": "tiny", **fields}, hyperparameters=hyper)


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
    (training_pb2.PRECISION_UNSPECIFIED, "fp32"), (training_pb2.PRECISION_FP32, "fp32"),
    (training_pb2.PRECISION_BF16, "bf16"), (training_pb2.PRECISION_FP16, "fp16"),
])
def test_every_precision_reaches_the_plan(service, precision, mode):
    _, store = service
    train = train_request(request(precision=precision, budget=training_pb2.Budget(kimg=0.016)))
    spec = runner.plan(train, store, job_id="j", version="1")
    assert train.precision == spec.precision == mode and spec.steps == 2  # 16 images at the default batch of 8


def test_an_unknown_precision_is_refused_rather_than_training_in_fp32():
    with pytest.raises(InvalidArgument) as err:
        train_request(request(precision=7))
    assert err.value.field == "precision"


def test_a_request_is_kept_as_json_and_read_back_as_the_job_store_returns_it():
    train = train_request(request(name="m", budget=training_pb2.Budget(steps=3), seed=5, batch_size=4,
                                  scaling=training_pb2.Scaling(workers=2), hyperparameters={"lr_g": 1e-4}))
    assert (train.budget_kind, train.budget, train.workers, train.cpus_per_worker) == ("steps", 3.0, 2, 1.0)
    stored = struct_pb2.Struct()
    stored.update(train.to_json())  # a job's request: every number a double
    again = TrainRequest.from_json(json_format.MessageToDict(stored))
    assert again == train and type(again.seed) is int and type(again.workers) is int


@pytest.fixture(scope="module")
def first_stages(service):
    """A slice vae published as "vae-2d" and a DCGAN as "gan", beside the dataset."""
    _, store = service
    for name, family, config in (
            ("vae-2d", "vae", {"image_size": 16, "autoencoder_channels": [8, 8, 8], "latent_channels": 2,
                               "norm_num_groups": 8, "mid_attention": False, "adversarial": "none"}),
            ("gan", "dcgan", {"image_size": 16, "latent_dim": 8, "generator_widths": [16, 8],
                              "discriminator_widths": [8, 8]})):
        train_worker(TrainSpec(job_id=f"job-{name}", family=family, config=config, dataset="tiny:1",
                               model_name=name, version="1", store_uri=store.uri, steps=1, batch_size=2,
                               log_interval=1, seed=0), WorkerContext())
    return store


@pytest.mark.parametrize("family", ["ldm", "rflow"])
@pytest.mark.parametrize(("hyper", "code", "detail"), [
    ({}, grpc.StatusCode.INVALID_ARGUMENT, "autoencoder: the {family} needs a trained vae"),
    ({"autoencoder": "ghost"}, grpc.StatusCode.NOT_FOUND, "no model named 'ghost'"),
    ({"autoencoder": "gan"}, grpc.StatusCode.INVALID_ARGUMENT, "autoencoder: gan:1 is a dcgan model, not a vae"),
    ({"autoencoder": "vae-2d", "spatial_dims": 3}, grpc.StatusCode.INVALID_ARGUMENT,
     "spatial_dims: 3, but the vae makes 2D slices"),
    ({"autoencoder": "vae-2d", "image_size": 24}, grpc.StatusCode.INVALID_ARGUMENT, "autoencoder_config: "),
    ({"autoencoder": "vae-2d", "unet_channels": [8, 8, 8, 8], "attention_levels": [False] * 4},
     grpc.StatusCode.INVALID_ARGUMENT, "unet_channels: 4 levels need a side divisible by 8, got 4"),
], ids=["no-first-stage", "missing", "not-a-vae", "other-dims", "other-size", "latent-does-not-divide"])
def test_a_latent_model_on_a_bad_first_stage_is_refused_before_any_job(service, first_stages, family, hyper, code,
                                                                       detail):
    stub, store = service
    with pytest.raises(grpc.RpcError) as err:
        stub.SubmitTraining(request(family=family, hyperparameters={"norm_num_groups": 8, **hyper}), timeout=30)
    assert err.value.code() == code and err.value.details().startswith(detail.format(family=family)), \
        err.value.details()
    assert not stub.ListJobs(common_pb2.ListJobsRequest(), timeout=30).jobs
    assert not store.exists(f"models/{family}/1/manifest.json")
