"""Networks that evaluation trains itself on a dataset version (the CT
feature extractor, the nodule segmenter), cached in the model registry so
that the next evaluation of the same dataset version reuses them:
`models/<name>/<version>/` with config.json (the family, the settings, the
dataset "name:version" trained on), weights.safetensors, metrics.json and a
manifest written last. A version is reused only when its settings and
dataset match exactly. Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from ctsynth import __version__
from ctsynth.errors import InvalidArgument
from ctsynth.models.checkpoint import read_model_files
from ctsynth.registry import NAME_PATTERN, Registry
from ctsynth.storage import ObjectStore


def dataset_model_name(prefix: str, dataset: str, version: str) -> str:
    """`<prefix>-<dataset>-<version>`, or a hash of the dataset reference
    when that is no valid registry name (too long, odd characters)."""
    name = f"{prefix}-{dataset}-{version}"
    if NAME_PATTERN.match(name):
        return name
    return f"{prefix}-{hashlib.sha256(f'{dataset}:{version}'.encode()).hexdigest()[:16]}"


def publish_trained(store: ObjectStore, name: str, family: str, module: nn.Module, config: dict[str, Any],
                    spatial_dims: int, dataset: str, history: list[dict[str, float]], steps: int,
                    job_id: str = "") -> str:
    """Publish `module`'s weights as a new version of `name`; returns "name:version"."""
    models = Registry(store, "models", "model")
    version = models.allocate(name)
    state = {key: tensor.detach().cpu().contiguous() for key, tensor in module.state_dict().items()}
    description = {"family": family, "config": config, "spatial_dims": spatial_dims, "dataset": dataset,
                   "split": "train", "sample_shape": [], "conditional": False, "ctsynth_version": __version__}
    last = history[-1] if history else {}
    files = {"config.json": json.dumps(description, indent=2, sort_keys=True).encode(),
             "weights.safetensors": save_tensors(state),
             "metrics.json": json.dumps({"step": steps, "history": history}).encode()}
    store.publish(models.prefix(name, version), files, {
        "name": name, "version": version, "family": family, "job_id": job_id, "step": steps,
        "dataset": dataset, "headline": {k: v for k, v in last.items() if k != "step"}})
    return f"{name}:{version}"


def find_trained(store: ObjectStore, name: str, config: dict[str, Any], dataset: str) -> str | None:
    """The newest version of `name` trained with `config` on `dataset`, if any."""
    models = Registry(store, "models", "model")
    for version in reversed(models.versions(name)):
        description = store.get_json(f"{models.prefix(name, version)}/config.json")
        if description.get("config") == config and description.get("dataset") == dataset:
            return f"{name}:{version}"
    return None


def read_trained(store: ObjectStore, reference: str, family: str, what: str,
                 field: str) -> tuple[str, dict[str, Any], dict[str, torch.Tensor], str]:
    """("name:version", config.json, weights, weights sha256) of a published
    network of `family` (`what` names it in the error for another family),
    its files checked against the manifest."""
    name, version, description, weights, weights_sha256 = read_model_files(store, reference, field)
    if description.get("family") != family:
        raise InvalidArgument(field, f"model {name}:{version} is a {description.get('family')} model, not {what}")
    return f"{name}:{version}", description, load_tensors(weights), weights_sha256
