"""3D latent models on the CPU: rectified flow against the DDPM objective,
first-stage memory, and the first slab of a streamed volume.

- One tiny 3D vae (32^3 -> 3 x 8^3 latents) trained here on structured
  volumes, then an `ldm` (DDPM objective) and an `rflow` (rectified flow) with
  the same U-Net trained on it for the same steps, batches and seeds. Then
  volumes/s and a Frechet distance to the training volumes for rflow-30 and
  flow_euler-30 (the rflow model) and DDPM-1000, DDIM-50, DPM-Solver++-20,
  UniPC-20 (the ldm model), each from the same seeds. The distance is the one
  `bench_diffusion` uses (4^3 average-pooled volumes, 512-d here): the
  evaluation service's 3D CT-FID needs a trained extractor, too heavy here.
  Reported: rflow-30's speed over DDPM-1000's and its distance relative to
  DDPM-1000's (MAISI-v2: 33x faster at a better FID).
- Peak RSS of a 3D vae training step and of whole and tiled (16^3-latent)
  decodes at 32^3, 64^3 and 128^3 outputs, each in its own subprocess, with
  the peak before the step (imports, network, inputs) beside it.
- Time to the first message and to the whole volume when a 32^3 volume
  streams in 4-slice slabs from a served rflow model.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ctsynth.metrics.frechet import FeatureStatistics
from ctsynth.models.base import Batch
from ctsynth.models.families import get_family
from tests.benchmarks.bench_diffusion import features, sampler_row, volumes

STEPS = int(os.environ.get("CTSYNTH_BENCH_LATENT_STEPS", "200"))
SIZE, SAMPLES, BATCH = 32, 8, 4
VAE = {"spatial_dims": 3, "image_size": SIZE, "autoencoder_channels": [16, 32, 32], "latent_channels": 3,
       "norm_num_groups": 8, "mid_attention": False, "adversarial": "none", "learning_rate": 2e-3}
UNET = {"spatial_dims": 3, "image_size": SIZE, "autoencoder": "vae:1", "autoencoder_config": VAE,
        "unet_channels": [32, 64], "attention_levels": [False, True], "num_res_blocks": 1, "norm_num_groups": 8,
        "num_heads": 2, "gradient_checkpointing": False, "learning_rate": 5e-4, "warmup_steps": 50,
        "flash_attention": False}
SAMPLERS = {"rflow-30": ("rflow", "rflow", 30), "flow_euler-30": ("rflow", "flow_euler", 30),
            "ddpm-1000": ("ldm", "ddpm", 1000), "ddim-50": ("ldm", "ddim", 50),
            "dpm_solver-20": ("ldm", "dpm_solver", 20), "unipc-20": ("ldm", "unipc", 20)}


def fit(family, data: torch.Tensor, steps: int, seed: int = 0) -> float:
    """`steps` training steps on batches drawn with `seed`; the seconds they took."""
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    for step in range(steps):
        torch.manual_seed(seed * 100_003 + step)
        family.train_step(Batch(image=data[torch.randint(0, len(data), (BATCH,), generator=generator)]), step)
    return time.perf_counter() - started


def build(name: str, values: dict):
    cls = get_family(name)
    torch.manual_seed(0)
    return cls(cls.config_cls.from_json(values))


def sampler_table() -> dict:
    data = volumes(64, SIZE)
    vae = build("vae", VAE)
    vae_seconds = fit(vae, data, STEPS)
    latent = {}
    for name in ("ldm", "rflow"):
        family = build(name, {**UNET, **({"sampler_kind": "rflow", "sampler_steps": 30} if name == "rflow" else {})})
        family.load_autoencoder_state(vae.modules["autoencoder"].state_dict())
        latent[name] = (family, fit(family, data, STEPS))
    reference = FeatureStatistics.from_features(features(data), reference=True)
    table = {row: sampler_row(row, latent[model][0], kind, steps, reference, SAMPLES)
             for row, (model, kind, steps) in SAMPLERS.items()}
    recon = vae.validation_metrics(volumes(8, SIZE, seed=1))
    return {"vae_training_s": vae_seconds, "ldm_training_s": latent["ldm"][1], "rflow_training_s": latent["rflow"][1],
            "vae_reconstruction": recon, "samplers": table,
            "rflow30_over_ddpm1000_speed": table["rflow-30"]["volumes_per_s"] / table["ddpm-1000"]["volumes_per_s"],
            "rflow30_distance_over_ddpm1000": table["rflow-30"]["frechet_distance"]
            / table["ddpm-1000"]["frechet_distance"]}


def memory_child(side: int, what: str) -> None:
    """Run in a subprocess: one vae training step, or one decode to a side^3
    volume (whole or in 16^3-latent tiles); print the peak RSS in MiB and the
    peak before the step (imports, the network and its inputs)."""
    from ctsynth.models.tiling import tiled_decode

    vae = build("vae", {**VAE, "image_size": side})
    images, latents = volumes(1, side), torch.randn(1, *vae.config.latent_shape())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if what == "train":
        vae.train_step(Batch(image=images), 0)
    else:
        with torch.no_grad():
            tiled_decode(vae.modules["autoencoder"].eval().decode, latents, 16 if what == "tiled decode" else 0, 0.25)
    print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "before_mib": before}))


def first_stage_memory() -> dict:
    table = {}
    for side in (32, 64, 128):
        for what in ("train", "whole decode", "tiled decode"):
            out = subprocess.run([sys.executable, "-c", f"from tests.benchmarks.bench_latent3d import memory_child; "
                                  f"memory_child({side}, {what!r})"], capture_output=True, text=True, check=True)
            table[f"{side}^3 {what}"] = json.loads(out.stdout.splitlines()[-1])
            print(side, what, table[f"{side}^3 {what}"], flush=True)
    return table


def first_slab() -> dict:
    """A tiny rflow on a 3D vae, served with 4-slice slabs: ms to the first
    message and to the last, median of 5 requests of one 32^3 volume."""
    import grpc

    from ctsynth.registry import Registry
    from ctsynth.storage import open_store
    from ctsynth.training.loop import WorkerContext, train_worker
    from ctsynth.training.spec import TrainSpec
    from ctsynth.v1 import sampling_pb2, sampling_pb2_grpc
    from tests.served_models import start_server
    from tests.training.conftest import publish_dataset

    tiny = {"image_size": SIZE, "spatial_dims": 3, "norm_num_groups": 8}
    models = {"vae": {**tiny, "autoencoder_channels": [8, 8, 8], "latent_channels": 2, "mid_attention": False,
                      "adversarial": "none"},
              "rflow": {**tiny, "autoencoder": "vae:1", "unet_channels": [8, 16], "attention_levels": [False, False],
                        "num_heads": 1, "num_res_blocks": 1, "gradient_checkpointing": False,
                        "flash_attention": False}}
    first, whole = [], []
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store((Path(tmp) / "store").as_uri())
        dataset = publish_dataset(store, "bench", Path(tmp) / "data", volume_size=SIZE)
        for name, values in models.items():
            cls = get_family(name)
            resolved, extra = cls.resolve_inputs(values, Registry(store, "models", "model"))
            train_worker(TrainSpec(job_id=f"bench-{name}", family=name, config=resolved, dataset=dataset,
                                   model_name=name, version="1", store_uri=store.uri, steps=1, batch_size=1,
                                   log_interval=1, seed=0, extra=extra), WorkerContext())
        host = start_server(store.uri)
        try:
            with grpc.insecure_channel(host.address) as channel:
                stub = sampling_pb2_grpc.SamplingServiceStub(channel)
                for seed in range(5):
                    request = sampling_pb2.SampleRequest(model="rflow", count=1, seed=seed, slab_slices=4,
                                                         format=sampling_pb2.OUTPUT_FORMAT_FLOAT16)
                    started = time.perf_counter()
                    for index, _ in enumerate(stub.Sample(request, timeout=300)):
                        if index == 0:
                            first.append((time.perf_counter() - started) * 1000)
                    whole.append((time.perf_counter() - started) * 1000)
        finally:
            host.stop(0)
    return {"volume": f"{SIZE}^3", "slab_slices": 4, "messages": index + 1,
            "first_message_ms": sorted(first)[2], "whole_volume_ms": sorted(whole)[2]}


def run() -> dict:
    return {"train_steps": STEPS, "samples": SAMPLES, **sampler_table(), "first_stage_memory": first_stage_memory(),
            "streamed_volume": first_slab()}
