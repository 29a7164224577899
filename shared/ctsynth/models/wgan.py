"""`wgan`: the Wasserstein GAN of seed 004 §2.2 and §3.5.2 (Arjovsky et al. 2017).

Seed 004's GAN networks with the critic output used as a score (no
sigmoid), RMSprop lr 5e-5, weights clipped to [-c, c] (c = 0.01) after
every critic update, and n_critic = 5 critic updates per generator update.

Batches: one `train_step` runs the n_critic critic updates and then the
generator update. It consumes n_critic batches (`batches_per_step`): critic
update i takes the i-th whole batch of real rows (`critic_slices`) and fresh
noise, so batch 64 reproduces seed 004's 64 real images per critic update;
the generator update draws one batch of fakes.
"""

from __future__ import annotations

from abc import abstractmethod
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ctsynth.models.base import Batch
from ctsynth.models.config_checks import check_at_least, check_positive
from ctsynth.models.gan import MLPGANConfig, mlp_modules
from ctsynth.models.gan_family import LatentGANFamily, to_signed
from ctsynth.models.gan_losses import critic_generator_loss, critic_loss

Critic = Callable[[torch.Tensor], torch.Tensor]
Terms = dict[str, torch.Tensor]


def critic_slices(images: torch.Tensor, n_critic: int) -> list[torch.Tensor]:
    """The rows each of `n_critic` critic steps consumes (n_critic x B, ...) -> n_critic x [(B, ...)].

    The loop hands a critic family n_critic batches per `train_step`
    (`batches_per_step`), so every critic update gets a whole batch of its
    own, as seed 004's loop (after Linder-Norén) feeds the critic.
    """
    if images.shape[0] % n_critic:
        raise ValueError(f"{images.shape[0]} rows do not split into {n_critic} critic batches")
    return list(images.chunk(n_critic))


class CriticFamily(LatentGANFamily):
    """The WGAN step: n_critic critic updates on batch slices, then one generator update.

    Subclasses give the loss terms (summed into each update's loss and
    reported, averaged over the critic updates) and the critic constraint.
    """

    @abstractmethod
    def critic_terms(self, critic: Critic, real: torch.Tensor, fake: torch.Tensor) -> Terms:
        """Loss terms of one critic update; real, fake (k, C, H, W) in [-1, 1]."""

    @abstractmethod
    def generator_terms(self, critic: Critic, fake: torch.Tensor, real: torch.Tensor) -> Terms:
        """Loss terms of the generator update; fake (B, C, H, W) with grad, real every row of the step."""

    def constrain(self, critic: nn.Module) -> None:
        """Called after every critic update (weight clipping in WGAN)."""

    @classmethod
    def batches_per_step(cls, config) -> int:
        return config.n_critic

    def train_step(self, batch: Batch, step: int) -> dict[str, float]:
        generator, critic = self.modules["generator"], self.modules["discriminator"]
        optimizers = self.optimizers
        reals = to_signed(batch.image.to(self.device))
        logs: dict[str, list[torch.Tensor]] = defaultdict(list)
        for real in critic_slices(reals, self.config.n_critic):
            optimizers["discriminator"].zero_grad(set_to_none=True)
            with self.precision.autocast():
                with torch.no_grad():
                    fake = generator(self.latent(real.shape[0]))
                terms = self.critic_terms(critic, real, fake)
            self._update("discriminator", terms, logs)
            self.constrain(critic)

        optimizers["generator"].zero_grad(set_to_none=True)
        with self.precision.autocast():
            terms = self.generator_terms(critic, generator(self.latent(reals.shape[0] // self.config.n_critic)), reals)
        self._update("generator", terms, logs)
        return {name: torch.stack(values).mean().item() for name, values in logs.items()}

    def _update(self, optimizer: str, terms: Terms, logs: dict[str, list[torch.Tensor]]) -> None:
        """Backpropagate the sum of `terms`, step `optimizer`, log each term."""
        self.precision.backward(sum(terms.values()))
        self.precision.step(self.optimizers[optimizer])
        for name, value in terms.items():
            logs[name].append(value.detach().float())


@dataclass(frozen=True)
class WGANConfig(MLPGANConfig):
    lr: float = 5e-5
    n_critic: int = 5
    clip_value: float = 0.01

    def validate(self) -> None:
        super().validate()
        check_positive(self, "lr", "clip_value")
        check_at_least(self, "n_critic", 1)


class WGAN(CriticFamily):
    name = "wgan"
    config_cls = WGANConfig
    description = "WGAN with weight clipping (seed 004 §3.5.2): RMSprop 5e-5, 5 critic steps per G step"

    def build_modules(self) -> dict[str, nn.Module]:
        return mlp_modules(self.config, self.image_shape())

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {name: torch.optim.RMSprop(self.modules[name].parameters(), lr=self.config.lr)
                for name in ("generator", "discriminator")}

    def critic_terms(self, critic: Critic, real: torch.Tensor, fake: torch.Tensor) -> Terms:
        """Minimise E f(G(z)) - E f(x), the negated Wasserstein estimate (seed 004 eq. 5)."""
        return {"d_loss": critic_loss(critic(real), critic(fake))}

    def generator_terms(self, critic: Critic, fake: torch.Tensor, real: torch.Tensor) -> Terms:
        return {"g_loss": critic_generator_loss(critic(fake))}

    @torch.no_grad()
    def constrain(self, critic: nn.Module) -> None:
        """Clip every critic weight to [-c, c] (Arjovsky et al. 2017, Algorithm 1 line 7)."""
        for parameter in critic.parameters():
            parameter.clamp_(-self.config.clip_value, self.config.clip_value)
