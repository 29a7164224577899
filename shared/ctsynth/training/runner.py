"""Training jobs: from a SubmitTrainingRequest to a registered model version.

`plan` validates the request into a TrainSpec (family config, dataset
version, budget); `run` executes it on Ray and turns the workers' progress
file into job events until the model version is published.
"""

from __future__ import annotations

import math
import os
import threading
import time

from ctsynth.errors import FailedPrecondition, InvalidArgument, error_from_status
from ctsynth.jobs import JobCancelled, JobContext, JobResult
from ctsynth.models.families import get_family
from ctsynth.observability.prometheus import TRAINING_IMAGES_PER_SECOND
from ctsynth.proto_enums import PRECISION
from ctsynth.registry import Registry, check_name, parse_ref
from ctsynth.storage import ObjectStore
from ctsynth.training import ray_driver
from ctsynth.training.loop import CANCEL, CHECKPOINTS, PROGRESS
from ctsynth.training.spec import TrainSpec
from ctsynth.v1 import common_pb2, training_pb2

DEFAULT_STEPS = 1000
POLL_S = 1.0


def _budget_steps(request: dict, train_items: int, batch: int, workers: int, draws: int) -> int:
    """Epochs and kimg count real rows: a step takes `draws` batches per worker."""
    budget = request.get("budget") or {}
    per_step = batch * workers * draws
    if "steps" in budget:
        steps = int(budget["steps"])
    elif "epochs" in budget:
        steps = math.ceil(float(budget["epochs"]) * train_items / per_step)
    elif "kimg" in budget:
        steps = math.ceil(float(budget["kimg"]) * 1000 / per_step)
    else:
        steps = DEFAULT_STEPS
    if steps < 1:
        raise InvalidArgument("budget", f"the budget amounts to {steps} steps; it must be at least one")
    return steps


def _precision(value: str | int) -> str:
    """The request's precision, given as MessageToDict writes it (the proto
    name, "PRECISION_BF16") or as the enum number."""
    if isinstance(value, str):
        if value not in training_pb2.Precision.keys():
            raise InvalidArgument("precision", f"unknown {value!r}; use one of {', '.join(training_pb2.Precision.keys())}")
        value = training_pb2.Precision.Value(value)
    return PRECISION.name(value)


