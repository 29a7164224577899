"""FID, KID and precision/recall on feature arrays."""

from __future__ import annotations

import numpy as np
import pytest

from ctsynth.metrics.checks import MetricError
from ctsynth.metrics.feature_metrics import fid, kid, precision_recall
from ctsynth.metrics.frechet import FeatureStatistics


def on_a_line(*xs: float) -> np.ndarray:
    return np.array([[x, 0.0] for x in xs], dtype=np.float32)


def test_precision_recall_on_constructed_point_sets():
    """Real points 0..9 on a line: each one's 3-NN ball has radius 2 (3 at the
    ends). Synthetic: a tight cluster at 0-0.3 (inside the real manifold,
    balls of radius <= 0.3) and one far away at 1000. Half the synthetic
    points are realistic, and only the real point 0 is covered."""
    real = on_a_line(*range(10))
    synthetic = on_a_line(0, 0.1, 0.2, 0.3, 1000, 1000.1, 1000.2, 1000.3)
    result = precision_recall("pr", real, synthetic)
    assert result["precision"] == pytest.approx(0.5)
    assert result["recall"] == pytest.approx(0.1)
    assert result["f_score"] == pytest.approx(2 * 0.5 * 0.1 / 0.6)
    same = precision_recall("pr", real, real.copy())
    assert same["precision"] == 1 and same["recall"] == 1


def test_precision_recall_needs_k_plus_one_samples():
    with pytest.raises(MetricError, match=r"pr: the synthetic set has 3 samples; a 3-NN manifold needs at least 4"):
        precision_recall("pr", on_a_line(*range(10)), on_a_line(0, 1, 2))


def test_kid_separates_shifted_sets_and_checks_its_subset_size():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(60, 8)).astype(np.float32)
    near, _ = kid("kid", real, rng.normal(size=(50, 8)).astype(np.float32), subsets=20)
    far, _ = kid("kid", real, rng.normal(size=(50, 8)).astype(np.float32) + 2, subsets=20)
    assert abs(near) < 0.05 < far
    too_large = r"kid: the KID subset size 51 is larger than the synthetic set \(50 samples\)"
    with pytest.raises(MetricError, match=too_large):
        kid("kid", real, real[:50], subset_size=51)


def test_fid_rejects_sets_it_cannot_compare():
    stats = FeatureStatistics.from_features(np.random.default_rng(0).normal(size=(10, 4)))
    with pytest.raises(MetricError, match="fid: the synthetic set has 1 samples; a covariance needs at least 2"):
        fid("fid", stats, np.zeros((1, 4), np.float32))
    with pytest.raises(MetricError, match="5 dimensions, the real statistics 4"):
        fid("fid", stats, np.zeros((3, 5), np.float32))
    with pytest.raises(MetricError, match="NaN"):
        fid("fid", stats, np.full((3, 4), np.nan, np.float32))
    assert fid("fid", stats, np.random.default_rng(1).normal(size=(10, 4)).astype(np.float32)) > 0
