"""A CT feature extractor that needs no download: a small CNN trained by
ctsynth on a dataset's real training split, for FID/KID/PR in a CT feature
space ("CT-FID"), memorization distances and the 2.5D FID.

It learns two things at once: tumor presence (the label the data has) and,
self-supervised, which of four quarter turns in the axial plane was applied
(rotation prediction, Gidaris et al. 2018), so its features also describe
anatomy on slices without nodules. One class serves 2D slices and 3D
volumes (`spatial_dims`).

It is versioned like any model, `models/<name>/<version>/` with config.json,
weights.safetensors, metrics.json and a manifest written last, with
`family: domain_extractor` so the model registry lists it. It is not a
generative family (it cannot be sampled), so it is not registered as one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ctsynth.errors import InvalidArgument
from ctsynth.metrics.networks import batched, conv_encoder, fit, seeded
from ctsynth.metrics.published import dataset_model_name, find_trained, publish_trained, read_trained
from ctsynth.storage import ObjectStore

FAMILY = "domain_extractor"
TURNS = 4


@dataclass(frozen=True)
class DomainExtractorConfig:
    spatial_dims: int = 2
    image_size: int = 0  # side of the training images (features depend on scale); 0: unrecorded
    widths: tuple[int, ...] = (32, 64, 128)
    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3):
            raise InvalidArgument("spatial_dims", f"{self.spatial_dims}; use 2 or 3")
        if not self.widths or min(self.widths) < 1:
            raise InvalidArgument("widths", f"{self.widths} must be positive channel counts")
        if self.image_size < 0:
            raise InvalidArgument("image_size", f"{self.image_size} must be >= 0")
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise InvalidArgument(name, f"{getattr(self, name)} must be >= 1")
        if self.lr <= 0:
            raise InvalidArgument("lr", f"{self.lr} must be > 0")

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "widths": list(self.widths)}

    @classmethod
    def from_json(cls, values: dict) -> "DomainExtractorConfig":
        return cls(**{**values, "widths": tuple(values["widths"])})


class DomainExtractor(nn.Module):
    """Encoder (N, 1, *spatial) -> (N, widths[-1]) with a tumor head (1
    logit) and a rotation head (4 logits), used in training only."""

    def __init__(self, config: DomainExtractorConfig):
        super().__init__()
        self.encoder = conv_encoder(config.spatial_dims, config.widths)
        self.tumor = nn.Linear(config.widths[-1], 1)
        self.rotation = nn.Linear(config.widths[-1], TURNS)


def quarter_turns(images: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Each item rotated by its number of quarter turns in the last two axes (the axial plane)."""
    return torch.stack([torch.rot90(image, int(k), dims=(-2, -1)) for image, k in zip(images, turns)])


def train_domain_extractor(images: np.ndarray, labels: np.ndarray, config: DomainExtractorConfig,
                           device: torch.device,
                           on_step: Callable[[int, dict[str, float]], None] | None = None,
                           ) -> tuple[DomainExtractor, list[dict[str, float]]]:
    """Train on (N, 1, *spatial) images in [0, 1] with 0/1 tumor labels."""
    if images.shape[-1] != images.shape[-2]:
        raise InvalidArgument("dataset", f"rotation prediction needs square axial planes, got {images.shape[-2:]}")
    model = seeded(lambda: DomainExtractor(config), config.seed).to(device)

    def loss_fn(batch: list[torch.Tensor], generator: torch.Generator):
        pixels, tumor = batch
        turns = torch.randint(0, TURNS, (len(pixels),), generator=generator)
        features = model.encoder(quarter_turns(pixels, turns))
        tumor_logits = model.tumor(features).squeeze(1)
        turn_logits = model.rotation(features)
        tumor_loss = F.binary_cross_entropy_with_logits(tumor_logits, tumor.float())
        rotation_loss = F.cross_entropy(turn_logits, turns.to(device))
        return tumor_loss + rotation_loss, {
            "tumor_loss": tumor_loss.item(), "rotation_loss": rotation_loss.item(),
            "tumor_accuracy": float(((tumor_logits > 0).long() == tumor).float().mean()),
            "rotation_accuracy": float((turn_logits.argmax(1).cpu() == turns).float().mean())}

    history = fit(model, model.parameters(), loss_fn, (images.astype(np.float32), labels.astype(np.int64)),
                  steps=config.steps, batch_size=config.batch_size, lr=config.lr, seed=config.seed, device=device,
                  on_step=on_step)
    return model, history


def extractor_name(dataset: str, version: str, variant: str) -> str:
    """The registry name of the extractor trained on demand for a dataset
    version; `variant` says on what: "2d" slices, "3d" volumes, "25d"
    slices of volumes in all three planes."""
    return dataset_model_name(f"ctfeat{variant}", dataset, version)


def publish_domain_extractor(store: ObjectStore, name: str, model: DomainExtractor, config: DomainExtractorConfig,
                             dataset: str, history: list[dict[str, float]], job_id: str = "") -> str:
    """Publish a new version of `name`; returns "name:version"."""
    return publish_trained(store, name, FAMILY, model, config.to_json(), config.spatial_dims, dataset, history,
                           config.steps, job_id)


def find_domain_extractor(store: ObjectStore, name: str, config: DomainExtractorConfig, dataset: str) -> str | None:
    """The newest version of `name` trained with `config` on `dataset`, if any."""
    return find_trained(store, name, config.to_json(), dataset)


class DomainFeatures:
    """The extractor's encoder as a feature space (D = widths[-1])."""

    name = "ct"

    def __init__(self, model: DomainExtractor, config: DomainExtractorConfig, reference: str, weights_sha256: str,
                 device: torch.device, batch_size: int = 64):
        self.model = model.to(device).eval()
        self.config = config
        self.reference = reference
        self.id = f"ct-{reference.replace(':', '-')}-{weights_sha256[:12]}"
        self.device = device
        self.batch_size = batch_size

    def features(self, images: np.ndarray) -> np.ndarray:
        return batched(self.model.encoder, images, self.device, self.batch_size)


def load_domain_extractor(store: ObjectStore, reference: str, device: torch.device,
                          field: str = "domain_extractor") -> DomainFeatures:
    """A published extractor, its files checked against the manifest."""
    reference, description, weights, weights_sha256 = read_trained(store, reference, FAMILY,
                                                                   "a domain feature extractor", field)
    config = DomainExtractorConfig.from_json(description["config"])
    model = DomainExtractor(config)
    model.load_state_dict(weights)
    return DomainFeatures(model, config, reference, weights_sha256, device)
