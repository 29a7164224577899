"""`controlnet`: mask-conditioned generation on a frozen, trained latent model
(`ldm`, or `rflow` in 2D or 3D), as MAISI (Guo et al. 2024) and NodMAISI
condition their latent flow on segmentation masks.

A ControlNet (Zhang, Rao & Agrawala 2023; MONAI's `ControlNet`) is a
trainable copy of the base U-Net's encoder and middle block, initialised
from the base's weights, with a small conditioning embedding that takes the
nodule mask at image resolution and downsamples it with stride-2
convolutions to the latent grid (one entry of
`conditioning_embedding_num_channels` per level, so 2^(entries - 1) must be
the first stage's downsampling factor f). Its outputs, one residual per skip
connection of the base U-Net and one for its middle block, pass through
zero-initialised 1x1 convolutions and are added to the frozen U-Net's
(`down_block_additional_residuals`, `mid_block_additional_residual`), so an
untrained ControlNet leaves the base model exactly as it was and training
starts from it.

Only the ControlNet trains: on the base's objective (DDPM's epsilon or v
target for `ldm`, the rectified-flow velocity for `rflow`), with the base's
noise schedule and timestep distribution, against the base's EMA U-Net (the
weights the base samples with) and its first stage, both frozen. Sampling
runs the base family's own chain (its samplers, classifier-free guidance
when the base is conditional, scale factor and decode) through its
`denoise` hook. `conditioning_scale` multiplies the residuals at sampling
and training time (0 gives the base model back).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from monai.networks.nets import ControlNet as MonaiControlNet
from torch import nn

from ctsynth.errors import InvalidArgument
from ctsynth.models.base import ITEMS, Batch, Family, FamilyConfig
from ctsynth.models.denoising_diffusion import DenoiserConfig, enable_checkpointing, unet_layout
from ctsynth.models.distributed import unwrap
from ctsynth.models.ema import make_ema, update_ema
from ctsynth.models.ldm import LDM
from ctsynth.models.rflow import RFlow


class _Controlled:
    """A base family whose sampling chain runs its frozen U-Net with the
    owning ControlNet's residuals: `denoise` is the base's hook, called by
    `sample` with the frozen U-Net, and the mask stays at image resolution
    because the ControlNet's conditioning embedding downsamples it."""

    name = "controlnet"  # the family the base's messages (masks, labels) speak for
    owner: ControlNet

    @classmethod
    def mask_conditioned(cls, config: DenoiserConfig) -> bool:
        return True

    def mask_condition(self, masks: torch.Tensor) -> torch.Tensor:
        return masks.float()

    def denoise(self, unet: nn.Module, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None,
                masks: torch.Tensor | None) -> torch.Tensor:
        return self.owner.controlled(unet, self.owner.modules["ema"], x, t, labels, masks)


class _ControlledLDM(_Controlled, LDM):
    pass


class _ControlledRFlow(_Controlled, RFlow):
    pass


BASES = {"ldm": _ControlledLDM, "rflow": _ControlledRFlow}


@dataclass(frozen=True)
class ControlNetConfig(FamilyConfig):
    """The base model (its reference, family and config, copied when the
    training service resolves `base`, so config.json alone rebuilds the
    model) and the ControlNet's own hyperparameters; the ControlNet's
    U-Net layout is the base's."""

    SUPPORTED_DIMS: ClassVar[tuple[int, ...]] = (2, 3)

    image_size: int = 256
    base: str = ""  # model reference of the trained base, e.g. "rflow:2" (the runtime loads its weights)
    base_family: str = "rflow"  # or ldm
    base_config: dict[str, Any] = field(default_factory=dict, hash=False)  # its config.json's config
    conditioning_embedding_num_channels: tuple[int, ...] = (16, 32, 64)  # one stride-2 halving between entries
    conditioning_scale: float = 1.0  # weight of the ControlNet's residuals
    learning_rate: float = 1e-5
    warmup_steps: int = 0  # linear learning-rate warm-up from 0
    ema_decay: float = 0.999
    gradient_checkpointing: bool = True  # of the ControlNet and the frozen U-Net it backpropagates through

    def base_family_config(self) -> DenoiserConfig:
        """The base's config; its errors name `base_config.<field>`."""
        if self.base_family not in BASES:
            raise InvalidArgument("base_family", f"{self.base_family!r}; a controlnet trains on one of "
                                                 f"{', '.join(BASES)}")
        if not isinstance(self.base_config, dict):
            raise InvalidArgument("base_config", "expected the base model's config.json object")
        try:
            return BASES[self.base_family].config_cls.from_json(self.base_config)
        except InvalidArgument as error:
            raise InvalidArgument(f"base_config.{error.field}", str(error).partition(": ")[2]) from None

    def validate(self) -> None:
        base = self.base_family_config()
        if base.spatial_dims != self.spatial_dims:
            raise InvalidArgument("spatial_dims", f"{self.spatial_dims}, but the base {self.base_family} makes "
                                                  f"{base.spatial_dims}D {ITEMS[base.spatial_dims]}")
        if (base.channels, base.image_size) != (self.channels, self.image_size):
            raise InvalidArgument("base_config", f"the base makes {base.channels}x{base.image_size}^"
                                                 f"{base.spatial_dims} items, this model "
                                                 f"{self.channels}x{self.image_size}^{self.spatial_dims}")
        if base.mask_channel:
            raise InvalidArgument("base_config", "the base already takes the mask as an input channel "
                                                 "(mask_channel); a controlnet needs a base without it")
        widths = self.conditioning_embedding_num_channels
        if not widths or any(width < 1 for width in widths):
            raise InvalidArgument("conditioning_embedding_num_channels", f"{list(widths)} needs positive widths")
        factor = base.first_stage_config().downsampling_factor
        if 2 ** (len(widths) - 1) != factor:
            raise InvalidArgument("conditioning_embedding_num_channels",
                                  f"{len(widths)} entries halve the mask {len(widths) - 1} times, but the base's "
                                  f"first stage downsamples by {factor}: give {factor.bit_length()} entries")
        if self.conditioning_scale < 0:
            raise InvalidArgument("conditioning_scale", f"{self.conditioning_scale} must be >= 0")
        if not self.learning_rate > 0:
            raise InvalidArgument("learning_rate", f"{self.learning_rate} must be > 0")
        if self.warmup_steps < 0:
            raise InvalidArgument("warmup_steps", f"{self.warmup_steps} must be >= 0")
        if not 0 <= self.ema_decay < 1:
            raise InvalidArgument("ema_decay", f"{self.ema_decay} is outside [0, 1)")


