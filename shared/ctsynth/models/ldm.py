"""`ldm`: seed 000's latent diffusion on 256^2 axial slices (§4.2.2, §4.4.3),
and the same model on volumes when its `vae` is 3D (`spatial_dims` follows
the vae), so that the DDPM objective compares with `rflow` on equal footing.

A frozen, separately trained `vae` (module "autoencoder") maps slices to
latents z (f = 4: 4 x 64 x 64); a MONAI `DiffusionModelUNet` (the helper
`denoising_diffusion.build_unet`) learns to denoise z * scale
(Rombach et al. 2022) with T = 1000 and seed 000's beta range
8.5e-4 -> 1.2e-2. CompVis's "linear" schedule, which seed 000 ran, is linear
in sqrt(beta) (`make_beta_schedule`: linspace(sqrt(b0), sqrt(b1)) ** 2), so
the default is MONAI's "scaled_linear_beta", not "linear_beta".

The scale factor makes the latents about unit variance: unless the config
fixes it (seed 000 used 0.31778), it is estimated once, at step 0, as
1 / std of the first batch's latents (CompVis `scale_by_std`), taken from
rank 0 under torch.distributed, and kept as a buffer of the "autoencoder"
module so checkpoints carry it. U-Net defaults: 320 channels x (1, 2, 4, 4),
two residual blocks per level, attention at the three finest levels with 8
heads, gradient checkpointing; AdamW (CompVis) at 5e-6 x batch 8 with
linear warm-up over 5000 steps; EMA weights for sampling. Unconditional as
in seed 000, or class-conditional on tumor presence with classifier-free
guidance (see `denoising_diffusion`); default sampler DDIM with 200 steps (seed 000 §5.3.2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ctsynth.errors import InvalidArgument
from ctsynth.models.base import ITEMS, Batch, FamilyConfig
from ctsynth.models.denoising_diffusion import DenoiserConfig, DenoisingDiffusion, DiffusionConfig
from ctsynth.models.first_stage import FIRST_STAGES, FirstStage


@dataclass(frozen=True)
class LatentConfig(DenoiserConfig):
    """A denoiser in the latent space of a trained `vae` or `vqvae`, slices or
    volumes as that first stage makes."""

    SUPPORTED_DIMS: ClassVar[tuple[int, ...]] = (2, 3)

    image_size: int = 256
    autoencoder: str = ""  # model reference of the trained first stage, e.g. "vae:3" (the runtime loads its weights)
    autoencoder_family: str = "vae"  # or vqvae
    autoencoder_config: dict[str, Any] = field(default_factory=dict, hash=False)  # its config.json's config
    scale_factor: float | None = None  # None: 1 / std of the first batch's latents

    def first_stage_config(self) -> FamilyConfig:
        """The first stage's config; its errors name `autoencoder_config.<field>`."""
        if self.autoencoder_family not in FIRST_STAGES:
            raise InvalidArgument("autoencoder_family", f"{self.autoencoder_family!r}; use one of "
                                                        f"{', '.join(FIRST_STAGES)}")
        if not isinstance(self.autoencoder_config, dict):
            raise InvalidArgument("autoencoder_config", "expected the first stage's config.json object")
        try:
            return FIRST_STAGES[self.autoencoder_family].config_cls.from_json(self.autoencoder_config)
        except InvalidArgument as error:
            raise InvalidArgument(f"autoencoder_config.{error.field}", str(error).partition(": ")[2]) from None

    def diffusion_side(self) -> int:
        return self.image_size // self.first_stage_config().downsampling_factor

    def validate(self) -> None:
        vae = self.first_stage_config()
        if vae.spatial_dims != self.spatial_dims:
            raise InvalidArgument("spatial_dims", f"{self.spatial_dims}, but the {self.autoencoder_family} makes "
                                                  f"{vae.spatial_dims}D {ITEMS[vae.spatial_dims]}")
        if (vae.channels, vae.image_size) != (self.channels, self.image_size):
            raise InvalidArgument("autoencoder_config", f"the first stage takes {vae.channels}x{vae.image_size}^"
                                                        f"{vae.spatial_dims} items, this model "
                                                        f"{self.channels}x{self.image_size}^{self.spatial_dims}")
        if self.scale_factor is not None and not self.scale_factor > 0:
            raise InvalidArgument("scale_factor", f"{self.scale_factor} must be > 0")
        super().validate()


