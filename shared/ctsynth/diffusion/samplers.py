"""One interface for the diffusion samplers of seed 000 §6.1 and for the
rectified-flow samplers of MAISI-v2.

`make_scheduler(kind, objective=..., **schedule)` builds the scheduler for a
model's training schedule; `Sampler(kind, scheduler).run` turns initial noise
x_T ~ N(0, I) into x_0 (in the model's own variable) with a model function
`(x, t) -> output`. Each kind samples models of one training objective:

"noise" (DDPM's epsilon or v objective on MONAI's beta schedules):

- `ddpm`: ancestral sampling over all T training steps (Ho et al. 2020), MONAI `DDPMScheduler`;
- `ddim`: Song et al. 2021 eq. 12 with eta (0 = deterministic), MONAI `DDIMScheduler`;
- `pndm`: MONAI `PNDMScheduler` in its PLMS-only mode (`skip_prk_steps`, the
  pseudo linear multistep sampler of Liu et al. 2022 as in CompVis/latent-diffusion
  PR 51): one model call per step plus one for its second-order first step,
  deterministic and without x0 clipping (MONAI's PNDM has none);
- `dpm_solver`: DPM-Solver++ (2M) (Lu et al. 2022), diffusers `DPMSolverMultistepScheduler`;
- `unipc`: UniPC (Zhao et al. 2023), diffusers `UniPCMultistepScheduler`;
- `euler_ancestral`: k-diffusion's Euler-ancestral, diffusers
  `EulerAncestralDiscreteScheduler` on trailing timesteps (integers the model
  was trained on, from T - 1), without x0 clipping (diffusers' has none).

MONAI 1.6.1 has none of the last three; diffusers builds them from the
model's own training betas (MONAI's, passed as `trained_betas`: diffusers'
multistep and Euler schedulers know no sigmoid schedule).

"flow" (rectified-flow velocity models, x_t = (1 - t/T) x0 + (t/T) noise, v = x0 - noise):

- `rflow`: MONAI `RFlowScheduler`'s Euler steps, MAISI-v2's sampler, on its
  timesteps (resolution-dependent when `use_timestep_transform`); with
  `use_discrete_timesteps` off, MONAI 1.6.1 keeps its timesteps in float16
  and truncates `next_timestep` to an int, so its step sizes add up to more
  than T (by up to one timestep per step; a test marks it);
- `flow_euler`: diffusers `FlowMatchEulerDiscreteScheduler` (which predicts
  noise - x0, so the output is negated here) on its own grid from sigma 1 to
  1/T, shifted by RFlow's resolution transform when `use_timestep_transform`;
  its timesteps are continuous (float t) whatever `use_discrete_timesteps` says.

What differs between kinds (which of `eta`/`generator`/`next_timestep` a
`step` takes, how its timesteps are laid out, whether the model input is
scaled) is data in `_KINDS`, not type checks. Every noise draw takes the
caller's generator (PNDM, DPM-Solver++, UniPC and the flow kinds draw none).
MONAI's `DiffusionInferer.sample` is not used: its steps draw noise from the
global RNG, its guidance covers cross-attention context only (not class
labels), and it branches on the scheduler type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from diffusers import (DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler, FlowMatchEulerDiscreteScheduler,
                       UniPCMultistepScheduler)
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, PNDMScheduler, RFlowScheduler, Scheduler

from ctsynth.errors import InvalidArgument

SCHEDULES = ("linear_beta", "scaled_linear_beta", "sigmoid_beta")  # MONAI NoiseSchedules taking a beta range
PREDICTION_TYPES = ("epsilon", "v_prediction")  # what every noise sampler accepts
OBJECTIVES = ("noise", "flow")
# make_scheduler's keywords per objective: required, then optional with defaults.
_SCHEDULE_ARGS = {
    "noise": (("num_train_timesteps", "schedule", "beta_start", "beta_end", "prediction_type"),
              {"clip_sample": False}),
    "flow": (("num_train_timesteps", "use_discrete_timesteps", "sample_method", "loc", "scale",
              "use_timestep_transform", "base_img_size_numel", "spatial_dim"), {}),
}

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


def _diffusers_timesteps(scheduler: Any, steps: int, sample: torch.Tensor) -> torch.Tensor:
    scheduler.set_timesteps(steps, device=sample.device)  # also resets the multistep history
    return scheduler.timesteps


def _rflow_timesteps(scheduler: RFlowScheduler, steps: int, sample: torch.Tensor) -> torch.Tensor:
    scheduler.set_timesteps(steps, device=sample.device, input_img_size_numel=sample[0, 0].numel())
    return scheduler.timesteps


def _flow_euler_timesteps(scheduler: FlowMatchEulerDiscreteScheduler, steps: int,
                          sample: torch.Tensor) -> torch.Tensor:
    """diffusers' grid, shifted by RFlow's `timestep_transform`: the same
    t' = r t / (1 + (r - 1) t) with r = (numel / base_img_size_numel)^(1 / spatial_dim)."""
    rflow = scheduler.config
    numel = sample[0, 0].numel()
    scheduler.set_shift((numel / rflow.base_img_size_numel) ** (1 / rflow.spatial_dim)
                        if rflow.use_timestep_transform else 1.0)
    return _diffusers_timesteps(scheduler, steps, sample)


