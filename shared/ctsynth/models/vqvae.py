"""`vqvae`: a vector-quantised autoencoder (van den Oord et al. 2017; MONAI
`VQVAE`, EMA codebook updates) for slices or volumes, seed 002's first stage
and usable like `vae` under `ldm` and `rflow`.

Loss: L1 reconstruction + the quantiser's commitment loss (its codebook moves
by exponential moving averages, `decay`, not by gradients). Each level halves
every side (stride-2 4^d convolutions), so `autoencoder_channels` of 2 or 3
levels give a downsampling factor of 4 or 8. Besides reconstruction PSNR and
SSIM on the validation split it reports how the codebook is used there:
perplexity (the effective number of codes, exp of the entropy of their
frequencies) and dead codes (entries no validation latent picked).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from monai.networks.nets import VQVAE as MonaiVQVAE

from ctsynth.errors import InvalidArgument
from ctsynth.models.base import Batch, Family, FamilyConfig
from ctsynth.models.distributed import unwrap
from ctsynth.models.tiling import check_tiling, tiled_decode
from ctsynth.models.vae import reconstruction_quality

ADAM_BETAS = (0.5, 0.9)


@dataclass(frozen=True)
class VQVAEConfig(FamilyConfig):
    SUPPORTED_DIMS: ClassVar[tuple[int, ...]] = (2, 3)

    image_size: int = 256
    autoencoder_channels: tuple[int, ...] = (96, 192)  # one stride-2 level each: f = 2 ** levels
    num_res_layers: int = 2
    num_res_channels: int = 96
    num_embeddings: int = 256  # codebook size
    embedding_dim: int = 8  # channels of a latent (and of each code)
    commitment_cost: float = 0.25
    decay: float = 0.99  # EMA of the codebook
    learning_rate: float = 1e-4
    decode_tile: int = 0  # latent voxels per tile side when decoding; 0 decodes whole
    decode_overlap: float = 0.25

    @property
    def downsampling_factor(self) -> int:
        return 2 ** len(self.autoencoder_channels)

    @property
    def latent_channels(self) -> int:
        return self.embedding_dim

    def latent_shape(self) -> tuple[int, ...]:
        """(embedding_dim, *spatial / f)."""
        return (self.embedding_dim,) + (self.image_size // self.downsampling_factor,) * self.spatial_dims

    def validate(self) -> None:
        if len(self.autoencoder_channels) not in (2, 3) or any(c < 1 for c in self.autoencoder_channels):
            raise InvalidArgument("autoencoder_channels", f"{list(self.autoencoder_channels)}: use 2 positive levels "
                                                          "(downsampling factor 4) or 3 (factor 8)")
        if self.image_size % self.downsampling_factor:
            raise InvalidArgument("image_size", f"{self.image_size} is not a multiple of the downsampling "
                                                f"factor {self.downsampling_factor}")
        for name in ("num_res_layers", "num_res_channels", "embedding_dim"):
            if getattr(self, name) < 1:
                raise InvalidArgument(name, f"{getattr(self, name)} must be >= 1")
        if self.num_embeddings < 2:
            raise InvalidArgument("num_embeddings", f"{self.num_embeddings} must be >= 2")
        if not self.commitment_cost >= 0:
            raise InvalidArgument("commitment_cost", f"{self.commitment_cost} must be >= 0")
        if not 0 <= self.decay < 1:
            raise InvalidArgument("decay", f"{self.decay} is outside [0, 1)")
        if not self.learning_rate > 0:
            raise InvalidArgument("learning_rate", f"{self.learning_rate} must be > 0")
        check_tiling(self.decode_tile, self.decode_overlap)


def build_vqvae(config: VQVAEConfig) -> MonaiVQVAE:
    """MONAI's VQVAE: (N, channels, *spatial) -> codes (N, embedding_dim, *spatial/f) -> images."""
    levels = len(config.autoencoder_channels)
    return MonaiVQVAE(spatial_dims=config.spatial_dims, in_channels=config.channels, out_channels=config.channels,
                      channels=config.autoencoder_channels, num_res_layers=config.num_res_layers,
                      num_res_channels=config.num_res_channels,
                      downsample_parameters=((2, 4, 1, 1),) * levels, upsample_parameters=((2, 4, 1, 1, 0),) * levels,
                      num_embeddings=config.num_embeddings, embedding_dim=config.embedding_dim,
                      commitment_cost=config.commitment_cost, decay=config.decay)


