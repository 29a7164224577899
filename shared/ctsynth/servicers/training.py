"""TrainingService: a thin servicer over the training runner, the job
manager and the model registry."""

from __future__ import annotations

import dataclasses
import typing

from google.protobuf import json_format

from ctsynth.errors import DataLoss, InvalidArgument
from ctsynth.jobs import JobManager
from ctsynth.models.families import family_names, get_family
from ctsynth.proto_enums import PRECISION
from ctsynth.registry import Registry, check_name, parse_ref
from ctsynth.rpc.validation import check_message
from ctsynth.servicers.jobs import JobRpcs
from ctsynth.storage import ObjectStore
from ctsynth.training import runner
from ctsynth.training.request import TrainRequest
from ctsynth.v1 import common_pb2, training_pb2, training_pb2_grpc


def model_message(models: Registry, name: str, version: str) -> common_pb2.Model:
    """The Model message of a published version, from its manifest and config;
    DATA_LOSS when a file it lists is missing or cut short."""
    store = models.store
    prefix = models.prefix(name, version)
    manifest = models.intact_manifest(name, version)
    config = store.get_json(f"{prefix}/config.json")
    message = common_pb2.Model(
        name=name, version=version, family=config["family"], dataset=config.get("dataset", ""),
        spatial_dims=config.get("spatial_dims", 2), shape=config.get("sample_shape", []),
        conditional=config.get("conditional", False), mask_conditioned=config.get("mask_conditioned", False),
        job_id=manifest.get("job_id", ""),
        step=int(manifest.get("step", 0)),
        headline={k: float(v) for k, v in manifest.get("headline", {}).items() if isinstance(v, (int, float))},
    )
    if "published_at" in manifest:
        message.created.FromJsonString(manifest["published_at"])
    for field, file, media in (("weights", "weights.safetensors", "application/octet-stream"),
                               ("config", "config.json", "application/json"),
                               ("metrics", "metrics.json", "application/json"),
                               ("samples", "samples.png", "image/png")):
        entry = manifest["files"].get(file)
        if entry:
            getattr(message, field).CopyFrom(common_pb2.ArtifactRef(
                uri=store.uri_for(f"{prefix}/{file}"), sha256=entry["sha256"], size_bytes=entry["size"],
                media_type=media))
    evaluation = f"{prefix}/evaluation.json"
    if store.exists(evaluation):
        message.headline.update({k: float(v) for k, v in store.get_json(evaluation).items()
                                 if isinstance(v, (int, float))})
    return message


def list_models(models: Registry, family: str = "", name: str = "") -> list[common_pb2.Model]:
    """Every published version (of a name, of a family). A broken one is listed
    as such, with its reason, rather than failing the whole listing; its family
    is unknown, so a family filter leaves it out."""
    names = [check_name(name)] if name else models.names()
    found = [_listed_model(models, n, v) for n in names for v in models.versions(n)]
    return [m for m in found if not family or m.family == family]


def _listed_model(models: Registry, name: str, version: str) -> common_pb2.Model:
    try:
        return model_message(models, name, version)
    except DataLoss as exc:
        return common_pb2.Model(name=name, version=version, broken_reason=str(exc))


def family_message(name: str) -> training_pb2.Family:
    cls = get_family(name)
    hints = typing.get_type_hints(cls.config_cls)
    message = training_pb2.Family(name=name, description=cls.description, spatial_dims=cls.config_cls.spatial_dims,
                                  needs_masks=cls.needs_masks)
    defaults = cls.config_cls()
    message.conditional = cls.conditional(defaults)
    for field in dataclasses.fields(cls.config_cls):
        parameter = training_pb2.HyperParameter(name=field.name, type=getattr(hints[field.name], "__name__",
                                                                              str(hints[field.name])))
        value = defaults.to_json()[field.name]
        if value is not None:
            json_format.ParseDict(value, parameter.default)
        message.hyperparameters.append(parameter)
    return message


SCALING_FIELDS = {name: f"scaling.{name}" for name in ("workers", "gpus_per_worker", "cpus_per_worker")}


def train_request(message: training_pb2.SubmitTrainingRequest) -> TrainRequest:
    """The library's TrainRequest for a SubmitTrainingRequest (0 and empty
    fields mean the defaults)."""
    budget_kind = message.budget.WhichOneof("amount") or ""
    try:
        return TrainRequest(
            family=message.family, dataset=message.dataset, split=message.split or "train", name=message.name,
            hyperparameters=json_format.MessageToDict(message.hyperparameters),
            workers=message.scaling.workers or 1, gpus_per_worker=message.scaling.gpus_per_worker,
            cpus_per_worker=message.scaling.cpus_per_worker or 1.0, precision=PRECISION.name(message.precision),
            budget_kind=budget_kind, budget=float(getattr(message.budget, budget_kind)) if budget_kind else 0.0,
            checkpoint_interval=message.checkpoint_interval, seed=message.seed, image_size=message.image_size,
            batch_size=message.batch_size, resume_from=message.resume_from)
    except InvalidArgument as exc:  # name the field as the client set it
        field = {"budget": f"budget.{budget_kind}", **SCALING_FIELDS}.get(exc.field, exc.field)
        raise InvalidArgument(field, str(exc).removeprefix(f"{exc.field}: ")) from None


class TrainingServicer(JobRpcs, training_pb2_grpc.TrainingServiceServicer):
    def __init__(self, store: ObjectStore, settings=None):
        self._store = store
        self._models = Registry(store, "models", "model")
        self._jobs = JobManager(store, "training", lambda job, request, ctx: runner.run(job, request, ctx, store))
        self._jobs.recover()

    def SubmitTraining(self, request, context):
        train = train_request(check_message(request))
        # Plan now, so a bad request fails the call rather than the job.
        runner.plan(train, self._store, job_id="validation", version="0")
        return self._jobs.submit(train.to_json())

    def ListModels(self, request, context):
        return common_pb2.ListModelsResponse(models=list_models(self._models, request.family, request.name))

    def GetModel(self, request, context):
        name, version = self._models.resolve(parse_ref(request.model, "model"))
        return model_message(self._models, name, version)

    def ListFamilies(self, request, context):
        return training_pb2.ListFamiliesResponse(families=[family_message(n) for n in family_names()])
