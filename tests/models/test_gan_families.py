"""The Family contract over every GAN family, then what is particular to each.

Tiny configs (32x32, a few channels, batch 4) keep the file fast on a CPU.
"""

from __future__ import annotations

import math

import pytest
import torch

from ctsynth.errors import InvalidArgument
from ctsynth.models.base import Batch
from ctsynth.models.families import get_family
from ctsynth.models.stylegan2_networks import modulated_conv2d
from ctsynth.models.unet_gan import PatchDiscriminator, UNetGenerator, mask_loss
from ctsynth.sampling.seeds import sample_rows

SIZE = 32
STYLE = dict(image_size=SIZE, z_dim=8, w_dim=8, mapping_layers=2, channel_base=128, channel_max=8, r1_interval=2,
             ada_interval=2)
# case -> (family, tiny config, loss keys of step 0, an out-of-range (field, value))
CASES = {
    "gan": ("gan", dict(image_size=SIZE, latent_dim=8, generator_hidden=(16, 32), discriminator_hidden=(32, 16)),
            {"g_loss", "d_loss"}, ("latent_dim", 0)),
    "wgan": ("wgan", dict(image_size=SIZE, latent_dim=8, generator_hidden=(16, 32), discriminator_hidden=(32, 16),
                          n_critic=2), {"g_loss", "d_loss"}, ("clip_value", -0.01)),
    "dcgan": ("dcgan", dict(image_size=SIZE, latent_dim=8, generator_widths=(8, 8, 4),
                            discriminator_widths=(4, 4, 8, 8)), {"g_loss", "d_loss"}, ("dropout", 1.0)),
    "wgan_gp": ("wgan_gp", dict(image_size=SIZE, latent_dim=8, generator_widths=(8, 4), discriminator_widths=(4, 8),
                                n_critic=2, l1_weight=1.0), {"g_loss", "g_l1", "d_loss", "d_gp"}, ("n_critic", 0)),
    "unet_gan": ("unet_gan", dict(image_size=SIZE, base_channels=4, max_channels=8, bottleneck_size=8, patch_grid=8),
                 {"g_loss", "g_adv", "g_l1", "g_mask", "d_loss", "d_r1"}, ("patch_grid", 6)),
    "unet_gan_mask": ("unet_gan", dict(image_size=SIZE, base_channels=4, max_channels=8, bottleneck_size=8,
                                       patch_grid=8, mask_input=True),
                      {"g_loss", "g_adv", "g_l1", "d_loss", "d_r1"}, ("patch_grid", 6)),
    "stylegan2": ("stylegan2", STYLE, {"g_loss", "d_loss", "d_r1", "ada_p"}, ("ada_target", 1.5)),
    "stylegan2_cond": ("stylegan2", dict(STYLE, architecture="resnet", resample="fir", conditional=True,
                                         pl_weight=2.0, pl_interval=2, ada_rotate90=True),
                       {"g_loss", "g_pl", "d_loss", "d_r1", "ada_p"}, ("architecture", "dense")),
}


def build(case: str, precision: str = "fp32", **changes):
    family, values, _, _ = CASES[case]
    cls = get_family(family)
    return cls(cls.config_cls(**{**values, **changes}), "cpu", precision)


def batch(seed: int) -> Batch:
    """Four 32x32 slices; labels 0, 1, 0, 1; a square nodule mask on the tumor slices."""
    rng = torch.Generator().manual_seed(seed)
    mask = torch.zeros(4, 1, SIZE, SIZE)
    mask[1::2, :, 10:16, 12:18] = 1
    return Batch(torch.rand(4, 1, SIZE, SIZE, generator=rng), torch.tensor([0, 1, 0, 1]), mask)


def labels_for(family, count: int = 3):
    return torch.arange(count) % 2 if family.conditional(family.config) else None


def masks_for(family, count: int = 3) -> torch.Tensor | None:
    """For a mask-conditioned family: a square nodule on every other item."""
    if not family.mask_conditioned(family.config):
        return None
    masks = torch.zeros(count, 1, SIZE, SIZE)
    masks[::2, :, 10:16, 12:18] = 1
    return masks


