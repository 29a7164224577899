"""Diffusion samplers behind one interface (`samplers.py`); the Euler-ancestral
sampler, which MONAI lacks, in `euler_ancestral.py`. The networks and training
steps live in the model families (`ctsynth.models.ldm`, `ctsynth.models.ddpm3d`)."""

from ctsynth.diffusion.samplers import (PREDICTION_TYPES, SAMPLER_KINDS, SCHEDULES, Sampler, SamplerSettings,
                                        guided, initial_noise, make_scheduler)

__all__ = ["PREDICTION_TYPES", "SAMPLER_KINDS", "SCHEDULES", "Sampler", "SamplerSettings", "guided",
           "initial_noise", "make_scheduler"]
