"""The small CNNs evaluation trains itself: one encoder for 2D and 3D
(MONAI's layer factories pick the layers by `spatial_dims`), a tumor
classifier on top of it, and one seeded training loop for both the domain
feature extractor and the downstream classifiers of the utility test.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.networks.layers.factories import Conv, Norm, Pool
from torch import nn

# loss_fn(batch tensors, generator) -> (loss, scalars to log)
LossFn = Callable[[list[torch.Tensor], torch.Generator], tuple[torch.Tensor, dict[str, float]]]


def conv_encoder(spatial_dims: int, widths: Sequence[int], in_channels: int = 1) -> nn.Sequential:
    """(N, C, *spatial) -> (N, widths[-1]): strided 3^d convolutions, batch
    norm and LeakyReLU per width, then global average pooling (any input size)."""
    layers: list[nn.Module] = []
    channels = in_channels
    for width in widths:
        layers += [Conv[Conv.CONV, spatial_dims](channels, width, kernel_size=3, stride=2, padding=1),
                   Norm[Norm.BATCH, spatial_dims](width), nn.LeakyReLU(0.2)]
        channels = width
    layers += [Pool[Pool.ADAPTIVEAVG, spatial_dims](1), nn.Flatten()]
    return nn.Sequential(*layers)


class TumorClassifier(nn.Module):
    """Tumor presence from an image: (N, 1, *spatial) -> (N,) logits."""

    def __init__(self, spatial_dims: int, widths: Sequence[int] = (16, 32, 64)):
        super().__init__()
        self.encoder = conv_encoder(spatial_dims, widths)
        self.head = nn.Linear(widths[-1], 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(images)).squeeze(1)


def seeded(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """`build()` with its weights initialised from `seed`, leaving the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def fit(module: nn.Module, parameters, loss_fn: LossFn, arrays: Sequence[np.ndarray], *, steps: int,
        batch_size: int, lr: float, seed: int, device: torch.device,
        on_step: Callable[[int, dict[str, float]], None] | None = None) -> list[dict[str, float]]:
    """Adam on `parameters` for `steps` minibatches drawn with replacement
    from `arrays` (aligned along axis 0), `module` in training mode meanwhile
    (pass only the part being trained to keep the rest's batch norm frozen);
    returns the logged scalars per step."""
    module.train()
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(parameters, lr=lr)
    count = len(arrays[0])
    history = []
    for step in range(steps):
        rows = torch.randint(0, count, (min(batch_size, count),), generator=generator).numpy()
        batch = [torch.from_numpy(np.ascontiguousarray(array[rows])).to(device) for array in arrays]
        loss, scalars = loss_fn(batch, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append({"step": step + 1, "loss": loss.item(), **scalars})
        if on_step is not None:
            on_step(step + 1, history[-1])
    module.eval()
    return history


@torch.no_grad()
def batched(module: Callable[[torch.Tensor], torch.Tensor], images: np.ndarray, device: torch.device,
            batch_size: int = 64) -> np.ndarray:
    """`module` over (N, ...) float images in batches, as one float32 array."""
    outputs = [module(torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size], dtype=np.float32))
                      .to(device)).float().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(outputs).numpy()