def conditions(family, count: int = 3) -> dict:
    return {"labels": labels_for(family, count), **({"masks": masks_for(family, count)}
                                                    if family.mask_conditioned(family.config) else {})}


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)




@pytest.fixture(params=list(CASES))
def case(request):
    return request.param


# --- the contract --------------------------------------------------------------------------

def test_family_is_registered_and_describes_itself(case):
    family = build(case)
    assert type(family) is get_family(CASES[case][0]) and family.name == CASES[case][0]
    assert family.description and family.spatial_dims == 2
    assert {"generator", "discriminator"} <= set(family.trainable) <= set(family.modules)
    assert "ema" not in family.trainable and "augment" not in family.trainable
    assert family.needs_masks == case.startswith("unet_gan")
    assert family.sample_masks() == (case == "unet_gan")  # the image-from-mask mode takes its mask as input
    assert family.mask_conditioned(family.config) == (case == "unet_gan_mask")


def test_train_steps_give_finite_losses_and_move_the_generator(case):
    family = build(case)
    before = {name: p.detach().clone() for name, p in family.modules["generator"].named_parameters()}
    first = family.train_step(batch(0), 0)
    second = family.train_step(batch(1), 1)
    assert set(first) == CASES[case][2]
    for losses in (first, second):
        assert all(type(value) is float and math.isfinite(value) for value in losses.values()), losses
    after = dict(family.modules["generator"].named_parameters())
    assert [name for name in before if not torch.equal(before[name], after[name])]


def test_sample_is_determined_by_the_generator_and_in_range(case):
    family = build(case)
    given = conditions(family)
    global_state = torch.get_rng_state()
    first = family.sample(3, seeded(1), **given)
    again = family.sample(3, seeded(1), **given)
    other = family.sample(3, seeded(2), **given)
    assert torch.equal(torch.get_rng_state(), global_state)  # nothing drawn from the global RNG
    assert torch.equal(first, again) and not torch.allclose(first, other)
    channels = 1 + family.sample_masks()
    assert first.shape == (3, channels, SIZE, SIZE) and first.dtype == torch.float32
    assert first.min() >= 0 and first.max() <= 1


def test_each_row_of_a_batch_depends_only_on_its_own_seed(case):
    """The sampling service pads batches and gives every row its own generator
    (`ctsynth.sampling.seeds`): all draws must be per row, every network per sample."""
    family = build(case)
    labels = [0, 1, 1] if family.conditional(family.config) else None
    masks = None if masks_for(family) is None else masks_for(family).numpy()
    together = sample_rows(family, [11, 12, 13], labels, {}, rows=4, masks=masks)
    alone = [sample_rows(family, [seed], None if labels is None else [label], {}, rows=1,
                         masks=None if masks is None else masks[i:i + 1])
             for i, (seed, label) in enumerate(zip([11, 12, 13], labels or [None] * 3))]
    assert torch.allclose(together, torch.cat(alone), atol=1e-5)
    assert not torch.allclose(together[0], together[1])


def test_out_of_range_value_is_named(case):
    _, values, _, (field, value) = CASES[case]
    config_cls = get_family(CASES[case][0]).config_cls
    with pytest.raises(InvalidArgument) as err:
        config_cls.from_json({**values, field: value})
    assert err.value.field == field


def test_labels_follow_the_condition_contract(case):
    family = build(case)
    if family.conditional(family.config):
        no_tumor = family.sample(2, seeded(4), labels=torch.tensor([0, 0]))
        tumor = family.sample(2, seeded(4), labels=torch.tensor([1, 1]))
        assert not torch.allclose(no_tumor, tumor)
        for labels in (None, torch.tensor([0, 2])):
            with pytest.raises(InvalidArgument) as err:
                family.sample(2, seeded(4), labels=labels)
            assert err.value.field == "condition"
        with pytest.raises(InvalidArgument) as err:
            family.train_step(Batch(batch(0).image, None, batch(0).mask), 0)
        assert err.value.field == "label"
    elif family.mask_conditioned(family.config):
        with pytest.raises(InvalidArgument) as err:
            family.sample(2, seeded(4), labels=torch.tensor([0, 1]), masks=masks_for(family, 2))
        assert err.value.field == "condition" and "the mask is this model's condition" in str(err.value)
    else:
        with pytest.raises(InvalidArgument) as err:
            family.sample(2, seeded(4), labels=torch.tensor([0, 1]))
        assert err.value.field == "condition" and "unconditional" in str(err.value)


