"""3D FID features from a Med3D (MedicalNet, Chen et al. 2019) ResNet, as
seed 001 §III-D computes its 3D FID.

The network is MONAI's `ResNet` with `spatial_dims=3`; its depth, block
type, widths and shortcut type are read off the weights file, so any
MedicalNet checkpoint (resnet_10 ... resnet_200, `{"state_dict": ...}` with
DataParallel's `module.` prefixes) or a safetensors export loads without
further configuration. Weights are read once into memory and loaded from
that copy with `weights_only=True` (or as safetensors). Volumes
are normalised per volume to zero mean and unit variance, as MedicalNet's
training data was; features are the global-average-pooled last stage.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import torch
from monai.networks.nets.resnet import ResNet
from safetensors.torch import load as load_safetensors

from ctsynth.errors import FailedPrecondition
from ctsynth.metrics.networks import batched
from ctsynth.metrics.weights import read_copy

HOW_TO = ("fid-3d needs Med3D (MedicalNet) ResNet weights, e.g. resnet_10_23dataset.pth from "
          "https://huggingface.co/TencentMedicalNet: pass a path or object-store URI as the request field "
          "med3d_weights or CTSYNTH_MED3D_WEIGHTS on the evaluation service; without them, use ct-fid, whose "
          "3D extractor ctsynth trains itself")
DEPTHS = {("basic", (1, 1, 1, 1)): 10, ("basic", (2, 2, 2, 2)): 18, ("basic", (3, 4, 6, 3)): 34,
          ("bottleneck", (3, 4, 6, 3)): 50, ("bottleneck", (3, 4, 23, 3)): 101,
          ("bottleneck", (3, 8, 36, 3)): 152, ("bottleneck", (3, 24, 36, 3)): 200}


def read_state(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a MedicalNet checkpoint or safetensors file (the bytes
    of `path`), without `module.` prefixes."""
    try:
        state = load_safetensors(data) if path.suffix == ".safetensors" else torch.load(
            io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same answer
        reason = str(exc).splitlines()[0] if str(exc) else ""
        raise FailedPrecondition(f"{path} is not a readable weights file ({type(exc).__name__}: {reason}). "
                                 f"{HOW_TO}") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or "conv1.weight" not in {k.removeprefix("module.") for k in state}:
        raise FailedPrecondition(f"{path} holds no 3D ResNet state dict. {HOW_TO}")
    return {key.removeprefix("module."): tensor for key, tensor in state.items()}


def resnet_from_state(state: dict[str, torch.Tensor]) -> tuple[ResNet, str]:
    """The MONAI ResNet the tensors fit, loaded, and its name (e.g. "resnet10")."""
    blocks = [sorted({int(m.group(1)) for k in state if (m := re.match(rf"layer{i}\.(\d+)\.", k))})
              for i in range(1, 5)]
    if any(not b for b in blocks) or state["conv1.weight"].dim() != 5:
        raise FailedPrecondition(f"the weights are not a 3D ResNet with four stages. {HOW_TO}")
    block = "bottleneck" if any(".conv3." in k for k in state) else "basic"
    layers = [len(b) for b in blocks]
    widths = [int(state[f"layer{i}.0.conv1.weight"].shape[0]) for i in range(1, 5)]
    downsample = any(".downsample." in k for k in state)
    network = ResNet(block, layers, widths, spatial_dims=3, n_input_channels=int(state["conv1.weight"].shape[1]),
                     conv1_t_size=tuple(state["conv1.weight"].shape[2:]), conv1_t_stride=2,
                     shortcut_type="B" if downsample else "A", feed_forward=False,
                     bias_downsample=any(re.search(r"downsample\.0\.bias$", k) for k in state))
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise FailedPrecondition(f"the weights do not fit a MONAI 3D ResNet ({str(exc).splitlines()[0]}). "
                                 f"{HOW_TO}") from None
    depth = DEPTHS.get((block, tuple(layers)))
    return network.eval(), f"resnet{depth}" if depth else f"resnet-{block}-{'-'.join(map(str, layers))}"


def standardize(volumes: torch.Tensor) -> torch.Tensor:
    """Per-volume zero mean, unit variance."""
    flat = volumes.flatten(1)
    mean, std = flat.mean(1), flat.std(1).clamp_min(1e-6)
    return (volumes - mean.view(-1, *[1] * (volumes.dim() - 1))) / std.view(-1, *[1] * (volumes.dim() - 1))


class Med3DFeatures:
    """Pooled last-stage features of a Med3D ResNet for (N, 1, D, H, W) volumes."""

    name = "med3d"

    def __init__(self, weights: Path, device: torch.device, batch_size: int = 4):
        data, sha256 = read_copy(weights)
        self.network, architecture = resnet_from_state(read_state(data, weights))
        self.network.to(device)
        self.id = f"med3d-{architecture}-{sha256[:16]}"
        self.device = device
        self.batch_size = batch_size

    def features(self, images: np.ndarray) -> np.ndarray:
        return batched(lambda v: self.network(standardize(v)), images, self.device, self.batch_size)
