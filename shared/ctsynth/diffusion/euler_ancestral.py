"""Euler-ancestral sampling for discrete-time (VP) diffusion models.

MONAI 1.6.1 ships DDPM, DDIM, PNDM and RFlow schedulers but no
Euler-ancestral one, so this one is ours. It is Karras et al. 2022
("Elucidating the Design Space of Diffusion-Based Generative Models",
Alg. 1 with Euler steps) with the ancestral split of k-diffusion's
`sample_euler_ancestral` (Crowson): in the variance-exploding variable
x~ = x_t / sqrt(abar_t) = x0 + sigma_t eps, sigma_t = sqrt((1 - abar_t) / abar_t),
one step from sigma to sigma' (eta = 1) is

    sigma_up   = min(sigma', sqrt(sigma'^2 (sigma^2 - sigma'^2) / sigma^2))
    sigma_down = sqrt(sigma'^2 - sigma_up^2)
    D          = x0 predicted by the model at (x_t, t)
    x~'        = D + sigma_down (x~ - D) / sigma + sigma_up z,   z ~ N(0, I)

and the sample is returned in the model's own (VP) variable
x_{t'} = x~' / sqrt(1 + sigma'^2), so the scheduler meets MONAI's interface
(`set_timesteps`, `step(model_output, timestep, sample, generator)`) and
takes the same N(0, I) initial noise as DDPM/DDIM/PNDM.
"""

from __future__ import annotations

import torch
from monai.networks.schedulers import Scheduler

# x0 from the network output m at (x_t, abar_t), per prediction type (Ho et al. 2020 eq. 15;
# Salimans & Ho 2022 for v = sqrt(abar) eps - sqrt(1 - abar) x0).
PREDICTED_X0 = {
    "epsilon": lambda m, x, abar: (x - (1 - abar).sqrt() * m) / abar.sqrt(),
    "v_prediction": lambda m, x, abar: abar.sqrt() * x - (1 - abar).sqrt() * m,
}


class EulerAncestralScheduler(Scheduler):
    """Euler-ancestral steps over `num_inference_steps` timesteps spaced evenly
    from T-1 down to 0, then to sigma = 0 (the clean sample).

    Args: as MONAI's schedulers (`num_train_timesteps`, `schedule`,
    `prediction_type`, `clip_sample` clamps the predicted x0 to [-1, 1],
    `**schedule_args` such as `beta_start`, `beta_end`).
    """

    def __init__(self, num_train_timesteps: int = 1000, schedule: str = "linear_beta",
                 prediction_type: str = "epsilon", clip_sample: bool = False, **schedule_args) -> None:
        super().__init__(num_train_timesteps, schedule, **schedule_args)
        if prediction_type not in PREDICTED_X0:
            raise ValueError(f"prediction_type must be one of {', '.join(PREDICTED_X0)}")
        self.prediction_type = prediction_type
        self.clip_sample = clip_sample
        self.train_sigmas = ((1 - self.alphas_cumprod) / self.alphas_cumprod).sqrt()
        self.set_timesteps(num_train_timesteps)

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        if not 1 <= num_inference_steps <= self.num_train_timesteps:
            raise ValueError(f"num_inference_steps must be in 1..{self.num_train_timesteps}")
        self.num_inference_steps = num_inference_steps
        self.timesteps = torch.linspace(self.num_train_timesteps - 1, 0, num_inference_steps).round().long()
        sigmas = self.train_sigmas[self.timesteps].tolist() + [0.0]
        # With at most T steps the rounded timesteps are distinct, so each one names its successor.
        self._next_sigma = {int(t): (sigmas[i], sigmas[i + 1]) for i, t in enumerate(self.timesteps)}
        self.timesteps = self.timesteps.to(device)

    def step(self, model_output: torch.Tensor, timestep: int, sample: torch.Tensor,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t (N, C, *spatial) -> (x_{t'}, predicted x0) for the next timestep t' of the schedule."""
        sigma, sigma_next = self._next_sigma[int(timestep)]
        abar = self.alphas_cumprod[int(timestep)].to(sample.device, sample.dtype)
        denoised = PREDICTED_X0[self.prediction_type](model_output, sample, abar)
        if self.clip_sample:
            denoised = denoised.clamp(-1, 1)
        sigma_up = min(sigma_next, (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5)
        sigma_down = (sigma_next**2 - sigma_up**2) ** 0.5
        ve_sample = sample / abar.sqrt()
        ve_next = denoised + (ve_sample - denoised) * (sigma_down / sigma)
        if sigma_next > 0:
            noise = torch.randn(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
            ve_next = ve_next + sigma_up * noise
        return ve_next / (1 + sigma_next**2) ** 0.5, denoised