def test_unknown_sampler_setting_is_refused(case):
    family = build(case)
    with pytest.raises(InvalidArgument) as err:
        family.sample(1, seeded(0), **conditions(family, 1), sampler={"guidance_scale": 2.0})
    assert err.value.field == "sampler"


def test_the_image_from_mask_mode_draws_from_the_mask_and_refuses_bad_masks():
    family = build("unet_gan_mask")
    masks = masks_for(family, 2)
    moved = torch.roll(masks, shifts=10, dims=-1)
    assert not torch.allclose(family.sample(2, seeded(3), masks=masks), family.sample(2, seeded(3), masks=moved))
    for bad, reason in ((None, "needs masks"), (torch.zeros(2, 1, 8, 8), "this model needs"),
                        (torch.full((2, 1, SIZE, SIZE), 0.5), "0 or 1")):
        with pytest.raises(InvalidArgument, match=reason) as err:
            family.sample(2, seeded(3), masks=bad)
        assert err.value.field == "mask"
    with pytest.raises(InvalidArgument, match="takes no mask"):
        build("unet_gan").sample(2, seeded(3), labels=torch.tensor([0, 1]), masks=masks)


# --- wgan / wgan_gp ------------------------------------------------------------------------

def test_wgan_clips_every_critic_weight_to_c():
    family = build("wgan", clip_value=0.01)
    critic = family.modules["discriminator"]
    assert max(p.abs().max().item() for p in critic.parameters()) > 0.01  # init exceeds c: clipping must act
    family.train_step(batch(0), 0)
    assert max(p.abs().max().item() for p in critic.parameters()) <= 0.01


def test_critic_families_run_n_critic_updates_per_step():
    family = build("wgan_gp", n_critic=4)
    family.train_step(batch(0), 0)
    steps = {name: next(iter(opt.state.values()))["step"].item() for name, opt in family.optimizers.items()}
    assert steps == {"discriminator": 4, "generator": 1}


def test_wgan_gp_generator_uses_instance_norm_and_the_critic_no_norm():
    family = build("wgan_gp")
    generator_layers = {type(m).__name__ for m in family.modules["generator"].modules()}
    critic_layers = {type(m).__name__ for m in family.modules["discriminator"].modules()}
    assert "InstanceNorm2d" in generator_layers and "BatchNorm2d" not in generator_layers
    assert not {"InstanceNorm2d", "BatchNorm2d"} & critic_layers


# --- unet_gan ------------------------------------------------------------------------------

