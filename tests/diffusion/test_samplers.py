"""The samplers against direct NumPy implementations of their update
equations on an analytic model and against plain loops over their library's
own schedulers, plus their shared contract.

The analytic model is the exact noise predictor for data x0 ~ N(0, s^2):
eps(x_t, t) = sqrt(1 - abar_t) x_t / (abar_t s^2 + 1 - abar_t). It depends
on t, so a step that labels x with the wrong timestep changes the result.
The references draw the same noise as the samplers from an identically
seeded generator (x_T first, then one draw per noisy step).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import (DDPMScheduler as DiffusersDDPM, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler)
from monai.networks.schedulers import DDPMScheduler, RFlowScheduler

from ctsynth.diffusion import SAMPLER_KINDS, SCHEDULES, Sampler, SamplerSettings, guided, kinds_for, make_scheduler
from ctsynth.diffusion.samplers import device_generator
from ctsynth.errors import InvalidArgument


T = 50
BETA_START, BETA_END = 1e-3, 0.2
STD = 0.5
SHAPE = (4, 1, 3, 3)
BETAS = np.linspace(BETA_START, BETA_END, T)  # "linear_beta"
ABAR = np.cumprod(1 - BETAS)


def exact_eps(x: np.ndarray, abar: float) -> np.ndarray:
    return np.sqrt(1 - abar) * x / (abar * STD**2 + 1 - abar)


def torch_model(abar: np.ndarray):
    table = torch.tensor(abar, dtype=torch.float32)

    def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = table[t].view(-1, *([1] * (x.dim() - 1)))
        return (1 - a).sqrt() * x / (a * STD**2 + 1 - a)

    return model_fn


FLOW_T = 1000
FLOW = {"num_train_timesteps": FLOW_T, "use_discrete_timesteps": True, "sample_method": "uniform", "loc": 0.0,
        "scale": 1.0, "use_timestep_transform": True, "base_img_size_numel": 4, "spatial_dim": 2}
FLOW_KINDS = kinds_for("flow")
STOCHASTIC = {"ddpm": 0.0, "ddim": 1.0, "euler_ancestral": 0.0}  # kind -> an eta that makes it draw step noise


def flow_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A velocity field that depends on x and t (MONAI's convention, v ~ x0 - noise)."""
    s = (t.float() / FLOW_T).view(-1, *([1] * (x.dim() - 1)))
    return torch.sin(x) * s - 0.3 * x


def steps_of(kind: str) -> int:
    return T if kind == "ddpm" else 7


def run(kind: str, steps: int, seed: int = 0, eta: float = 0.0, noise_seed: int | None = None,
        num_train_timesteps: int = T, betas: tuple[float, float] = (BETA_START, BETA_END),
        shape: tuple[int, ...] = SHAPE, model_fn=None) -> torch.Tensor:
    """x0 from `kind` on the analytic model (flow kinds: `flow_model`); x_T
    from `noise_seed` if given, else from the step generator."""
    abar = np.cumprod(1 - np.linspace(*betas, num_train_timesteps))
    if kind in FLOW_KINDS:
        scheduler, default_model = make_scheduler(kind, objective="flow", **FLOW), flow_model
    else:
        scheduler = make_scheduler(kind, num_train_timesteps=num_train_timesteps, schedule="linear_beta",
                                   beta_start=betas[0], beta_end=betas[1], prediction_type="epsilon")
        default_model = torch_model(abar)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(noise_seed) if noise_seed is not None
                        else generator)
    return Sampler(kind, scheduler).run(model_fn or default_model, noise, generator, steps=steps, eta=eta)


class Draws:
    """The sampler's noise sequence: x_T, then one N(0, I) per noisy step."""

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self) -> np.ndarray:
        return torch.randn(SHAPE, generator=self.generator).double().numpy()


