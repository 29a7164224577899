"""One interface for the four diffusion samplers of seed 000 §6.1.

`make_scheduler(kind, ...)` builds the scheduler; `Sampler(kind, scheduler).run`
turns initial noise x_T into x_0 with a model function `(x, t) -> output`:

- `ddpm`: ancestral sampling over all T training steps (Ho et al. 2020), MONAI `DDPMScheduler`;
- `ddim`: Song et al. 2021 eq. 12 with eta (0 = deterministic), MONAI `DDIMScheduler`;
- `pndm`: MONAI `PNDMScheduler` in its PLMS-only mode (`skip_prk_steps`, the
  pseudo linear multistep sampler of Liu et al. 2022 as in CompVis/latent-diffusion
  PR 51): one model call per step plus one for its second-order first step,
  deterministic and without x0 clipping (MONAI's PNDM has none);
- `euler_ancestral`: ours (`euler_ancestral.py`), MONAI has none.

All four meet MONAI's `set_timesteps`/`step` interface; what differs (which of
`eta`/`generator` a `step` takes, how its timesteps are laid out) is data in
`_KINDS`, not type checks. Every noise draw takes the caller's generator
(PNDM draws none). MONAI's `DiffusionInferer.sample` is not used: its steps
draw noise from the global RNG, its guidance covers cross-attention context
only (not class labels), and it branches on the scheduler type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, PNDMScheduler, Scheduler

from ctsynth.diffusion.euler_ancestral import PREDICTED_X0, EulerAncestralScheduler
from ctsynth.errors import InvalidArgument

SCHEDULES = ("linear_beta", "scaled_linear_beta", "sigmoid_beta")  # MONAI NoiseSchedules taking a beta range
PREDICTION_TYPES = tuple(PREDICTED_X0)  # epsilon, v_prediction: what all four samplers accept

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x (N, C, *spatial), t (N,)) -> output


def _strided(scheduler: Scheduler, steps: int) -> torch.Tensor:
    """Timesteps (steps-1, ..., 1, 0) * k + r with k = T // steps: the stride
    DDIM's and PNDM's `step` go back by, so the last step passes 0 (the clean
    sample); r = min(k - 1, T - 1 - (steps - 1) k) starts as near T - 1 as that
    allows (trailing spacing when steps divides T, Lin et al. 2024)."""
    total = scheduler.num_train_timesteps
    stride = total // steps
    offset = min(stride - 1, total - 1 - (steps - 1) * stride)
    return torch.arange(steps - 1, -1, -1) * stride + offset


def _monai_timesteps(scheduler: Scheduler, steps: int) -> torch.Tensor:
    scheduler.set_timesteps(steps)
    return scheduler.timesteps


def _ddim_timesteps(scheduler: Scheduler, steps: int) -> torch.Tensor:
    """MONAI 1.6.1's DDIM `set_timesteps` spaces by linspace(T-1, 0) but `step`
    goes back by T // steps, so each x would be labelled with the wrong t
    (the bug of diffusers #12633); use a spacing `step` agrees with."""
    scheduler.set_timesteps(steps)
    return _strided(scheduler, steps)


def _plms_timesteps(scheduler: Scheduler, steps: int) -> torch.Tensor:
    """PLMS starts with a second-order step that calls the model twice at the
    second timestep; MONAI 1.6.1 lists that timestep once, so every later call
    would get its predecessor's t. Repeat it, as CompVis and diffusers do."""
    scheduler.set_timesteps(steps)  # also resets the multistep history
    strided = _strided(scheduler, steps)
    return torch.cat([strided[:2], strided[1:]])


@dataclass(frozen=True)
class _Kind:
    build: Callable[..., Scheduler]
    timesteps: Callable[[Scheduler, int], torch.Tensor]
    step_args: tuple[str, ...]  # which of "eta", "generator" its `step` takes
    full_chain: bool = False  # runs all T training timesteps


_KINDS = {
    "ddpm": _Kind(lambda clip_sample, **schedule: DDPMScheduler(clip_sample=clip_sample, **schedule),
                  _monai_timesteps, ("generator",), full_chain=True),
    "ddim": _Kind(lambda clip_sample, **schedule: DDIMScheduler(clip_sample=clip_sample, **schedule),
                  _ddim_timesteps, ("eta", "generator")),
    "pndm": _Kind(lambda clip_sample, **schedule: PNDMScheduler(skip_prk_steps=True, **schedule),
                  _plms_timesteps, ()),
    "euler_ancestral": _Kind(
        lambda clip_sample, **schedule: EulerAncestralScheduler(clip_sample=clip_sample, **schedule),
        _monai_timesteps, ("generator",)),
}
SAMPLER_KINDS = tuple(_KINDS)


def make_scheduler(kind: str, *, num_train_timesteps: int, schedule: str, beta_start: float, beta_end: float,
                   prediction_type: str, clip_sample: bool = False) -> Scheduler:
    """The scheduler of `kind` for a model trained on this noise schedule;
    `clip_sample` clamps predicted x0 to [-1, 1] (not for pndm)."""
    if kind not in _KINDS:
        raise InvalidArgument("sampler.kind", f"{kind!r}; use one of {', '.join(SAMPLER_KINDS)}")
    return _KINDS[kind].build(clip_sample, num_train_timesteps=num_train_timesteps, schedule=schedule,
                              beta_start=beta_start, beta_end=beta_end, prediction_type=prediction_type)


def device_generator(generator: torch.Generator, device: torch.device | str) -> torch.Generator:
    """`generator` when it lives on `device`, else one there seeded from it
    (MONAI's steps draw their noise on the sample's device)."""
    device = torch.device(device)
    if generator.device == device:
        return generator
    seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
    return torch.Generator(device).manual_seed(seed)


def initial_noise(shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str) -> torch.Tensor:
    """x_T ~ N(0, I) drawn on the generator's device (the same numbers for any model device)."""
    return torch.randn(shape, generator=generator, device=generator.device).to(device)


@dataclass(frozen=True)
class Sampler:
    """A sampler kind with its scheduler (from `make_scheduler(kind, ...)`)."""

    kind: str
    scheduler: Scheduler

    def run(self, model_fn: ModelFn, noise: torch.Tensor, generator: torch.Generator, *,
            steps: int, eta: float = 0.0) -> torch.Tensor:
        """x_T (N, C, *spatial) -> x_0 in `steps` steps (ddpm: all T); noise after
        x_T comes from `generator` only."""
        kind = _KINDS[self.kind]
        total = self.scheduler.num_train_timesteps
        if kind.full_chain and steps != total:
            raise InvalidArgument("sampler.steps", f"{self.kind} runs all {total} training steps, got {steps}; "
                                                   "use ddim, pndm or euler_ancestral for fewer")
        options = {"eta": eta, "generator": device_generator(generator, noise.device)}
        step_args = {name: options[name] for name in kind.step_args}
        x = noise
        for t in kind.timesteps(self.scheduler, steps).tolist():
            output = model_fn(x, torch.full((x.shape[0],), t, device=x.device, dtype=torch.long))
            x, _ = self.scheduler.step(output, t, x, **step_args)
        return x


def guided(model_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor],
           labels: torch.Tensor | None, null_label: int | None = None, guidance_scale: float = 1.0) -> ModelFn:
    """`model_fn(x, t, labels)` as `(x, t) -> output`. With labels and w != 1,
    classifier-free guidance (Ho & Salimans 2022 eq. 6):
    out = out(x, null) + w (out(x, labels) - out(x, null)), both halves in one
    forward pass of batch 2N."""
    if labels is None or guidance_scale == 1.0:
        return lambda x, t: model_fn(x, t, labels)
    both_labels = torch.cat([labels, torch.full_like(labels, null_label)])

    def guided_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        conditional, unconditional = model_fn(torch.cat([x, x]), torch.cat([t, t]), both_labels).chunk(2)
        return unconditional + guidance_scale * (conditional - unconditional)

    return guided_fn


