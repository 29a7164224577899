"""MS-SSIM to the nearest real item (seed 001) and among synthetic pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import MultiScaleSSIMMetric

from ctsynth.metrics.checks import MetricError
from ctsynth.metrics.ssim import ms_ssim_settings, nearest_real_ms_ssim, synthetic_pairs_ms_ssim
from tests.metrics.conftest import discs


@pytest.mark.parametrize("shape, kernel, scales", [
    ((256, 256), 11, 5), ((128, 128, 128), 7, 5), ((64, 64), 3, 5), ((16, 16), 3, 3), ((8, 8, 8), 3, 2),
])
def test_scales_and_kernel_follow_the_size(shape, kernel, scales):
    chosen, weights = ms_ssim_settings(shape)
    assert (chosen, len(weights)) == (kernel, scales) and sum(weights) == pytest.approx(1)
    images = np.random.default_rng(0).random((1, 1) + shape).astype(np.float32)
    MultiScaleSSIMMetric(len(shape), kernel_size=chosen, weights=weights)(torch.from_numpy(images),
                                                                           torch.from_numpy(images))


@pytest.mark.parametrize("dims", [2, 3])
def test_nearest_real_pairing_matches_monai_on_the_brute_force_nearest(dims):
    real = discs(6, size=16, dims=dims, seed=1)
    synthetic = discs(4, size=16, dims=dims, seed=2)
    result = nearest_real_ms_ssim(real, synthetic)
    distances = ((synthetic[:, None] - real[None]) ** 2).reshape(4, 6, -1).sum(-1)
    assert np.array_equal(result.nearest, distances.argmin(1))
    kernel, weights = ms_ssim_settings(synthetic.shape[2:])
    monai = MultiScaleSSIMMetric(dims, data_range=1.0, kernel_size=kernel, weights=weights, reduction="none")(
        torch.from_numpy(synthetic), torch.from_numpy(real[distances.argmin(1)]))
    assert np.allclose(result.values, monai.numpy().ravel(), atol=1e-6)
    copies = nearest_real_ms_ssim(real, real[[3, 1]])
    assert np.allclose(copies.values, 1, atol=1e-5) and copies.nearest.tolist() == [3, 1]
    assert 0 < result.mean < 1


def test_pairs_of_a_collapsed_set_are_more_alike_than_of_a_diverse_one():
    diverse = discs(20, size=16, seed=3, spread=0.6)
    collapsed = np.repeat(discs(1, size=16, seed=4), 20, axis=0) + np.random.default_rng(5).normal(
        0, 0.01, (20, 1, 16, 16)).astype(np.float32)
    assert synthetic_pairs_ms_ssim(collapsed, seed=0) > synthetic_pairs_ms_ssim(diverse, seed=0)


def test_too_small_items_are_refused():
    with pytest.raises(MetricError, match=r"ms-ssim: items of \(2, 2\) are too small"):
        ms_ssim_settings((2, 2))