def reference_ddpm(seed: int) -> np.ndarray:
    """Ho et al. 2020: x_{t-1} = mu~(x_t, x0_hat) + sqrt(beta~_t) z, eqs. 6-7 and 15."""
    draw = Draws(seed)
    x = draw()
    for t in range(T - 1, -1, -1):
        abar, abar_prev = ABAR[t], ABAR[t - 1] if t else 1.0
        x0 = (x - np.sqrt(1 - abar) * exact_eps(x, abar)) / np.sqrt(abar)
        mean = (np.sqrt(abar_prev) * BETAS[t] * x0 + np.sqrt(1 - BETAS[t]) * (1 - abar_prev) * x) / (1 - abar)
        x = mean + (np.sqrt((1 - abar_prev) / (1 - abar) * BETAS[t]) * draw() if t else 0)
    return x


def reference_ddim(seed: int, timesteps: np.ndarray, eta: float) -> np.ndarray:
    """Song et al. 2021 eq. 12 with sigma_t(eta) of eq. 16; after the last step abar = 1."""
    draw = Draws(seed)
    x = draw()
    for index, t in enumerate(timesteps):
        abar = ABAR[t]
        abar_prev = ABAR[timesteps[index + 1]] if index + 1 < len(timesteps) else 1.0
        eps = exact_eps(x, abar)
        x0 = (x - np.sqrt(1 - abar) * eps) / np.sqrt(abar)
        sigma = eta * np.sqrt((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev))
        x = np.sqrt(abar_prev) * x0 + np.sqrt(1 - abar_prev - sigma**2) * eps
        if eta > 0:
            x = x + sigma * draw()
    return x


def reference_plms(seed: int, timesteps: np.ndarray) -> np.ndarray:
    """CompVis's PLMS (Liu et al. 2022 eqs. 9, 12-13): a Heun-like first step,
    then Adams-Bashforth combinations of past eps; the last step lands on abar_0
    (MONAI's `set_alpha_to_one=False`)."""
    x = Draws(seed)()
    history: list[np.ndarray] = []

    def transfer(x: np.ndarray, abar: float, abar_prev: float, eps: np.ndarray) -> np.ndarray:
        x0 = (x - np.sqrt(1 - abar) * eps) / np.sqrt(abar)
        return np.sqrt(abar_prev) * x0 + np.sqrt(1 - abar_prev) * eps

    for index, t in enumerate(timesteps):
        abar = ABAR[t]
        abar_prev = ABAR[timesteps[index + 1]] if index + 1 < len(timesteps) else ABAR[0]
        eps = exact_eps(x, abar)
        if not history and index + 1 < len(timesteps):
            eps_next = exact_eps(transfer(x, abar, abar_prev, eps), abar_prev)
            combined = (eps + eps_next) / 2
        elif not history:  # a single step has no second timestep to correct with
            combined = eps
        elif len(history) == 1:
            combined = (3 * eps - history[-1]) / 2
        elif len(history) == 2:
            combined = (23 * eps - 16 * history[-1] + 5 * history[-2]) / 12
        else:
            combined = (55 * eps - 59 * history[-1] + 37 * history[-2] - 9 * history[-3]) / 24
        history.append(eps)
        x = transfer(x, abar, abar_prev, combined)
    return x


