"""The per-worker training loop: the same code under Ray Train (one call per
worker) and in a plain process (tests, the in-process baseline).

Cancellation: rank 0 reads the cancel marker and every rank takes part in
a one-element all-reduce of the stop flag before each step (`agree_to_stop`),
so all ranks leave the loop before the same step; a rank that trained on
alone would wait in DDP's gradient all-reduce for peers that have left.
Each rank records where it stopped in `stopped/rank-NNNNN.json`.

Determinism: the model is built from the run's seed on every rank, and the
RNG is re-seeded from (seed, rank, step) before each step, and each step's
batch is a function of (seed, step, rank) alone. A run resumed from a
checkpoint at step s therefore repeats exactly what the original did after s.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ctsynth import __version__
from ctsynth.code_version import code_version
from ctsynth.data.dataset_h5 import StackDataset, open_stack
from ctsynth.errors import FailedPrecondition, ResourceExhausted
from ctsynth.models import checkpoint
from ctsynth.models.base import Batch, Family
from ctsynth.models.families import get_family
from ctsynth.storage import ObjectStore, open_store
from ctsynth.training.grid import sample_grid_png
from ctsynth.training.spec import TrainSpec

log = logging.getLogger("ctsynth.training")

CHECKPOINTS = "checkpoints"
PROGRESS = "progress.json"
CANCEL = "cancel"
STOPPED = "stopped"  # one record per rank of a cancelled run: stopped/rank-00000.json


class NonFiniteLoss(FailedPrecondition):
    """A loss became NaN or inf; the last good checkpoint is kept."""


@dataclass(frozen=True)
class WorkerContext:
    """Who this worker is and how it reports; Ray's context or a plain one."""

    rank: int = 0
    world_size: int = 1
    report: Callable[[dict], None] = lambda metrics: None


def agree_to_stop(wants_stop: bool, device: torch.device | str = "cpu") -> bool:
    """True on every rank when any rank wants to stop: a MAX all-reduce of one
    flag, so all ranks leave the loop before the same step. Every rank must
    call it at the same point of each step; without a process group (one
    worker) it is the local flag."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return wants_stop
    flag = torch.tensor([1 if wants_stop else 0], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def stopped_key(prefix: str, rank: int) -> str:
    return f"{prefix}/{STOPPED}/rank-{rank:05d}.json"


def step_seed(seed: int, rank: int, step: int) -> int:
    return (seed * 1_000_003 + rank * 7919 + step) % (2**63)


class StepBatches:
    """Batch indices as a pure function of (seed, step, rank): epoch e uses
    the permutation seeded by (seed, e); ranks take disjoint strides."""

    def __init__(self, length: int, batch_size: int, seed: int, rank: int, world_size: int, draws: int = 1):
        """`draws`: batches one step takes (the family's `batches_per_step`)."""
        if length < batch_size * draws * world_size:
            per_step = f" x {draws} batches per step" if draws > 1 else ""
            raise FailedPrecondition(
                f"the split has {length} items, fewer than batch size {batch_size}{per_step} x {world_size} workers")
        self.length, self.batch_size, self.seed = length, batch_size * draws, seed
        self.rank, self.world_size = rank, world_size
        self.steps_per_epoch = length // (batch_size * world_size)
        self._epoch, self._order = -1, None

    def indices(self, step: int) -> np.ndarray:
        epoch, offset = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 10_007 + epoch)
            self._order, self._epoch = torch.randperm(self.length, generator=generator).numpy(), epoch
        start = (offset * self.world_size + self.rank) * self.batch_size
        return self._order[start:start + self.batch_size]


def _dataset(family: Family, spec: TrainSpec, store: ObjectStore) -> StackDataset:
    dataset, manifest = open_stack(store, spec.dataset, family.spatial_dims, spec.split,
                                   with_mask=family.uses_masks(family.config),
                                   condition=family.conditional(family.config))
    if family.uses_masks(family.config) and manifest.get("counts", {}).get("tumor_slices", 0) == 0:
        raise FailedPrecondition(f"{spec.family} needs tumor masks, and dataset {spec.dataset} has none")
    return dataset


def _batch(dataset, rows: np.ndarray, device: torch.device, size: int) -> Batch:
    items = [dataset[int(i)] for i in rows]
    image = torch.stack([item["image"] for item in items]).to(device)
    mask = torch.stack([item["mask"] for item in items]).to(device) if "mask" in items[0] else None
    label = torch.stack([item["label"] for item in items]).to(device) if "label" in items[0] else None
    if image.shape[-1] != size:
        mode = "trilinear" if image.dim() == 5 else "bilinear"
        image = nn.functional.interpolate(image, size=(size,) * (image.dim() - 2), mode=mode, align_corners=False)
        if mask is not None:
            mask = nn.functional.interpolate(mask, size=(size,) * (mask.dim() - 2), mode="nearest")
    return Batch(image=image.clamp(0, 1), label=label, mask=mask)


