"""The denoising-diffusion core that `ddpm3d` (3D, pixel space) and `ldm`
(2D, latent space) are built on: the config, the U-Net denoiser and the
family that trains and samples it.

The denoiser is MONAI's `DiffusionModelUNet` built by one helper for 2D and
3D (`spatial_dims`): residual blocks with GroupNorm, SiLU and 3^d
convolutions, skip connections, a final GroupNorm-SiLU-conv predicting the
noise; MONAI adds self-attention in its middle block (and at the levels
`attention_levels` names). Training minimises L_simple = E||eps - eps_theta(x_t, t)||^2
(Ho et al. 2020; seed 000 §2.5) over `num_train_timesteps` steps of a beta
schedule, with Adam (or a subclass's optimizer), an EMA of the weights and
optional gradient checkpointing. Sampling uses the EMA weights and any sampler
of `ctsynth.diffusion`. The loss is written here rather than taken from MONAI's
`DiffusionInferer`, whose forward conditions through cross-attention context
only, not class labels.

Optionally class-conditional on tumor presence with classifier-free guidance
(Ho & Salimans 2022): the labels 0 (no tumor) and 1 (tumor) are replaced by a
null class 2 with probability `p_uncond` during training. Optionally
mask-conditioned (`mask_channel`, Lung-DDPM's approach, Jiang et al. 2025):
the nodule mask, resized to the denoised grid, is an extra input channel of
the U-Net in training and sampling, so a sample shows its nodules where the
mask has them.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from monai.networks.blocks import SpatialAttentionBlock
from monai.networks.nets import DiffusionModelUNet
from monai.networks.nets.diffusion_model_unet import DiffusionUNetResnetBlock
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing

from ctsynth.diffusion.samplers import (PREDICTION_TYPES, SCHEDULES, Sampler, SamplerSettings, guided, initial_noise,
                                        make_scheduler)
from ctsynth.errors import InvalidArgument
from ctsynth.models.base import Batch, Family, FamilyConfig
from ctsynth.models.ema import make_ema, update_ema

NULL_LABEL = 2  # class embeddings: 0 no tumor, 1 tumor, 2 null (classifier-free guidance)


@dataclass(frozen=True)
class DenoiserConfig(FamilyConfig):
    """U-Net, optimisation, conditioning and default sampler of a family that
    trains a denoiser, for either objective: `DiffusionConfig` adds a DDPM
    noise schedule, `FlowConfig` (models/rflow.py) a rectified flow's
    timestep distribution. Defaults are seed 001's 3D DDPM."""

    OBJECTIVE: ClassVar[str]  # "noise" (DDPM's epsilon/v objective) or "flow" (rectified-flow velocity)
    TRAINING_KIND: ClassVar[str]  # the sampler kind whose scheduler noises training samples
    PREVIEW_KIND: ClassVar[str]  # a few-step sampler kind for checkpoint grids

    image_size: int = 128
    unet_channels: tuple[int, ...] = (32, 64, 128, 256)  # one level each; halving the size between levels
    attention_levels: tuple[bool, ...] = (False, False, False, False)  # MONAI's middle block attends regardless
    num_res_blocks: int = 2
    num_heads: int = 8
    norm_num_groups: int = 32
    flash_attention: bool = True  # PyTorch's fused scaled_dot_product_attention (seed 000 §6.2: less memory)
    gradient_checkpointing: bool = True
    num_train_timesteps: int = 1000
    learning_rate: float = 1e-5
    warmup_steps: int = 0  # linear learning-rate warm-up from 0
    ema_decay: float = 0.9999
    conditional: bool = False
    p_uncond: float = 0.1
    mask_channel: bool = False  # the nodule mask as an extra U-Net input channel (Lung-DDPM)
    sampler_kind: str = "ddpm"
    sampler_steps: int = 1000
    sampler_eta: float = 0.0
    sampler_guidance_scale: float = 3.0

    def diffusion_side(self) -> int:
        """Side of the samples the U-Net denoises (the image itself here)."""
        return self.image_size

    def schedule_args(self) -> dict[str, Any]:
        """The training schedule as `make_scheduler` keywords for this objective."""
        raise NotImplementedError

    def sampler_defaults(self) -> SamplerSettings:
        return SamplerSettings(self.sampler_kind, self.sampler_steps, self.sampler_eta, self.sampler_guidance_scale)

    def sampler_settings(self, request: Mapping[str, Any] | None) -> SamplerSettings:
        """The default sampler with a request's settings over it, checked for this objective."""
        return self.sampler_defaults().override(request, self.num_train_timesteps, objective=self.OBJECTIVE)

    def validate(self) -> None:
        channels, levels = self.unet_channels, len(self.unet_channels)
        for name in ("norm_num_groups", "num_heads", "num_res_blocks"):
            if getattr(self, name) < 1:
                raise InvalidArgument(name, f"{getattr(self, name)} must be >= 1")
        if not channels or any(c < 1 or c % self.norm_num_groups for c in channels):
            raise InvalidArgument("unet_channels", f"{list(channels)} must be positive multiples of "
                                                   f"norm_num_groups {self.norm_num_groups}")
        if len(self.attention_levels) != levels:
            raise InvalidArgument("attention_levels", f"needs one entry per level ({levels})")
        attending = [c for c, attends in zip(channels, self.attention_levels) if attends] + [channels[-1]]
        if any(c % self.num_heads for c in attending):
            raise InvalidArgument("num_heads", f"{self.num_heads} must divide the channels of every attention "
                                               f"level and of the last one, {attending}")
        if self.diffusion_side() % 2 ** (levels - 1):
            raise InvalidArgument("unet_channels", f"{levels} levels need a side divisible by {2 ** (levels - 1)}, "
                                                   f"got {self.diffusion_side()}")
        if not 1 <= self.num_train_timesteps <= 10000:
            raise InvalidArgument("num_train_timesteps", f"{self.num_train_timesteps} is outside 1-10000")
        if not self.learning_rate > 0:
            raise InvalidArgument("learning_rate", f"{self.learning_rate} must be > 0")
        if self.warmup_steps < 0:
            raise InvalidArgument("warmup_steps", f"{self.warmup_steps} must be >= 0")
        for name in ("ema_decay", "p_uncond"):
            if not 0 <= getattr(self, name) < 1:
                raise InvalidArgument(name, f"{getattr(self, name)} is outside [0, 1)")
        self.sampler_defaults().check(self.num_train_timesteps, prefix="sampler_", objective=self.OBJECTIVE)


