"""Every metric an evaluation can report, by request name, as a function of
the run and one synthetic draw; `utility` alone spans all draws (its
repeats are its own). The dimensionalities each applies to and the defaults
are in `plan`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ctsynth.evaluation.run import EvaluationRun
from ctsynth.metrics import feature_metrics
from ctsynth.metrics.checks import MetricError, check_images, check_pair, check_same_shape
from ctsynth.metrics.efficiency import REFERENCE_COUNT, training_cost
from ctsynth.metrics.memorization import memorization
from ctsynth.metrics.planes import PLANES, PlaneFeatures
from ctsynth.metrics.ssim import ms_ssim_settings, nearest_real_ms_ssim, synthetic_pairs_ms_ssim
from ctsynth.metrics.utility import UtilitySettings, utility
from ctsynth.metrics.variety import mean_image_kib

GIB = 1024 ** 3


@dataclass(frozen=True)
class Outcome:
    value: float
    details: dict[str, float] = field(default_factory=dict)
    feature_space: str = ""  # when it depends on the run (fid-2.5d)
    std: float | None = None  # a metric with repeats of its own (utility): their std ...
    repeats: int | None = None  # ... and count
    extras: dict[str, Any] = field(default_factory=dict)  # for the report: pairs, distances ...


@dataclass(frozen=True)
class MetricSpec:
    compute: Callable[[EvaluationRun, int], Outcome] | Callable[[EvaluationRun], Outcome]
    feature_space: str = ""
    per_draw: bool = True  # repeated over the synthetic draws, reported as mean ± std


def _checked(run: EvaluationRun, name: str, draw: int) -> np.ndarray:
    """The draw's images, checked against the real split's pixels."""
    synthetic = run.draws[draw].images
    check_pair(name, run.real().images, synthetic)
    return synthetic


def _comparable(run: EvaluationRun, name: str, draw: int) -> None:
    """Checks for a feature-space metric: the real pixels are checked when
    they are featurized, so a cached real set is never read."""
    synthetic = run.draws[draw].images
    check_images(name, synthetic, "the synthetic set")
    check_same_shape(name, run.real_item_shape(), synthetic.shape[1:])


def _frechet(name: str, space_name: str) -> Callable[[EvaluationRun, int], Outcome]:
    """A Fréchet distance in one feature space: FID (Inception), FID-3D (MedicalNet)."""

    def compute(run: EvaluationRun, draw: int) -> Outcome:
        _comparable(run, name, draw)
        space = run.space(space_name)
        return Outcome(feature_metrics.fid(name, run.real_features(space, name).statistics,
                                           run.synthetic_features(space, draw)))

    return compute


def _kid(run: EvaluationRun, draw: int) -> Outcome:
    _comparable(run, "kid", draw)
    space = run.space("inception")
    mean, std = feature_metrics.kid("kid", run.real_features(space, "kid").features,
                                    run.synthetic_features(space, draw),
                                    subset_size=run.plan.kid_subset_size, subsets=run.settings.kid_subsets,
                                    seed=run.plan.seed)
    return Outcome(mean, {"subset_std": std})


def _pr(run: EvaluationRun, draw: int) -> Outcome:
    _comparable(run, "pr", draw)
    space = run.space("inception")
    result = feature_metrics.precision_recall("pr", run.real_features(space, "pr").features,
                                              run.synthetic_features(space, draw))
    return Outcome(result["precision"], result)


def _ct_precision_recall(run: EvaluationRun, name: str, draw: int) -> dict[str, float]:
    space = run.space("ct")
    return feature_metrics.precision_recall(name, run.real_features(space, name).features,
                                            run.synthetic_features(space, draw))


def _ct_fid(run: EvaluationRun, draw: int) -> Outcome:
    """FID, KID and PR in the CT extractor's feature space."""
    _comparable(run, "ct-fid", draw)
    space = run.space("ct")
    real, synthetic = run.real_features(space, "ct-fid"), run.synthetic_features(space, draw)
    kid, kid_std = feature_metrics.kid("ct-fid", real.features, synthetic, subset_size=run.plan.kid_subset_size,
                                       subsets=run.settings.kid_subsets, seed=run.plan.seed)
    return Outcome(feature_metrics.fid("ct-fid", real.statistics, synthetic),
                   {"kid": kid, "kid_subset_std": kid_std, **_ct_precision_recall(run, "ct-fid", draw)})


