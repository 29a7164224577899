"""The optional family hooks are declared on `Family` with defaults, and each
kind of family resolves a request's sampler settings its own way."""

from __future__ import annotations

import ast

import pytest
import torch

from ctsynth.errors import InvalidArgument
from ctsynth.models.base import Family
from tests.imports import PACKAGE
from tests.models.test_diffusion_families import make
from tests.models.test_gan_families import build


def _refused(family, sampler, psi) -> tuple[str, str]:
    with pytest.raises(InvalidArgument) as err:
        family.sampler_options(sampler, psi)
    return err.value.field, str(err.value)


def test_a_family_without_sampler_settings_refuses_them():
    vae = make("vae")
    assert vae.sampler_options({}, None) == {}
    assert _refused(vae, {"kind": "ddim"}, None) == ("sampler.kind", "sampler.kind: vae is not a diffusion model")
    assert _refused(vae, {}, 0.5) == ("truncation_psi", "truncation_psi: vae is not a style GAN")


def test_a_gan_takes_only_its_sampler_keys():
    dcgan = build("dcgan")
    assert dcgan.sampler_options({}, None) == {}
    assert _refused(dcgan, {"steps": 4}, None)[0] == "sampler.steps"
    assert _refused(dcgan, {}, 0.7) == ("truncation_psi", "truncation_psi: dcgan is not a style GAN")
    style = build("stylegan2")
    options = style.sampler_options({}, 0.7)
    assert options == {"truncation_psi": 0.7}
    assert "diffusion" in _refused(style, {"kind": "ddim"}, 0.7)[1]
    first = style.sample(2, torch.Generator().manual_seed(1), sampler=options)
    again = style.sample(2, torch.Generator().manual_seed(1), sampler=options)
    assert torch.equal(first, again) and not torch.equal(first, style.sample(2, torch.Generator().manual_seed(1)))


def test_a_diffusion_family_resolves_its_defaults():
    ddpm = make("ddpm3d")
    defaults = ddpm.sampler_options({}, None)
    assert defaults["kind"] == ddpm.config.sampler_kind and defaults["steps"] == ddpm.config.sampler_steps
    chosen = ddpm.sampler_options({"kind": "ddim", "steps": 2}, None)
    assert chosen["kind"] == "ddim" and chosen["steps"] == 2 and set(chosen) == set(defaults)
    assert ddpm.sample(1, torch.Generator().manual_seed(0), sampler=chosen).shape == (1, *ddpm.sample_shape())
    assert _refused(ddpm, {}, 0.5)[0] == "truncation_psi"
    assert _refused(ddpm, {"kind": "plms"}, None)[0] == "sampler.kind"


def test_defaults_leave_the_inputs_alone():
    values = {"image_size": 32}
    resolved, extra = Family.resolve_inputs(values, models=None)
    assert resolved == values and resolved is not values and extra == {}


def test_no_hook_is_looked_up_with_getattr():
    """Hooks live on the interface: nothing probes a family for them."""
    hooks = {"resolve_inputs", "prepare", "sampler_options", "sampler_keys", "sampler_defaults"}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("getattr", "hasattr")
                    and len(node.args) > 1 and isinstance(node.args[1], ast.Constant) and node.args[1].value in hooks):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert found == []
    assert all(callable(getattr(Family, name)) for name in ("resolve_inputs", "prepare", "sampler_options"))