@dataclass(frozen=True)
class DiffusionConfig(DenoiserConfig):
    """A denoiser trained on DDPM's objective over a beta schedule."""

    OBJECTIVE: ClassVar[str] = "noise"
    TRAINING_KIND: ClassVar[str] = "ddpm"
    PREVIEW_KIND: ClassVar[str] = "ddim"

    schedule: str = "linear_beta"  # a MONAI NoiseSchedules name
    beta_start: float = 1e-4
    beta_end: float = 2e-2
    prediction_type: str = "epsilon"  # or v_prediction
    clip_sample: bool = True  # clamp predicted x0 to [-1, 1] while sampling (pixel space)

    def schedule_args(self) -> dict[str, Any]:
        return {"num_train_timesteps": self.num_train_timesteps, "schedule": self.schedule,
                "beta_start": self.beta_start, "beta_end": self.beta_end,
                "prediction_type": self.prediction_type, "clip_sample": self.clip_sample}

    def validate(self) -> None:
        if self.schedule not in SCHEDULES:
            raise InvalidArgument("schedule", f"{self.schedule!r}; use one of {', '.join(SCHEDULES)}")
        if not 0 < self.beta_start < self.beta_end < 1:
            raise InvalidArgument("beta_end" if 0 < self.beta_start < 1 else "beta_start",
                                  f"need 0 < beta_start < beta_end < 1, got {self.beta_start}, {self.beta_end}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise InvalidArgument("prediction_type",
                                  f"{self.prediction_type!r}; use one of {', '.join(PREDICTION_TYPES)}")
        super().validate()