def reference_euler_ancestral(seed: int, steps: int) -> np.ndarray:
    """k-diffusion `sample_euler_ancestral` (eta 1) on D(x~; sigma) = x~ - sigma eps,
    in x~ = x_t / sqrt(abar_t), over trailing timesteps T - 1, ..., T / steps - 1 then sigma = 0."""
    draw = Draws(seed)
    timesteps = np.round(np.arange(T, 0, -T / steps)).astype(int) - 1
    sigmas = np.append(np.sqrt((1 - ABAR[timesteps]) / ABAR[timesteps]), 0.0)
    x = draw() * np.sqrt(1 + sigmas[0] ** 2)
    for index, t in enumerate(timesteps):
        sigma, sigma_next = sigmas[index], sigmas[index + 1]
        denoised = x - sigma * exact_eps(x / np.sqrt(1 + sigma**2), ABAR[t])
        sigma_up = min(sigma_next, np.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
        sigma_down = np.sqrt(sigma_next**2 - sigma_up**2)
        x = x + (x - denoised) / sigma * (sigma_down - sigma)
        if sigma_next > 0:
            x = x + sigma_up * draw()
    return x


def assert_matches(sampled: torch.Tensor, reference: np.ndarray) -> None:
    np.testing.assert_allclose(sampled.double().numpy(), reference, rtol=2e-4, atol=2e-5)


def test_ddpm_matches_the_posterior_sampling_equations():
    assert_matches(run("ddpm", T, seed=3), reference_ddpm(3))


@pytest.mark.parametrize("steps, timesteps", [(10, np.arange(49, 0, -5)), (7, np.arange(48, 0, -7))])
@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_ddim_matches_its_update_equation_on_strided_timesteps(steps, timesteps, eta):
    assert len(timesteps) == steps
    assert_matches(run("ddim", steps, seed=5, eta=eta), reference_ddim(5, timesteps, eta))


@pytest.mark.parametrize("steps, timesteps", [(10, np.arange(49, 0, -5)), (4, np.arange(47, 0, -12)), (1, [49])])
def test_pndm_matches_plms_with_its_second_order_start(steps, timesteps):
    assert_matches(run("pndm", steps, seed=2), reference_plms(2, np.asarray(timesteps)))


@pytest.mark.parametrize("steps", [10, 3])
def test_euler_ancestral_matches_k_diffusion_step(steps):
    assert_matches(run("euler_ancestral", steps, seed=4), reference_euler_ancestral(4, steps))


@pytest.mark.parametrize("kind", SAMPLER_KINDS)
def test_every_sampler_is_seeded_by_the_generator_alone(kind):
    """Same seed, same samples; a stochastic sampler's step noise follows the
    generator, a deterministic one ignores it after x_T."""
    eta = STOCHASTIC.get(kind, 0.0)
    same = [run(kind, steps_of(kind), seed=1, noise_seed=9, eta=eta) for _ in range(2)]
    other = run(kind, steps_of(kind), seed=2, noise_seed=9, eta=eta)
    assert torch.equal(*same)
    if kind in STOCHASTIC:
        assert not torch.allclose(same[0], other, atol=1e-3)
    else:
        assert torch.equal(same[0], other)


@pytest.mark.parametrize("kind, steps", [("ddpm", 1000), ("ddim", 500), ("pndm", 50), ("euler_ancestral", 1000),
                                         ("dpm_solver", 50), ("unipc", 50)])
def test_samplers_converge_to_the_data_distribution(kind, steps):
    """With the exact eps of N(0, 0.5^2) data and T = 1000 (Ho et al.'s
    betas) every sampler's outputs have std 0.5 within 3 %."""
    samples = run(kind, steps, eta=1.0 if kind == "ddim" else 0.0, num_train_timesteps=1000, betas=(1e-4, 2e-2),
                  shape=(20000, 1))
    assert abs(samples.std().item() - STD) < 0.015


def test_classifier_free_guidance_batches_both_halves_in_one_forward():
    calls = []

    def model_fn(x, t, labels):
        calls.append(x.shape[0])
        return x * (1 + labels.view(-1, 1).float()) + t.view(-1, 1)

    x, t, labels = torch.randn(3, 2), torch.full((3,), 4), torch.tensor([0, 1, 1])
    out = guided(model_fn, labels, null_label=2, guidance_scale=3.0)(x, t)
    conditional, unconditional = x * (1 + labels.view(-1, 1)) + 4, x * 3 + 4
    torch.testing.assert_close(out, unconditional + 3.0 * (conditional - unconditional))
    assert calls == [6]
    assert torch.equal(guided(model_fn, labels, 2, 1.0)(x, t), conditional)


def test_settings_override_defaults_and_name_bad_keys():
    defaults = SamplerSettings("ddim", 20, 0.0, 2.0)
    assert defaults.override(None, 100) == defaults
    assert defaults.override({"kind": "pndm", "steps": "7"}, 100) == SamplerSettings("pndm", 7, 0.0, 2.0)
    assert defaults.override({"kind": "ddpm"}, 100).steps == 100
    cases = [({"bogus": 1}, "sampler.bogus"), ({"kind": "heun"}, "sampler.kind"), ({"kind": "rflow"}, "sampler.kind"),
             ({"steps": 0}, "sampler.steps"),
             ({"steps": 101}, "sampler.steps"), ({"steps": 2.5}, "sampler.steps"), ({"eta": -1}, "sampler.eta"),
             ({"kind": "ddpm", "steps": 50}, "sampler.steps"), ({"guidance_scale": "x"}, "sampler.guidance_scale")]
    for request, field in cases:
        with pytest.raises(InvalidArgument) as error:
            defaults.override(request, 100)
        assert error.value.field == field, request


def test_ddpm_refuses_a_shortened_chain():
    scheduler = make_scheduler("ddpm", num_train_timesteps=T, schedule="linear_beta", beta_start=BETA_START,
                               beta_end=BETA_END, prediction_type="epsilon")
    with pytest.raises(InvalidArgument) as error:
        Sampler("ddpm", scheduler).run(torch_model(ABAR), torch.zeros(SHAPE), torch.Generator(), steps=10)
    assert error.value.field == "sampler.steps"


def test_a_generator_on_the_sample_device_is_used_as_is():
    generator = torch.Generator().manual_seed(0)
    assert device_generator(generator, "cpu") is generator


def diffusers_noise_scheduler(kind: str):
    """The library's own scheduler, configured by diffusers' schedule name (not our betas)."""
    schedule = {"num_train_timesteps": T, "beta_schedule": "linear", "beta_start": BETA_START, "beta_end": BETA_END}
    return {"dpm_solver": lambda: DPMSolverMultistepScheduler(**schedule, algorithm_type="dpmsolver++", solver_order=2),
            "unipc": lambda: UniPCMultistepScheduler(**schedule),
            "euler_ancestral": lambda: EulerAncestralDiscreteScheduler(**schedule, timestep_spacing="trailing")}[kind]()


def library_loop(kind: str, noise: torch.Tensor, generator: torch.Generator, steps: int) -> torch.Tensor:
    """A plain loop over the library scheduler, as its documentation writes it."""
    if kind == "rflow":  # MONAI's RFlowScheduler docstring
        scheduler = RFlowScheduler(**FLOW)
        scheduler.set_timesteps(steps, input_img_size_numel=noise[0, 0].numel())
        following = torch.cat((scheduler.timesteps[1:], torch.tensor([0], dtype=scheduler.timesteps.dtype)))
        x = noise
        for t, next_t in zip(scheduler.timesteps, following):
            x, _ = scheduler.step(flow_model(x, t.expand(len(x))), t, x, next_t)
        return x
    if kind == "flow_euler":  # diffusers predicts noise - x0: MONAI's velocity negated
        scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=FLOW_T)
        scheduler.set_shift((noise[0, 0].numel() / FLOW["base_img_size_numel"]) ** 0.5)  # RFlow's resolution shift
        scheduler.set_timesteps(steps)
        x = noise
        for t in scheduler.timesteps:
            x = scheduler.step(-flow_model(x, t.expand(len(x))), t, x, generator=generator).prev_sample
        return x
    scheduler, model_fn = diffusers_noise_scheduler(kind), torch_model(ABAR)
    scheduler.set_timesteps(steps)
    # Our x_T is N(0, I) in the model's variable: Euler's x~_T is it times sqrt(1 + sigma_max^2).
    x = noise * ((1 + scheduler.sigmas[0] ** 2) ** 0.5 if kind == "euler_ancestral" else 1)
    noise_draws = {} if kind == "unipc" else {"generator": generator}
    for t in scheduler.timesteps:
        output = model_fn(scheduler.scale_model_input(x, t), t.long().expand(len(x)))
        x = scheduler.step(output, t, x, **noise_draws).prev_sample
    return x


