"""Building blocks shared by the GAN families: the family base class, value
mapping, the MLP and DCGAN-style networks of seed 004 §3.5, self-attention,
the generator EMA and adaptive discriminator augmentation (ADA).

Networks here are 2D (every GAN family has `spatial_dims = 2`); images are
(N, C, H, W) in [-1, 1] inside a family and [0, 1] at its boundary.
"""

from __future__ import annotations

import copy
import math
from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ctsynth.errors import InvalidArgument
from ctsynth.models.base import Batch, Family, FamilyConfig

LEAK = 0.2  # LeakyReLU slope of every seed-004 network (§3.5)
NUM_CLASSES = 2  # 0 = no tumor, 1 = tumor


# --- values and plumbing -------------------------------------------------------------------

def to_signed(image: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1], the range of a tanh generator."""
    return image * 2 - 1


def to_unit(image: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped (StyleGAN outputs are not bounded)."""
    return ((image + 1) / 2).clamp(0, 1)


def world_size() -> int:
    """Workers averaging gradients (1 outside torch.distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def unwrap(module: nn.Module) -> nn.Module:
    """The network inside a DDP wrapper (the runtime may wrap `family.modules`)."""
    return module.module if isinstance(module, DistributedDataParallel) else module


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Evaluate `module` (batch-norm running stats, no dropout), then restore its mode."""
    training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(training)