def _training_betas(schedule: Mapping[str, Any]) -> list[float]:
    """The betas the model was trained with (MONAI's DDPMScheduler on this schedule)."""
    return DDPMScheduler(**{key: schedule[key] for key in _SCHEDULE_ARGS["noise"][0][:4]}).betas.tolist()


def _diffusers_noise(scheduler_cls: type, clips: bool = True, **options: Any) -> Callable[..., Any]:
    """A builder of `scheduler_cls` on the training betas; where it `clips`,
    `clip_sample` is diffusers' dynamic thresholding with s fixed to 1 (x0
    clamped to [-1, 1])."""
    def build(clip_sample: bool, **schedule: Any) -> Any:
        clip = {"thresholding": clip_sample, "sample_max_value": 1.0} if clips else {}
        return scheduler_cls(num_train_timesteps=schedule["num_train_timesteps"],
                             trained_betas=_training_betas(schedule), prediction_type=schedule["prediction_type"],
                             **clip, **options)
    return build


def _flow_euler(**schedule: Any) -> FlowMatchEulerDiscreteScheduler:
    """diffusers' flow-matching Euler; RFlow's resolution-transform settings
    ride along in its config for `_flow_euler_timesteps`."""
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=schedule["num_train_timesteps"])
    scheduler.register_to_config(**{key: schedule[key] for key in
                                    ("use_timestep_transform", "base_img_size_numel", "spatial_dim")})
    return scheduler


@dataclass(frozen=True)
class _Kind:
    build: Callable[..., Any]
    timesteps: Callable[[Any, int, torch.Tensor], torch.Tensor]  # (scheduler, steps, x_T) -> the model's timesteps
    step_args: tuple[str, ...]  # which of "eta", "generator", "next_timestep" its `step` takes
    objective: str = "noise"
    full_chain: bool = False  # runs all T training timesteps
    # diffusers' sigma-parameterised (Euler) schedulers step on x~ = x_t sqrt(1 + sigma^2) and want
    # `scale_model_input` before the model; their outputs after the last step (sigma = 0) are x0 itself.
    ve_sample: bool = False
    step_options: Mapping[str, Any] = field(default_factory=dict)  # e.g. diffusers' return_dict=False
    output: Callable[[torch.Tensor], torch.Tensor] | None = None  # model output -> what `step` takes


def _monai(timesteps: Callable[[Scheduler, int], torch.Tensor]) -> Callable[[Scheduler, int, torch.Tensor],
                                                                             torch.Tensor]:
    return lambda scheduler, steps, sample: timesteps(scheduler, steps)


_DIFFUSERS = {"step_options": {"return_dict": False}}
_KINDS = {
    "ddpm": _Kind(lambda clip_sample, **schedule: DDPMScheduler(clip_sample=clip_sample, **schedule),
                  _monai(_monai_timesteps), ("generator",), full_chain=True),
    "ddim": _Kind(lambda clip_sample, **schedule: DDIMScheduler(clip_sample=clip_sample, **schedule),
                  _monai(_ddim_timesteps), ("eta", "generator")),
    "pndm": _Kind(lambda clip_sample, **schedule: PNDMScheduler(skip_prk_steps=True, **schedule),
                  _monai(_plms_timesteps), ()),
    "dpm_solver": _Kind(_diffusers_noise(DPMSolverMultistepScheduler, algorithm_type="dpmsolver++", solver_order=2),
                        _diffusers_timesteps, (), **_DIFFUSERS),
    "unipc": _Kind(_diffusers_noise(UniPCMultistepScheduler), _diffusers_timesteps, (), **_DIFFUSERS),
    "euler_ancestral": _Kind(_diffusers_noise(EulerAncestralDiscreteScheduler, clips=False,
                                              timestep_spacing="trailing"),
                             _diffusers_timesteps, ("generator",), ve_sample=True, **_DIFFUSERS),
    "rflow": _Kind(lambda **schedule: RFlowScheduler(**schedule), _rflow_timesteps, ("next_timestep",),
                   objective="flow"),
    "flow_euler": _Kind(_flow_euler, _flow_euler_timesteps, (), objective="flow", output=torch.neg, **_DIFFUSERS),
}
SAMPLER_KINDS = tuple(_KINDS)


