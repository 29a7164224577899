"""`vae`: the first stage of seed 000's latent diffusion (§4.2.2, §4.4.3), a
KL-regularised autoencoder (MONAI `AutoencoderKL`, Rombach et al. 2022) for
single-channel CT slices or, with `spatial_dims` 3, volumes (MAISI's first
stage is a 3D KL autoencoder too, at 4x per axis).

Seed 000 trains it with CompVis's LPIPSWithDiscriminator: reconstruction
loss, KL weight 1e-6 and a patch discriminator switched on at `disc_start`
(50 001). Here: L1 reconstruction + `kl_weight` x KL + optional perceptual
loss (MONAI `PerceptualLoss`, ResNet-50 features, only from a local weights
file: nothing is downloaded) + optional patch-adversarial loss (MONAI
`PatchDiscriminator` and `PatchAdversarialLoss`, hinge or least squares) from
step `disc_start`. Loss scales follow MONAI's generative tutorials (mean L1,
KL summed over latent elements and averaged over the batch, a fixed
adversarial weight) instead of CompVis's per-image sums with an adaptive
discriminator weight. Architecture defaults are seed 000's first stage:
base 64 channels x (1, 2, 4), one residual block per level, 4 latent
channels (downsampling factor f = 4), no attention in the levels. In 3D the
perceptual loss is MONAI's 2.5D one (the 2D ResNet-50 on slices of the three
planes, `is_fake_3d`).

Large volumes decode tile by tile (`decode_tile` latent voxels a side, see
`tiling`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from monai.losses import PatchAdversarialLoss, PerceptualLoss
from monai.metrics import PSNRMetric, SSIMMetric
from monai.networks.nets import AutoencoderKL, PatchDiscriminator

from ctsynth.diffusion.samplers import initial_noise
from ctsynth.errors import InvalidArgument
from ctsynth.models.base import Batch, Family, FamilyConfig
from ctsynth.models.distributed import unwrap
from ctsynth.models.tiling import check_tiling, tiled_decode

ADVERSARIAL = ("none", "hinge", "least_squares")
ADAM_BETAS = (0.5, 0.9)  # CompVis AutoencoderKL, both optimizers


@dataclass(frozen=True)
class VAEConfig(FamilyConfig):
    SUPPORTED_DIMS: ClassVar[tuple[int, ...]] = (2, 3)

    image_size: int = 256
    autoencoder_channels: tuple[int, ...] = (64, 128, 256)  # one level per entry: f = 2 ** (levels - 1)
    num_res_blocks: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 32
    mid_attention: bool = True  # the encoder's and decoder's middle self-attention (CompVis keeps it)
    kl_weight: float = 1e-6
    learning_rate: float = 7.2e-5  # seed 000's base 4.5e-6 x batch 16 (CompVis scales by batch size)
    perceptual_weights: str | None = None  # local torchvision ResNet-50 state dict; None = no perceptual loss
    perceptual_weight: float = 0.001
    adversarial: str = "hinge"  # none | hinge | least_squares
    adversarial_weight: float = 0.01
    disc_start: int = 50001
    disc_channels: int = 64
    disc_layers: int = 3
    decode_tile: int = 0  # latent voxels per tile side when decoding; 0 decodes whole
    decode_overlap: float = 0.25  # of a tile, shared with its neighbours

    @property
    def downsampling_factor(self) -> int:
        return 2 ** (len(self.autoencoder_channels) - 1)

    def latent_shape(self) -> tuple[int, ...]:
        """(latent_channels, *spatial / f)."""
        side = self.image_size // self.downsampling_factor
        return (self.latent_channels,) + (side,) * self.spatial_dims

    def validate(self) -> None:
        if len(self.autoencoder_channels) not in (3, 4):
            raise InvalidArgument("autoencoder_channels", f"{list(self.autoencoder_channels)}: use 3 levels "
                                                          "(downsampling factor 4) or 4 (factor 8)")
        if self.norm_num_groups < 1:
            raise InvalidArgument("norm_num_groups", f"{self.norm_num_groups} must be >= 1")
        if any(c < 1 or c % self.norm_num_groups for c in self.autoencoder_channels):
            raise InvalidArgument("autoencoder_channels", f"{list(self.autoencoder_channels)} must be positive "
                                                          f"multiples of norm_num_groups {self.norm_num_groups}")
        if self.image_size % self.downsampling_factor:
            raise InvalidArgument("image_size", f"{self.image_size} is not a multiple of the downsampling "
                                                f"factor {self.downsampling_factor}")
        for name in ("num_res_blocks", "latent_channels", "disc_channels", "disc_layers"):
            if getattr(self, name) < 1:
                raise InvalidArgument(name, f"{getattr(self, name)} must be >= 1")
        check_tiling(self.decode_tile, self.decode_overlap)
        for name in ("kl_weight", "perceptual_weight", "adversarial_weight", "disc_start"):
            if not getattr(self, name) >= 0:
                raise InvalidArgument(name, f"{getattr(self, name)} must be >= 0")
        if not self.learning_rate > 0:
            raise InvalidArgument("learning_rate", f"{self.learning_rate} must be > 0")
        if self.adversarial not in ADVERSARIAL:
            raise InvalidArgument("adversarial", f"{self.adversarial!r}; use one of {', '.join(ADVERSARIAL)}")
        if self.adversarial != "none" and self.image_size < 2 ** (self.disc_layers + 2):
            raise InvalidArgument("disc_layers", f"{self.disc_layers} layers need image_size >= "
                                                 f"{2 ** (self.disc_layers + 2)}")


def build_autoencoder(config: VAEConfig) -> AutoencoderKL:
    """MONAI's AutoencoderKL for (N, channels, *spatial) images -> (N, latent_channels, *spatial/f) latents."""
    return AutoencoderKL(spatial_dims=config.spatial_dims, in_channels=config.channels, out_channels=config.channels,
                         channels=config.autoencoder_channels, num_res_blocks=config.num_res_blocks,
                         attention_levels=(False,) * len(config.autoencoder_channels),
                         latent_channels=config.latent_channels, norm_num_groups=config.norm_num_groups,
                         with_encoder_nonlocal_attn=config.mid_attention,
                         with_decoder_nonlocal_attn=config.mid_attention)