def codebook_usage(indices: torch.Tensor, num_embeddings: int) -> dict[str, float]:
    """Perplexity exp(H(p)) of the code frequencies p and the count of unused codes."""
    counts = torch.bincount(indices.flatten(), minlength=num_embeddings).double()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {"perplexity": entropy.exp().item(), "dead_codes": float((counts == 0).sum().item())}


class VQVAE(Family):
    name = "vqvae"
    config_cls = VQVAEConfig
    description = ("First-stage VQ-VAE (MONAI, EMA codebook; seed 002) for slices or volumes: L1 + commitment "
                   "loss; reports PSNR, SSIM and codebook usage")
    validation_items = 32

    def __init__(self, config: VQVAEConfig, device: torch.device | str = "cpu", precision: str = "fp32"):
        super().__init__(config, device, precision)
        self.modules["autoencoder"] = build_vqvae(config).to(self.device)
        self.optimizers["autoencoder"] = torch.optim.Adam(self.modules["autoencoder"].parameters(),
                                                          lr=config.learning_rate, betas=ADAM_BETAS)

    def train_step(self, batch: Batch, step: int) -> dict[str, float]:
        images = batch.image.to(self.device)
        optimizer = self.optimizers["autoencoder"]
        optimizer.zero_grad(set_to_none=True)
        with self.precision.autocast():
            reconstruction, quantization = self.modules["autoencoder"](images)
            losses = {"l1": F.l1_loss(reconstruction.float(), images), "quantization": quantization.float().mean()}
            total = losses["l1"] + losses["quantization"]
        self.precision.backward(total)
        self.precision.step(optimizer)
        return {"loss": total.item(), **{name: value.item() for name, value in losses.items()},
                "perplexity": unwrap(self.modules["autoencoder"]).quantizer.perplexity.item()}

    @torch.no_grad()
    def validation_metrics(self, images: torch.Tensor) -> dict[str, float]:
        """Reconstruction PSNR (dB) and SSIM, and the codebook's use on these images."""
        autoencoder = unwrap(self.modules["autoencoder"])
        training, images = autoencoder.training, images.to(self.device).float()
        autoencoder.eval()  # in training mode, quantising moves the EMA codebook
        try:
            indices = autoencoder.index_quantize(images)
        finally:
            autoencoder.train(training)
        reconstruction = autoencoder.decode_samples(indices).float().clamp(0, 1)
        return {**reconstruction_quality(reconstruction, images),
                **codebook_usage(indices, self.config.num_embeddings)}

    @torch.no_grad()
    def sample(self, count: int, generator: torch.Generator, *, labels: torch.Tensor | None = None,
               sampler: Mapping[str, Any] | None = None) -> torch.Tensor:
        """Codes drawn uniformly from the codebook, decoded: no images of
        quality (a VQ-VAE is no generative model on its own; a prior over its
        codes is), but every family can sample."""
        if labels is not None:
            raise InvalidArgument("labels", "vqvae is unconditional; pass no labels")
        if sampler:
            raise InvalidArgument("sampler", f"vqvae has no sampler settings, got {sorted(sampler)}")
        shape = (count,) + self.config.latent_shape()[1:]
        indices = torch.randint(self.config.num_embeddings, shape, generator=generator, device=generator.device)
        autoencoder = unwrap(self.modules["autoencoder"])
        codes = autoencoder.quantizer.embed(indices.to(self.device))
        return tiled_decode(autoencoder.decode, codes, self.config.decode_tile,
                            self.config.decode_overlap).float().clamp(0, 1)