def latest_checkpoint(store: ObjectStore, prefix: str) -> tuple[int, str] | None:
    """(step, prefix) of the newest published checkpoint under a model prefix."""
    steps = []
    for info in store.list(f"{prefix}/{CHECKPOINTS}/"):
        parts = info.key[len(prefix) + len(CHECKPOINTS) + 2:].split("/")
        if len(parts) == 2 and parts[1] == "manifest.json" and parts[0].isdigit():
            steps.append(int(parts[0]))
    if not steps:
        return None
    step = max(steps)
    return step, f"{prefix}/{CHECKPOINTS}/{step:09d}"


def load_checkpoint(store: ObjectStore, family: Family, prefix: str) -> int:
    """Weights and training state from a checkpoint prefix; returns its step."""
    store.read_manifest(prefix, verify=True)
    checkpoint.load_weights_bytes(family, store.get_bytes(f"{prefix}/weights.safetensors"))
    return checkpoint.restore_training_state(
        family, store.get_bytes(f"{prefix}/optimizer.safetensors"), store.get_json(f"{prefix}/training_state.json"))


def _model_files(family: Family, spec: TrainSpec, step: int, history: list[dict], resumed_at: list[int],
                 spacing_mm: tuple[float, ...] | None, validation: dict[str, float] | None = None) -> dict[str, bytes]:
    """The files of a model version; `spacing_mm` is the voxel size of the
    training data on the sample grid, so outputs carry its true geometry;
    `validation` the family's own held-out metrics (the published version's)."""
    optimizer_bytes, state = checkpoint.training_state(family, step)
    config = {
        "family": spec.family, "config": family.config.to_json(), "spatial_dims": family.spatial_dims,
        "conditional": family.conditional(family.config), "sample_masks": family.sample_masks(),
        "mask_conditioned": family.mask_conditioned(family.config),
        "sample_shape": list(family.sample_shape()), "dataset": spec.dataset, "split": spec.split,
        "spacing_mm": None if spacing_mm is None else list(spacing_mm),
        "seed": spec.seed, "precision": spec.precision, "batch_size": spec.batch_size, "workers": spec.workers,
        "ctsynth_version": __version__, "code_version": code_version(), "extra": spec.extra,
    }
    return {
        "weights.safetensors": checkpoint.weights_bytes(family),
        "optimizer.safetensors": optimizer_bytes,
        "training_state.json": checkpoint.dumps(state),
        "config.json": checkpoint.dumps(config),
        "metrics.json": checkpoint.dumps({"step": step, "history": history, "resumed_at": resumed_at,
                                          **({"validation": validation} if validation else {})}),
        "samples.png": sample_grid_png(family, seed=spec.seed),
    }


def validation_metrics(family: Family, spec: TrainSpec, store: ObjectStore) -> dict[str, float]:
    """The family's own metrics on up to `validation_items` items of the
    dataset's validation split (none when it measures nothing or the split
    is empty), four items at a time."""
    if not family.validation_items:
        return {}
    dataset, _ = open_stack(store, spec.dataset, family.spatial_dims, "validation")
    count = min(family.validation_items, len(dataset))
    if not count:
        return {}
    totals: dict[str, float] = {}
    for start in range(0, count, 4):
        rows = np.arange(start, min(start + 4, count))
        measured = family.validation_metrics(_batch(dataset, rows, family.device, family.config.image_size).image)
        for name, value in measured.items():
            totals[name] = totals.get(name, 0.0) + value * len(rows)
    return {name: total / count for name, total in totals.items()} | {"items": count}


def _wrap_ddp(family: Family, device: torch.device) -> None:
    """DDP across workers for every trainable module (gloo on CPU, nccl on GPU)."""
    device_ids = [device.index] if device.type == "cuda" else None
    for name in family.trainable:
        module = family.modules[name]
        if any(p.requires_grad for p in module.parameters()):
            family.modules[name] = nn.parallel.DistributedDataParallel(module, device_ids=device_ids)