def plan(request: dict, store: ObjectStore, *, job_id: str, version: str) -> TrainSpec:
    """The TrainSpec for a request (a SubmitTrainingRequest as JSON); every
    bad value is INVALID_ARGUMENT naming its field, a missing dataset NOT_FOUND."""
    family_cls = get_family(request.get("family", ""))
    datasets = Registry(store, "datasets", "dataset")
    dataset_name, dataset_version = datasets.resolve(parse_ref(request.get("dataset", ""), "dataset"))
    manifest = datasets.manifest(dataset_name, dataset_version)
    split = request.get("split") or "train"
    if split not in manifest.get("splits", {}):
        raise InvalidArgument("split", f"dataset {dataset_name}:{dataset_version} has no split {split!r}")
    counts = manifest["splits"][split]
    if family_cls.needs_masks and counts.get("tumor_slices", 0) == 0:
        raise FailedPrecondition(f"family {family_cls.name} needs tumor masks, and the {split} split of dataset "
                                 f"{dataset_name}:{dataset_version} has no slice with a nodule")
    hyper = dict(request.get("hyperparameters") or {})
    size_key = "volume_shape" if family_cls.spatial_dims == 3 else "slice_shape"
    hyper.setdefault("image_size", int(request.get("imageSize") or manifest.get(size_key, [64])[-1]))
    hyper.setdefault("seed", int(request.get("seed", 0)))
    hyper, extra = family_cls.resolve_inputs(hyper, Registry(store, "models", "model"))
    config = family_cls.config_cls.from_json(hyper)
    scaling = request.get("scaling") or {}
    workers = int(scaling.get("workers") or 1)
    batch = int(request.get("batchSize") or getattr(config, "batch_size", 0) or 8)
    items = counts.get("volumes" if family_cls.spatial_dims == 3 else "slices", 0)
    steps = _budget_steps(request, items, batch, workers, family_cls.batches_per_step(config))
    name = check_name(request.get("name") or family_cls.name, "name")
    resume = ""
    if request.get("resumeFrom"):
        models = Registry(store, "models", "model")
        resume_name, resume_version = models.resolve(parse_ref(request["resumeFrom"], "resume_from"))
        resume = models.prefix(resume_name, resume_version)
    interval = int(request.get("checkpointInterval") or max(steps // 5, 1))
    return TrainSpec(
        job_id=job_id, family=family_cls.name, config=config.to_json(), dataset=f"{dataset_name}:{dataset_version}",
        model_name=name, version=version, store_uri=store.uri, steps=steps, batch_size=batch, split=split,
        workers=workers, gpus_per_worker=float(scaling.get("gpusPerWorker") or 0.0),
        cpus_per_worker=float(scaling.get("cpusPerWorker") or 1.0),
        precision=_precision(request.get("precision", 0)),
        checkpoint_interval=interval, log_interval=max(1, min(10, steps // 20 or 1)), seed=int(request.get("seed", 0)),
        resume_from=resume, extra=extra,
    )


class _Follower:
    """Turns the workers' progress file and new checkpoints into job events."""

    def __init__(self, store: ObjectStore, spec: TrainSpec, ctx: JobContext):
        self.store, self.spec, self.ctx = store, spec, ctx
        self.last_step, self.checkpoints = -1, set()

    def poll(self) -> None:
        prefix = self.spec.prefix
        if self.store.exists(f"{prefix}/{PROGRESS}"):
            progress = self.store.get_json(f"{prefix}/{PROGRESS}")
            if progress["step"] != self.last_step:
                self.last_step = progress["step"]
                self.ctx.progress("training", progress["step"], self.spec.steps, "steps")
                self.ctx.report({k: float(v) for k, v in progress.items() if isinstance(v, (int, float))})
                TRAINING_IMAGES_PER_SECOND.labels(f"{self.spec.model_name}:{self.spec.version}").set(
                    float(progress.get("images_per_s", 0.0)))
        for info in self.store.list(f"{prefix}/{CHECKPOINTS}/"):
            if info.key.endswith("/manifest.json") and info.key not in self.checkpoints:
                self.checkpoints.add(info.key)
                grid = info.key.replace("manifest.json", "samples.png")
                stat = self.store.stat(grid)
                self.ctx.report({"checkpoint_step": float(info.key.split("/")[-2])},
                                artifact=common_pb2.ArtifactRef(uri=self.store.uri_for(grid), sha256=stat.sha256 or "",
                                                                size_bytes=stat.size, media_type="image/png"),
                                message="checkpoint")


def _warn_if_resized(spec: TrainSpec, store: ObjectStore, ctx: JobContext) -> None:
    """The loop resizes every image to the model's `image_size`; say so, since
    the model then never sees the data at its stored resolution."""
    family_cls = get_family(spec.family)
    name, version = spec.dataset.split(":")
    manifest = Registry(store, "datasets", "dataset").manifest(name, version)
    shape = manifest.get("volume_shape" if family_cls.spatial_dims == 3 else "slice_shape")
    size = spec.config["image_size"]
    if shape and shape[-1] != size:
        ctx.warn(spec.dataset, f"its {'x'.join(map(str, shape))} images are resized to the model's image_size "
                               f"{size} for training")


def run(job: common_pb2.Job, request: dict, ctx: JobContext, store: ObjectStore) -> JobResult:
    """Execute a training job to a published model version."""
    models = Registry(store, "models", "model")
    name = check_name(request.get("name") or get_family(request.get("family", "")).name, "name")
    version = job.labels.get("version") or models.allocate(name)
    ctx.label("version", version)
    spec = plan(request, store, job_id=job.id, version=version)
    _warn_if_resized(spec, store, ctx)
    ctx.progress("training", 0, spec.steps, "steps", message=f"training {spec.model_name}:{version}")
    follower = _Follower(store, spec, ctx)
    outcome: dict = {}

    def fit() -> None:
        try:
            address = os.environ.get("CTSYNTH_RAY_ADDRESS")
            if address:
                outcome["ray_job"] = ray_driver.submit_to_cluster(spec, address)
                while ray_driver.cluster_job_status(address, outcome["ray_job"]) in ("PENDING", "RUNNING"):
                    time.sleep(POLL_S)
            else:
                ray_driver.fit(spec)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the job thread
            outcome["error"] = exc

    thread = threading.Thread(target=fit, name=f"fit-{job.id}", daemon=True)
    thread.start()
    cancel_written = False
    while thread.is_alive():
        thread.join(POLL_S)
        follower.poll()
        try:
            ctx.check_cancelled()
        except JobCancelled:
            if not cancel_written:
                store.put_json(f"{spec.prefix}/{CANCEL}", {"job_id": job.id})
                cancel_written = True
    follower.poll()
    if store.exists(f"{spec.prefix}/{ray_driver.ERROR}"):
        error = store.get_json(f"{spec.prefix}/{ray_driver.ERROR}")
        raise error_from_status(error["code"], error["message"], error.get("field", ""))
    if cancel_written:
        raise JobCancelled(job.id)
    if "error" in outcome:
        raise outcome["error"]
    if not store.exists(f"{spec.prefix}/manifest.json"):
        raise FailedPrecondition(f"training of {spec.model_name}:{version} ended without publishing the model "
                                 f"(see the Ray logs of job {job.id})")
    manifest = store.read_manifest(spec.prefix)
    artifacts = tuple(
        common_pb2.ArtifactRef(uri=store.uri_for(f"{spec.prefix}/{file}"), sha256=entry["sha256"],
                               size_bytes=entry["size"])
        for file, entry in manifest["files"].items())
    return JobResult(result=f"{spec.model_name}:{version}", artifacts=artifacts)
