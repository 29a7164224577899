"""Per-item seeds and per-item randomness: an item's pixels depend on its seed alone."""

from __future__ import annotations

import pytest
import torch

from ctsynth.models.dcgan import DCGAN, DCGANConfig
from ctsynth.models.unet_gan import UNetGAN, UNetGANConfig
from ctsynth.sampling.seeds import NotPerItem, PerItemRandomness, either_label, item_seed, sample_rows


def test_item_zero_keeps_the_request_seed_and_the_others_differ():
    seeds = [item_seed(41, i) for i in range(1000)]
    assert seeds[0] == 41
    assert len(set(seeds)) == 1000
    assert all(0 <= s < 2 ** 64 for s in seeds)
    assert seeds == [item_seed(41, i) for i in range(1000)]
    assert {either_label(s) for s in seeds} == {0, 1}


@pytest.mark.parametrize("draw", [
    lambda n, g: torch.randn((n, 3), generator=g),
    lambda n, g: torch.randn(n, 3, generator=g),
    lambda n, g: torch.rand(size=(n, 3), generator=g),
    lambda n, g: torch.randint(0, 1000, (n, 3), generator=g),
    lambda n, g: torch.normal(0.0, 1.0, (n, 3), generator=g),
    lambda n, g: torch.empty(n, 3).normal_(generator=g),
], ids=["randn", "randn-varargs", "rand-size", "randint", "normal", "normal_"])
def test_each_row_of_a_draw_comes_from_its_own_generator(draw):
    seeds = [5, 6, 7]
    streams = [torch.Generator().manual_seed(s) for s in seeds]
    with PerItemRandomness(streams):
        batch = draw(3, streams[0])
    alone = torch.cat([draw(1, torch.Generator().manual_seed(s)) for s in seeds])
    assert torch.equal(batch, alone)


def test_a_draw_not_led_by_the_batch_is_refused():
    streams = [torch.Generator().manual_seed(s) for s in (1, 2)]
    with PerItemRandomness(streams), pytest.raises(NotPerItem):
        torch.randn((1,), generator=streams[0])


@pytest.mark.parametrize("family", [
    DCGAN(DCGANConfig(image_size=16, latent_dim=8, generator_widths=(16, 8), discriminator_widths=(8, 8))),
    UNetGAN(UNetGANConfig(image_size=16, base_channels=8, max_channels=16, bottleneck_size=4, patch_grid=4)),
], ids=["dcgan", "unet_gan"])
def test_an_item_is_the_same_alone_and_in_any_batch(family):
    seeds = [item_seed(9, i) for i in range(6)]
    labels = [either_label(s) for s in seeds] if family.conditional(family.config) else None
    batch = sample_rows(family, seeds, labels, {}, rows=8)
    assert batch.shape[0] == 6
    for k in (0, 4):
        alone = sample_rows(family, seeds[k:k + 1], None if labels is None else labels[k:k + 1], {}, rows=8)
        assert torch.equal(alone[0], batch[k])
    shifted = sample_rows(family, seeds[3:], None if labels is None else labels[3:], {}, rows=8)
    assert torch.equal(shifted, batch[3:])


def test_more_items_than_rows_is_an_error():
    family = DCGAN(DCGANConfig(image_size=16, latent_dim=8, generator_widths=(16, 8), discriminator_widths=(8, 8)))
    with pytest.raises(ValueError):
        sample_rows(family, [1, 2, 3], None, {}, rows=2)
