"""Training throughput: our Ray Train path against a plain PyTorch loop.

For dcgan and unet_gan at 64x64 and 128x128, images/s of
(a) our path (`ray_driver.fit`, TorchTrainer) with 1 worker,
(b) a plain loop calling the same family's `train_step` on the same batch
    size in this process (the baseline),
(c) our path with 2 workers (DDP over gloo),
reported as (a)/(b) (goal >= 0.9) and (c)/(a). Images/s of (a) and (c) are
measured inside the workers after the first step (what the loop reports), so
Ray's start-up is reported apart. Also the peak RSS of the plain loop, and the
GFLOP/s a generator forward pass achieves (FLOPs counted by torch's FlopCounterMode)
next to this machine's measured fp32 and bf16 matmul GFLOP/s.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from ctsynth.models.base import Batch
from ctsynth.models.families import get_family
from ctsynth.storage import open_store
from ctsynth.training import ray_driver
from ctsynth.training.spec import TrainSpec
from tests.training.conftest import publish_dataset

STEPS = int(os.environ.get("CTSYNTH_BENCH_TRAIN_STEPS", "20"))
BATCH = 8
CASES = {
    "dcgan": {"latent_dim": 64, "generator_widths": [64, 64, 32]},
    "unet_gan": {"base_channels": 16, "max_channels": 64, "bottleneck_size": 8, "patch_grid": 8},
}


def matmul_gflops(dtype: torch.dtype, size: int = 1024, repeats: int = 20) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size ** 3 * repeats / (time.perf_counter() - started) / 1e9


def plain_loop(family_name: str, size: int) -> dict:
    cls = get_family(family_name)
    family = cls(cls.config_cls.from_json({"image_size": size, **CASES[family_name]}))
    batch = Batch(torch.rand(BATCH, 1, size, size), torch.arange(BATCH) % 2,
                  (torch.rand(BATCH, 1, size, size) > 0.97).float())
    family.train_step(batch, 0)
    started = time.perf_counter()
    for step in range(1, STEPS + 1):
        family.train_step(batch, step)
    images_per_s = STEPS * BATCH / (time.perf_counter() - started)
    # The generator's forward pass: FlopCounterMode cannot follow the R1
    # penalty's double backward, so a whole step is not counted.
    labels = torch.arange(BATCH) % 2 if family.conditional(family.config) else None
    family.sample(BATCH, torch.Generator().manual_seed(0), labels=labels)
    with FlopCounterMode(display=False) as counter:
        family.sample(BATCH, torch.Generator().manual_seed(0), labels=labels)
    started = time.perf_counter()
    family.sample(BATCH, torch.Generator().manual_seed(0), labels=labels)
    seconds = time.perf_counter() - started
    return {"images_per_s": images_per_s, "generator_forward_gflops_per_s": counter.get_total_flops() / seconds / 1e9}


def ray_path(store, dataset: str, family_name: str, size: int, workers: int, name: str) -> dict:
    spec = TrainSpec(job_id=f"bench-{name}", family=family_name, config={"image_size": size, **CASES[family_name]},
                     dataset=dataset, model_name=name, version="1", store_uri=store.uri, steps=STEPS + 1,
                     batch_size=BATCH, workers=workers, checkpoint_interval=0, log_interval=1,
                     # the same cores as the in-process baseline, shared among the workers
                     cpus_per_worker=max(1, (os.cpu_count() or 1) // workers))
    started = time.perf_counter()
    ray_driver.fit(spec)
    wall = time.perf_counter() - started
    history = store.get_json(f"{spec.prefix}/metrics.json")["history"]
    # images/s after the first (warm-up) step, as the loop measures it from its start
    first, last = history[0], history[-1]
    t_first = first["step"] * BATCH * workers / first["images_per_s"]
    t_last = last["step"] * BATCH * workers / last["images_per_s"]
    return {"images_per_s": (last["step"] - first["step"]) * BATCH * workers / (t_last - t_first),
            "wall_seconds_with_startup": wall}


def run() -> dict:
    os.environ.setdefault("CTSYNTH_RAY_DASHBOARD", "0")
    work = Path(tempfile.mkdtemp(prefix="bench-training-"))
    store = open_store((work / "store").as_uri())
    results = {"steps": STEPS, "batch_size": BATCH,
               "machine_matmul_gflops": {"fp32": matmul_gflops(torch.float32), "bf16": matmul_gflops(torch.bfloat16)},
               "cases": {}}
    for size in (64, 128):
        dataset = publish_dataset(store, f"bench{size}", work / f"d{size}", size=size, per_split=2 * BATCH * 2)
        for family_name in CASES:
            key = f"{family_name}@{size}"
            plain = plain_loop(family_name, size)
            one = ray_path(store, dataset, family_name, size, 1, f"{family_name}-{size}-w1")
            two = ray_path(store, dataset, family_name, size, 2, f"{family_name}-{size}-w2")
            results["cases"][key] = {
                "plain_images_per_s": plain["images_per_s"], "ray_1_worker_images_per_s": one["images_per_s"],
                "ray_2_workers_images_per_s": two["images_per_s"],
                "ratio_ray1_over_plain": one["images_per_s"] / plain["images_per_s"],
                "ratio_ray2_over_ray1": two["images_per_s"] / one["images_per_s"],
                "ray_wall_seconds_with_startup": {"1": one["wall_seconds_with_startup"],
                                                  "2": two["wall_seconds_with_startup"]},
                "generator_forward_gflops_per_s": plain["generator_forward_gflops_per_s"],
            }
            print(key, {k: round(v, 2) for k, v in results["cases"][key].items() if isinstance(v, float)}, flush=True)
    results["peak_rss_mib_this_process"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return results