@pytest.mark.parametrize("shape", [SHAPE, (2, 1, 2, 3, 3)], ids=["2d", "3d"])
@pytest.mark.parametrize("kind", ["dpm_solver", "unipc", "euler_ancestral", "rflow", "flow_euler"])
def test_library_samplers_match_a_plain_loop_over_their_scheduler(kind, shape):
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(7))
    ours = run(kind, 8, seed=3, noise_seed=7, shape=shape)
    torch.testing.assert_close(ours, library_loop(kind, noise, torch.Generator().manual_seed(3), 8),
                               rtol=1e-5, atol=1e-6)
    assert ours.shape == shape


@pytest.mark.parametrize("kind", SAMPLER_KINDS)
def test_every_sampler_runs_volumes_as_it_runs_images(kind):
    """The analytic models act elementwise, so (N, C, D, H, W) gives the
    numbers of (N, C, D * H, W) drawn from the same generator."""
    volume = run(kind, steps_of(kind), seed=5, eta=STOCHASTIC.get(kind, 0.0), shape=(2, 1, 2, 2, 2))
    image = run(kind, steps_of(kind), seed=5, eta=STOCHASTIC.get(kind, 0.0), shape=(2, 1, 4, 2))
    torch.testing.assert_close(volume.reshape(image.shape), image)


