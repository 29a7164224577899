"""`gan`: the vanilla MLP GAN of seed 004 §2.1 and §3.5.1 (Goodfellow et al. 2014,
as in Linder-Norén's PyTorch-GAN that seed 004 trains).

Generator: z -> FC 128-256-512-1024 (batch norm from the second layer,
LeakyReLU 0.2) -> FC -> tanh; discriminator: FC 512-256 with LeakyReLU 0.2 ->
1 -> sigmoid, realised as a logit with BCE-with-logits (same maths, stable).
Adam lr 2e-4, betas (0.5, 0.999), latent 100 (seed 004 §3.4 experiment 1).
Each step updates G first on fresh fakes, then D on the same fakes detached
(the order of the code seed 004 ran).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ctsynth.models.base import Batch, FamilyConfig
from ctsynth.models.config_checks import check_betas, check_positive, check_widths
from ctsynth.models.gan_family import LatentGANFamily, adam_pair, to_signed
from ctsynth.models.gan_losses import d_logistic_loss, g_nonsaturating_loss
from ctsynth.models.gan_networks import MLPDiscriminator, MLPGenerator


@dataclass(frozen=True)
class MLPGANConfig(FamilyConfig):
    """The fully connected architecture seed 004 shares between GAN and WGAN (§3.5.1-3.5.2)."""

    latent_dim: int = 100
    generator_hidden: tuple[int, ...] = (128, 256, 512, 1024)
    discriminator_hidden: tuple[int, ...] = (512, 256)

    def validate(self) -> None:
        check_positive(self, "latent_dim")
        check_widths("generator_hidden", self.generator_hidden)
        check_widths("discriminator_hidden", self.discriminator_hidden)


@dataclass(frozen=True)
class GANConfig(MLPGANConfig):
    lr: float = 2e-4
    betas: tuple[float, ...] = (0.5, 0.999)

    def validate(self) -> None:
        super().validate()
        check_positive(self, "lr")
        check_betas(self.betas)


def mlp_modules(config: MLPGANConfig, shape: tuple[int, int, int]) -> dict[str, nn.Module]:
    """Seed 004's MLP generator and discriminator, shared by GAN and WGAN (§3.5.2)."""
    return {"generator": MLPGenerator(config.latent_dim, config.generator_hidden, shape),
            "discriminator": MLPDiscriminator(math.prod(shape), config.discriminator_hidden)}


class VanillaGAN(LatentGANFamily):
    name = "gan"
    config_cls = GANConfig
    description = "Vanilla MLP GAN (seed 004 §3.5.1): BCE minimax, Adam 2e-4"

    def build_modules(self) -> dict[str, nn.Module]:
        return mlp_modules(self.config, self.image_shape())

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return adam_pair(self.modules, self.config.lr, self.config.lr, self.config.betas)

    def train_step(self, batch: Batch, step: int) -> dict[str, float]:
        generator, discriminator = self.modules["generator"], self.modules["discriminator"]
        optimizers = self.optimizers
        real = to_signed(batch.image.to(self.device))

        optimizers["generator"].zero_grad(set_to_none=True)
        with self.precision.autocast():
            fake = generator(self.latent(real.shape[0]))
            g_loss = g_nonsaturating_loss(discriminator(fake))
        self.precision.backward(g_loss)
        self.precision.step(optimizers["generator"])

        optimizers["discriminator"].zero_grad(set_to_none=True)
        with self.precision.autocast():
            d_loss = d_logistic_loss(discriminator(real), discriminator(fake.detach()))
        self.precision.backward(d_loss)
        self.precision.step(optimizers["discriminator"])
        return {"g_loss": g_loss.item(), "d_loss": d_loss.item()}