def train_worker(spec: TrainSpec, ctx: WorkerContext) -> dict:
    """Train `spec` on this worker; rank 0 writes checkpoints and progress."""
    store = open_store(spec.store_uri)
    family_cls = get_family(spec.family)
    device = torch.device("cuda", torch.cuda.current_device()) if spec.gpus_per_worker > 0 else torch.device("cpu")
    torch.manual_seed(spec.seed)
    config = family_cls.config_cls.from_json(spec.config)
    family = family_cls(config, device=device, precision=spec.precision)
    family.prepare(store, spec)
    dataset = _dataset(family, spec, store)
    spacing_mm = dataset.spacing_mm(family.sample_shape()[1:])
    batches = StepBatches(len(dataset), spec.batch_size, spec.seed, ctx.rank, ctx.world_size,
                          family_cls.batches_per_step(config))

    start, history, resumed_at = 0, [], []
    resume = latest_checkpoint(store, spec.prefix) or (
        (None, spec.resume_from) if spec.resume_from else None)
    if resume is not None:
        start = load_checkpoint(store, family, resume[1])
        if store.exists(f"{resume[1]}/metrics.json"):
            earlier = store.get_json(f"{resume[1]}/metrics.json")
            history, resumed_at = earlier["history"], earlier.get("resumed_at", [])
        resumed_at = [*resumed_at, start]  # the steps this run restarted from, for the record
        log.info("resumed", extra={"job_id": spec.job_id, "step": start, "from": resume[1]})
    if ctx.world_size > 1:
        _wrap_ddp(family, device)

    started, images = time.perf_counter(), 0
    # ray.train.report costs about a second (a round trip to the controller),
    # so ranks report to Ray at checkpoints; progress.json follows every log
    # interval. A step count, not a clock, so every rank reports alike.
    report_interval = spec.checkpoint_interval or spec.steps
    losses: dict[str, float] = {}
    last_trained = None  # the last step this rank trained in this run
    for step in range(start, spec.steps):
        # Only rank 0 reads the store; the all-reduce shares its answer with every rank.
        if agree_to_stop(ctx.rank == 0 and store.exists(f"{spec.prefix}/{CANCEL}"), device):
            store.put_json(stopped_key(spec.prefix, ctx.rank), {
                "rank": ctx.rank, "world_size": ctx.world_size, "pid": os.getpid(), "step": step,
                "last_trained": last_trained})
            ctx.report({"step": step, "cancelled": 1.0})  # every rank: Ray's report is a barrier
            return {"step": step, "cancelled": True}
        torch.manual_seed(step_seed(spec.seed, ctx.rank, step))
        rows = batches.indices(step)
        batch = _batch(dataset, rows, device, config.image_size)
        try:
            losses = family.train_step(batch, step)
        except torch.OutOfMemoryError:
            raise ResourceExhausted(f"{spec.family} ran out of memory at batch size {spec.batch_size} and "
                                    f"resolution {config.image_size}; lower --batch-size or --size") from None
        bad = [k for k, v in losses.items() if not math.isfinite(v)]
        if bad:
            raise NonFiniteLoss(f"{spec.family}: loss {bad[0]} became {losses[bad[0]]} at step {step}; "
                                f"the last good checkpoint is kept")
        last_trained = step
        images += len(rows) * ctx.world_size
        done = step + 1
        if done % spec.log_interval == 0 or done == spec.steps:
            elapsed = time.perf_counter() - started
            metrics = {"step": done, "images_per_s": images / elapsed if elapsed > 0 else 0.0, **losses}
            history.append(metrics)
            if done % report_interval == 0 or done == spec.steps:
                ctx.report(metrics)
            if ctx.rank == 0:
                store.put_json(f"{spec.prefix}/{PROGRESS}", {"step": done, "steps": spec.steps,
                                                                  "worker": {"rank": ctx.rank, "pid": os.getpid()}, **metrics})
        if ctx.rank == 0 and spec.checkpoint_interval and done % spec.checkpoint_interval == 0 and done < spec.steps:
            store.publish(f"{spec.prefix}/{CHECKPOINTS}/{done:09d}",
                          _model_files(family, spec, done, history, resumed_at, spacing_mm),
                          {"step": done, "job_id": spec.job_id})
    if ctx.rank == 0 and not store.exists(f"{spec.prefix}/manifest.json"):
        validation = validation_metrics(family, spec, store)
        store.publish(spec.prefix, _model_files(family, spec, spec.steps, history, resumed_at, spacing_mm, validation),
                      {"name": spec.model_name, "version": spec.version, "family": spec.family,
                       "job_id": spec.job_id, "step": spec.steps, "dataset": spec.dataset,
                       "headline": {k: v for k, v in (history[-1] if history else {}).items() if k != "step"}
                       | {f"validation_{k}": v for k, v in validation.items() if k != "items"}})
    return {"step": spec.steps, **losses}
