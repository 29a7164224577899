"""The frozen first stage of a latent model (`ldm`, `rflow`): a trained
`vae` or `vqvae`, which of them and its config recorded in the latent
model's own config, and the latent scale factor."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ctsynth.models.base import FamilyConfig
from ctsynth.models.tiling import tiled_decode
from ctsynth.models.vae import VAEConfig, build_autoencoder
from ctsynth.models.vqvae import VQVAEConfig, build_vqvae


@dataclass(frozen=True)
class FirstStageKind:
    config_cls: type[FamilyConfig]
    build: Callable[[FamilyConfig], nn.Module]
    decoder: Callable[[nn.Module], Callable[[torch.Tensor], torch.Tensor]]  # the network's latents -> images


FIRST_STAGES = {
    "vae": FirstStageKind(VAEConfig, build_autoencoder, lambda network: network.decode),
    # A latent model's output is quantised to the nearest codes before decoding (as CompVis's VQ first stages).
    "vqvae": FirstStageKind(VQVAEConfig, build_vqvae, lambda network: network.decode_stage_2_outputs),
}


class FirstStage(nn.Module):
    """The frozen autoencoder (kept as `vae` whichever family it is, so
    checkpoints keep their keys) and the latent scale factor (a buffer,
    saved with the latent model)."""

    def __init__(self, family: str, config: FamilyConfig, scale_factor: float):
        super().__init__()
        self.kind, self.config = FIRST_STAGES[family], config
        self.vae = self.kind.build(config).requires_grad_(False)
        self.register_buffer("scale_factor", torch.tensor(float(scale_factor)))
        self.eval()

    def train(self, mode: bool = True) -> FirstStage:
        """Stays in eval mode: a vqvae's codebook must not move while a latent model trains."""
        return super().train(False)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images (N, C, *spatial) in [0, 1] -> scaled latents (N, L, *spatial/f)."""
        return self.vae.encode_stage_2_inputs(images) * self.scale_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images in [0, 1] (tiled as the first stage's config says)."""
        return tiled_decode(self.kind.decoder(self.vae), latents / self.scale_factor, self.config.decode_tile,
                            self.config.decode_overlap).float().clamp(0, 1)

    @torch.no_grad()
    def calibrate(self, images: torch.Tensor) -> None:
        """scale = 1 / std of the latents of `images`; rank 0's value on every rank."""
        self.scale_factor.copy_(1 / self.vae.encode_stage_2_inputs(images).float().std())
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(self.scale_factor, src=0)
