"""The StyleGAN2 networks (Karras et al. 2020, "Analyzing and Improving the Image
Quality of StyleGAN"), in pure PyTorch, apart from the family that trains them
(`stylegan2`): equalised-lr layers, x2 resampling, modulated convolutions.

Generator = mapping network (z [+ label embedding] -> w, FC layers at a reduced
learning rate, tracking w_avg for truncation) + a synthesis network (constant 4x4
input, modulated/demodulated 3x3 convs as one grouped conv, per-layer noise with
learned strength, 'skip' (toRGB sums) or 'resnet' architecture, bilinear or FIR x2
resampling). Discriminator: residual, minibatch-std, projection on the label when
conditional.

Synthesis seam (StyleGAN3): `StyleGenerator` = `MappingNetwork` + `SYNTHESES[config.synthesis]`.
A synthesis class is built from the config and provides `num_ws` and
`forward(ws (N, num_ws, w_dim), noise_mode, generator) -> (N, C, H, W)` in about
[-1, 1]. An alias-free StyleGAN3-T synthesis (Karras et al. 2021: Fourier-feature
input, filtered non-linearities, no noise inputs) registers as another entry and
reuses the mapping network, discriminator, losses, ADA, EMA and sampling unchanged.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ctsynth.models.gan_networks import LEAK, NUM_CLASSES

if TYPE_CHECKING:
    from ctsynth.models.stylegan2 import StyleGAN2Config

ARCHITECTURES = ("skip", "resnet")
RESAMPLERS = ("bilinear", "fir")
NOISE_MODES = ("random", "const", "none")


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
