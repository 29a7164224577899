"""The parts the families are built from (GAN networks and losses, EMA, ADA,
StyleGAN2 layers), checked against the papers' formulas."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ctsynth.models.augment import AdaptiveAugment
from ctsynth.models.ema import ema_beta, update_ema
from ctsynth.models.gan_family import to_signed, to_unit
from ctsynth.models.gan_losses import d_logistic_loss, g_nonsaturating_loss, gradient_penalty, r1_penalty
from ctsynth.models.gan_networks import ConvDiscriminator, ConvGenerator, MLPGenerator, SelfAttention2d, label_maps
from ctsynth.models.stylegan2_networks import MinibatchStd, Resample
from ctsynth.models.wgan import critic_slices


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_value_maps_are_inverse_and_clamped():
    image = torch.rand(2, 1, 4, 4, generator=seeded(0))
    assert torch.allclose(to_unit(to_signed(image)), image)
    assert to_unit(torch.tensor([-3.0, 3.0])).tolist() == [0.0, 1.0]


def test_critic_slices_give_each_critic_update_a_whole_batch():
    assert [s.tolist() for s in critic_slices(torch.arange(8), 4)] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    with pytest.raises(ValueError, match="3 rows do not split into 5 critic batches"):
        critic_slices(torch.arange(3), 5)


def test_label_maps_are_one_hot_planes():
    maps = label_maps(torch.tensor([0, 1]), 3)
    assert maps.shape == (2, 2, 3, 3)
    assert maps[0, 0].eq(1).all() and maps[0, 1].eq(0).all() and maps[1, 1].eq(1).all()


# --- seed 004 networks ---------------------------------------------------------------------

def test_mlp_generator_has_batch_norm_from_the_second_hidden_layer():
    net = MLPGenerator(100, (128, 256, 512, 1024), (1, 8, 8))
    linears = [m.out_features for m in net.modules() if isinstance(m, nn.Linear)]
    norms = [m.num_features for m in net.modules() if isinstance(m, nn.BatchNorm1d)]
    assert linears == [128, 256, 512, 1024, 64] and norms == [256, 512, 1024]
    assert net(torch.randn(3, 100)).shape == (3, 1, 8, 8)


def test_dcgan_networks_have_seed_004_shapes():
    generator = ConvGenerator(100, (128, 128, 64), (1, 32, 32), norm="batch")
    assert generator.project[0].out_features == 128 * 8 * 8  # 128 x H/4 x W/4
    assert generator(torch.randn(2, 100)).shape == (2, 1, 32, 32)
    discriminator = ConvDiscriminator((1, 32, 32), (16, 32, 64, 128), norm="batch", dropout=0.25)
    norms = [m.num_features for m in discriminator.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms == [32, 64, 128]  # none on the first block
    assert discriminator.net[-1].in_features == 128 * 2 * 2  # 128 x H/16 x W/16
    assert discriminator(torch.randn(2, 1, 32, 32)).shape == (2, 1)


def test_self_attention_starts_as_the_identity_and_mixes_globally():
    block = SelfAttention2d(16)
    x = torch.randn(2, 16, 4, 4, generator=seeded(0))
    assert torch.equal(block(x), x)
    with torch.no_grad():
        block.gamma.fill_(1.0)
    changed = x.clone()
    changed[:, :, 0, 0] += 5  # one corner pixel moves the opposite corner through attention
    assert not torch.allclose(block(changed)[:, :, 3, 3], block(x)[:, :, 3, 3])


# --- losses --------------------------------------------------------------------------------

def test_logistic_losses_are_seed_004_equations_2_and_3():
    real, fake = torch.tensor([[2.0], [0.5]]), torch.tensor([[-1.0], [0.3]])
    d_expected = -(torch.log(torch.sigmoid(real)).mean() + torch.log(1 - torch.sigmoid(fake)).mean())
    assert d_logistic_loss(real, fake) == pytest.approx(d_expected.item(), rel=1e-6)
    assert g_nonsaturating_loss(fake) == pytest.approx(-torch.log(torch.sigmoid(fake)).mean().item(), rel=1e-6)


def test_label_smoothing_softens_only_the_real_targets():
    real, fake = torch.tensor([4.0]), torch.tensor([-4.0])
    smooth = 0.9 * -torch.log(torch.sigmoid(real)) + 0.1 * -torch.log(1 - torch.sigmoid(real))
    expected = smooth - torch.log(1 - torch.sigmoid(fake))
    assert d_logistic_loss(real, fake, real_target=0.9) == pytest.approx(expected.item(), rel=1e-5)


def test_gradient_penalty_matches_direct_autograd_per_sample():
    critic = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 1))
    real, fake = torch.randn(3, 1, 4, 4, generator=seeded(1)), torch.randn(3, 1, 4, 4, generator=seeded(2))
    alpha = torch.rand(3, 1, 1, 1, generator=seeded(3))
    penalty = gradient_penalty(critic, real, fake, alpha)
    for i in range(3):
        point = (alpha[i] * real[i] + (1 - alpha[i]) * fake[i]).unsqueeze(0).requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(point).sum(), point)
        assert penalty[i].item() == pytest.approx(((grad.norm() - 1) ** 2).item(), rel=1e-5)
    penalty.sum().backward()  # differentiable in the critic's weights (double backward)
    assert critic[1].weight.grad.abs().sum() > 0


def test_gradient_penalty_of_a_linear_critic_is_closed_form():
    critic = nn.Sequential(nn.Flatten(), nn.Linear(16, 1))
    real, fake = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    expected = (critic[1].weight.norm() - 1) ** 2
    penalty = gradient_penalty(critic, real, fake, torch.rand(2, 1, 1, 1))
    assert torch.allclose(penalty, expected.expand(2))


def test_r1_penalty_of_a_linear_discriminator_is_the_squared_weight_norm():
    linear = nn.Linear(16, 1)
    x = torch.randn(3, 16, requires_grad=True)
    assert torch.allclose(r1_penalty(linear(x), x), linear.weight.square().sum().expand(3))


# --- EMA and ADA ---------------------------------------------------------------------------

def test_ema_beta_is_a_half_life_in_kimg_with_ramp_up():
    assert ema_beta(32, 10**7, ema_kimg=10, rampup=0.05) == pytest.approx(0.5 ** (32 / 10_000))
    assert ema_beta(32, 640, ema_kimg=10, rampup=0.05) == pytest.approx(0.5 ** (32 / 32))  # 640 * 0.05 images
    assert ema_beta(32, 640, ema_kimg=10, rampup=None) == pytest.approx(0.5 ** (32 / 10_000))


def test_update_ema_interpolates_parameters_and_copies_buffers():
    model, ema = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    with torch.no_grad():
        model.weight.fill_(3.0)
        model.running_mean.fill_(5.0)
    update_ema(ema, model, beta=0.75)
    assert torch.allclose(ema.weight, torch.full((2,), 0.75 * 1 + 0.25 * 3))
    assert torch.equal(ema.running_mean, model.running_mean)


def test_ada_probability_follows_the_overfitting_signal_and_stays_in_unit_interval():
    augment = AdaptiveAugment(target=0.6, speed_kimg=10, rotate90=False)  # 1000 images move p by 0.1
    overconfident, uncertain = torch.ones(8, 1), torch.tensor([1.0, -1.0])
    augment.observe(overconfident)
    assert augment.adjust(1000) == 1.0 and augment.p.item() == pytest.approx(0.1)
    for _ in range(15):
        augment.observe(overconfident)
        augment.adjust(1000)
    assert augment.p.item() == 1.0
    augment.observe(uncertain)  # r_t = 0 < 0.6: augment less
    augment.adjust(1000)
    assert augment.p.item() == pytest.approx(0.9)
    for _ in range(15):
        augment.observe(uncertain)
        augment.adjust(1000)
    assert augment.p.item() == 0.0
    assert {"p", "sign_sum", "sign_count"} <= set(augment.state_dict())


@pytest.mark.parametrize("rotate90", [False, True])
def test_augmentation_is_identity_at_p0_and_differentiable_at_p1(rotate90):
    augment = AdaptiveAugment(target=0.6, speed_kimg=500, rotate90=rotate90)
    x = torch.randn(6, 1, 16, 16, generator=seeded(0), requires_grad=True)
    assert torch.equal(augment(x), x)
    augment.p.fill_(1.0)
    torch.manual_seed(0)
    y = augment(x)
    assert y.shape == x.shape and not torch.allclose(y, x)
    y.square().sum().backward()
    assert x.grad.abs().sum() > 0


def test_translation_moves_pixels_by_integers_and_mirrors_at_the_border():
    augment = AdaptiveAugment(target=0.6, speed_kimg=500, rotate90=False)  # shifts up to 16 / 8 = 2 pixels
    augment.p.fill_(1.0)
    x = torch.arange(256.0).view(1, 1, 16, 16).repeat(64, 1, 1, 1)  # value = 16 * row + column
    torch.manual_seed(0)
    y = augment._translate(x)

    def mirror(index: int) -> int:
        return 30 - abs(index) if abs(index) > 15 else abs(index)

    shifts = {tuple(mirror(i - shift) for i in range(16)): shift for shift in range(-2, 3)}
    seen = set()
    for image in y[:, 0]:
        rows, cols = tuple((image[:, 0] // 16).long().tolist()), tuple((image[0] % 16).long().tolist())
        assert rows in shifts and cols in shifts
        assert torch.equal(image, x[0, 0][list(rows)][:, list(cols)])
        seen.add(shifts[rows])
    assert len(seen) >= 3


# --- StyleGAN2 layers ----------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["bilinear", "fir"])
def test_resampling_halves_or_doubles_and_keeps_a_constant_image(kind):
    resample = Resample(kind)
    flat = torch.full((2, 3, 8, 8), 0.7)
    up, down = resample.up(flat), resample.down(flat)
    assert up.shape == (2, 3, 16, 16) and down.shape == (2, 3, 4, 4)
    assert torch.allclose(up[:, :, 2:-2, 2:-2], torch.full_like(up[:, :, 2:-2, 2:-2], 0.7))  # gain 1 inside
    assert torch.allclose(down[:, :, 1:-1, 1:-1], torch.full_like(down[:, :, 1:-1, 1:-1], 0.7))


def test_minibatch_std_appends_the_group_std():
    x = torch.randn(6, 3, 4, 4, generator=seeded(0))
    y = MinibatchStd(4)(x)  # group gcd(6, 4) = 2
    assert y.shape == (6, 4, 4, 4)
    pairs = x.view(2, 3, 3, 4, 4)
    expected = pairs.std(0, unbiased=False).mean((1, 2, 3))
    assert torch.allclose(y[:3, 3, 0, 0], expected, atol=1e-5) and torch.allclose(y[3:, 3, 0, 0], expected, atol=1e-5)
