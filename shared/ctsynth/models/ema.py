"""Exponential moving averages of a network's weights: the EMA generator of
the StyleGAN family (Karras et al. 2018 / StyleGAN2-ADA training loop) and
the EMA denoiser of the diffusion families, kept apart from GAN code so the
diffusion families import none.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ctsynth.models.distributed import unwrap


def ema_beta(batch_images: int, images_seen: int, ema_kimg: float, rampup: float | None) -> float:
    """Decay per step for an EMA with a half-life of `ema_kimg` thousand images.

    StyleGAN2-ADA: beta = 0.5 ** (batch / ema_nimg) with ema_nimg =
    min(ema_kimg * 1000, images_seen * rampup) during ramp-up, so the
    average follows the generator closely early in training.
    """
    ema_nimg = ema_kimg * 1000
    if rampup is not None:
        ema_nimg = min(ema_nimg, images_seen * rampup)
    return 0.5 ** (batch_images / max(ema_nimg, 1e-8))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """ema <- beta * ema + (1 - beta) * model for parameters; buffers copied."""
    for averaged, current in zip(ema.parameters(), unwrap(model).parameters()):
        averaged.lerp_(current.detach(), 1 - beta)
    for averaged, current in zip(ema.buffers(), unwrap(model).buffers()):
        averaged.copy_(current)


def make_ema(model: nn.Module) -> nn.Module:
    """A frozen copy of `model` to average into."""
    return copy.deepcopy(unwrap(model)).eval().requires_grad_(False)
