"""Diffusion samplers behind one interface (`samplers.py`); the Euler-ancestral
sampler, which MONAI lacks, in `euler_ancestral.py`. The networks and training
steps live in the model families: the core in `ctsynth.models.denoising_diffusion`,
which `ctsynth.models.ldm` and `ctsynth.models.ddpm3d` build on."""

from ctsynth.diffusion.samplers import (PREDICTION_TYPES, SAMPLER_KINDS, SCHEDULES, Sampler, SamplerSettings,
                                        guided, initial_noise, make_scheduler)

__all__ = ["PREDICTION_TYPES", "SAMPLER_KINDS", "SCHEDULES", "Sampler", "SamplerSettings", "guided",
           "initial_noise", "make_scheduler"]
