"""MS-SSIM (Wang et al. 2003) through MONAI's `MultiScaleSSIMMetric`:

- fidelity, seed 001 §III-D: each synthetic volume against its nearest real
  volume by L2 voxel distance (seed 001 reports 0.266 at 128^3);
- diversity: among disjoint pairs of synthetic samples (lower: more diverse).

Scales and kernel follow the size. MONAI convolves without padding, halves
the size per scale and requires size // (scales - 1)² > kernel - 1; the
standard five scales with an 11-wide Gaussian need 176 voxels a side. We
keep as many of the five scales as fit (scales first: the measure is about
them), with the widest odd kernel of 11, 9, 7, 5, 3 that still covers the
coarsest scale, and renormalise the first (finest) weights: 256² gets 5
scales / kernel 11, 128³ 5 / 7, 64² 5 / 3, 16² 3 / 3, 8³ 2 / 3.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.metrics import MultiScaleSSIMMetric

from ctsynth.metrics.checks import MetricError, check_count
from ctsynth.metrics.nearest import nearest

WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
KERNELS = (11, 9, 7, 5, 3)
PAIR_BATCH = 16


def ms_ssim_settings(spatial_shape: tuple[int, ...], metric: str = "ms-ssim") -> tuple[int, tuple[float, ...]]:
    """(kernel size, scale weights) for items of `spatial_shape`."""
    side = min(spatial_shape)
    for scales in range(len(WEIGHTS), 0, -1):
        for kernel in KERNELS:
            if side // 2 ** (scales - 1) >= kernel and side // max(1, scales - 1) ** 2 > kernel - 1:
                weights = np.array(WEIGHTS[:scales])
                return kernel, tuple(float(w) for w in weights / weights.sum())
    raise MetricError(metric, f"items of {tuple(spatial_shape)} are too small: MS-SSIM needs at least 3 voxels a side")


def ms_ssim(first: np.ndarray, second: np.ndarray, metric: str = "ms-ssim") -> np.ndarray:
    """MS-SSIM of aligned pairs of (N, C, *spatial) items in [0, 1]: (N,)."""
    spatial_dims = first.ndim - 2
    kernel, weights = ms_ssim_settings(first.shape[2:], metric)
    measure = MultiScaleSSIMMetric(spatial_dims=spatial_dims, data_range=1.0, kernel_size=kernel, weights=weights,
                                   reduction="none")
    values = [measure(torch.from_numpy(np.ascontiguousarray(first[i:i + PAIR_BATCH], dtype=np.float32)),
                      torch.from_numpy(np.ascontiguousarray(second[i:i + PAIR_BATCH], dtype=np.float32)))
              for i in range(0, len(first), PAIR_BATCH)]
    return torch.cat(values).reshape(-1).numpy()


@dataclass(frozen=True)
class NearestRealSSIM:
    values: np.ndarray  # (N,) MS-SSIM of each synthetic item with its nearest real item
    nearest: np.ndarray  # (N,) index of that real item

    @property
    def mean(self) -> float:
        return float(self.values.mean())


def nearest_real_ms_ssim(real: np.ndarray, synthetic: np.ndarray, metric: str = "ms-ssim") -> NearestRealSSIM:
    _, index = nearest(synthetic, real)
    return NearestRealSSIM(ms_ssim(synthetic, real[index], metric), index)


def synthetic_pairs_ms_ssim(synthetic: np.ndarray, seed: int, max_pairs: int = 200,
                            metric: str = "ms-ssim") -> float:
    """Mean MS-SSIM over up to `max_pairs` disjoint random pairs of synthetic items."""
    check_count(metric, len(synthetic), 2, "the synthetic set", "a pair")
    order = np.random.default_rng(seed).permutation(len(synthetic))
    pairs = min(max_pairs, len(order) // 2)
    return float(ms_ssim(synthetic[order[:pairs]], synthetic[order[pairs:2 * pairs]], metric).mean())