def build_controlnet(config: ControlNetConfig, base: DenoiserConfig, latent_channels: int) -> MonaiControlNet:
    """The trainable copy of the base U-Net's encoder: (latents, t[, class], mask) -> residuals."""
    return MonaiControlNet(spatial_dims=config.spatial_dims, in_channels=latent_channels, **unet_layout(base),
                           conditioning_embedding_in_channels=1,
                           conditioning_embedding_num_channels=config.conditioning_embedding_num_channels)


class ControlNet(Family):
    name = "controlnet"
    config_cls = ControlNetConfig
    description = ("ControlNet on a trained ldm or rflow (MAISI): the nodule mask conditions a frozen 2D or 3D "
                   "latent model; only the ControlNet trains")

    def __init__(self, config: ControlNetConfig, device: torch.device | str = "cpu", precision: str = "fp32"):
        super().__init__(config, device, precision)
        base_config = config.base_family_config().replace(gradient_checkpointing=config.gradient_checkpointing)
        self.base = BASES[config.base_family](base_config, self.device, precision)
        self.base.owner = self
        # The base's U-Net (checkpointed as configured) is the frozen denoiser; its own EMA copy and
        # optimizer are not needed: the base's weights come in by `load_base_weights`.
        unet = self.base.modules.pop("unet").requires_grad_(False).eval()
        self.base.modules["ema"] = unet
        self.base.optimizers.clear()
        controlnet = build_controlnet(config, base_config, self.base.diffusion_shape()[0]).to(self.device)
        self.modules.update(unet=unet, autoencoder=self.base.modules["autoencoder"], controlnet=controlnet,
                            ema=make_ema(controlnet))
        if config.gradient_checkpointing:
            enable_checkpointing(controlnet)
        self.initialise_controlnet()
        self.optimizers["controlnet"] = torch.optim.AdamW(controlnet.parameters(), lr=config.learning_rate)

    @property
    def trainable(self) -> tuple[str, ...]:
        return ("controlnet",)

    @property
    def preview_sampler(self) -> dict[str, Any]:
        return self.base.preview_sampler

    @classmethod
    def conditional(cls, config: ControlNetConfig) -> bool:
        return config.base_family_config().conditional

    @classmethod
    def mask_conditioned(cls, config: ControlNetConfig) -> bool:
        return True

    @torch.no_grad()
    def initialise_controlnet(self) -> None:
        """The ControlNet (and its EMA) from the frozen U-Net's weights where
        they share a layer (ControlNet's trainable copy; MONAI's tutorial
        loads `unet.state_dict()` with strict=False); the zero convolutions
        and the conditioning embedding keep their initialisation."""
        controlnet = unwrap(self.modules["controlnet"])
        controlnet.load_state_dict(self.modules["unet"].state_dict(), strict=False)
        self.modules["ema"].load_state_dict(controlnet.state_dict())

    @classmethod
    def resolve_inputs(cls, hyperparameters: dict, models) -> tuple[dict, dict]:
        """Training-service hook: resolve `base` to a trained ldm or rflow
        version and copy its family and config (its items' shape with it).
        Returns (hyperparameters, {"base_prefix": where its weights are})."""
        from ctsynth.registry import parse_ref

        reference = hyperparameters.get("base") or ""
        if not reference:
            raise InvalidArgument("base", f"the {cls.name} needs a trained {' or '.join(BASES)}, e.g. base=rflow:1")
        name, version = models.resolve(parse_ref(reference, "base"))
        prefix = models.prefix(name, version)
        published = models.store.get_json(f"{prefix}/config.json")
        if published.get("family") not in BASES:
            raise InvalidArgument("base", f"{name}:{version} is a {published.get('family')} model, not an "
                                          f"{' or '.join(BASES)}")
        base = published["config"]
        resolved = {**{key: base[key] for key in ("spatial_dims", "image_size", "channels") if key in base},
                    **hyperparameters, "base": f"{name}:{version}", "base_family": published["family"],
                    "base_config": base}
        return resolved, {"base_prefix": prefix}

    def prepare(self, store, spec) -> None:
        """Training-runtime hook: load the base's trained weights, checked against its manifest."""
        from safetensors.torch import load as load_safetensors

        from ctsynth.models.checkpoint import verified_bytes

        prefix = spec.extra["base_prefix"]
        sha256 = store.read_manifest(prefix)["files"]["weights.safetensors"]["sha256"]
        self.load_base_weights(load_safetensors(verified_bytes(store, f"{prefix}/weights.safetensors", sha256)))

    def load_base_weights(self, weights: Mapping[str, torch.Tensor]) -> None:
        """Load a base version's weights (`<module>.<key>`, as it was saved):
        its EMA U-Net, which it samples with, and its first stage with the
        scale factor; then start the ControlNet from that U-Net."""
        for module, source in (("unet", "ema."), ("autoencoder", "autoencoder.")):
            self.modules[module].load_state_dict({key[len(source):]: tensor for key, tensor in weights.items()
                                                  if key.startswith(source)})
        self.initialise_controlnet()

    def controlled(self, unet: nn.Module, controlnet: nn.Module, x: torch.Tensor, t: torch.Tensor,
                   labels: torch.Tensor | None, masks: torch.Tensor) -> torch.Tensor:
        """The frozen U-Net's output at (x_t, t) with the ControlNet's residuals
        for the masks (image resolution). Written here rather than taken from
        MONAI's ControlNetLatentDiffusionInferer, whose sampling loop is its
        own: this forward plugs into our samplers and guidance instead."""
        down, mid = controlnet(x, t, controlnet_cond=masks.to(x.dtype),
                               conditioning_scale=self.config.conditioning_scale, class_labels=labels)
        return unet(x, t, class_labels=labels, down_block_additional_residuals=down,
                    mid_block_additional_residual=mid)

    def learning_rate(self, step: int) -> float:
        """Linear warm-up over `warmup_steps`, then constant."""
        warmup = self.config.warmup_steps
        return self.config.learning_rate * (min(1.0, (step + 1) / warmup) if warmup else 1.0)

    def train_step(self, batch: Batch, step: int) -> dict[str, float]:
        """One step of the base's objective through the frozen U-Net, updating only the ControlNet."""
        if batch.mask is None:
            raise InvalidArgument("mask", f"{self.name} trains on nodule masks; the dataset must provide them")
        base, controlnet, optimizer = self.base, self.modules["controlnet"], self.optimizers["controlnet"]
        with torch.no_grad():
            x0 = base.encode(batch.image.to(self.device)).float()
        noisy, timesteps, target = base.noised(x0)
        for group in optimizer.param_groups:
            group["lr"] = self.learning_rate(step)
        optimizer.zero_grad(set_to_none=True)
        with self.precision.autocast():
            prediction = self.controlled(self.modules["unet"], controlnet, noisy, timesteps,
                                         base._training_labels(batch), batch.mask.to(self.device))
        loss = F.mse_loss(prediction.float(), target)
        self.precision.backward(loss)
        self.precision.step(optimizer)
        updates = step + 1  # the denoising core's EMA warm-up
        update_ema(self.modules["ema"], controlnet, min(self.config.ema_decay, (1 + updates) / (10 + updates)))
        return {"loss": loss.item()}

    def sampler_options(self, sampler: Mapping[str, Any], truncation_psi: float | None) -> dict[str, Any]:
        """The base's default sampler with the request's settings over it."""
        return self.base.sampler_options(sampler, truncation_psi)

    @torch.no_grad()
    def sample(self, count: int, generator: torch.Generator, *, labels: torch.Tensor | None = None,
               sampler: Mapping[str, Any] | None = None, masks: torch.Tensor | None = None) -> torch.Tensor:
        """`count` samples showing nodules where `masks` (count, 1, *spatial) in {0, 1} has them, by the
        base's sampling chain (guided, with labels, when the base is conditional)."""
        return self.base.sample(count, generator, labels=labels, sampler=sampler, masks=masks)
