"""Adaptive discriminator augmentation (ADA, Karras et al. 2020): the
differentiable augmentations a GAN discriminator sees, with the probability
p steered by an overfitting heuristic. Its own module because it is a
state-holding nn.Module with its own paper, used by `stylegan2`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ctsynth.models.distributed import world_size


class AdaptiveAugment(nn.Module):
    """Differentiable augmentation applied to every image D sees, real and
    fake, each transform with probability p (ADA, Karras et al. 2020 §2-3).

    Transforms: x-flip, integer translation (up to 1/8 of the side, reflected
    borders), optional 90° rotations, brightness (+N(0, 0.2)) and contrast
    (x 2^N(0, 0.5)), the ADA 'bgc' pipeline reduced to single-channel CT.
    p is adjusted every `interval` steps from r_t = E[sign(D(real))]
    (eq. 1/§3): up when r_t > target, down otherwise, by
    images / (speed_kimg * 1000), so p can go 0 -> 1 in `speed_kimg` kimg.
    p and the running sign statistics are buffers: they are checkpointed.
    Random draws come from the global torch RNG (seeded by the runtime).
    """

    def __init__(self, target: float, speed_kimg: float, rotate90: bool, translate: float = 0.125,
                 brightness_std: float = 0.2, contrast_std: float = 0.5):
        super().__init__()
        self.target, self.speed_kimg, self.rotate90 = target, speed_kimg, rotate90
        self.translate, self.brightness_std, self.contrast_std = translate, brightness_std, contrast_std
        self.register_buffer("p", torch.zeros(()))
        self.register_buffer("sign_sum", torch.zeros((), dtype=torch.float64))
        self.register_buffer("sign_count", torch.zeros((), dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> augmented (N, C, H, W), differentiable in x."""
        x = torch.where(self._chosen(x), x.flip(3), x)
        x = self._translate(x)
        if self.rotate90:
            turns = torch.randint(0, 4, (x.shape[0],), device=x.device) * self._chosen(x).flatten()
            rotations = torch.stack([torch.rot90(x, k, (2, 3)) for k in range(4)])  # (4, N, C, H, W)
            x = rotations[turns, torch.arange(x.shape[0], device=x.device)]
        x = x + torch.randn_like(x[:, :1, :1, :1]) * self.brightness_std * self._chosen(x)
        return x * torch.exp2(torch.randn_like(x[:, :1, :1, :1]) * self.contrast_std * self._chosen(x))

    def _chosen(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 1, 1) bool: which images get the next transform."""
        return torch.rand(x.shape[0], 1, 1, 1, device=x.device) < self.p

    def _translate(self, x: torch.Tensor) -> torch.Tensor:
        """Shift each image by integers in [-t, t] per axis, mirroring at the borders."""
        n, _, h, w = x.shape
        chosen = self._chosen(x).view(n, 1)

        def shifted(size: int) -> torch.Tensor:  # (N, size) source index of each output pixel
            limit = round(self.translate * size)
            shift = torch.randint(-limit, limit + 1, (n, 1), device=x.device) * chosen
            index = (torch.arange(size, device=x.device) - shift).abs()
            return (size - 1) - ((size - 1) - index).abs()

        rows, cols = shifted(h), shifted(w)
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        return x[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]

    @torch.no_grad()
    def observe(self, real_logits: torch.Tensor) -> None:
        """Accumulate sign(D(real)) for the overfitting heuristic r_t."""
        self.sign_sum += real_logits.detach().float().sign().sum().double()
        self.sign_count += real_logits.numel()

    @torch.no_grad()
    def adjust(self, images: int) -> float:
        """Move p after `images` real images were observed (summed over workers); returns r_t."""
        stats = torch.stack([self.sign_sum, self.sign_count])
        if world_size() > 1:
            dist.all_reduce(stats)
        rt = float(stats[0] / stats[1].clamp(min=1))
        direction = (rt > self.target) - (rt < self.target)
        self.p.copy_((self.p + direction * images / (self.speed_kimg * 1000)).clamp(0, 1))
        self.sign_sum.zero_()
        self.sign_count.zero_()
        return rt