@dataclass(frozen=True)
class SamplerSettings:
    """The `sampler` mapping of `Family.sample`: kind, steps, eta, guidance_scale."""

    kind: str = "ddim"
    steps: int = 50
    eta: float = 0.0
    guidance_scale: float = 1.0

    def check(self, num_train_timesteps: int, prefix: str = "sampler.") -> None:
        """INVALID_ARGUMENT naming `<prefix><setting>` for a value out of range."""
        if self.kind not in _KINDS:
            raise InvalidArgument(f"{prefix}kind", f"{self.kind!r}; use one of {', '.join(SAMPLER_KINDS)}")
        if not 1 <= self.steps <= num_train_timesteps:
            raise InvalidArgument(f"{prefix}steps", f"{self.steps} is outside 1-{num_train_timesteps}")
        if _KINDS[self.kind].full_chain and self.steps != num_train_timesteps:
            raise InvalidArgument(f"{prefix}steps", f"{self.kind} runs all {num_train_timesteps} training steps, "
                                                    f"got {self.steps}")
        if not self.eta >= 0:
            raise InvalidArgument(f"{prefix}eta", f"{self.eta} must be >= 0")
        if not self.guidance_scale >= 0:
            raise InvalidArgument(f"{prefix}guidance_scale", f"{self.guidance_scale} must be >= 0")

    def override(self, request: Mapping[str, Any] | None, num_train_timesteps: int) -> SamplerSettings:
        """These defaults with a request's keys applied (ddpm defaults to all T steps), checked."""
        values = dict(request or {})
        known = [item.name for item in fields(self)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise InvalidArgument(f"sampler.{unknown[0]}", f"unknown sampler setting; known: {', '.join(known)}")
        kind = str(values.get("kind", self.kind))
        if "steps" not in values and kind in _KINDS and _KINDS[kind].full_chain:
            values["steps"] = num_train_timesteps
        settings = SamplerSettings(kind=kind, steps=_number(values, "steps", int, self.steps),
                                   eta=_number(values, "eta", float, self.eta),
                                   guidance_scale=_number(values, "guidance_scale", float, self.guidance_scale))
        settings.check(num_train_timesteps)
        return settings


def _number(values: Mapping[str, Any], name: str, kind: type, default: float) -> Any:
    value = values.get(name, default)
    if isinstance(value, bool) or (kind is int and isinstance(value, float) and not value.is_integer()):
        raise InvalidArgument(f"sampler.{name}", f"expected {kind.__name__}, got {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"sampler.{name}", f"expected {kind.__name__}, got {value!r}") from None
