"""The four samplers against direct NumPy implementations of their update
equations on an analytic model, plus their shared contract.

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

from ctsynth.diffusion import Sampler, SamplerSettings, guided, make_scheduler
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


def run(kind: str, steps: int, seed: int = 0, eta: float = 0.0, noise_seed: int | None = None,
        num_train_timesteps: int = T, betas: tuple[float, float] = (BETA_START, BETA_END),
        shape: tuple[int, ...] = SHAPE) -> torch.Tensor:
    """x0 from `kind` on the analytic model; x_T from `noise_seed` if given, else from the step generator."""
    scheduler = make_scheduler(kind, num_train_timesteps=num_train_timesteps, schedule="linear_beta",
                               beta_start=betas[0], beta_end=betas[1], prediction_type="epsilon")
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(noise_seed) if noise_seed is not None
                        else generator)
    abar = np.cumprod(1 - np.linspace(*betas, num_train_timesteps))
    return Sampler(kind, scheduler).run(torch_model(abar), noise, generator, steps=steps, eta=eta)


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
    in x~ = x_t / sqrt(abar_t), over timesteps linspace(T-1, 0) then sigma = 0."""
    draw = Draws(seed)
    timesteps = np.round(np.linspace(T - 1, 0, steps)).astype(int)
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


def test_deterministic_samplers_ignore_the_generator_after_the_initial_noise():
    for kind, eta in (("ddim", 0.0), ("pndm", 0.0)):
        first, second = run(kind, 10, seed=1, noise_seed=9), run(kind, 10, seed=2, noise_seed=9)
        assert torch.equal(first, second), kind


@pytest.mark.parametrize("kind, steps, eta", [("ddpm", T, 0.0), ("ddim", 10, 1.0), ("euler_ancestral", 10, 0.0)])
def test_ancestral_samplers_draw_step_noise_from_the_generator(kind, steps, eta):
    same = run(kind, steps, seed=1, noise_seed=9, eta=eta), run(kind, steps, seed=1, noise_seed=9, eta=eta)
    other = run(kind, steps, seed=2, noise_seed=9, eta=eta)
    assert torch.equal(*same)
    assert not torch.allclose(same[0], other, atol=1e-3)


@pytest.mark.parametrize("kind, steps", [("ddpm", 1000), ("ddim", 500), ("pndm", 50), ("euler_ancestral", 1000)])
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
    cases = [({"bogus": 1}, "sampler.bogus"), ({"kind": "heun"}, "sampler.kind"), ({"steps": 0}, "sampler.steps"),
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
