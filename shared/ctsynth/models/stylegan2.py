"""`stylegan2`: a style-based GAN in pure PyTorch (Karras et al. 2020, "Analyzing and
Improving the Image Quality of StyleGAN"; training as StyleGAN2-ADA, Karras et al.
2020b), with the settings seed 000 §4.4.2 used for its StyleGAN3 run: Adam betas
(0, 0.99), eps 1e-8, lr G 0.0025 / D 0.002, R1 gamma 8, ADA target 0.6.

Generator = mapping network (z [+ label embedding] -> w, 8 FC layers at lr x 0.01,
tracking w_avg for truncation) + a synthesis network (constant 4x4 input,
modulated/demodulated 3x3 convs as one grouped conv, per-layer noise with learned
strength, 'skip' (toRGB sums) or 'resnet' architecture, bilinear or FIR x2
resampling). Discriminator: residual, minibatch-std, projection on the label when
conditional. Losses: non-saturating logistic; lazy R1 every `r1_interval` steps
scaled by the interval; optional lazy path-length regularisation. EMA generator with
a half-life of `ema_kimg` and ramp-up. ADA on every image D sees. The lazy terms
are added to that step's main loss (one optimizer step per network per
`train_step`), so the learning rates are not rescaled for extra regularisation steps.

Synthesis seam (StyleGAN3): `StyleGenerator` = `MappingNetwork` + `SYNTHESES[config.synthesis]`.
A synthesis class is built from the config and provides `num_ws` and
`forward(ws (N, num_ws, w_dim), noise_mode, generator) -> (N, C, H, W)` in about
[-1, 1]. An alias-free StyleGAN3-T synthesis (Karras et al. 2021: Fourier-feature
input, filtered non-linearities, no noise inputs) registers as another entry and
reuses the mapping network, discriminator, losses, ADA, EMA and sampling unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ctsynth.errors import InvalidArgument
from ctsynth.models.base import Batch, FamilyConfig
from ctsynth.models.gan_blocks import (LEAK, NUM_CLASSES, AdaptiveAugment, GANFamily, adam_pair, check_at_least,
                                       check_betas, check_positive, check_power_of_two, ema_beta, make_ema, to_signed,
                                       to_unit, update_ema, world_size)
from ctsynth.models.gan_losses import d_logistic_loss, g_nonsaturating_loss, r1_penalty

ARCHITECTURES = ("skip", "resnet")
RESAMPLERS = ("bilinear", "fir")
NOISE_MODES = ("random", "const", "none")


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


# --- layers --------------------------------------------------------------------------------

def lrelu(x: torch.Tensor) -> torch.Tensor:
    """LeakyReLU 0.2 with gain sqrt(2), keeping activations at unit variance (StyleGAN bias_act)."""
    return F.leaky_relu(x, LEAK) * math.sqrt(2)


def normalize_2nd_moment(x: torch.Tensor) -> torch.Tensor:
    """(N, F) -> unit mean square per row (StyleGAN mapping input)."""
    return x * torch.rsqrt(x.square().mean(1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """FC layer with equalised learning rate (Karras et al. 2018 §4.1): weights stored
    N(0, 1 / lr_multiplier^2) and scaled by lr_multiplier / sqrt(fan_in) at run time,
    so Adam's effective step is lr * lr_multiplier in every layer. (N, in) -> (N, out)."""

    def __init__(self, into: int, out: int, bias_init: float = 0.0, lr_multiplier: float = 1.0,
                 activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out, into) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out,), float(bias_init)))
        self.weight_gain, self.bias_gain = lr_multiplier / math.sqrt(into), lr_multiplier
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        return lrelu(x) if self.activate else x


