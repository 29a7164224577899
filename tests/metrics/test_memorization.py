"""Memorization flags planted copies of training images."""

from __future__ import annotations

import numpy as np

from ctsynth.metrics.memorization import memorization
from tests.metrics.conftest import discs


def test_planted_copies_of_training_images_are_flagged():
    train, heldout = discs(40, seed=1, spread=0.6), discs(40, seed=2, spread=0.6)
    novel = discs(16, seed=3, spread=0.6)
    synthetic = np.concatenate([novel, train[[5, 17, 29]], train[[8]] + 0.002])
    result = memorization(synthetic, train, heldout)
    flagged = set(np.flatnonzero(result.synthetic_distances < result.threshold).tolist())
    assert {16, 17, 18, 19} <= flagged
    assert result.fraction == len(flagged) / 20 and len(flagged) <= 5
    closest = result.closest(4)
    assert {(s, t) for s, t, _ in closest} == {(16, 5), (17, 17), (18, 29), (19, 8)}
    assert closest[0][2] <= closest[-1][2] < result.threshold


def test_works_on_feature_vectors_too():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(50, 8)).astype(np.float32)
    result = memorization(train[:10].copy(), train, rng.normal(size=(50, 8)).astype(np.float32))
    assert result.fraction == 1.0 and np.allclose(result.synthetic_distances, 0, atol=1e-3)
