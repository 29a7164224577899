"""The base of the GAN families: seeded construction, labels, latents, the
sampling frame, the value mapping between a family's boundary ([0, 1]) and
its tanh generators ([-1, 1]), and the Adam pair of generator and
discriminator.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import nn

from ctsynth.errors import InvalidArgument
from ctsynth.models.base import Batch, Family, FamilyConfig
from ctsynth.models.distributed import unwrap
from ctsynth.models.gan_networks import NUM_CLASSES


def to_signed(image: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1], the range of a tanh generator."""
    return image * 2 - 1


def to_unit(image: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped (StyleGAN outputs are not bounded)."""
    return ((image + 1) / 2).clamp(0, 1)


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Evaluate `module` (batch-norm running stats, no dropout), then restore its mode."""
    training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(training)


def adam_pair(modules: Mapping[str, nn.Module], lr_generator: float, lr_discriminator: float,
              betas: Sequence[float]) -> dict[str, torch.optim.Optimizer]:
    """Adam for "generator" and "discriminator"; two learning rates are TTUR (Heusel et al. 2017)."""
    return {name: torch.optim.Adam(modules[name].parameters(), lr=lr, betas=tuple(betas))
            for name, lr in (("generator", lr_generator), ("discriminator", lr_discriminator))}


class GANFamily(Family):
    """What the GAN families share: seeded construction, labels, latents and
    the sampling frame (eval mode, EMA when present, draws only from the
    caller's generator, output in [0, 1]).

    Subclasses implement `build_modules`, `build_optimizers`, `train_step` and
    `generate`; `sampler_keys` names the sampler settings they accept.
    """

    sampler_keys: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: FamilyConfig, device: torch.device | str = "cpu", precision: str = "fp32"):
        super().__init__(config, device, precision)
        with torch.random.fork_rng(devices=[]):  # weights from config.seed; the caller's RNG untouched
            torch.manual_seed(config.seed)
            self.modules = {name: module.to(self.device) for name, module in self.build_modules().items()}
        self.optimizers = self.build_optimizers()

    @abstractmethod
    def build_modules(self) -> dict[str, nn.Module]:
        """Every network and state-holding module, built on the CPU."""

    @abstractmethod
    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimizers over `self.modules` (already on the device)."""

    @abstractmethod
    def generate(self, count: int, generator: torch.Generator, labels: torch.Tensor | None,
                 options: Mapping[str, Any]) -> torch.Tensor:
        """Samples in [0, 1] (count, C(+1), H, W), all randomness drawn from `generator`."""

    @property
    def trainable(self) -> tuple[str, ...]:
        """Modules with parameters to optimise: not the frozen EMA, nor the ADA/statistics
        modules (DDP refuses a module without trainable parameters)."""
        return tuple(name for name, module in self.modules.items()
                     if any(p.requires_grad for p in module.parameters()))

    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of a generated image."""
        return (self.config.channels, self.config.image_size, self.config.image_size)

    def noise(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
        """N(0, 1) noise on the family's device, from `generator` (sampling) or the global RNG (training)."""
        source = generator.device if generator is not None else self.device
        return torch.randn(shape, generator=generator, device=source).to(self.device)

    def training_labels(self, batch: Batch) -> torch.Tensor | None:
        """The batch's labels for a conditional family, None otherwise."""
        if not self.conditional(self.config):
            return None
        if batch.label is None:
            raise InvalidArgument("label", f"{self.name} is conditional; batches need labels (0 = no tumor, 1 = tumor)")
        return batch.label.to(self.device, torch.long)

    def sampler_options(self, sampler: Mapping[str, Any], truncation_psi: float | None) -> dict[str, Any]:
        """Only the settings `sampler_keys` names (a style GAN's truncation)."""
        for key in sampler:
            if key not in self.sampler_keys:
                raise InvalidArgument(f"sampler.{key}", f"{self.name} is not a diffusion model")
        if truncation_psi is not None and "truncation_psi" not in self.sampler_keys:
            raise InvalidArgument("truncation_psi", f"{self.name} is not a style GAN")
        return {**sampler, **({} if truncation_psi is None else {"truncation_psi": truncation_psi})}

    @torch.no_grad()
    def sample(self, count: int, generator: torch.Generator, *, labels: torch.Tensor | None = None,
               sampler: Mapping[str, Any] | None = None) -> torch.Tensor:
        return self.generate(count, generator, self._sampling_labels(count, labels), self.sample_options(sampler))

    def sample_options(self, sampler: Mapping[str, Any] | None) -> dict[str, Any]:
        """`sample`'s settings, refused where this family has no such setting."""
        options = dict(sampler or {})
        unknown = sorted(set(options) - self.sampler_keys)
        if unknown:
            known = ", ".join(sorted(self.sampler_keys)) or "none"
            raise InvalidArgument("sampler", f"{unknown[0]!r} is not a {self.name} sampler setting; known: {known}")
        return options

    def _sampling_labels(self, count: int, labels: torch.Tensor | None) -> torch.Tensor | None:
        if not self.conditional(self.config):
            if labels is not None:
                raise InvalidArgument("condition", f"{self.name} is unconditional; pass no labels")
            return None
        if labels is None:
            raise InvalidArgument("condition", f"{self.name} is conditional; pass labels (count,) of 0/1")
        labels = torch.as_tensor(labels, device=self.device).long()
        if labels.shape != (count,) or bool(((labels < 0) | (labels >= NUM_CLASSES)).any()):
            raise InvalidArgument("condition", f"labels must be ({count},) of 0 (no tumor) or 1 (tumor)")
        return labels


class LatentGANFamily(GANFamily):
    """Families whose generator maps z ~ N(0, I) (N, latent_dim) to images (N, C, H, W) in [-1, 1]."""

    def latent(self, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """z ~ N(0, I), (count, latent_dim)."""
        return self.noise((count, self.config.latent_dim), generator)

    def generate(self, count: int, generator: torch.Generator, labels: torch.Tensor | None,
                 options: Mapping[str, Any]) -> torch.Tensor:
        with eval_mode(unwrap(self.modules["generator"])) as net:  # local: no DDP buffer broadcast
            return to_unit(net(self.latent(count, generator)))