def _fid_25d(run: EvaluationRun, draw: int) -> Outcome:
    """The mean of the axial, coronal and sagittal slice FIDs (MAISI's 2.5D FID)."""
    _comparable(run, "fid-2.5d", draw)
    base = run.space("inception" if run.plan.inception_weights else "ct-planes")
    per_plane = {}
    for plane in PLANES:
        space = PlaneFeatures(base, plane, run.settings.slices_per_axis)
        per_plane[plane] = feature_metrics.fid("fid-2.5d", run.real_features(space, "fid-2.5d").statistics,
                                               run.synthetic_features(space, draw))
    return Outcome(float(np.mean(list(per_plane.values()))), per_plane, feature_space=base.name)


def _ms_ssim(run: EvaluationRun, draw: int) -> Outcome:
    synthetic = _checked(run, "ms-ssim", draw)
    nearest = nearest_real_ms_ssim(run.real().images, synthetic)
    kernel, weights = ms_ssim_settings(synthetic.shape[2:])
    return Outcome(nearest.mean, {"diversity_ms_ssim": synthetic_pairs_ms_ssim(synthetic, run.plan.seed),
                                  "kernel_size": kernel, "scales": len(weights)})


def _variety(run: EvaluationRun, draw: int) -> Outcome:
    """Mean-image file size of both sets, and recall in the CT feature space."""
    synthetic = _checked(run, "variety", draw)
    return Outcome(mean_image_kib(synthetic), {"real_kib": mean_image_kib(run.real().images),
                                               "recall": _ct_precision_recall(run, "variety", draw)["recall"]})


def _memorization(run: EvaluationRun, draw: int) -> Outcome:
    """Pixel space (the value) and CT feature space."""
    synthetic = _checked(run, "memorization", draw)
    train, heldout = run.real("train"), run.real(run.heldout_split)
    check_pair("memorization", train.images, synthetic)
    pixels = memorization(synthetic, train.images, heldout.images)
    space = run.space("ct")
    features = memorization(run.synthetic_features(space, draw),
                            run.real_features(space, "memorization", "train").features,
                            run.real_features(space, "memorization", run.heldout_split).features)
    return Outcome(pixels.fraction, {
        "feature_fraction": features.fraction, "pixel_threshold": pixels.threshold,
        "feature_threshold": features.threshold, "median_distance": float(np.median(pixels.synthetic_distances)),
        "median_heldout_distance": float(np.median(pixels.heldout_distances))},
        extras={"pixels": pixels, "train": train.images})


def _efficiency(run: EvaluationRun, draw: int) -> Outcome:
    cost = run.draws[draw].cost
    if cost is None or run.plan.model is None:
        raise MetricError("efficiency", "a stored synthetic set has no generation cost; evaluate a model")
    name, version = run.plan.model.model.split(":")
    return Outcome(cost.seconds_per(REFERENCE_COUNT), {
        "peak_memory_gb": cost.peak_bytes / GIB, "measured_items": cost.items, "measured_seconds": cost.seconds,
        "extrapolated": float(cost.items < REFERENCE_COUNT), "cuda": float(cost.memory.startswith("cuda")),
        **training_cost(run.store, name, version)})


def _utility(run: EvaluationRun) -> Outcome:
    if any(draw.labels is None for draw in run.draws):
        source = run.plan.model.model if run.plan.model else run.plan.synthetic_dataset
        raise MetricError("utility", f"needs tumor labels for the synthetic samples, and {source} gives none: "
                                     "evaluate a conditional model (e.g. unet_gan) or a labelled synthetic dataset")
    train, test = run.real("train"), run.real(run.heldout_split)
    repeats = max(run.plan.repeats, run.settings.utility_repeats)
    settings = UtilitySettings(steps=run.settings.utility_steps)
    result = utility((train.images, train.labels), (test.images, test.labels),
                     [(d.images, d.labels) for d in run.draws], repeats, settings, run.device, run.plan.seed,
                     on_repeat=run.stepper("utility classifiers", repeats, "repeats"))
    gains = result.gains("augmented")
    return Outcome(float(gains.mean()), result.details(), std=float(gains.std(ddof=1)), repeats=repeats,
                   extras={"result": result})


METRICS: dict[str, MetricSpec] = {
    "fid": MetricSpec(_frechet("fid", "inception"), "inception"),
    "kid": MetricSpec(_kid, "inception"),
    "pr": MetricSpec(_pr, "inception"),
    "ct-fid": MetricSpec(_ct_fid, "ct"),
    "fid-3d": MetricSpec(_frechet("fid-3d", "med3d"), "med3d"),
    "fid-2.5d": MetricSpec(_fid_25d),
    "ms-ssim": MetricSpec(_ms_ssim, "pixel"),
    "variety": MetricSpec(_variety, "pixel"),
    "memorization": MetricSpec(_memorization, "pixel"),
    "utility": MetricSpec(_utility, per_draw=False),
    "efficiency": MetricSpec(_efficiency),
}