def test_unet_gan_discriminator_is_spectrally_normalised():
    family = build("unet_gan")
    discriminator = family.modules["discriminator"]
    convs = [m for m in discriminator.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(type(m.parametrizations.weight[0]).__name__ == "_SpectralNorm" for m in convs)
    x = torch.randn(2, 2, SIZE, SIZE)
    for _ in range(30):  # power iterations converge while training
        discriminator(x, torch.tensor([0, 1]))
    for conv in convs:
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert sigma == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize(("size", "downs"), [(32, 2), (64, 3)])
def test_unet_depth_and_patch_grid_follow_the_resolution(size, downs):
    generator = UNetGenerator(1, size, base=4, maximum=8, bottleneck_size=8, attention=True)
    discriminator = PatchDiscriminator(1, size, base=4, maximum=8, patch_grid=8)
    assert len(generator.down) == downs
    image, mask_logits = generator(torch.randn(2, 1, size, size), torch.tensor([0, 1]))
    assert image.shape == mask_logits.shape == (2, 1, size, size) and image.abs().max() <= 1
    assert discriminator(torch.randn(2, 2, size, size), torch.tensor([0, 1])).shape == (2, 1, 8, 8)


def test_mask_loss_pushes_no_tumor_masks_to_zero_and_tumor_masks_to_the_real_mask():
    real = torch.zeros(2, 1, 4, 4)
    real[:, :, 1:3, 1:3] = 1
    empty, matching = torch.full_like(real, -20.0), real * 40 - 20
    no_tumor, tumor = torch.tensor([0, 0]), torch.tensor([1, 1])
    assert mask_loss(empty, real, no_tumor) < 1e-6  # the real mask is ignored without a tumor
    assert mask_loss(matching, real, no_tumor) > 1
    assert mask_loss(matching, real, tumor) < 1e-6
    assert mask_loss(empty, real, tumor) > 1


def test_unet_gan_needs_masks():
    family = build("unet_gan")
    with pytest.raises(InvalidArgument) as err:
        family.train_step(Batch(batch(0).image, batch(0).label, None), 0)
    assert err.value.field == "mask"


# --- stylegan2 -----------------------------------------------------------------------------

def test_demodulation_gives_unit_variance_for_unit_variance_input():
    rng = seeded(0)
    x = torch.randn(4, 32, 48, 48, generator=rng)
    weight = torch.randn(16, 32, 3, 3, generator=rng)
    styles = torch.rand(4, 32, generator=rng) * 3 + 0.5
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))  # away from zero padding
    std = modulated_conv2d(x, weight, styles, demodulate=True)[inner].std(dim=(2, 3))
    assert torch.allclose(std, torch.ones_like(std), atol=0.06)
    plain = modulated_conv2d(x, weight, styles, demodulate=False)[inner].std(dim=(2, 3))
    assert not torch.allclose(plain, torch.ones_like(plain), atol=0.06)


def test_truncation_psi_zero_collapses_every_z_to_the_average_w():
    family = build("stylegan2")
    family.train_step(batch(0), 0)
    ema = family.modules["ema"]
    assert ema.mapping.w_avg.abs().sum() > 0  # tracked during training
    const = {"truncation_psi": 0.0, "noise_mode": "const"}
    first, second = family.sample(2, seeded(1), sampler=const), family.sample(2, seeded(2), sampler=const)
    assert torch.equal(first[0], first[1]) and torch.equal(first, second)
    ws = ema.mapping.w_avg.expand(1, ema.synthesis.num_ws, -1)
    expected = ((ema.synthesis(ws, "const") + 1) / 2).clamp(0, 1)
    assert torch.allclose(first[:1], expected, atol=1e-6)
    untruncated = family.sample(2, seeded(1), sampler={"noise_mode": "const"})
    assert not torch.allclose(untruncated[0], untruncated[1])


def test_truncation_psi_out_of_range_is_refused():
    with pytest.raises(InvalidArgument) as err:
        build("stylegan2").sample(1, seeded(0), sampler={"truncation_psi": 1.5})
    assert err.value.field == "truncation_psi"


def test_lazy_r1_applies_only_on_multiples_of_the_interval():
    family = build("stylegan2", r1_interval=3)
    applied = ["d_r1" in family.train_step(batch(step), step) for step in range(4)]
    assert applied == [True, False, False, True]


def test_ada_probability_moves_every_interval_and_ema_follows_the_generator(monkeypatch):
    family = build("stylegan2", ada_interval=2, ada_kimg=0.004)  # one move is 4 * 2 / 4 = 2: p clamps to 1
    augment = family.modules["augment"]
    overconfident = type(augment).observe  # D calls every real positive: r_t = 1 > 0.6
    monkeypatch.setattr(augment, "observe", lambda logits: overconfident(augment, torch.ones_like(logits)))
    first = family.train_step(batch(0), 0)
    second = family.train_step(batch(1), 1)
    assert first["ada_p"] == 0.0 and second["ada_p"] == 1.0
    generator, ema = family.modules["generator"], family.modules["ema"]
    assert all(torch.allclose(e, g, atol=1e-3) for e, g in zip(ema.parameters(), generator.parameters()))