@pytest.mark.parametrize("kind", SAMPLER_KINDS)
def test_every_sampler_takes_classifier_free_guidance(kind):
    """Guided sampling equals sampling the guided output written out by hand,
    and differs from sampling the conditional output alone."""
    base = flow_model if kind in FLOW_KINDS else torch_model(ABAR)
    labels, w = torch.tensor([0, 1, 1, 0]), 2.5

    def labelled(x, t, y):
        return base(x, t) + 0.1 * (y.view(-1, *([1] * (x.dim() - 1))).float() - 0.5)

    def by_hand(x, t):
        conditional, unconditional = labelled(x, t, labels), labelled(x, t, torch.full_like(labels, 2))
        return unconditional + w * (conditional - unconditional)

    eta = STOCHASTIC.get(kind, 0.0)
    guided_run = run(kind, steps_of(kind), seed=4, eta=eta, model_fn=guided(labelled, labels, 2, w))
    torch.testing.assert_close(guided_run, run(kind, steps_of(kind), seed=4, eta=eta, model_fn=by_hand))
    unguided = run(kind, steps_of(kind), seed=4, eta=eta, model_fn=guided(labelled, labels, 2, 1.0))
    assert not torch.allclose(guided_run, unguided, atol=1e-4)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_diffusers_schedules_have_the_training_betas(schedule):
    """The models were trained with MONAI's betas: diffusers' schedule of the
    same name agrees, and our diffusers samplers use them."""
    args = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 2e-2}
    monai = DDPMScheduler(schedule=schedule, **args)
    named = DiffusersDDPM(beta_schedule=schedule.removesuffix("_beta"), **args)
    torch.testing.assert_close(named.betas, monai.betas)
    for kind in ("dpm_solver", "unipc", "euler_ancestral"):
        ours = make_scheduler(kind, schedule=schedule, prediction_type="v_prediction", **args)
        torch.testing.assert_close(ours.betas, monai.betas, rtol=0, atol=0)
        torch.testing.assert_close(ours.alphas_cumprod, monai.alphas_cumprod)
        assert ours.config.prediction_type == "v_prediction"


@pytest.mark.parametrize("kind, discrete", [
    ("rflow", True), ("flow_euler", True), ("flow_euler", False),
    pytest.param("rflow", False, marks=pytest.mark.xfail(
        strict=True, reason="MONAI 1.6.1 RFlowScheduler stores continuous timesteps as float16 and truncates "
                            "next_timestep to int in step, so its steps do not add up to T"))])
