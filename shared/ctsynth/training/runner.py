"""Training jobs: from a TrainRequest to a registered model version.

`plan` resolves the request against the store into a TrainSpec (family
config, dataset version, budget); `run` executes it on Ray and turns the
workers' progress file into job events until the model version is published.
"""

from __future__ import annotations

import math
import os
import threading
import time

from ctsynth.data.dataset_h5 import layout
from ctsynth.errors import FailedPrecondition, InvalidArgument, error_from_status
from ctsynth.jobs import JobCancelled, JobContext, JobResult
from ctsynth.models.families import get_family
from ctsynth.observability.prometheus import TRAINING_IMAGES_PER_SECOND
from ctsynth.registry import Registry, check_name, parse_ref
from ctsynth.storage import ObjectStore
from ctsynth.training import ray_driver
from ctsynth.training.loop import CANCEL, CHECKPOINTS, PROGRESS
from ctsynth.training.request import TrainRequest
from ctsynth.training.spec import TrainSpec
from ctsynth.v1 import common_pb2

DEFAULT_STEPS = 1000
POLL_S = 1.0


def _budget_steps(request: TrainRequest, train_items: int, batch: int, workers: int, draws: int) -> int:
    """Epochs and kimg count real rows: a step takes `draws` batches per worker."""
    per_step = batch * workers * draws
    if request.budget_kind == "steps":
        steps = int(request.budget)
    elif request.budget_kind == "epochs":
        steps = math.ceil(request.budget * train_items / per_step)
    elif request.budget_kind == "kimg":
        steps = math.ceil(request.budget * 1000 / per_step)
    else:
        steps = DEFAULT_STEPS
    if steps < 1:
        raise InvalidArgument("budget", f"the budget amounts to {steps} steps; it must be at least one")
    return steps


def plan(request: TrainRequest, store: ObjectStore, *, job_id: str, version: str) -> TrainSpec:
    """The TrainSpec for a request, resolved against the store; every bad
    value is INVALID_ARGUMENT naming its field, a missing dataset NOT_FOUND."""
    family_cls = get_family(request.family)
    datasets = Registry(store, "datasets", "dataset")
    dataset_name, dataset_version = datasets.resolve(parse_ref(request.dataset, "dataset"))
    manifest = datasets.manifest(dataset_name, dataset_version)
    split = request.split or "train"
    if split not in manifest.get("splits", {}):
        raise InvalidArgument("split", f"dataset {dataset_name}:{dataset_version} has no split {split!r}")
    counts = manifest["splits"][split]

    def require_masks(dataset: str) -> None:
        if counts.get("tumor_slices", 0) == 0:
            raise FailedPrecondition(f"family {family_cls.name} trains on nodule masks, and the {split} split of "
                                     f"dataset {dataset} has no slice with a nodule")

    if family_cls.needs_masks:  # before the config: its masks are needed whatever the hyperparameters
        require_masks(f"{dataset_name}:{dataset_version}")
    hyper, extra = family_cls.resolve_inputs(dict(request.hyperparameters), Registry(store, "models", "model"))
    stack = layout(family_cls.config_cls.dims_in(hyper))
    hyper.setdefault("image_size", request.image_size or (stack.item_shape(manifest) or [64])[-1])
    hyper.setdefault("seed", request.seed)
    config = family_cls.config_cls.from_json(hyper)
    if family_cls.mask_conditioned(config):
        require_masks(f"{dataset_name}:{dataset_version}")
    batch = request.batch_size or getattr(config, "batch_size", 0) or 8
    steps = _budget_steps(request, stack.items(manifest, split), batch, request.workers,
                          family_cls.batches_per_step(config))
    resume = ""
    if request.resume_from:
        models = Registry(store, "models", "model")
        resume_name, resume_version = models.resolve(parse_ref(request.resume_from, "resume_from"))
        resume = models.prefix(resume_name, resume_version)
    return TrainSpec(
        job_id=job_id, family=family_cls.name, config=config.to_json(), dataset=f"{dataset_name}:{dataset_version}",
        model_name=model_name(request), version=version, store_uri=store.uri, steps=steps, batch_size=batch,
        split=split, workers=request.workers, gpus_per_worker=request.gpus_per_worker,
        cpus_per_worker=request.cpus_per_worker, precision=request.precision,
        checkpoint_interval=request.checkpoint_interval or max(steps // 5, 1),
        log_interval=max(1, min(10, steps // 20 or 1)), seed=request.seed, resume_from=resume, extra=extra,
    )


def model_name(request: TrainRequest) -> str:
    """The name the model is published under: the request's, else its family's."""
    return check_name(request.name or request.family, "name")


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
    shape = layout(family_cls.config_cls.dims_in(spec.config)).item_shape(manifest)
    size = spec.config["image_size"]
    if shape and shape[-1] != size:
        ctx.warn(spec.dataset, f"its {'x'.join(map(str, shape))} images are resized to the model's image_size "
                               f"{size} for training")


def run(job: common_pb2.Job, values: dict, ctx: JobContext, store: ObjectStore) -> JobResult:
    """Execute a training job (its request as `TrainRequest.to_json` kept it)
    to a published model version."""
    request = TrainRequest.from_json(values)
    get_family(request.family)  # an unknown family fails before a version is allocated
    version = job.labels.get("version") or Registry(store, "models", "model").allocate(model_name(request))
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
