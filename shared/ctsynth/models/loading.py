"""Loading a registered model version for inference.

Every file is checked against the sha256 in the version's manifest before
use: a mismatch is DATA_LOSS, never a silently wrong model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import NamedTuple

import torch

from ctsynth.errors import DataLoss
from ctsynth.models.base import Family
from ctsynth.models.registry import get_family
from ctsynth.registry import Registry, parse_ref
from ctsynth.storage import ObjectStore
from ctsynth.storage.errors import IntegrityError
from ctsynth.training import checkpoint


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    family: Family
    config: dict  # the version's config.json

    @property
    def reference(self) -> str:
        return f"{self.name}:{self.version}"

    def weight_bytes(self) -> int:
        """Memory the model's tensors take (for cache budgets)."""
        return sum(t.numel() * t.element_size()
                   for module in self.family.modules.values() for t in module.state_dict().values())


def verified_bytes(store: ObjectStore, key: str, sha256: str) -> bytes:
    data = store.get_bytes(key)
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise DataLoss(f"{key} fails its sha256 check (expected {sha256[:12]}..., got {actual[:12]}...): "
                       "the model files are corrupt; re-train or restore them")
    return data


class ModelFiles(NamedTuple):
    name: str
    version: str
    config: dict  # config.json
    weights: bytes  # weights.safetensors
    weights_sha256: str


def read_model_files(store: ObjectStore, reference: str, field: str) -> ModelFiles:
    """The files of a published model version, checked against its manifest."""
    models = Registry(store, "models", "model")
    name, version = models.resolve(parse_ref(reference, field))
    prefix = models.prefix(name, version)
    files = models.intact_manifest(name, version)["files"]
    try:
        config = json.loads(verified_bytes(store, f"{prefix}/config.json", files["config.json"]["sha256"]))
        weights = verified_bytes(store, f"{prefix}/weights.safetensors", files["weights.safetensors"]["sha256"])
    except (KeyError, IntegrityError) as exc:
        raise DataLoss(f"model {name}:{version} is incomplete or corrupt: {exc}") from None
    return ModelFiles(name, version, config, weights, files["weights.safetensors"]["sha256"])


def load_model(store: ObjectStore, reference: str, device: torch.device | str = "cpu",
               field: str = "model") -> LoadedModel:
    """The model version `reference` ("name", "name:latest", "name:version")
    rebuilt from its config.json and weights.safetensors, in eval mode."""
    name, version, config, weights, _ = read_model_files(store, reference, field)
    family_cls = get_family(config["family"])
    family = family_cls(family_cls.config_cls.from_json(config["config"]), device=device)
    checkpoint.load_weights_bytes(family, weights)
    for module in family.modules.values():
        module.eval()
    return LoadedModel(name=name, version=version, family=family, config=config)