@dataclass(frozen=True)
class LDMConfig(LatentConfig, DiffusionConfig):
    """Seed 000's latent diffusion (see the module docstring)."""

    unet_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    attention_levels: tuple[bool, ...] = (True, True, True, False)
    schedule: str = "scaled_linear_beta"
    beta_start: float = 8.5e-4
    beta_end: float = 1.2e-2
    clip_sample: bool = False  # latents are not bounded
    learning_rate: float = 4e-5
    warmup_steps: int = 5000
    sampler_kind: str = "ddim"
    sampler_steps: int = 200


class LDM(DenoisingDiffusion):
    name = "ldm"
    config_cls = LDMConfig
    optimizer_cls = torch.optim.AdamW
    description = ("Latent diffusion on a trained VAE (seed 000 §4.2.2): 2D or 3D U-Net as the vae, T=1000, "
                   "classifier-free guidance")

    def __init__(self, config: LDMConfig, device: torch.device | str = "cpu", precision: str = "fp32"):
        super().__init__(config, device, precision)
        first_stage = FirstStage(config.autoencoder_family, config.first_stage_config(), config.scale_factor or 1.0)
        self.modules["autoencoder"] = first_stage.to(self.device)

    @property
    def trainable(self) -> tuple[str, ...]:
        return tuple(name for name in super().trainable if name != "autoencoder")

    @classmethod
    def resolve_inputs(cls, hyperparameters: dict, models) -> tuple[dict, dict]:
        """Training-service hook: resolve the `autoencoder` reference to a
        trained vae or vqvae version and copy its family and config, so this
        model's config.json alone rebuilds it. Returns (hyperparameters,
        extra spec inputs)."""
        from ctsynth.registry import parse_ref

        reference = hyperparameters.get("autoencoder") or ""
        if not reference:
            raise InvalidArgument("autoencoder", f"the {cls.name} needs a trained vae or vqvae, e.g. "
                                                 "autoencoder=vae:1")
        name, version = models.resolve(parse_ref(reference, "autoencoder"))
        prefix = models.prefix(name, version)
        first_stage = models.store.get_json(f"{prefix}/config.json")
        if first_stage.get("family") not in FIRST_STAGES:
            raise InvalidArgument("autoencoder", f"{name}:{version} is a {first_stage.get('family')} model, "
                                                 f"not a {' or '.join(FIRST_STAGES)}")
        resolved = {"spatial_dims": first_stage["config"].get("spatial_dims", 2), **hyperparameters,
                    "autoencoder": f"{name}:{version}", "autoencoder_family": first_stage["family"],
                    "autoencoder_config": first_stage["config"]}
        return resolved, {"autoencoder_prefix": prefix}

    def prepare(self, store, spec) -> None:
        """Training-runtime hook: load the frozen VAE's trained weights."""
        from safetensors.torch import load as load_safetensors

        from ctsynth.models.checkpoint import verified_bytes

        prefix = spec.extra["autoencoder_prefix"]
        sha256 = store.read_manifest(prefix)["files"]["weights.safetensors"]["sha256"]
        weights = load_safetensors(verified_bytes(store, f"{prefix}/weights.safetensors", sha256))
        self.load_autoencoder_state({key[len("autoencoder."):]: tensor for key, tensor in weights.items()
                                     if key.startswith("autoencoder.")})

    def load_autoencoder_state(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load the trained VAE: the state_dict of its family's "autoencoder" module."""
        self.modules["autoencoder"].vae.load_state_dict(state_dict)

    def diffusion_shape(self) -> tuple[int, ...]:
        return self.config.first_stage_config().latent_shape()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.modules["autoencoder"].encode(images)

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        return self.modules["autoencoder"].decode(x0)

    def train_step(self, batch: Batch, step: int) -> dict[str, float]:
        if step == 0 and self.config.scale_factor is None:
            self.modules["autoencoder"].calibrate(batch.image.to(self.device))
        return super().train_step(batch, step)
