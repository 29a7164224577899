"""Variety as the lossless-JPEG size of the mean image (seed 002)."""

from __future__ import annotations

import imagecodecs
import numpy as np
import pytest

from ctsynth.metrics.checks import MetricError
from ctsynth.metrics.variety import lossless_jpeg, mean_image, mean_image_kib
from tests.metrics.conftest import discs


def test_the_encoding_is_lossless_jpeg():
    image = np.random.default_rng(0).random((32, 32))
    encoded = lossless_jpeg(image)
    assert encoded[:2] == b"\xff\xd8" and b"\xff\xc3" in encoded  # SOI, then a lossless (SOF3) frame
    assert np.array_equal(imagecodecs.jpeg8_decode(encoded), np.rint(image * 255).astype(np.uint8))


def test_a_diverse_set_has_a_smaller_mean_image_than_a_collapsed_one():
    diverse = discs(64, size=32, seed=1, spread=0.7)
    collapsed = np.repeat(discs(1, size=32, seed=2), 64, axis=0)
    assert mean_image_kib(diverse) < mean_image_kib(collapsed)
    assert mean_image_kib(collapsed) == pytest.approx(len(lossless_jpeg(collapsed[0, 0])) / 1024)


def test_a_volume_set_is_encoded_as_the_montage_of_its_mean_volume():
    volumes = discs(3, size=4, dims=3)
    montage = mean_image(volumes)
    assert montage.shape == (8, 8)  # 4 slices of 4x4 in a 2x2 grid
    assert np.allclose(montage[4:, :4], volumes[:, 0, 2].mean(0))
    with pytest.raises(MetricError, match="variety: the set item 0 is a constant image"):
        mean_image_kib(np.zeros((2, 1, 4, 4), np.float32))