class Resample(nn.Module):
    """x2 resampling, (N, C, H, W) -> (N, C, 2H, 2W) or (N, C, H/2, W/2).

    'bilinear': bilinear up, 2x2 box average down. 'fir': StyleGAN2's separable
    [1, 3, 3, 1] low-pass filter applied depthwise after zero insertion (up,
    gain 4) or before subsampling (down), as upfirdn2d does, in plain conv2d.
    """

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
        self.register_buffer("kernel", torch.outer(taps, taps) / taps.sum() ** 2, persistent=False)

    def up(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "bilinear":
            return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        n, c, h, w = x.shape
        stuffed = F.pad(x.reshape(n, c, h, 1, w, 1), [0, 1, 0, 0, 0, 1]).reshape(n, c, 2 * h, 2 * w)
        return self._filter(F.pad(stuffed, [2, 1, 2, 1]), gain=4.0, stride=1)

    def down(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "bilinear":
            return F.avg_pool2d(x, 2)
        return self._filter(F.pad(x, [1, 1, 1, 1]), gain=1.0, stride=2)

    def _filter(self, x: torch.Tensor, gain: float, stride: int) -> torch.Tensor:
        weight = (self.kernel * gain).to(x.dtype).expand(x.shape[1], 1, 4, 4)
        return F.conv2d(x, weight, stride=stride, groups=x.shape[1])


class EqualConv2d(nn.Module):
    """Conv with equalised learning rate, optional x2 downsampling first, bias and lrelu."""

    def __init__(self, into: int, out: int, kernel: int, bias: bool = True, activate: bool = False,
                 down: str | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out, into, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out)) if bias else None
        self.gain = 1 / math.sqrt(into * kernel * kernel)
        self.activate = activate
        self.down = Resample(down) if down else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down is not None:
            x = self.down.down(x)
        x = F.conv2d(x, self.weight * self.gain, self.bias, padding=self.weight.shape[-1] // 2)
        return lrelu(x) if self.activate else x


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool) -> torch.Tensor:
    """StyleGAN2 eq. 1-3 as one grouped conv (§2.2): x (N, I, H, W), weight (O, I, k, k),
    styles (N, I) -> (N, O, H, W).

    w'_ijk = s_i w_ijk / sqrt(fan_in); with demodulation w''_ijk = w'_ijk / sqrt(sum_ik w'^2 + 1e-8),
    which gives unit-variance outputs for unit-variance i.i.d. inputs.
    """
    n, into, height, width = x.shape
    out, _, kernel, _ = weight.shape
    w = weight[None] * styles[:, None, :, None, None] / math.sqrt(into * kernel * kernel)  # (N, O, I, k, k)
    if demodulate:
        w = w * torch.rsqrt(w.square().sum((2, 3, 4), keepdim=True) + 1e-8)
    y = F.conv2d(x.reshape(1, n * into, height, width), w.reshape(n * out, into, kernel, kernel),
                 padding=kernel // 2, groups=n)
    return y.reshape(n, out, height, width)


class ModulatedConv2d(nn.Module):
    """A conv whose weights are scaled by a style s = A(w) (affine, bias 1) per sample."""

    def __init__(self, into: int, out: int, kernel: int, w_dim: int, demodulate: bool = True):
        super().__init__()
        self.affine = EqualLinear(w_dim, into, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out, into, kernel, kernel))
        self.demodulate = demodulate

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return modulated_conv2d(x, self.weight, self.affine(w), self.demodulate)


class StyleLayer(nn.Module):
    """Modulated 3x3 conv + per-pixel noise x learned strength + bias + lrelu (StyleGAN2 Fig. 2c).

    Noise: 'random' draws (N, 1, H, W) from `generator` (the global RNG when None),
    'const' uses a fixed buffer, 'none' adds nothing.
    """

    def __init__(self, into: int, out: int, w_dim: int, resolution: int):
        super().__init__()
        self.conv = ModulatedConv2d(into, out, 3, w_dim)
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(out))
        self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str,
                generator: torch.Generator | None) -> torch.Tensor:
        x = self.conv(x, w)
        if noise_mode == "random":
            source = generator.device if generator is not None else x.device
            noise = torch.randn((x.shape[0], 1, *x.shape[2:]), generator=generator, device=source).to(x.device)
            x = x + noise * self.noise_strength
        elif noise_mode == "const":
            x = x + self.noise_const * self.noise_strength
        return lrelu(x + self.bias.view(1, -1, 1, 1))


class ToRGB(nn.Module):
    """Features -> image channels: 1x1 modulated conv without demodulation, plus bias."""

    def __init__(self, into: int, channels: int, w_dim: int):
        super().__init__()
        self.conv = ModulatedConv2d(into, channels, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w) + self.bias.view(1, -1, 1, 1)


