"""FID, KID and precision/recall between a real and a synthetic feature set,
whatever network made the features (InceptionV3, the CT extractor, Med3D).

FID is ours (`frechet`), so it can start from cached real statistics; KID
(Bińkowski et al. 2018) and precision/recall (Kynkäänniemi et al. 2019, the
pr50k of seed 000 §4.3) are torch-fidelity's own functions, called with its
argument order: input 1 synthetic, input 2 real.
"""

from __future__ import annotations

import numpy as np
import torch
from torch_fidelity.defaults import DEFAULTS
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric
from torch_fidelity.metric_prc import (KEY_METRIC_F_SCORE, KEY_METRIC_PRECISION, KEY_METRIC_RECALL,
                                       prc_features_to_metric)

from ctsynth.metrics.checks import MetricError, check_count
from ctsynth.metrics.frechet import FeatureStatistics, frechet_distance

PR_NEIGHBORHOOD = 3  # k of the k-NN manifolds (seed 000's pr50k)
KID_SUBSET_SIZE = DEFAULTS["kid_subset_size"]  # 1000
KID_SUBSETS = DEFAULTS["kid_subsets"]  # 100
RNG_SEED = DEFAULTS["rng_seed"]


def _check_features(metric: str, real: np.ndarray, synthetic: np.ndarray) -> None:
    if real.ndim != 2 or synthetic.ndim != 2 or real.shape[1] != synthetic.shape[1]:
        raise MetricError(metric, f"feature sets of shapes {real.shape} and {synthetic.shape} cannot be compared")
    if not (np.isfinite(real).all() and np.isfinite(synthetic).all()):
        raise MetricError(metric, "the feature extractor produced NaN or infinite features")


def fid(metric: str, real: FeatureStatistics, synthetic: np.ndarray) -> float:
    """FID of synthetic features against cached real statistics."""
    check_count(metric, len(synthetic), 2, "the synthetic set", "a covariance")
    if synthetic.shape[1] != real.mu.shape[0]:
        raise MetricError(metric, f"synthetic features have {synthetic.shape[1]} dimensions, the real statistics "
                                  f"{real.mu.shape[0]}")
    if not np.isfinite(synthetic).all():
        raise MetricError(metric, "the feature extractor produced NaN or infinite features")
    return frechet_distance(real, FeatureStatistics.from_features(synthetic))


def kid(metric: str, real: np.ndarray, synthetic: np.ndarray, *, subset_size: int = 0,
        subsets: int = KID_SUBSETS, seed: int = RNG_SEED) -> tuple[float, float]:
    """KID mean and std over `subsets` random subsets; `subset_size` 0 takes
    min(1000, the smaller set)."""
    _check_features(metric, real, synthetic)
    size = subset_size or min(KID_SUBSET_SIZE, len(real), len(synthetic))
    for what, count in (("synthetic", len(synthetic)), ("real", len(real))):
        if size > count:
            raise MetricError(metric, f"the KID subset size {size} is larger than the {what} set ({count} samples); "
                                      "lower kid_subset_size or evaluate more samples")
    if size < 2:
        raise MetricError(metric, f"a KID subset of {size} sample has no pairs; KID needs at least 2 per set")
    out = kid_features_to_metric(torch.from_numpy(synthetic), torch.from_numpy(real), kid_subsets=subsets,
                                 kid_subset_size=size, rng_seed=seed % 2 ** 32, verbose=False)
    return out[KEY_METRIC_KID_MEAN], out[KEY_METRIC_KID_STD]


def precision_recall(metric: str, real: np.ndarray, synthetic: np.ndarray,
                     neighborhood: int = PR_NEIGHBORHOOD) -> dict[str, float]:
    """Precision (synthetic inside the real manifold), recall (real inside
    the synthetic manifold) and their F-score."""
    _check_features(metric, real, synthetic)
    why = f"a {neighborhood}-NN manifold"
    check_count(metric, len(real), neighborhood + 1, "the real set", why)
    check_count(metric, len(synthetic), neighborhood + 1, "the synthetic set", why)
    out = prc_features_to_metric(torch.from_numpy(synthetic), torch.from_numpy(real), prc_neighborhood=neighborhood,
                                 prc_batch_size=DEFAULTS["prc_batch_size"], save_cpu_ram=True, verbose=False)
    return {"precision": out[KEY_METRIC_PRECISION], "recall": out[KEY_METRIC_RECALL],
            "f_score": out[KEY_METRIC_F_SCORE]}