def kinds_for(objective: str) -> tuple[str, ...]:
    """The sampler kinds for models trained with `objective`."""
    if objective not in OBJECTIVES:
        raise InvalidArgument("objective", f"{objective!r}; use one of {', '.join(OBJECTIVES)}")
    return tuple(name for name, kind in _KINDS.items() if kind.objective == objective)


def _check_kind(kind: str, objective: str, field_name: str) -> None:
    fitting = kinds_for(objective)
    if kind not in _KINDS:
        raise InvalidArgument(field_name, f"{kind!r}; use one of {', '.join(fitting)}")
    if kind not in fitting:
        raise InvalidArgument(field_name, f"{kind!r} samples {_KINDS[kind].objective} models, not {objective} "
                                          f"models; use one of {', '.join(fitting)}")


def make_scheduler(kind: str, *, objective: str = "noise", **schedule: Any) -> Any:
    """The scheduler of `kind` for a model trained with `objective` on this
    schedule: for "noise" `num_train_timesteps`, `schedule`, `beta_start`,
    `beta_end`, `prediction_type` and `clip_sample` (clamps predicted x0 to
    [-1, 1]; not for pndm or euler_ancestral); for "flow" RFlowScheduler's
    arguments."""
    _check_kind(kind, objective, "sampler.kind")
    required, optional = _SCHEDULE_ARGS[objective]
    unknown = sorted(set(schedule) - set(required) - set(optional))
    if unknown:
        raise InvalidArgument(unknown[0], f"not a schedule argument of {objective} models; "
                                          f"known: {', '.join((*required, *optional))}")
    missing = [key for key in required if key not in schedule]
    if missing:
        raise InvalidArgument(missing[0], f"missing schedule argument of {objective} models "
                                          f"(needs {', '.join(required)})")
    return _KINDS[kind].build(**{**optional, **schedule})


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
        if kind.full_chain and steps != (total := self.scheduler.num_train_timesteps):
            raise InvalidArgument("sampler.steps", f"{self.kind} runs all {total} training steps, got {steps}; "
                                                   "use another kind for fewer")
        timesteps = kind.timesteps(self.scheduler, steps, noise)
        # Noise models are discrete-time (diffusers' Euler lists integer timesteps as floats); flow models take
        # their scheduler's timesteps, long where discrete.
        discrete = kind.objective == "noise" or not timesteps.is_floating_point()
        model_dtype = torch.long if discrete else torch.float32
        following = [*timesteps[1:].tolist(), 0]  # rflow's next_timestep: the last step lands on t = 0
        options = {"eta": eta, "generator": device_generator(generator, noise.device)}
        x = noise
        if kind.ve_sample:  # x~_T of our x_T (diffusers' init_noise_sigma is sigma_max, not sqrt(1 + sigma_max^2))
            x = noise * (1 + self.scheduler.sigmas[0].item() ** 2) ** 0.5
        for t, next_t in zip(timesteps, following):
            model_input = self.scheduler.scale_model_input(x, t) if kind.ve_sample else x
            output = model_fn(model_input, torch.full((x.shape[0],), t.item(), device=x.device, dtype=model_dtype))
            if kind.output is not None:
                output = kind.output(output)
            options["next_timestep"] = next_t
            step_args = {name: options[name] for name in kind.step_args}
            x = self.scheduler.step(output, t.item(), x, **step_args, **kind.step_options)[0]
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

    def check(self, num_train_timesteps: int, prefix: str = "sampler.", objective: str = "noise") -> None:
        """INVALID_ARGUMENT naming `<prefix><setting>` for a value out of range
        or a kind for models of another objective."""
        _check_kind(self.kind, objective, f"{prefix}kind")
        if not 1 <= self.steps <= num_train_timesteps:
            raise InvalidArgument(f"{prefix}steps", f"{self.steps} is outside 1-{num_train_timesteps}")
        if _KINDS[self.kind].full_chain and self.steps != num_train_timesteps:
            raise InvalidArgument(f"{prefix}steps", f"{self.kind} runs all {num_train_timesteps} training steps, "
                                                    f"got {self.steps}")
        if not self.eta >= 0:
            raise InvalidArgument(f"{prefix}eta", f"{self.eta} must be >= 0")
        if not self.guidance_scale >= 0:
            raise InvalidArgument(f"{prefix}guidance_scale", f"{self.guidance_scale} must be >= 0")

    def override(self, request: Mapping[str, Any] | None, num_train_timesteps: int,
                 objective: str = "noise") -> SamplerSettings:
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
        settings.check(num_train_timesteps, objective=objective)
        return settings


def _number(values: Mapping[str, Any], name: str, kind: type, default: float) -> Any:
    value = values.get(name, default)
    if isinstance(value, bool) or (kind is int and isinstance(value, float) and not value.is_integer()):
        raise InvalidArgument(f"sampler.{name}", f"expected {kind.__name__}, got {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"sampler.{name}", f"expected {kind.__name__}, got {value!r}") from None
