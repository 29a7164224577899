"""The Fréchet distance against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from torch_fidelity.metric_fid import fid_statistics_to_metric

from ctsynth.metrics.frechet import FeatureStatistics, frechet_distance, psd_sqrt


def gaussian(mu: np.ndarray, variances: np.ndarray) -> FeatureStatistics:
    sigma = np.diag(variances)
    return FeatureStatistics(mu, sigma, 1000, psd_sqrt(sigma))


def scipy_frechet(mu1, sigma1, mu2, sigma2, eps=1e-6) -> float:
    """pytorch-fid's formula: scipy.linalg.sqrtm of the product, eps offset when singular."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(sigma1)) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean.real))


def test_diagonal_gaussians_match_the_closed_form():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    v1, v2 = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert frechet_distance(gaussian(mu1, v1), gaussian(mu2, v2)) == pytest.approx(expected, rel=1e-10)
    assert frechet_distance(gaussian(mu1, v1), gaussian(mu1, v1)) == pytest.approx(0, abs=1e-10)


def test_saved_features_match_scipy_sqrtm_and_torch_fidelity(tmp_path):
    rng = np.random.default_rng(2)
    mixing = rng.normal(size=(32, 32))
    np.save(tmp_path / "real.npy", rng.normal(size=(300, 32)) @ mixing)
    np.save(tmp_path / "fake.npy", (rng.normal(size=(200, 32)) @ mixing) * 1.2 + 0.3)
    real, fake = np.load(tmp_path / "real.npy"), np.load(tmp_path / "fake.npy")
    ours = frechet_distance(FeatureStatistics.from_features(real, reference=True),
                            FeatureStatistics.from_features(fake))
    independent = scipy_frechet(real.mean(0), np.cov(real, rowvar=False), fake.mean(0), np.cov(fake, rowvar=False))
    assert ours == pytest.approx(independent, rel=1e-8)
    tf = fid_statistics_to_metric({"mu": real.mean(0), "sigma": np.cov(real, rowvar=False)},
                                  {"mu": fake.mean(0), "sigma": np.cov(fake, rowvar=False)}, verbose=False)
    assert ours == pytest.approx(tf["frechet_inception_distance"], rel=1e-8)


def test_fewer_samples_than_dimensions_stay_finite_and_agree():
    """A singular covariance (N < D, as with 2048-d features of a small set)."""
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(20, 64)), rng.normal(size=(15, 64)) + 0.5
    ours = frechet_distance(FeatureStatistics.from_features(real), FeatureStatistics.from_features(fake))
    independent = scipy_frechet(real.mean(0), np.cov(real, rowvar=False), fake.mean(0), np.cov(fake, rowvar=False))
    assert np.isfinite(ours) and ours == pytest.approx(independent, rel=1e-5)


def test_statistics_survive_their_array_form():
    stats = FeatureStatistics.from_features(np.random.default_rng(4).normal(size=(10, 3)), reference=True)
    again = FeatureStatistics.from_arrays(stats.arrays())
    assert again.count == 10 and np.array_equal(again.sigma, stats.sigma) and np.array_equal(again.root, stats.root)
    assert np.allclose(again.root @ again.root, stats.sigma)
    assert FeatureStatistics.from_arrays(FeatureStatistics.from_features(np.eye(3)).arrays()).root is None
    with pytest.raises(ValueError, match="N >= 2"):
        FeatureStatistics.from_features(np.ones((1, 3)))