def critic_slices(images: torch.Tensor, n_critic: int) -> list[torch.Tensor]:
    """The rows each of `n_critic` critic steps consumes (N, ...) -> [(k, ...)].

    Slice i holds rows [i*k, (i+1)*k) mod N with k = max(1, N // n_critic): a
    plain split when N is a multiple of n_critic, so one `train_step` consumes
    the n_critic batches that seed 004's loop (after Linder-Norén) feeds the
    critic per generator update; a smaller batch wraps around and reuses rows.
    """
    count = images.shape[0]
    size = max(1, count // n_critic)
    rows = torch.arange(n_critic * size, device=images.device).remainder(count).view(n_critic, size)
    return [images[index] for index in rows]


def label_maps(labels: torch.Tensor, size: int) -> torch.Tensor:
    """One-hot label planes (N,) -> (N, 2, size, size), the condition channels of seed 000 §4.1.1."""
    onehot = F.one_hot(labels, NUM_CLASSES).float()
    return onehot[:, :, None, None].expand(-1, -1, size, size)


# --- config checks -------------------------------------------------------------------------

def check_positive(config: FamilyConfig, *names: str) -> None:
    for name in names:
        if not getattr(config, name) > 0:
            raise InvalidArgument(name, f"{getattr(config, name)} must be > 0")


def check_at_least(config: FamilyConfig, name: str, minimum: float) -> None:
    if getattr(config, name) < minimum:
        raise InvalidArgument(name, f"{getattr(config, name)} must be >= {minimum}")


def check_widths(name: str, widths: Sequence[int], minimum_length: int = 1) -> None:
    if len(widths) < minimum_length or any(width < 1 for width in widths):
        raise InvalidArgument(name, f"{list(widths)} needs at least {minimum_length} positive width(s)")


def check_betas(betas: Sequence[float]) -> None:
    if len(betas) != 2 or not all(0 <= beta < 1 for beta in betas):
        raise InvalidArgument("betas", f"{list(betas)} must be two numbers in [0, 1)")


def check_divides(config: FamilyConfig, name: str, factor: int) -> None:
    """`image_size` must be a multiple of `factor`, which `name` implies."""
    if config.image_size % factor:
        raise InvalidArgument(name, f"needs image_size to be a multiple of {factor}, got {config.image_size}")


def check_power_of_two(name: str, value: int) -> None:
    if value < 1 or value & (value - 1):
        raise InvalidArgument(name, f"{value} must be a power of two")


# --- networks of seed 004 §3.5 -------------------------------------------------------------

class MLPGenerator(nn.Module):
    """Seed 004 §3.5.1: z (N, latent) -> FC hidden layers (batch norm from the
    second on, LeakyReLU 0.2) -> FC -> tanh -> (N, C, H, W)."""

    def __init__(self, latent_dim: int, hidden: Sequence[int], shape: tuple[int, int, int]):
        super().__init__()
        layers: list[nn.Module] = []
        width = latent_dim
        for index, out in enumerate(hidden):
            layers.append(nn.Linear(width, out))
            if index:
                layers.append(nn.BatchNorm1d(out))
            layers.append(nn.LeakyReLU(LEAK))
            width = out
        layers += [nn.Linear(width, math.prod(shape)), nn.Tanh(), nn.Unflatten(1, shape)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class MLPDiscriminator(nn.Module):
    """Seed 004 §3.5.1: (N, C, H, W) -> FC hidden layers with LeakyReLU 0.2 -> (N, 1).

    The output is a logit: the vanilla GAN's sigmoid lives in its loss
    (BCE with logits, exact and stable); WGAN's critic uses it as the score.
    """

    def __init__(self, in_features: int, hidden: Sequence[int]):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for out in hidden:
            layers += [nn.Linear(width, out), nn.LeakyReLU(LEAK)]
            width = out
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)


def norm2d(kind: str, channels: int) -> nn.Module:
    """'batch' (DCGAN), 'instance' (WGAN-GP, seed 000 §4.1.3) or 'none'."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


class ConvGenerator(nn.Module):
    """Seed 004 §3.5.3: project z to widths[0] maps of (H/2^k, W/2^k), normalise,
    then k = len(widths) - 1 blocks of [nearest upsample x2, conv 3x3, norm,
    LeakyReLU 0.2] and a final conv 3x3 + tanh -> (N, C, H, W).

    Upsample + conv instead of transposed conv avoids checkerboard artefacts
    (Odena et al. 2016, cited in §3.5.3). widths (128, 128, 64) is seed 004's DCGAN.
    """

    def __init__(self, latent_dim: int, widths: Sequence[int], shape: tuple[int, int, int], norm: str):
        super().__init__()
        channels, height, width = shape
        scale = 2 ** (len(widths) - 1)
        start = (widths[0], height // scale, width // scale)
        self.project = nn.Sequential(nn.Linear(latent_dim, math.prod(start)), nn.Unflatten(1, start),
                                     norm2d(norm, widths[0]))
        blocks: list[nn.Module] = []
        for into, out in zip(widths, widths[1:]):
            blocks += [nn.Upsample(scale_factor=2), nn.Conv2d(into, out, 3, padding=1), norm2d(norm, out),
                       nn.LeakyReLU(LEAK)]
        blocks += [nn.Conv2d(widths[-1], channels, 3, padding=1), nn.Tanh()]
        self.blocks = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.project(z))


class ConvDiscriminator(nn.Module):
    """Seed 004 §3.5.3: blocks of [conv 3x3 stride 2, LeakyReLU 0.2, dropout,
    norm (not on the first block)] -> FC -> (N, 1) logit or critic score.

    widths (16, 32, 64, 128), dropout 0.25 and batch norm is seed 004's DCGAN;
    the WGAN-GP critic uses no norm and no dropout (the penalty is per sample,
    Gulrajani et al. 2017 §4).
    """

    def __init__(self, shape: tuple[int, int, int], widths: Sequence[int], norm: str, dropout: float):
        super().__init__()
        channels, height, width = shape
        layers: list[nn.Module] = []
        into = channels
        for index, out in enumerate(widths):
            layers += [nn.Conv2d(into, out, 3, stride=2, padding=1), nn.LeakyReLU(LEAK), nn.Dropout2d(dropout)]
            if index:
                layers.append(norm2d(norm, out))
            into = out
        scale = 2 ** len(widths)
        layers += [nn.Flatten(), nn.Linear(widths[-1] * (height // scale) * (width // scale), 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)


def init_dcgan_weights(module: nn.Module) -> None:
    """Radford et al. 2015 §4 (as in Linder-Norén's code used by seed 004):
    conv weights N(0, 0.02), batch-norm scales N(1, 0.02) and shifts 0."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.normal_(layer.weight, 0.0, 0.02)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.normal_(layer.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias)


class SelfAttention2d(nn.Module):
    """SAGAN self-attention (Zhang et al. 2019, eq. 1-3): (N, C, H, W) -> same.

    The output is x + gamma * attention(x) with gamma starting at 0, so the
    block begins as the identity and learns how much global context to mix in
    (seed 000 §4.1.1: coherence of generated structures).
    """

    def __init__(self, channels: int):
        super().__init__()
        inner = max(1, channels // 8)
        self.query = nn.Conv2d(channels, inner, 1)
        self.key = nn.Conv2d(channels, inner, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        query = self.query(x).flatten(2).transpose(1, 2)  # (N, HW, C')
        key = self.key(x).flatten(2)  # (N, C', HW)
        attention = torch.softmax(query @ key, dim=-1)  # (N, HW, HW)
        out = self.value(x).flatten(2) @ attention.transpose(1, 2)  # (N, C, HW)
        return x + self.gamma * out.view(n, c, h, w)


# --- generator EMA (Karras et al. 2018 / StyleGAN2-ADA training loop) ----------------------

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


# --- adaptive discriminator augmentation (Karras et al. 2020) ------------------------------

class AdaptiveAugment(nn.Module):
    """Differentiable augmentation applied to every image D sees, real and
    fake, each transform with probability p (ADA, Karras et al. 2020 §2-3).

    Transforms: x-flip, integer translation (up to 1/8 of the side, reflected
    borders), optional 90° rotations, brightness (+N(0, 0.2)) and contrast
    (x 2^N(0, 0.5)), the ADA 'bgc' pipeline reduced to single-channel CT.
    p is adjusted every `interval` steps from r_t = E[sign(D(real))]
    (eq. 1/§3): up when r_t > target, down otherwise, by
    images / (speed_kimg * 1000), so p can go 0 -> 1 in `speed_kimg` kimg.
    p and the running sign statistics are buffers: they are checkpointed.
    Random draws come from the global torch RNG (seeded by the runtime).
    """

    def __init__(self, target: float, speed_kimg: float, rotate90: bool, translate: float = 0.125,
                 brightness_std: float = 0.2, contrast_std: float = 0.5):
        super().__init__()
        self.target, self.speed_kimg, self.rotate90 = target, speed_kimg, rotate90
        self.translate, self.brightness_std, self.contrast_std = translate, brightness_std, contrast_std
        self.register_buffer("p", torch.zeros(()))
        self.register_buffer("sign_sum", torch.zeros((), dtype=torch.float64))
        self.register_buffer("sign_count", torch.zeros((), dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> augmented (N, C, H, W), differentiable in x."""
        x = torch.where(self._chosen(x), x.flip(3), x)
        x = self._translate(x)
        if self.rotate90:
            turns = torch.randint(0, 4, (x.shape[0],), device=x.device) * self._chosen(x).flatten()
            rotations = torch.stack([torch.rot90(x, k, (2, 3)) for k in range(4)])  # (4, N, C, H, W)
            x = rotations[turns, torch.arange(x.shape[0], device=x.device)]
        x = x + torch.randn_like(x[:, :1, :1, :1]) * self.brightness_std * self._chosen(x)
        return x * torch.exp2(torch.randn_like(x[:, :1, :1, :1]) * self.contrast_std * self._chosen(x))

    def _chosen(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 1, 1) bool: which images get the next transform."""
        return torch.rand(x.shape[0], 1, 1, 1, device=x.device) < self.p

    def _translate(self, x: torch.Tensor) -> torch.Tensor:
        """Shift each image by integers in [-t, t] per axis, mirroring at the borders."""
        n, _, h, w = x.shape
        chosen = self._chosen(x).view(n, 1)

        def shifted(size: int) -> torch.Tensor:  # (N, size) source index of each output pixel
            limit = round(self.translate * size)
            shift = torch.randint(-limit, limit + 1, (n, 1), device=x.device) * chosen
            index = (torch.arange(size, device=x.device) - shift).abs()
            return (size - 1) - ((size - 1) - index).abs()

        rows, cols = shifted(h), shifted(w)
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        return x[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]

    @torch.no_grad()
    def observe(self, real_logits: torch.Tensor) -> None:
        """Accumulate sign(D(real)) for the overfitting heuristic r_t."""
        self.sign_sum += real_logits.detach().float().sign().sum().double()
        self.sign_count += real_logits.numel()

    @torch.no_grad()
    def adjust(self, images: int) -> float:
        """Move p after `images` real images were observed (summed over workers); returns r_t."""
        stats = torch.stack([self.sign_sum, self.sign_count])
        if world_size() > 1:
            dist.all_reduce(stats)
        rt = float(stats[0] / stats[1].clamp(min=1))
        direction = (rt > self.target) - (rt < self.target)
        self.p.copy_((self.p + direction * images / (self.speed_kimg * 1000)).clamp(0, 1))
        self.sign_sum.zero_()
        self.sign_count.zero_()
        return rt


def adam_pair(modules: Mapping[str, nn.Module], lr_generator: float, lr_discriminator: float,
              betas: Sequence[float]) -> dict[str, torch.optim.Optimizer]:
    """Adam for "generator" and "discriminator"; two learning rates are TTUR (Heusel et al. 2017)."""
    return {name: torch.optim.Adam(modules[name].parameters(), lr=lr, betas=tuple(betas))
            for name, lr in (("generator", lr_generator), ("discriminator", lr_discriminator))}


# --- the family base -----------------------------------------------------------------------

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

    @torch.no_grad()
    def sample(self, count: int, generator: torch.Generator, *, labels: torch.Tensor | None = None,
               sampler: Mapping[str, Any] | None = None) -> torch.Tensor:
        options = dict(sampler or {})
        unknown = sorted(set(options) - self.sampler_keys)
        if unknown:
            known = ", ".join(sorted(self.sampler_keys)) or "none"
            raise InvalidArgument("sampler", f"{unknown[0]!r} is not a {self.name} sampler setting; known: {known}")
        return self.generate(count, generator, self._sampling_labels(count, labels), options)

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
