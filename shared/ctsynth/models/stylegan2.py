"""`stylegan2`: a style-based GAN in pure PyTorch (Karras et al. 2020, "Analyzing and
Improving the Image Quality of StyleGAN"; training as StyleGAN2-ADA, Karras et al.
2020b), with the settings seed 000 §4.4.2 used for its StyleGAN3 run: Adam betas
(0, 0.99), eps 1e-8, lr G 0.0025 / D 0.002, R1 gamma 8, ADA target 0.6.

The networks (8 mapping layers at lr x 0.01, synthesis, discriminator) live in
`stylegan2_networks`; this module holds the config and the training. Losses:
non-saturating logistic; lazy R1 every `r1_interval` steps scaled by the
interval; optional lazy path-length regularisation. EMA generator with a
half-life of `ema_kimg` and ramp-up. ADA on every image D sees. The lazy terms
are added to that step's main loss (one optimizer step per network per
`train_step`), so the learning rates are not rescaled for extra regularisation steps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ctsynth.errors import InvalidArgument
from ctsynth.models.augment import AdaptiveAugment
from ctsynth.models.base import Batch, FamilyConfig
from ctsynth.models.config_checks import check_at_least, check_betas, check_positive, check_power_of_two
from ctsynth.models.distributed import world_size
from ctsynth.models.ema import ema_beta, make_ema, update_ema
from ctsynth.models.gan_family import GANFamily, adam_pair, to_signed, to_unit
from ctsynth.models.gan_losses import d_logistic_loss, g_nonsaturating_loss, r1_penalty
from ctsynth.models.stylegan2_networks import (ARCHITECTURES, NOISE_MODES, RESAMPLERS, SYNTHESES, StyleDiscriminator,
                                               StyleGenerator)


@dataclass(frozen=True)
class StyleGAN2Config(FamilyConfig):
    synthesis: str = "stylegan2"
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    mapping_lr_multiplier: float = 0.01
    channel_base: int = 16384  # channels at resolution r: min(channel_base // r, channel_max)
    channel_max: int = 512
    architecture: str = "skip"
    resample: str = "bilinear"
    conditional: bool = False
    mbstd_group: int = 4
    lr_generator: float = 0.0025
    lr_discriminator: float = 0.002
    betas: tuple[float, ...] = (0.0, 0.99)
    r1_gamma: float = 8.0
    r1_interval: int = 16
    pl_weight: float = 0.0
    pl_interval: int = 4
    ema_kimg: float = 10.0
    ema_rampup: float | None = 0.05
    ada: bool = True
    ada_target: float = 0.6
    ada_kimg: float = 500.0
    ada_interval: int = 4
    ada_rotate90: bool = False

    def validate(self) -> None:
        choices = {"synthesis": tuple(SYNTHESES), "architecture": ARCHITECTURES, "resample": RESAMPLERS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise InvalidArgument(name, f"{getattr(self, name)!r}; use one of {', '.join(allowed)}")
        check_power_of_two("image_size", self.image_size)
        check_positive(self, "z_dim", "w_dim", "mapping_layers", "mapping_lr_multiplier", "channel_max",
                       "lr_generator", "lr_discriminator", "ema_kimg", "ada_kimg")
        check_at_least(self, "channel_base", self.image_size)
        for name in ("mbstd_group", "r1_interval", "pl_interval", "ada_interval"):
            check_at_least(self, name, 1)
        for name in ("r1_gamma", "pl_weight"):
            check_at_least(self, name, 0.0)
        if self.ema_rampup is not None and not self.ema_rampup > 0:
            raise InvalidArgument("ema_rampup", f"{self.ema_rampup} must be > 0 (or null for no ramp-up)")
        if not 0 < self.ada_target < 1:
            raise InvalidArgument("ada_target", f"{self.ada_target} must be in (0, 1)")
        check_betas(self.betas)

    def channels_at(self, resolution: int) -> int:
        return min(self.channel_base // resolution, self.channel_max)


class PathLengthMean(nn.Module):
    """Running mean a of path lengths for StyleGAN2 eq. 4, a checkpointed buffer."""

    def __init__(self, decay: float = 0.01):
        super().__init__()
        self.decay = decay
        self.register_buffer("mean", torch.zeros(()))

    def penalty(self, lengths: torch.Tensor) -> torch.Tensor:
        """(N,) lengths -> mean (length - a)^2 after moving a toward their mean."""
        mean = self.mean.lerp(lengths.detach().mean(), self.decay)
        self.mean.copy_(mean)
        return (lengths - mean).square().mean()


# --- the family ----------------------------------------------------------------------------

class StyleGAN2(GANFamily):
    name = "stylegan2"
    config_cls = StyleGAN2Config
    description = "StyleGAN2 with ADA, lazy R1 (gamma 8) and EMA (seed 000 §4.2.1/§4.4.2)"
    sampler_keys = frozenset({"truncation_psi", "noise_mode"})

    @classmethod
    def conditional(cls, config: FamilyConfig) -> bool:
        return config.conditional

    def build_modules(self) -> dict[str, nn.Module]:
        config = self.config
        generator = StyleGenerator(config)
        modules = {"generator": generator, "discriminator": StyleDiscriminator(config), "ema": make_ema(generator)}
        if config.ada:
            modules["augment"] = AdaptiveAugment(config.ada_target, config.ada_kimg, config.ada_rotate90)
        if config.pl_weight:
            modules["path_length"] = PathLengthMean()
        return modules

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        config = self.config  # Adam eps 1e-8 (seed 000 §4.4.2) is torch's default
        return adam_pair(self.modules, config.lr_generator, config.lr_discriminator, config.betas)

    def latent(self, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.noise((count, self.config.z_dim), generator)

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        """ADA on what D sees, real and fake alike (identity when ADA is off)."""
        return self.modules["augment"](images) if "augment" in self.modules else images

    def train_step(self, batch: Batch, step: int) -> dict[str, float]:
        """G update (+ lazy path length), D update (+ lazy R1), ADA, EMA. `step` counts from 0, so
        (step + 1) x global batch images have been seen after it (EMA ramp-up, ADA speed)."""
        config = self.config
        generator, discriminator = self.modules["generator"], self.modules["discriminator"]
        labels = self.training_labels(batch)
        real = to_signed(batch.image.to(self.device))
        count = real.shape[0]
        logs: dict[str, torch.Tensor] = {}

        self.optimizers["generator"].zero_grad(set_to_none=True)
        with self.precision.autocast():
            fake, _ = generator(self.latent(count), labels, update_w_avg=True)
            logs["g_loss"] = g_nonsaturating_loss(discriminator(self.augment(fake), labels))
            loss = logs["g_loss"]
            if config.pl_weight and step % config.pl_interval == 0:
                logs["g_pl"] = config.pl_weight * self.path_length_penalty(generator, count, labels)
                loss = loss + logs["g_pl"] * config.pl_interval
        self.precision.backward(loss)
        self.precision.step(self.optimizers["generator"])

        self.optimizers["discriminator"].zero_grad(set_to_none=True)
        do_r1 = config.r1_gamma > 0 and step % config.r1_interval == 0
        real = real.detach().requires_grad_(do_r1)
        with self.precision.autocast():
            with torch.no_grad():
                fake, _ = generator(self.latent(count), labels)
            real_logits = discriminator(self.augment(real), labels)
            logs["d_loss"] = d_logistic_loss(real_logits, discriminator(self.augment(fake), labels))
            loss = logs["d_loss"]
        if do_r1:
            logs["d_r1"] = config.r1_gamma / 2 * r1_penalty(real_logits, real).mean()
            loss = loss + logs["d_r1"] * config.r1_interval
        self.precision.backward(loss)
        self.precision.step(self.optimizers["discriminator"])

        images = count * world_size()
        self.adapt_augmentation(real_logits, step, images)
        update_ema(self.modules["ema"], generator,
                   ema_beta(images, (step + 1) * images, config.ema_kimg, config.ema_rampup))
        result = {name: value.item() for name, value in logs.items()}
        if "augment" in self.modules:
            result["ada_p"] = self.modules["augment"].p.item()
        return result

    def path_length_penalty(self, generator: nn.Module, count: int, labels: torch.Tensor | None) -> torch.Tensor:
        """StyleGAN2 eq. 4 on half a batch: E (||J_w^T y||_2 - a)^2, y ~ N(0, I) / sqrt(H W)."""
        half = max(1, count // 2)
        fake, ws = generator(self.latent(half), None if labels is None else labels[:half])
        y = torch.randn_like(fake) / math.sqrt(fake.shape[2] * fake.shape[3])
        (grad,) = torch.autograd.grad((fake * y).float().sum(), ws, create_graph=True)
        return self.modules["path_length"].penalty(grad.float().square().sum(2).mean(1).sqrt())

    def adapt_augmentation(self, real_logits: torch.Tensor, step: int, images: int) -> None:
        """ADA bookkeeping: observe sign(D(real)); every `ada_interval` steps move p."""
        if "augment" not in self.modules:
            return
        augment = self.modules["augment"]
        augment.observe(real_logits)
        if (step + 1) % self.config.ada_interval == 0:
            augment.adjust(images * self.config.ada_interval)

    def generate(self, count: int, generator: torch.Generator, labels: torch.Tensor | None,
                 options: Mapping[str, Any]) -> torch.Tensor:
        """Samples from the EMA generator; options: truncation_psi in [0, 1] (default 1),
        noise_mode 'random' (from `generator`, default), 'const' or 'none'."""
        psi = options.get("truncation_psi", 1.0)
        if isinstance(psi, bool) or not isinstance(psi, (int, float)) or not 0 <= psi <= 1:
            raise InvalidArgument("truncation_psi", f"{psi!r} must be a number in [0, 1]")
        noise_mode = options.get("noise_mode", "random")
        if noise_mode not in NOISE_MODES:
            raise InvalidArgument("noise_mode", f"{noise_mode!r}; use one of {', '.join(NOISE_MODES)}")
        image, _ = self.modules["ema"](self.latent(count, generator), labels, float(psi), noise_mode, generator)
        return to_unit(image)
