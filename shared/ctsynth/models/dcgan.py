"""`dcgan`: the DCGAN of seed 004 §2.3 and §3.5.3 (Radford et al. 2015, in
Linder-Norén's variant that seed 004 trains).

Generator: z -> FC to 128 x H/4 x W/4 -> batch norm -> [nearest upsample x2,
conv 3x3, batch norm, LeakyReLU 0.2] with 128 then 64 maps -> conv 3x3 ->
tanh. Discriminator: 4 blocks [conv 3x3 stride 2, LeakyReLU 0.2, dropout
0.25, batch norm except on block 1] with 16-32-64-128 maps -> FC -> sigmoid
(as a logit in BCE-with-logits). Adam lr 2e-4, betas (0.5, 0.999), latent 100;
weights initialised N(0, 0.02). Same step order and losses as `gan`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ctsynth.errors import InvalidArgument
from ctsynth.models.base import FamilyConfig
from ctsynth.models.config_checks import check_betas, check_divides, check_positive, check_widths
from ctsynth.models.gan import VanillaGAN
from ctsynth.models.gan_networks import ConvDiscriminator, ConvGenerator, init_dcgan_weights


@dataclass(frozen=True)
class ConvGANConfig(FamilyConfig):
    """A convolutional generator (upsample + conv) and a strided-conv discriminator."""

    latent_dim: int = 100
    generator_widths: tuple[int, ...] = (128, 128, 64)
    discriminator_widths: tuple[int, ...] = (16, 32, 64, 128)
    lr: float = 2e-4
    betas: tuple[float, ...] = (0.5, 0.999)

    def validate(self) -> None:
        check_positive(self, "latent_dim", "lr")
        check_betas(self.betas)
        check_widths("generator_widths", self.generator_widths)
        check_widths("discriminator_widths", self.discriminator_widths)
        check_divides(self, "generator_widths", 2 ** (len(self.generator_widths) - 1))
        check_divides(self, "discriminator_widths", 2 ** len(self.discriminator_widths))


@dataclass(frozen=True)
class DCGANConfig(ConvGANConfig):
    dropout: float = 0.25

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.dropout < 1:
            raise InvalidArgument("dropout", f"{self.dropout} must be in [0, 1)")


class DCGAN(VanillaGAN):
    """The vanilla GAN's losses, optimizers and step with convolutional networks (seed 004 §2.3)."""

    name = "dcgan"
    config_cls = DCGANConfig
    description = "DCGAN (seed 004 §3.5.3): upsample+conv generator, strided-conv discriminator, Adam 2e-4"

    def build_modules(self) -> dict[str, nn.Module]:
        config, shape = self.config, self.image_shape()
        modules = {"generator": ConvGenerator(config.latent_dim, config.generator_widths, shape, norm="batch"),
                   "discriminator": ConvDiscriminator(shape, config.discriminator_widths, norm="batch",
                                                      dropout=config.dropout)}
        for module in modules.values():
            init_dcgan_weights(module)
        return modules
