"""`ddpm3d`: seed 001's 3D DDPM on 128^3 CT volumes (§III-A, §III-C), the
denoising-diffusion core (`denoising_diffusion`) in pixel space with
`spatial_dims` = 3 and the core's defaults, which are seed 001's: a residual
3D U-Net, T = 1000 steps of a linear beta schedule, Adam 1e-5, an EMA of the
weights and gradient checkpointing (seed 001 §III-C: batch 2 fits 8 GB with
it); default sampler ancestral DDPM over all T.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ctsynth.models.denoising_diffusion import DenoisingDiffusion, DiffusionConfig


@dataclass(frozen=True)
class DDPM3DConfig(DiffusionConfig):
    """Seed 001's defaults (see `DiffusionConfig`), on volumes."""

    SUPPORTED_DIMS: ClassVar[tuple[int, ...]] = (3,)
    spatial_dims: int = 3


class DDPM3D(DenoisingDiffusion):
    name = "ddpm3d"
    config_cls = DDPM3DConfig
    description = "3D DDPM on CT volumes (seed 001 §III): residual 3D U-Net, T=1000, Adam 1e-5, EMA, checkpointing"
