"""`unet_gan`: the final custom CT GAN of seed 000 §4.1.1 and §4.1.3 (iteration 4).

Generator: a U-Net over a noise plane (N, 1, H, W) and the one-hot tumor
condition as two planes (N, 2, H, W), with skip connections, optional
self-attention at the bottleneck, and two outputs: the CT image (tanh) and
the tumor mask (sigmoid). It downsamples until the bottleneck side is
`bottleneck_size`, so its depth follows the resolution.

Discriminator: a PatchGAN (pix2pix, Isola et al. 2017) with spectral norm on
every conv (Miyato et al. 2018) over image + mask + label planes; its number
of stride-2 convs is log2(image_size / patch_grid), so every resolution ends
in a patch_grid x patch_grid map of real/fake logits.

Image-from-mask mode (`mask_input`, pix2pix-style, Isola et al. 2017): the
generator also takes a nodule mask as an input plane and makes only the
image; the discriminator judges the image with the mask it was asked for;
the tumor label follows from the mask (any nodule voxel); L1 pairs each
fake with the real image whose mask it was given; no mask loss.

Losses (seed 000 §4.1.1-4.1.2):
- adversarial BCE with one-sided label smoothing (real target 0.9);
- L1 reconstruction between generated and real images of the same label:
  fake i is generated with the label of real i, and |fake_i - real_i| is averaged;
- conditional mask loss: BCE of the generated mask against the real mask
  for tumor labels and against zero for no-tumor labels;
- R1 penalty on the discriminator (gamma / 2 E ||grad D(real)||^2, gamma 10
  as in Mescheder et al. 2018), the gradient penalty of §4.1.2 in its
  zero-centred form.
TTUR: Adam lr G 1e-4, D 2e-4, betas (0.5, 0.999) (§4.1.3).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ctsynth.errors import InvalidArgument
from ctsynth.models.base import Batch, FamilyConfig
from ctsynth.models.config_checks import check_at_least, check_betas, check_positive, check_power_of_two
from ctsynth.models.distributed import unwrap
from ctsynth.models.gan_family import GANFamily, adam_pair, eval_mode, to_signed, to_unit
from ctsynth.models.gan_losses import d_logistic_loss, g_nonsaturating_loss, r1_penalty
from ctsynth.models.gan_networks import LEAK, NUM_CLASSES, SelfAttention2d, label_maps


@dataclass(frozen=True)
class UNetGANConfig(FamilyConfig):
    base_channels: int = 64
    max_channels: int = 512
    bottleneck_size: int = 8
    attention: bool = True
    patch_grid: int = 16
    label_smoothing: float = 0.9
    l1_weight: float = 10.0
    mask_weight: float = 1.0
    r1_gamma: float = 10.0
    lr_generator: float = 1e-4
    lr_discriminator: float = 2e-4
    betas: tuple[float, ...] = (0.5, 0.999)
    mask_input: bool = False  # image-from-mask mode: the mask is an input, not an output

    def validate(self) -> None:
        check_positive(self, "base_channels", "lr_generator", "lr_discriminator")
        check_at_least(self, "max_channels", self.base_channels)
        for name in ("bottleneck_size", "patch_grid"):
            check_power_of_two(name, getattr(self, name))
            if not getattr(self, name) < self.image_size:
                raise InvalidArgument(name, f"{getattr(self, name)} must be smaller than image_size {self.image_size}")
        check_power_of_two("image_size", self.image_size)
        if not 0 < self.label_smoothing <= 1:
            raise InvalidArgument("label_smoothing", f"{self.label_smoothing} must be in (0, 1]")
        for name in ("l1_weight", "mask_weight", "r1_gamma"):
            check_at_least(self, name, 0.0)
        check_betas(self.betas)


def widths(base: int, maximum: int, levels: int) -> list[int]:
    """Channels per level, doubling from `base` up to `maximum`."""
    return [min(base * 2 ** level, maximum) for level in range(levels)]


def conv_norm_act(into: int, out: int, stride: int = 1) -> nn.Sequential:
    """Conv (3x3, or 4x4 when stride 2 as in pix2pix), instance norm, LeakyReLU 0.2."""
    kernel = 4 if stride == 2 else 3
    return nn.Sequential(nn.Conv2d(into, out, kernel, stride, padding=1), nn.InstanceNorm2d(out, affine=True),
                         nn.LeakyReLU(LEAK))


class UNetGenerator(nn.Module):
    """(noise (N, 1, H, W), labels (N,)[, mask (N, 1, H, W)]) -> (image (N, C, H, W) in [-1, 1],
    mask logits (N, 1, H, W), or None when the mask is an input).

    Instance norm rather than batch norm keeps training and sampling (eval)
    identical for every batch size.
    """

    def __init__(self, channels: int, image_size: int, base: int, maximum: int, bottleneck_size: int,
                 attention: bool, mask_input: bool = False):
        super().__init__()
        levels = widths(base, maximum, int(math.log2(image_size // bottleneck_size)) + 1)
        self.channels, self.mask_input = channels, mask_input
        self.stem = conv_norm_act(1 + NUM_CLASSES + int(mask_input), levels[0])
        self.down = nn.ModuleList(conv_norm_act(a, b, stride=2) for a, b in zip(levels, levels[1:]))
        self.attention = SelfAttention2d(levels[-1]) if attention else nn.Identity()
        self.up = nn.ModuleList(conv_norm_act(b + a, a) for a, b in zip(levels, levels[1:]))
        self.head = nn.Conv2d(levels[0], channels + int(not mask_input), 1)

    def forward(self, noise: torch.Tensor, labels: torch.Tensor,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        planes = [noise, label_maps(labels, noise.shape[-1]).to(noise)] + ([mask.to(noise)] if self.mask_input else [])
        x = self.stem(torch.cat(planes, 1))
        skips = [x]
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = self.attention(skips.pop())
        for block, skip in zip(reversed(self.up), reversed(skips)):
            x = block(torch.cat([F.interpolate(x, scale_factor=2.0, mode="nearest"), skip], 1))
        out = self.head(x)
        return torch.tanh(out[:, :self.channels]), None if self.mask_input else out[:, self.channels:]


class PatchDiscriminator(nn.Module):
    """(image + mask (N, C+1, H, W), labels (N,)) -> patch logits (N, 1, g, g), g = patch_grid."""

    def __init__(self, channels: int, image_size: int, base: int, maximum: int, patch_grid: int):
        super().__init__()
        levels = widths(base, maximum, int(math.log2(image_size // patch_grid)))
        layers: list[nn.Module] = []
        into = channels + 1 + NUM_CLASSES
        for out in levels:
            layers += [spectral_norm(nn.Conv2d(into, out, 4, stride=2, padding=1)), nn.LeakyReLU(LEAK)]
            into = out
        layers.append(spectral_norm(nn.Conv2d(into, 1, 3, padding=1)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, label_maps(labels, x.shape[-1]).to(x)], 1))


def mask_labels(masks: torch.Tensor) -> torch.Tensor:
    """The tumor label a mask implies: 1 where it has a nodule voxel."""
    return masks.flatten(1).any(1).long()


def mask_loss(mask_logits: torch.Tensor, real_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Conditional mask BCE (seed 000 §4.1.1): target = real mask for tumor labels, 0 for no-tumor labels.

    mask_logits, real_mask (N, 1, H, W); labels (N,).
    """
    target = real_mask.float() * labels.view(-1, 1, 1, 1).float()
    return F.binary_cross_entropy_with_logits(mask_logits.float(), target)


