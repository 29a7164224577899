"""Diffusion and rectified-flow samplers behind one interface (`samplers.py`),
from MONAI and diffusers. The networks and training steps live in the model
families: the core in `ctsynth.models.denoising_diffusion`, which
`ctsynth.models.ldm` and `ctsynth.models.ddpm3d` build on."""

from ctsynth.diffusion.samplers import (OBJECTIVES, PREDICTION_TYPES, SAMPLER_KINDS, SCHEDULES, Sampler,
                                        SamplerSettings, guided, initial_noise, kinds_for, make_scheduler)

__all__ = ["OBJECTIVES", "PREDICTION_TYPES", "SAMPLER_KINDS", "SCHEDULES", "Sampler", "SamplerSettings", "guided",
           "initial_noise", "kinds_for", "make_scheduler"]
