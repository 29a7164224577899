"""Checkpoints as safetensors + JSON: saving them, resuming from them and
loading a registered model version for inference. Nothing is ever unpickled.

A family's state is its modules' state_dicts (`weights.safetensors`, keys
`<module>.<param>`) and its optimizers' and RNG state
(`optimizer.safetensors` for tensors, `training_state.json` for the rest),
which is enough to resume the same schedule bit for bit.
safetensors has no optimizer-state format, so the flattening is ours.

Every file of a registered version is checked against the sha256 in the
version's manifest before use: a mismatch is DATA_LOSS, never a silently
wrong model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from ctsynth.errors import DataLoss
from ctsynth.models.base import Family
from ctsynth.models.distributed import unwrap
from ctsynth.models.families import get_family
from ctsynth.registry import Registry, parse_ref
from ctsynth.storage import ObjectStore
from ctsynth.storage.errors import IntegrityError


def module_weights(family: Family, names: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
    """Every module's state as one flat dict `<module>.<key>` (contiguous CPU tensors)."""
    flat = {}
    for name, module in family.modules.items():
        if names is not None and name not in names:
            continue
        for key, tensor in unwrap(module).state_dict().items():
            flat[f"{name}.{key}"] = tensor.detach().to("cpu").contiguous()
    return flat


def load_module_weights(family: Family, flat: dict[str, torch.Tensor], *, strict: bool = True) -> None:
    """Inverse of `module_weights`; a missing or unexpected key is an error when strict."""
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in flat.items():
        name, _, rest = key.partition(".")
        grouped.setdefault(name, {})[rest] = tensor
    for name, module in family.modules.items():
        if name in grouped:
            unwrap(module).load_state_dict(grouped.pop(name), strict=strict)
        elif strict:
            raise KeyError(f"checkpoint has no weights for module {name!r}")
    if strict and grouped:
        raise KeyError(f"checkpoint has weights for unknown modules {sorted(grouped)}")


def _split_optimizer(name: str, state: dict) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, rest = {}, {"param_groups": state["param_groups"], "state": {}}
    for param_id, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{name}.{param_id}.{key}"] = value.detach().to("cpu").contiguous()
            else:
                rest["state"].setdefault(str(param_id), {})[key] = value
    return tensors, rest


def training_state(family: Family, step: int, extra: dict | None = None) -> tuple[bytes, dict]:
    """(optimizer.safetensors bytes, training_state JSON) for an exact resume."""
    tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
    optimizers = {}
    for name, optimizer in family.optimizers.items():
        opt_tensors, rest = _split_optimizer(name, optimizer.state_dict())
        tensors.update(opt_tensors)
        optimizers[name] = rest
    scaler = family.precision.scaler
    meta = {"step": step, "optimizers": optimizers,
            "grad_scaler": scaler.state_dict() if scaler.is_enabled() else None, **(extra or {})}
    return save_safetensors(tensors), meta


def restore_training_state(family: Family, tensor_bytes: bytes, meta: dict) -> int:
    """Load optimizer, scaler and RNG state; returns the step to continue from."""
    tensors = load_safetensors(tensor_bytes)
    for name, optimizer in family.optimizers.items():
        saved = meta["optimizers"][name]
        state: dict[int, dict[str, Any]] = {}
        for key, tensor in tensors.items():
            owner, _, rest = key.partition(".")
            if owner == name:
                param_id, _, field = rest.partition(".")
                state.setdefault(int(param_id), {})[field] = tensor
        for param_id, entries in saved["state"].items():
            state.setdefault(int(param_id), {}).update(entries)
        optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
    if meta.get("grad_scaler"):
        family.precision.scaler.load_state_dict(meta["grad_scaler"])
    torch.set_rng_state(tensors["rng.torch"])
    return int(meta["step"])


def weights_bytes(family: Family) -> bytes:
    return save_safetensors(module_weights(family))


def load_weights_bytes(family: Family, data: bytes, *, strict: bool = True) -> None:
    load_module_weights(family, load_safetensors(data), strict=strict)


def dumps(obj: dict) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=True).encode()


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
    load_weights_bytes(family, weights)
    for module in family.modules.values():
        module.eval()
    return LoadedModel(name=name, version=version, family=family, config=config)