class UNetGAN(GANFamily):
    name = "unet_gan"
    config_cls = UNetGANConfig
    needs_masks = True
    description = "Conditional U-Net GAN with tumor masks and a spectral-norm PatchGAN (seed 000 §4.1.1)"

    @classmethod
    def conditional(cls, config: FamilyConfig) -> bool:
        """Conditional on the tumor label, unless the mask (which implies it) is the condition."""
        return not config.mask_input

    @classmethod
    def mask_conditioned(cls, config: FamilyConfig) -> bool:
        return config.mask_input

    def sample_masks(self) -> bool:
        return not self.config.mask_input

    def build_modules(self) -> dict[str, nn.Module]:
        config = self.config
        return {"generator": UNetGenerator(config.channels, config.image_size, config.base_channels,
                                           config.max_channels, config.bottleneck_size, config.attention,
                                           config.mask_input),
                "discriminator": PatchDiscriminator(config.channels, config.image_size, config.base_channels,
                                                    config.max_channels, config.patch_grid)}

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        config = self.config
        return adam_pair(self.modules, config.lr_generator, config.lr_discriminator, config.betas)

    def noise_plane(self, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The generator's noise input (count, 1, H, W)."""
        return self.noise((count, 1, self.config.image_size, self.config.image_size), generator)

    def train_step(self, batch: Batch, step: int) -> dict[str, float]:
        if batch.mask is None:
            raise InvalidArgument("mask", "unet_gan trains on tumor masks; the dataset must provide them")
        config = self.config
        generator, discriminator = self.modules["generator"], self.modules["discriminator"]
        optimizers = self.optimizers
        real_mask = batch.mask.to(self.device)
        labels = mask_labels(real_mask) if config.mask_input else self.training_labels(batch)
        real_image = to_signed(batch.image.to(self.device))
        real = torch.cat([real_image, real_mask.to(real_image.dtype)], 1)

        optimizers["generator"].zero_grad(set_to_none=True)
        with self.precision.autocast():
            fake_image, mask_logits = generator(self.noise_plane(len(labels)), labels, real_mask)
            fake_mask = real_mask.to(fake_image.dtype) if config.mask_input else torch.sigmoid(mask_logits)
            fake = torch.cat([fake_image, fake_mask], 1)
            terms = {"g_adv": g_nonsaturating_loss(discriminator(fake, labels)),
                     "g_l1": config.l1_weight * (fake_image.float() - real_image.float()).abs().mean()}
            if not config.mask_input:
                terms["g_mask"] = config.mask_weight * mask_loss(mask_logits, real_mask, labels)
        g_loss = sum(terms.values())
        self.precision.backward(g_loss)
        self.precision.step(optimizers["generator"])

        optimizers["discriminator"].zero_grad(set_to_none=True)
        real = real.detach().requires_grad_(config.r1_gamma > 0)
        with self.precision.autocast():
            real_logits = discriminator(real, labels)
            d_adv = d_logistic_loss(real_logits, discriminator(fake.detach(), labels), config.label_smoothing)
        d_r1 = config.r1_gamma / 2 * r1_penalty(real_logits, real).mean() if config.r1_gamma else d_adv.new_zeros(())
        self.precision.backward(d_adv + d_r1)
        self.precision.step(optimizers["discriminator"])
        return {"g_loss": g_loss.item(), **{name: value.item() for name, value in terms.items()},
                "d_loss": d_adv.item(), "d_r1": d_r1.item()}

    @torch.no_grad()
    def sample(self, count: int, generator: torch.Generator, *, labels: torch.Tensor | None = None,
               sampler: Mapping[str, Any] | None = None, masks: torch.Tensor | None = None) -> torch.Tensor:
        """As every GAN's; in image-from-mask mode from `masks` (count, 1, H, W), the labels they imply."""
        masks = self.checked_masks(count, masks)
        if masks is None:
            return super().sample(count, generator, labels=labels, sampler=sampler)
        if labels is not None:
            raise InvalidArgument("condition", "the mask is this model's condition; pass no labels")
        self.sample_options(sampler)
        with eval_mode(unwrap(self.modules["generator"])) as net:
            image, _ = net(self.noise_plane(count, generator), mask_labels(masks), masks)
        return to_unit(image)

    def generate(self, count: int, generator: torch.Generator, labels: torch.Tensor | None,
                 options: Mapping[str, Any]) -> torch.Tensor:
        """(count, C + 1, H, W): the image in [0, 1], then the mask probability."""
        with eval_mode(unwrap(self.modules["generator"])) as net:
            image, mask_logits = net(self.noise_plane(count, generator), labels)
        return torch.cat([to_unit(image), torch.sigmoid(mask_logits)], 1)