class SynthesisBlock(nn.Module):
    """One resolution: (x2 up) conv, conv, toRGB (StyleGAN2 Fig. 7).

    'skip': image = up(image) + toRGB(x) at every resolution (Fig. 7b);
    'resnet': x = (1x1(up(x)) + convs(up(x))) / sqrt(2), toRGB at the last block only (Fig. 7c).
    The 4x4 block (into = 0) starts from a learned constant and has one conv.
    """

    def __init__(self, into: int, out: int, resolution: int, config: StyleGAN2Config):
        super().__init__()
        first = resolution == 4
        self.const = nn.Parameter(torch.randn(out, 4, 4)) if first else None
        self.layers = nn.ModuleList([StyleLayer(out if first else into, out, config.w_dim, resolution)])
        if not first:
            self.layers.append(StyleLayer(out, out, config.w_dim, resolution))
        self.skip = EqualConv2d(into, out, 1, bias=False) if config.architecture == "resnet" and not first else None
        last = resolution == config.image_size
        self.to_rgb = ToRGB(out, config.channels, config.w_dim) if config.architecture == "skip" or last else None
        self.resample = Resample(config.resample)
        self.num_ws = len(self.layers) + (self.to_rgb is not None)

    def forward(self, x: torch.Tensor | None, image: torch.Tensor | None, ws: torch.Tensor, noise_mode: str,
                generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (N, I, R/2, R/2) or None for the first block, image (N, C, R/2, R/2) or None, ws (N, num_ws, w_dim)."""
        x = self.const.expand(ws.shape[0], -1, -1, -1) if x is None else self.resample.up(x)
        residual = x
        for index, layer in enumerate(self.layers):
            x = layer(x, ws[:, index], noise_mode, generator)
        if self.skip is not None:
            x = (self.skip(residual) + x) / math.sqrt(2)
        if self.to_rgb is not None:
            rgb = self.to_rgb(x, ws[:, -1])
            image = rgb if image is None else self.resample.up(image) + rgb
        return x, image


class SynthesisNetwork(nn.Module):
    """StyleGAN2 synthesis: ws (N, num_ws, w_dim) -> image (N, C, H, W), blocks at 4, 8, ..., image_size."""

    def __init__(self, config: StyleGAN2Config):
        super().__init__()
        resolutions = [2 ** power for power in range(2, int(math.log2(config.image_size)) + 1)]
        self.blocks = nn.ModuleList(
            SynthesisBlock(config.channels_at(r // 2) if r > 4 else 0, config.channels_at(r), r, config)
            for r in resolutions)
        self.num_ws = sum(block.num_ws for block in self.blocks)

    def forward(self, ws: torch.Tensor, noise_mode: str = "random",
                generator: torch.Generator | None = None) -> torch.Tensor:
        x = image = None
        start = 0
        for block in self.blocks:
            x, image = block(x, image, ws[:, start:start + block.num_ws], noise_mode, generator)
            start += block.num_ws
        return image


SYNTHESES: dict[str, type[nn.Module]] = {"stylegan2": SynthesisNetwork}


class MappingNetwork(nn.Module):
    """z (N, z_dim) [+ labels (N,)] -> w (N, w_dim) (Karras et al. 2019 §2).

    z and the label embedding are each normalised to unit second moment and
    concatenated (StyleGAN2-ADA conditioning). `w_avg` tracks E[w] (decay
    0.995) for the truncation trick w' = w_avg + psi (w - w_avg) (Karras et al. 2019 §3.1).
    """

    def __init__(self, config: StyleGAN2Config, w_avg_beta: float = 0.995):
        super().__init__()
        self.embed = EqualLinear(NUM_CLASSES, config.w_dim) if config.conditional else None
        features = [config.z_dim + (config.w_dim if config.conditional else 0)] + [config.w_dim] * config.mapping_layers
        self.net = nn.Sequential(*(EqualLinear(a, b, lr_multiplier=config.mapping_lr_multiplier, activate=True)
                                   for a, b in zip(features, features[1:])))
        self.w_avg_beta = w_avg_beta
        self.register_buffer("w_avg", torch.zeros(config.w_dim))

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None, truncation_psi: float = 1.0,
                update_w_avg: bool = False) -> torch.Tensor:
        x = normalize_2nd_moment(z)
        if self.embed is not None:
            x = torch.cat([x, normalize_2nd_moment(self.embed(F.one_hot(labels, NUM_CLASSES).to(z)))], 1)
        w = self.net(x)
        if update_w_avg:
            with torch.no_grad():
                self.w_avg.copy_(w.detach().float().mean(0).lerp(self.w_avg, self.w_avg_beta))
        return w if truncation_psi == 1 else self.w_avg.lerp(w, truncation_psi)


class StyleGenerator(nn.Module):
    """(z (N, z_dim), labels) -> (image (N, C, H, W), ws (N, num_ws, w_dim)).

    Returning ws lets the path-length penalty differentiate with respect to
    them through the same (possibly DDP-wrapped) forward call.
    """

    def __init__(self, config: StyleGAN2Config):
        super().__init__()
        self.mapping = MappingNetwork(config)
        self.synthesis = SYNTHESES[config.synthesis](config)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None, truncation_psi: float = 1.0,
                noise_mode: str = "random", generator: torch.Generator | None = None,
                update_w_avg: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.mapping(z, labels, truncation_psi, update_w_avg)
        ws = w.unsqueeze(1).repeat(1, self.synthesis.num_ws, 1)
        return self.synthesis(ws, noise_mode, generator), ws


class MinibatchStd(nn.Module):
    """Appends the mean std over groups of samples as one feature map (Karras et al. 2018 §3):
    (N, C, H, W) -> (N, C + 1, H, W). The group is the largest divisor of N up to `group_size`."""

    def __init__(self, group_size: int):
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        group = math.gcd(n, self.group_size)
        y = x.float().reshape(group, n // group, c, h, w)
        y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt().mean((1, 2, 3))  # (N / group,)
        return torch.cat([x, y.view(-1, 1, 1, 1).repeat(group, 1, h, w).to(x.dtype)], 1)


class DiscriminatorBlock(nn.Module):
    """Residual block (StyleGAN2 Fig. 7c): (N, I, R, R) -> (N, O, R/2, R/2)."""

    def __init__(self, into: int, out: int, resample: str):
        super().__init__()
        self.conv0 = EqualConv2d(into, into, 3, activate=True)
        self.conv1 = EqualConv2d(into, out, 3, activate=True, down=resample)
        self.skip = EqualConv2d(into, out, 1, bias=False, down=resample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.skip(x) + self.conv1(self.conv0(x))) / math.sqrt(2)


class StyleDiscriminator(nn.Module):
    """image (N, C, H, W) [, labels (N,)] -> logits (N, 1).

    fromRGB, residual blocks down to 4x4, minibatch std, conv, FC; when
    conditional the output is projected on a label embedding (Miyato &
    Koyama 2018, as StyleGAN2-ADA's cmap).
    """

    def __init__(self, config: StyleGAN2Config):
        super().__init__()
        size = config.image_size
        self.from_rgb = EqualConv2d(config.channels, config.channels_at(size), 1, activate=True)
        resolutions = [size // 2 ** power for power in range(int(math.log2(size)) - 2)]
        self.blocks = nn.Sequential(*(DiscriminatorBlock(config.channels_at(r), config.channels_at(r // 2),
                                                         config.resample) for r in resolutions))
        width = config.channels_at(4)
        self.mbstd = MinibatchStd(config.mbstd_group)
        self.conv = EqualConv2d(width + 1, width, 3, activate=True)
        self.fc = EqualLinear(width * 16, width, activate=True)
        self.cmap_dim = width if config.conditional else 1
        self.out = EqualLinear(width, self.cmap_dim)
        self.embed = EqualLinear(NUM_CLASSES, self.cmap_dim) if config.conditional else None

    def forward(self, image: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = self.blocks(self.from_rgb(image))
        x = self.out(self.fc(self.conv(self.mbstd(x)).flatten(1)))
        if self.embed is None:
            return x
        cmap = self.embed(F.one_hot(labels, NUM_CLASSES).to(x))
        return (x * cmap).sum(1, keepdim=True) / math.sqrt(self.cmap_dim)


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
