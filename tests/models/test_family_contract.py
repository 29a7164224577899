"""The contract every model family keeps, GAN and diffusion alike, on a tiny
config: it builds, trains with finite losses, checkpoints and resumes bit for
bit, samples by seed, and its config survives JSON. A new family joins by
adding its tiny config to TINY (the first test fails until it does); a
family that builds slices and volumes has a case of each."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ctsynth.errors import InvalidArgument
from ctsynth.models import checkpoint
from ctsynth.models.base import Batch, Family
from ctsynth.models.families import family_names, get_family
from tests.models import test_diffusion_families, test_gan_families

TINY = {**{name: values for name, (family, values, _, _) in test_gan_families.CASES.items() if name == family},
        **test_diffusion_families.TINY}
family_of = test_diffusion_families.family_of
FAST_SAMPLER = {"kind": "ddim", "steps": 2}  # for the families that take sampler settings


def build(name: str, *, seed: int = 0, precision: str = "fp32", **changes) -> Family:
    cls = get_family(family_of(name))
    torch.manual_seed(seed)
    return cls(cls.config_cls.from_json({**TINY[name], **changes}), precision=precision)


def batch(family: Family, seed: int) -> Batch:
    """Four items, labels 0, 1, 0, 1, a cube (or square) nodule mask on the tumor items."""
    generator = torch.Generator().manual_seed(seed)
    spatial = family.sample_shape()[1:]
    mask = torch.zeros(4, 1, *spatial)
    mask[(slice(1, None, 2), slice(None)) + tuple(slice(n // 4, n // 2) for n in spatial)] = 1
    return Batch(torch.rand(4, family.config.channels, *spatial, generator=generator), torch.tensor([0, 1, 0, 1]),
                 mask)


def conditions(family: Family, count: int) -> dict[str, torch.Tensor | None]:
    """`sample`'s condition keywords for `count` items: labels 0, 1, ... for a
    conditional family, the second half of every other item a nodule for a
    mask-conditioned one."""
    values = {"labels": torch.arange(count) % 2 if family.conditional(family.config) else None}
    if family.mask_conditioned(family.config):
        masks = torch.zeros(count, 1, *family.sample_shape()[1:])
        masks[::2, :, family.sample_shape()[1] // 2:] = 1
        values["masks"] = masks
    return values


def sampler(family: Family) -> dict:
    try:
        return family.sampler_options(FAST_SAMPLER, None)
    except InvalidArgument:
        return family.sampler_options({}, None)


def state(family: Family) -> dict[str, torch.Tensor]:
    return {f"{name}.{key}": value.detach().clone() for name, module in family.modules.items()
            for key, value in module.state_dict().items()}


def equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


@pytest.fixture(params=sorted(TINY))
def name(request) -> str:
    return request.param


def test_every_registered_family_has_a_tiny_config():
    covered: dict[str, set[int]] = {}  # and one case for each dimensionality it builds
    for case in TINY:
        covered.setdefault(family_of(case), set()).add(build(case).spatial_dims)
    assert covered == {name: set(get_family(name).config_cls.SUPPORTED_DIMS) for name in family_names()}


def test_builds_and_describes_itself(name):
    family = build(name)
    assert type(family) is get_family(family_of(name)) and family.name == family_of(name) and family.description
    assert len(family.sample_shape()) == 1 + family.spatial_dims
    assert family.trainable and set(family.trainable) <= set(family.modules)


def test_trains_with_finite_losses_and_moves_every_trainable_module(name):
    family = build(name)
    before = state(family)
    for step in range(3):
        losses = family.train_step(batch(family, step), step)
        assert losses and all(type(v) is float and math.isfinite(v) for v in losses.values()), losses
    after = state(family)
    for module in family.trainable:
        moved = [key for key in before if key.startswith(f"{module}.") and not torch.equal(before[key], after[key])]
        assert moved, f"{module} did not change"


def test_checkpoint_round_trip_is_bit_exact(name):
    original = build(name)
    for step in range(2):
        original.train_step(batch(original, step), step)
    copy = build(name, seed=1)
    assert not equal(state(copy), state(original))
    checkpoint.load_weights_bytes(copy, checkpoint.weights_bytes(original))
    assert equal(state(copy), state(original))
    for family in (original, copy):
        for module in family.modules.values():
            module.eval()
    options = sampler(original)
    assert torch.equal(copy.sample(2, torch.Generator().manual_seed(3), **conditions(copy, 2), sampler=options),
                       original.sample(2, torch.Generator().manual_seed(3), **conditions(original, 2),
                                       sampler=options))


def test_resume_from_a_checkpoint_continues_bit_for_bit(name):
    straight = build(name)
    for step in range(2):
        straight.train_step(batch(straight, step), step)
    weights = checkpoint.weights_bytes(straight)
    optimizer_bytes, meta = checkpoint.training_state(straight, step=2)
    expected = [straight.train_step(batch(straight, step), step) for step in (2, 3)]

    resumed = build(name, seed=1)
    checkpoint.load_weights_bytes(resumed, weights)
    assert checkpoint.restore_training_state(resumed, optimizer_bytes, json.loads(json.dumps(meta))) == 2
    assert [resumed.train_step(batch(resumed, step), step) for step in (2, 3)] == expected
    assert equal(state(resumed), state(straight))


def test_sampling_is_determined_by_the_seed(name):
    family = build(name)
    options, rows = sampler(family), conditions(family, 2)
    first = family.sample(2, torch.Generator().manual_seed(1), **rows, sampler=options)
    assert first.shape[0] == 2 and first.shape[2:] == family.sample_shape()[1:]
    assert first.dtype == torch.float32 and 0 <= first.min() and first.max() <= 1
    assert torch.equal(first, family.sample(2, torch.Generator().manual_seed(1), **rows, sampler=options))
    assert not torch.equal(first, family.sample(2, torch.Generator().manual_seed(2), **rows, sampler=options))


def test_config_round_trips_through_json(name):
    config = build(name).config
    assert type(config).from_json(json.loads(json.dumps(config.to_json()))) == config
    defaults = type(config)()  # the published defaults validate and round-trip too
    assert type(config).from_json(json.loads(json.dumps(defaults.to_json()))) == defaults


def test_an_unknown_hyperparameter_is_named(name):
    with pytest.raises(InvalidArgument) as err:
        get_family(family_of(name)).config_cls.from_json({**TINY[name], "lerning_rate": 1e-4})
    assert err.value.field == "lerning_rate"


def test_a_bf16_step_is_finite(name):
    family = build(name, precision="bf16", **({"disc_start": 0} if family_of(name) == "vae" else {}))
    losses = family.train_step(batch(family, 0), 0)
    assert losses and all(math.isfinite(value) for value in losses.values()), losses
