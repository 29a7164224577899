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
    assert result.fraction == 1.0 and np.all(result.synthetic_distances == 0)


def test_exact_copies_are_at_distance_zero_however_large_the_vectors():
    """The expanded |a|²+|b|²-2ab form cancels to ~1e-3 in float32 on large
    vectors; copies must measure exactly 0 and find their own original."""
    rng = np.random.default_rng(1)
    train = (rng.normal(size=(300, 4096)) * 10).astype(np.float32)
    result = memorization(train[[3, 150, 299]].copy(), train, rng.normal(size=(40, 4096)).astype(np.float32))
    assert list(result.synthetic_distances) == [0.0, 0.0, 0.0] and list(result.nearest_train) == [3, 150, 299]
