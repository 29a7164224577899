"""`wgan_gp`: WGAN with gradient penalty, seed 000 §4.1.3 (iteration 3 of the
custom CT GAN; Gulrajani et al. 2017).

Critic loss E f(G(z)) - E f(x) + lambda E (||grad f(x_hat)||_2 - 1)^2 with
x_hat on lines between real and fake samples (lambda = 10); n_critic = 5
critic updates per generator update, each on a batch of its own as in `wgan`; Adam lr
1e-4, betas (0, 0.9) (Gulrajani et al. Algorithm 1). The generator is the
upsample + conv generator of `dcgan` with instance norm instead of batch
norm (seed 000 §4.1.3); the critic is the strided-conv discriminator with
no norm and no dropout, since the penalty is taken per sample.

Optional L1 term (seed 000 §4.1.3 "L1 reconstruction loss", weight
`l1_weight`, off at 0): noise-driven samples have no paired real image, so
the L1 is taken between the batch-mean generated image and the batch-mean
real image. It pulls the average anatomy (body outline, lung fields) toward
the data without pulling every sample toward one image, which would
collapse the modes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ctsynth.models.config_checks import check_at_least, check_positive
from ctsynth.models.dcgan import ConvGANConfig
from ctsynth.models.gan_family import adam_pair
from ctsynth.models.gan_losses import critic_generator_loss, critic_loss, gradient_penalty
from ctsynth.models.gan_networks import ConvDiscriminator, ConvGenerator
from ctsynth.models.wgan import Critic, CriticFamily, Terms


@dataclass(frozen=True)
class WGANGPConfig(ConvGANConfig):
    generator_widths: tuple[int, ...] = (256, 128, 64, 32)
    discriminator_widths: tuple[int, ...] = (64, 128, 256, 512)
    lr: float = 1e-4
    betas: tuple[float, ...] = (0.0, 0.9)
    gp_weight: float = 10.0
    l1_weight: float = 0.0
    n_critic: int = 5

    def validate(self) -> None:
        super().validate()
        check_positive(self, "gp_weight")
        check_at_least(self, "l1_weight", 0.0)
        check_at_least(self, "n_critic", 1)


class WGANGP(CriticFamily):
    name = "wgan_gp"
    config_cls = WGANGPConfig
    description = "WGAN-GP (seed 000 §4.1.3): conv generator with instance norm, gradient penalty 10, Adam 1e-4"

    def build_modules(self) -> dict[str, nn.Module]:
        config, shape = self.config, self.image_shape()
        return {"generator": ConvGenerator(config.latent_dim, config.generator_widths, shape, norm="instance"),
                "discriminator": ConvDiscriminator(shape, config.discriminator_widths, norm="none", dropout=0.0)}

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return adam_pair(self.modules, self.config.lr, self.config.lr, self.config.betas)

    def critic_terms(self, critic: Critic, real: torch.Tensor, fake: torch.Tensor) -> Terms:
        alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
        return {"d_loss": critic_loss(critic(real), critic(fake)),
                "d_gp": self.config.gp_weight * gradient_penalty(critic, real, fake, alpha).mean()}

    def generator_terms(self, critic: Critic, fake: torch.Tensor, real: torch.Tensor) -> Terms:
        terms = {"g_loss": critic_generator_loss(critic(fake))}
        if self.config.l1_weight:
            l1 = (fake.float().mean(0) - real.float().mean(0)).abs().mean()
            terms["g_l1"] = self.config.l1_weight * l1
        return terms