@pytest.mark.parametrize("steps", [30, 7])
def test_flow_samplers_land_on_the_end_of_a_straight_path(kind, discrete, steps):
    """For x_t = (1 - s) x0 + s noise (s = t / T) the exact velocity is
    x0 - noise: a constant field takes x_T to x_T + c, the field
    (x0 - x) / s of a fixed x0 lands on x0 (Euler is exact on both). The
    model's t is long for rflow's discrete timesteps, float otherwise
    (flow_euler's are always continuous)."""
    scheduler = make_scheduler(kind, objective="flow", **{**FLOW, "use_discrete_timesteps": discrete})
    noise = torch.randn(2, 1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    target = torch.randn(noise.shape, generator=torch.Generator().manual_seed(1))
    shift = torch.full_like(noise, 0.7)

    def to_target(x, t):
        assert t.dtype == (torch.long if discrete and kind == "rflow" else torch.float32)
        return (target - x) / (t.float() / FLOW_T).view(-1, 1, 1, 1, 1)

    sampler = Sampler(kind, scheduler)
    torch.testing.assert_close(sampler.run(lambda x, t: shift, noise, torch.Generator(), steps=steps), noise + shift)
    torch.testing.assert_close(sampler.run(to_target, noise, torch.Generator(), steps=steps), target)


def test_rflow_and_flow_euler_agree_where_their_grids_do():
    """With steps = T and no resolution shift both step through t = T, ..., 1 to 0."""
    schedule = {**FLOW, "num_train_timesteps": 20, "use_timestep_transform": False}
    noise = torch.randn(2, 1, 3, 3, generator=torch.Generator().manual_seed(2))
    results = [Sampler(kind, make_scheduler(kind, objective="flow", **schedule)).run(
        flow_model, noise, torch.Generator(), steps=20) for kind in FLOW_KINDS]
    torch.testing.assert_close(*results)
    assert not torch.allclose(results[0], noise, atol=1e-2)


@pytest.mark.parametrize("objective, kind, fitting", [("noise", "rflow", kinds_for("noise")),
                                                      ("flow", "ddim", ("rflow", "flow_euler"))])
def test_a_kind_of_the_other_objective_is_refused(objective, kind, fitting):
    schedule = FLOW if objective == "flow" else {"num_train_timesteps": T, "schedule": "linear_beta",
                                                 "beta_start": BETA_START, "beta_end": BETA_END,
                                                 "prediction_type": "epsilon"}
    for refuse in (lambda: make_scheduler(kind, objective=objective, **schedule),
                   lambda: SamplerSettings(kind, 5).check(T, objective=objective),
                   lambda: SamplerSettings().override({"kind": kind, "steps": 5}, T, objective=objective)):
        with pytest.raises(InvalidArgument) as error:
            refuse()
        assert error.value.field == "sampler.kind" and f"use one of {', '.join(fitting)}" in str(error.value)
    assert SamplerSettings().override({"kind": fitting[-1], "steps": 5}, T, objective=objective).kind == fitting[-1]


@pytest.mark.parametrize("objective, schedule, field", [
    ("flow", {**FLOW, "beta_start": 0.1}, "beta_start"),
    ("flow", {key: value for key, value in FLOW.items() if key != "spatial_dim"}, "spatial_dim"),
    ("noise", {"num_train_timesteps": T, "schedule": "linear_beta", "beta_start": BETA_START,
               "beta_end": BETA_END}, "prediction_type"),
    ("noise", FLOW, "base_img_size_numel")])
def test_make_scheduler_names_unknown_and_missing_schedule_arguments(objective, schedule, field):
    kind = kinds_for(objective)[0]
    with pytest.raises(InvalidArgument) as error:
        make_scheduler(kind, objective=objective, **schedule)
    assert error.value.field == field
