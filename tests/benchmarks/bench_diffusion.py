"""Diffusion samplers, 3D training memory and U-Net throughput on the CPU.

- One tiny 3D DDPM (16^3 volumes, T = 1000) trained here, then volumes/s
  for DDPM-1000, DDIM-50, DDIM-20, PNDM-50 and Euler-ancestral-50 from the
  same weights and seeds, each with a feature-space Frechet distance to the
  training volumes (features: 4^3 average-pooled volumes, 64-d; the
  evaluation service's CT-FID needs a trained extractor, too heavy here);
  reported: the DDIM-50 / DDPM-1000 speed ratio and the change in distance.
- Peak RSS of 3D training steps at 32^3 and 64^3, with and without gradient
  checkpointing, each in its own subprocess.
- GFLOP/s of a U-Net forward pass (FLOPs counted by torch's FlopCounterMode)
  next to this machine's measured fp32 and bf16 matmul GFLOP/s.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ctsynth.metrics.frechet import FeatureStatistics, frechet_distance
from ctsynth.models.base import Batch
from ctsynth.models.families import get_family
from tests.benchmarks.bench_training import matmul_gflops

TRAIN_STEPS = int(os.environ.get("CTSYNTH_BENCH_DIFFUSION_STEPS", "150"))
SAMPLES = 8
SAMPLERS = {"ddpm-1000": ("ddpm", 1000), "ddim-50": ("ddim", 50), "ddim-20": ("ddim", 20),
            "pndm-50": ("pndm", 50), "euler-a-50": ("euler_ancestral", 50)}


def unet_config(size: int, checkpointing: bool = False) -> dict:
    return {"image_size": size, "unet_channels": [16, 32], "attention_levels": [False, False], "num_res_blocks": 1,
            "norm_num_groups": 8, "num_heads": 1, "gradient_checkpointing": checkpointing, "learning_rate": 1e-3}


def volumes(count: int, size: int, seed: int = 0) -> torch.Tensor:
    """Dark balls with a bright spot: simple, structured 3D training data."""
    generator = torch.Generator().manual_seed(seed)
    axis = torch.linspace(-1, 1, size)
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    radius = (z ** 2 + y ** 2 + x ** 2).sqrt()
    out = torch.where(radius < 0.8, 0.2, 0.6).expand(count, 1, size, size, size).clone()
    centres = torch.rand(count, 3, generator=generator) * 0.8 - 0.4
    for i, (cz, cy, cx) in enumerate(centres):
        out[i, 0][((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2).sqrt() < 0.2] = 0.9
    return out


def features(batch: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.avg_pool3d(batch.float(), 4).flatten(1).numpy()


def sampler_table() -> dict:
    cls = get_family("ddpm3d")
    torch.manual_seed(0)
    family = cls(cls.config_cls.from_json(unet_config(16)))
    data = volumes(64, 16)
    for step in range(TRAIN_STEPS):
        rows = torch.randint(0, len(data), (4,))
        family.train_step(Batch(image=data[rows]), step)
    reference = FeatureStatistics.from_features(features(data), reference=True)
    return {name: sampler_row(name, family, kind, steps, reference) for name, (kind, steps) in SAMPLERS.items()}


def sampler_row(name: str, family, kind: str, steps: int, reference: FeatureStatistics, count: int = SAMPLES) -> dict:
    """Volumes/s and the feature distance to `reference` of `count` samples from seed 1."""
    started = time.perf_counter()
    samples = family.sample(count, torch.Generator().manual_seed(1), sampler={"kind": kind, "steps": steps})
    seconds = time.perf_counter() - started
    row = {"volumes_per_s": count / seconds,
           "frechet_distance": frechet_distance(reference, FeatureStatistics.from_features(features(samples)))}
    print(name, {k: round(v, 4) for k, v in row.items()}, flush=True)
    return row


def memory_child(size: int, checkpointing: bool) -> None:
    """Run in a subprocess: two training steps, print the peak RSS in MiB."""
    cls = get_family("ddpm3d")
    family = cls(cls.config_cls.from_json(unet_config(size, checkpointing)))
    for step in range(2):
        family.train_step(Batch(image=volumes(1, size)), step)
    print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def training_memory() -> dict:
    table = {}
    for size in (32, 64):
        for checkpointing in (False, True):
            out = subprocess.run([sys.executable, "-c", f"from tests.benchmarks.bench_diffusion import memory_child; "
                                  f"memory_child({size}, {checkpointing})"], capture_output=True, text=True,
                                 check=True)
            table[f"{size}^3{' checkpointed' if checkpointing else ''}"] = json.loads(out.stdout.splitlines()[-1])
    return table


def unet_gflops() -> float:
    cls = get_family("ddpm3d")
    family = cls(cls.config_cls.from_json(unet_config(32)))
    unet = family.modules["unet"].eval()
    x, t = torch.randn(2, 1, 32, 32, 32), torch.tensor([10, 500])
    with torch.no_grad():
        unet(x, t)
        with FlopCounterMode(display=False) as counter:
            unet(x, t)
        started = time.perf_counter()
        for _ in range(3):
            unet(x, t)
    return counter.get_total_flops() * 3 / (time.perf_counter() - started) / 1e9


def run() -> dict:
    samplers = sampler_table()
    return {
        "train_steps": TRAIN_STEPS, "samples": SAMPLES, "samplers": samplers,
        "ddim50_over_ddpm1000_speed": samplers["ddim-50"]["volumes_per_s"] / samplers["ddpm-1000"]["volumes_per_s"],
        "ddim50_minus_ddpm1000_distance": samplers["ddim-50"]["frechet_distance"]
        - samplers["ddpm-1000"]["frechet_distance"],
        "training_memory": training_memory(),
        "unet_forward_gflops_per_s": unet_gflops(),
        "machine_matmul_gflops": {"fp32": matmul_gflops(torch.float32), "bf16": matmul_gflops(torch.bfloat16)},
    }
