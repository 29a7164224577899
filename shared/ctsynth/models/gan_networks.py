"""The GAN networks of seed 004 §3.5 (MLP and DCGAN-style generators and
discriminators, their weight init) and SAGAN self-attention, with the
constants the GAN networks share (LeakyReLU slope, tumor classes).

Networks here are 2D (every GAN family has `spatial_dims = 2`); images are
(N, C, H, W) in [-1, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

LEAK = 0.2  # LeakyReLU slope of every seed-004 network (§3.5)
NUM_CLASSES = 2  # 0 = no tumor, 1 = tumor


def label_maps(labels: torch.Tensor, size: int) -> torch.Tensor:
    """One-hot label planes (N,) -> (N, 2, size, size), the condition channels of seed 000 §4.1.1."""
    onehot = F.one_hot(labels, NUM_CLASSES).float()
    return onehot[:, :, None, None].expand(-1, -1, size, size)


class MLPGenerator(nn.Module):
    """Seed 004 §3.5.1: z (N, latent) -> FC hidden layers (batch norm from the
    second on, LeakyReLU 0.2) -> FC -> tanh -> (N, C, H, W)."""

    def __init__(self, latent_dim: int, hidden: Sequence[int], shape: tuple[int, int, int]):
        super().__init__()
        layers: list[nn.Module] = []
        width = latent_dim
        for index, out in enumerate(hidden):
            layers.append(nn.Linear(width, out))
            if index:
                layers.append(nn.BatchNorm1d(out))
            layers.append(nn.LeakyReLU(LEAK))
            width = out
        layers += [nn.Linear(width, math.prod(shape)), nn.Tanh(), nn.Unflatten(1, shape)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class MLPDiscriminator(nn.Module):
    """Seed 004 §3.5.1: (N, C, H, W) -> FC hidden layers with LeakyReLU 0.2 -> (N, 1).

    The output is a logit: the vanilla GAN's sigmoid lives in its loss
    (BCE with logits, exact and stable); WGAN's critic uses it as the score.
    """

    def __init__(self, in_features: int, hidden: Sequence[int]):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for out in hidden:
            layers += [nn.Linear(width, out), nn.LeakyReLU(LEAK)]
            width = out
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)


def norm2d(kind: str, channels: int) -> nn.Module:
    """'batch' (DCGAN), 'instance' (WGAN-GP, seed 000 §4.1.3) or 'none'."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


class ConvGenerator(nn.Module):
    """Seed 004 §3.5.3: project z to widths[0] maps of (H/2^k, W/2^k), normalise,
    then k = len(widths) - 1 blocks of [nearest upsample x2, conv 3x3, norm,
    LeakyReLU 0.2] and a final conv 3x3 + tanh -> (N, C, H, W).

    Upsample + conv instead of transposed conv avoids checkerboard artefacts
    (Odena et al. 2016, cited in §3.5.3). widths (128, 128, 64) is seed 004's DCGAN.
    """

    def __init__(self, latent_dim: int, widths: Sequence[int], shape: tuple[int, int, int], norm: str):
        super().__init__()
        channels, height, width = shape
        scale = 2 ** (len(widths) - 1)
        start = (widths[0], height // scale, width // scale)
        self.project = nn.Sequential(nn.Linear(latent_dim, math.prod(start)), nn.Unflatten(1, start),
                                     norm2d(norm, widths[0]))
        blocks: list[nn.Module] = []
        for into, out in zip(widths, widths[1:]):
            blocks += [nn.Upsample(scale_factor=2), nn.Conv2d(into, out, 3, padding=1), norm2d(norm, out),
                       nn.LeakyReLU(LEAK)]
        blocks += [nn.Conv2d(widths[-1], channels, 3, padding=1), nn.Tanh()]
        self.blocks = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.project(z))


class ConvDiscriminator(nn.Module):
    """Seed 004 §3.5.3: blocks of [conv 3x3 stride 2, LeakyReLU 0.2, dropout,
    norm (not on the first block)] -> FC -> (N, 1) logit or critic score.

    widths (16, 32, 64, 128), dropout 0.25 and batch norm is seed 004's DCGAN;
    the WGAN-GP critic uses no norm and no dropout (the penalty is per sample,
    Gulrajani et al. 2017 §4).
    """

    def __init__(self, shape: tuple[int, int, int], widths: Sequence[int], norm: str, dropout: float):
        super().__init__()
        channels, height, width = shape
        layers: list[nn.Module] = []
        into = channels
        for index, out in enumerate(widths):
            layers += [nn.Conv2d(into, out, 3, stride=2, padding=1), nn.LeakyReLU(LEAK), nn.Dropout2d(dropout)]
            if index:
                layers.append(norm2d(norm, out))
            into = out
        scale = 2 ** len(widths)
        layers += [nn.Flatten(), nn.Linear(widths[-1] * (height // scale) * (width // scale), 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)


def init_dcgan_weights(module: nn.Module) -> None:
    """Radford et al. 2015 §4 (as in Linder-Norén's code used by seed 004):
    conv weights N(0, 0.02), batch-norm scales N(1, 0.02) and shifts 0."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.normal_(layer.weight, 0.0, 0.02)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.normal_(layer.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias)


class SelfAttention2d(nn.Module):
    """SAGAN self-attention (Zhang et al. 2019, eq. 1-3): (N, C, H, W) -> same.

    The output is x + gamma * attention(x) with gamma starting at 0, so the
    block begins as the identity and learns how much global context to mix in
    (seed 000 §4.1.1: coherence of generated structures).
    """

    def __init__(self, channels: int):
        super().__init__()
        inner = max(1, channels // 8)
        self.query = nn.Conv2d(channels, inner, 1)
        self.key = nn.Conv2d(channels, inner, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        query = self.query(x).flatten(2).transpose(1, 2)  # (N, HW, C')
        key = self.key(x).flatten(2)  # (N, C', HW)
        attention = torch.softmax(query @ key, dim=-1)  # (N, HW, HW)
        out = self.value(x).flatten(2) @ attention.transpose(1, 2)  # (N, C, HW)
        return x + self.gamma * out.view(n, c, h, w)
