"""Gaussian statistics of a feature set and the Fréchet distance between two
(Heusel et al. 2017; the FID of seeds 000 §4.3, 001 §III-D, 004 §2.4):

    d² = |mu1 - mu2|² + tr S1 + tr S2 - 2 tr (S1^½ S2 S1^½)^½

The last term equals the usual tr (S1 S2)^½ (the two matrices are similar),
but its argument is symmetric positive semi-definite, so an eigh per set and
an eigvalsh per comparison replace scipy.linalg.sqrtm of the non-symmetric
product. That needs no eps-offset fallback (clipping round-off negatives to
zero is exact for a PSD matrix) and takes well under a second at d = 2048
where sqrtm took 8-13 s on two cores; S^½ of the real set is cached with its
statistics, so a comparison against a cached set costs one eigvalsh.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric PSD matrix."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


@dataclass(frozen=True)
class FeatureStatistics:
    """Mean, covariance (unbiased, as np.cov) and, for a reference set, the
    covariance's square root of (N, D) features."""

    mu: np.ndarray  # (D,) float64
    sigma: np.ndarray  # (D, D) float64
    count: int
    root: np.ndarray | None = None  # sigma^½, (D, D) float64

    @classmethod
    def from_features(cls, features: np.ndarray, reference: bool = False) -> "FeatureStatistics":
        """`reference`: also the square root, for use as the first argument of `frechet_distance`."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or len(features) < 2:
            raise ValueError(f"statistics need (N >= 2, D) features, got {features.shape}")
        sigma = np.atleast_2d(np.cov(features, rowvar=False))
        return cls(features.mean(axis=0), sigma, len(features), psd_sqrt(sigma) if reference else None)

    def arrays(self) -> dict[str, np.ndarray]:
        arrays = {"mu": self.mu, "sigma": self.sigma, "count": np.array([self.count])}
        return arrays if self.root is None else {**arrays, "root": self.root}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "FeatureStatistics":
        return cls(arrays["mu"], arrays["sigma"], int(arrays["count"][0]), arrays.get("root"))


def frechet_distance(reference: FeatureStatistics, other: FeatureStatistics) -> float:
    """Squared Fréchet distance between two Gaussians; `reference` (the real
    set) brings its square root, computed here when it has none."""
    if reference.mu.shape != other.mu.shape:
        raise ValueError(f"feature dimensions differ: {reference.mu.shape[0]} and {other.mu.shape[0]}")
    root = psd_sqrt(reference.sigma) if reference.root is None else reference.root
    diff = reference.mu - other.mu
    product = root @ other.sigma @ root
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh((product + product.T) / 2), 0, None)).sum()
    return float(diff @ diff + np.trace(reference.sigma) + np.trace(other.sigma) - 2 * trace_root)