def reconstruction_quality(reconstruction: torch.Tensor, images: torch.Tensor) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM of reconstructions of images (N, C, *spatial)
    in [0, 1]; the SSIM window fits the smallest side."""
    side = min(images.shape[2:])
    ssim = SSIMMetric(spatial_dims=images.dim() - 2, data_range=1.0, win_size=min(11, side - 1 + side % 2))
    return {"psnr": PSNRMetric(max_val=1.0)(reconstruction, images).mean().item(),
            "ssim": ssim(reconstruction, images).mean().item()}


def kl_divergence(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) summed over latent elements, mean over the batch (Kingma & Welling 2014)."""
    kl = 0.5 * (z_mu.pow(2) + z_sigma.pow(2) - torch.log(z_sigma.pow(2)) - 1)
    return kl.flatten(1).sum(1).mean()


class VAE(Family):
    name = "vae"
    config_cls = VAEConfig
    description = ("First-stage AutoencoderKL for latent diffusion (seed 000 §4.4.3): "
                   "L1 + KL + optional perceptual and patch-adversarial losses")

    def __init__(self, config: VAEConfig, device: torch.device | str = "cpu", precision: str = "fp32"):
        super().__init__(config, device, precision)
        self.modules["autoencoder"] = build_autoencoder(config).to(self.device)
        self.optimizers["autoencoder"] = torch.optim.Adam(self.modules["autoencoder"].parameters(),
                                                          lr=config.learning_rate, betas=ADAM_BETAS)
        if config.adversarial != "none":
            self.modules["discriminator"] = PatchDiscriminator(
                spatial_dims=config.spatial_dims, num_layers_d=config.disc_layers, channels=config.disc_channels,
                in_channels=config.channels, out_channels=1).to(self.device)
            self.optimizers["discriminator"] = torch.optim.Adam(self.modules["discriminator"].parameters(),
                                                                lr=config.learning_rate, betas=ADAM_BETAS)
            self.adversarial_loss = PatchAdversarialLoss(criterion=config.adversarial)
        self.perceptual = self._perceptual_loss()

    def _perceptual_loss(self) -> PerceptualLoss | None:
        """Frozen ResNet-50 features from the configured local file (not saved with the model)."""
        path = self.config.perceptual_weights
        if path is None:
            return None
        if not os.path.isfile(path):
            raise InvalidArgument("perceptual_weights", f"{path} is not a readable file")
        return PerceptualLoss(spatial_dims=self.config.spatial_dims, network_type="resnet50", pretrained=True,
                              pretrained_path=path, is_fake_3d=self.config.spatial_dims == 3).to(self.device)

    def train_step(self, batch: Batch, step: int) -> dict[str, float]:
        config = self.config
        images = batch.image.to(self.device)
        adversarial = config.adversarial != "none" and step >= config.disc_start
        optimizer = self.optimizers["autoencoder"]
        optimizer.zero_grad(set_to_none=True)
        with self.precision.autocast():
            reconstruction, z_mu, z_sigma = self.modules["autoencoder"](images)
            losses = {"l1": F.l1_loss(reconstruction.float(), images),
                      "kl": kl_divergence(z_mu.float(), z_sigma.float())}
            total = losses["l1"] + config.kl_weight * losses["kl"]
            if self.perceptual is not None:
                losses["perceptual"] = self.perceptual(reconstruction.float(), images)
                total = total + config.perceptual_weight * losses["perceptual"]
            if adversarial:
                logits = self.modules["discriminator"](reconstruction)[-1]
                losses["adversarial_g"] = self.adversarial_loss(logits.float(), target_is_real=True,
                                                                for_discriminator=False)
                total = total + config.adversarial_weight * losses["adversarial_g"]
        self.precision.backward(total)
        self.precision.step(optimizer)
        result = {"loss": total.item(), **{name: value.item() for name, value in losses.items()}}
        if config.adversarial != "none":
            result.setdefault("adversarial_g", 0.0)
            result["adversarial_d"] = self._discriminator_step(images, reconstruction.detach()) if adversarial else 0.0
        return result

    def _discriminator_step(self, images: torch.Tensor, reconstruction: torch.Tensor) -> float:
        """Real and reconstructed images in one forward pass (one DDP forward per backward)."""
        optimizer = self.optimizers["discriminator"]
        optimizer.zero_grad(set_to_none=True)
        with self.precision.autocast():
            logits = self.modules["discriminator"](torch.cat([images, reconstruction]))[-1].float()
            real, fake = logits.chunk(2)
            loss = 0.5 * (self.adversarial_loss(real, target_is_real=True, for_discriminator=True)
                          + self.adversarial_loss(fake, target_is_real=False, for_discriminator=True))
        self.precision.backward(loss)
        self.precision.step(optimizer)
        return loss.item()

    validation_items = 32

    @torch.no_grad()
    def validation_metrics(self, images: torch.Tensor) -> dict[str, float]:
        """PSNR (dB) and SSIM of images in [0, 1] against their reconstructions
        from the posterior mean (the SSIM window fits the smallest side)."""
        images = images.to(self.device).float()
        reconstruction = unwrap(self.modules["autoencoder"]).reconstruct(images).clamp(0, 1)
        return reconstruction_quality(reconstruction, images)

    @torch.no_grad()
    def sample(self, count: int, generator: torch.Generator, *, labels: torch.Tensor | None = None,
               sampler: Mapping[str, Any] | None = None) -> torch.Tensor:
        """Decoded z ~ N(0, I). The KL weight is tiny, so the latents of real
        images are not N(0, I) and these are no images of quality: the VAE is
        no generative model; this exists so that every family can sample."""
        if labels is not None:
            raise InvalidArgument("labels", "vae is unconditional; pass no labels")
        if sampler:
            raise InvalidArgument("sampler", f"vae has no sampler settings, got {sorted(sampler)}")
        latents = initial_noise((count, *self.config.latent_shape()), generator, self.device)
        autoencoder = unwrap(self.modules["autoencoder"])
        return tiled_decode(autoencoder.decode, latents, self.config.decode_tile,
                            self.config.decode_overlap).float().clamp(0, 1)