def unet_layout(config: DenoiserConfig) -> dict[str, Any]:
    """The U-Net's levels, attention and class embedding as MONAI keywords,
    shared by `build_unet` and the ControlNet that copies its encoder."""
    return dict(channels=config.unet_channels, attention_levels=config.attention_levels,
                num_res_blocks=config.num_res_blocks, norm_num_groups=config.norm_num_groups,
                num_head_channels=tuple(max(c // config.num_heads, 1) for c in config.unet_channels),
                num_class_embeds=NULL_LABEL + 1 if config.conditional else None,
                use_flash_attention=config.flash_attention)


def build_unet(config: DenoiserConfig, spatial_dims: int, channels: int) -> DiffusionModelUNet:
    """The denoiser eps_theta: (N, channels [+ 1 mask], *spatial), t (N,)[, class (N,)] -> (N, channels, *spatial)."""
    return DiffusionModelUNet(spatial_dims=spatial_dims, in_channels=channels + int(config.mask_channel),
                              out_channels=channels, **unet_layout(config))


def enable_checkpointing(unet: nn.Module) -> None:
    """Recompute every residual and attention block's activations during
    backward instead of keeping them (seed 001 §III-C; seed 000's U-Net has
    `use_checkpoint`). MONAI 1.6.1's DiffusionModelUNet has no such option;
    torch's checkpoint wrapper keeps the state_dict keys unchanged."""
    apply_activation_checkpointing(
        unet, check_fn=lambda module: isinstance(module, (DiffusionUNetResnetBlock, SpatialAttentionBlock)))


class DenoisingDiffusion(Family):
    """A U-Net denoiser trained on diffusion-space samples x0 (N, C, *spatial):
    the images mapped to [-1, 1] here; subclasses map images to latents by
    overriding `diffusion_shape`, `encode` and `decode`."""

    config_cls: ClassVar[type[DenoiserConfig]]
    optimizer_cls: ClassVar[type[torch.optim.Optimizer]] = torch.optim.Adam

    def __init__(self, config: DenoiserConfig, device: torch.device | str = "cpu", precision: str = "fp32"):
        super().__init__(config, device, precision)
        unet = build_unet(config, self.spatial_dims, self.diffusion_shape()[0]).to(self.device)
        ema = make_ema(unet)
        if config.gradient_checkpointing:
            enable_checkpointing(unet)
        self.modules.update(unet=unet, ema=ema)
        self.optimizers["unet"] = self.optimizer_cls(unet.parameters(), lr=config.learning_rate)
        # The training chain of the objective: noising and timestep draws.
        self.noise_scheduler = make_scheduler(config.TRAINING_KIND, objective=config.OBJECTIVE,
                                              **config.schedule_args())

    @property
    def preview_sampler(self) -> dict[str, Any]:
        """The objective's few-step sampler with at most 20 steps: enough for a checkpoint grid."""
        return {"kind": self.config.PREVIEW_KIND, "steps": min(20, self.config.num_train_timesteps)}

    @classmethod
    def conditional(cls, config: DenoiserConfig) -> bool:
        return config.conditional

    @classmethod
    def mask_conditioned(cls, config: DenoiserConfig) -> bool:
        return config.mask_channel

    def diffusion_shape(self) -> tuple[int, ...]:
        """(C, *spatial) of x0."""
        return self.sample_shape()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> x0."""
        return images * 2 - 1

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """x0 -> images in [0, 1]."""
        return ((x0 + 1) / 2).clamp(0, 1)

    def learning_rate(self, step: int) -> float:
        """Linear warm-up over `warmup_steps`, then constant."""
        warmup = self.config.warmup_steps
        return self.config.learning_rate * (min(1.0, (step + 1) / warmup) if warmup else 1.0)

    def noised(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_t, t, target) of one training step: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps,
        t ~ U{0..T-1}, the target eps or v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022)."""
        noise = torch.randn_like(x0)
        timesteps = torch.randint(0, self.config.num_train_timesteps, (x0.shape[0],), device=self.device)
        noisy = self.noise_scheduler.add_noise(x0, noise, timesteps)
        if self.config.prediction_type == "epsilon":
            return noisy, timesteps, noise
        return noisy, timesteps, self.noise_scheduler.get_velocity(x0, noise, timesteps)

    def train_step(self, batch: Batch, step: int) -> dict[str, float]:
        """One step of the L2 loss between the U-Net's output at (x_t, t) and the objective's target."""
        config = self.config
        unet, optimizer = self.modules["unet"], self.optimizers["unet"]
        with torch.no_grad():
            x0 = self.encode(batch.image.to(self.device)).float()
        noisy, timesteps, target = self.noised(x0)
        for group in optimizer.param_groups:
            group["lr"] = self.learning_rate(step)
        optimizer.zero_grad(set_to_none=True)
        masks = self._training_masks(batch)
        with self.precision.autocast():
            prediction = self.denoise(unet, noisy, timesteps, self._training_labels(batch), masks)
        loss = F.mse_loss(prediction.float(), target)
        self.precision.backward(loss)
        self.precision.step(optimizer)
        updates = step + 1  # CompVis LitEma's warm-up: decay min(d, (1 + n) / (10 + n)) at the n-th update
        update_ema(self.modules["ema"], unet, min(config.ema_decay, (1 + updates) / (10 + updates)))
        return {"loss": loss.item()}

    def denoise(self, unet: nn.Module, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None,
                masks: torch.Tensor | None) -> torch.Tensor:
        """The U-Net's output at (x_t, t) given the conditions: the mask,
        already on the denoised grid (`mask_condition`), as an extra channel."""
        if masks is not None:
            x = torch.cat([x, masks.to(x.dtype)], dim=1)
        return unet(x, t, class_labels=labels)

    def mask_condition(self, masks: torch.Tensor) -> torch.Tensor:
        """Masks (N, 1, *image spatial) in {0, 1} on the grid the U-Net
        denoises: the image grid itself here; a latent model's coarser grid
        keeps a cell where any of its voxels is nodule (max pooling), so no
        small nodule vanishes."""
        grid = self.diffusion_shape()[1:]
        if tuple(masks.shape[2:]) == tuple(grid):
            return masks.float()
        return F.adaptive_max_pool3d(masks.float(), grid) if len(grid) == 3 else F.adaptive_max_pool2d(masks.float(), grid)

    def _training_masks(self, batch: Batch) -> torch.Tensor | None:
        if not self.mask_conditioned(self.config):
            return None
        if batch.mask is None:
            raise InvalidArgument("mask", f"{self.name} with mask_channel trains on nodule masks; the dataset "
                                          "must provide them")
        return self.mask_condition(batch.mask.to(self.device))

    def _sampling_masks(self, count: int, masks: torch.Tensor | None) -> torch.Tensor | None:
        """Checked sampling masks on the denoised grid; None for a family without mask input."""
        masks = self.checked_masks(count, masks)
        return None if masks is None else self.mask_condition(masks)

    def _training_labels(self, batch: Batch) -> torch.Tensor | None:
        """Tumor labels with each replaced by the null class w.p. p_uncond; None when unconditional."""
        if not self.config.conditional:
            return None
        if batch.label is None:
            raise InvalidArgument("label", f"{self.name} is conditional and needs batch labels "
                                           "(0 = no tumor, 1 = tumor)")
        labels = batch.label.to(self.device, torch.long)
        dropped = torch.rand(labels.shape, device=self.device) < self.config.p_uncond
        return torch.where(dropped, torch.full_like(labels, NULL_LABEL), labels)

    def sampler_options(self, sampler: Mapping[str, Any], truncation_psi: float | None) -> dict[str, Any]:
        """The config's default sampler with the request's settings over it."""
        if truncation_psi is not None:
            raise InvalidArgument("truncation_psi", f"{self.name} is not a style GAN")
        return dataclasses.asdict(self.config.sampler_settings(sampler))

    @torch.no_grad()
    def sample(self, count: int, generator: torch.Generator, *, labels: torch.Tensor | None = None,
               sampler: Mapping[str, Any] | None = None, masks: torch.Tensor | None = None) -> torch.Tensor:
        """`count` samples from the EMA denoiser. A conditional family given no
        labels samples unconditionally (the null class); a mask-conditioned
        one needs `masks`."""
        config = self.config
        settings = config.sampler_settings(sampler)
        masks = self._sampling_masks(count, masks)
        labels, guidance_scale = self._sampling_labels(count, labels), settings.guidance_scale
        if config.conditional and labels is None:
            labels, guidance_scale = torch.full((count,), NULL_LABEL, device=self.device), 1.0
        ema = self.modules["ema"]

        def model_fn(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
            # Classifier-free guidance doubles the batch; the masks follow it.
            condition = None if masks is None else masks.repeat(x.shape[0] // count, *(1,) * (masks.dim() - 1))
            with self.precision.autocast():
                return self.denoise(ema, x, t, y, condition).float()

        noise = initial_noise((count, *self.diffusion_shape()), generator, self.device)
        chain = Sampler(settings.kind, make_scheduler(settings.kind, objective=config.OBJECTIVE,
                                                      **config.schedule_args()))
        x0 = chain.run(guided(model_fn, labels, NULL_LABEL, guidance_scale), noise, generator,
                       steps=settings.steps, eta=settings.eta)
        return self.decode(x0)

    def _sampling_labels(self, count: int, labels: torch.Tensor | None) -> torch.Tensor | None:
        if labels is None:
            return None
        if not self.config.conditional:
            raise InvalidArgument("labels", f"{self.name} is unconditional; pass no labels")
        labels = torch.as_tensor(labels, device=self.device).long()
        if labels.shape != (count,) or bool(((labels < 0) | (labels > 1)).any()):
            raise InvalidArgument("labels", f"labels must be ({count},) of 0 (no tumor) or 1 (tumor)")
        return labels
