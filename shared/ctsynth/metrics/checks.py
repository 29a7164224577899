"""The input problems every metric reports the same way: which metric,
and why it cannot be computed (the issue's "bad input, faults").

A `MetricError` fails one metric of an evaluation; the report records it
and the other metrics go on.
"""

from __future__ import annotations

import numpy as np

from ctsynth.errors import FailedPrecondition


class MetricError(FailedPrecondition):
    """A metric cannot be computed on these inputs; the message names the
    metric and the reason."""

    def __init__(self, metric: str, reason: str):
        super().__init__(f"{metric}: {reason}")
        self.metric = metric
        self.reason = reason


def check_images(metric: str, images: np.ndarray, what: str) -> None:
    """(N, C, *spatial) with N >= 1, finite, and no image a constant."""
    if images.ndim not in (4, 5):
        raise MetricError(metric, f"{what} has shape {images.shape}; expected (N, C, H, W) or (N, C, D, H, W)")
    if len(images) == 0:
        raise MetricError(metric, f"{what} is empty")
    flat = images.reshape(len(images), -1)
    bad = np.flatnonzero(~np.isfinite(flat).all(axis=1))
    if bad.size:
        raise MetricError(metric, f"{what} item {bad[0]} contains NaN or infinite values")
    constant = np.flatnonzero(flat.min(axis=1) == flat.max(axis=1))
    if constant.size:
        raise MetricError(metric, f"{what} item {constant[0]} is a constant image ({flat[constant[0], 0]:.4g} "
                                  "everywhere): nothing to compare")


def check_same_shape(metric: str, real: tuple[int, ...], synthetic: tuple[int, ...]) -> None:
    """Items (C, *spatial) of both sets have one shape and dimensionality."""
    real, synthetic = tuple(real), tuple(synthetic)
    if len(real) != len(synthetic):
        raise MetricError(metric, f"the real set is {len(real) - 1}D {real} and the synthetic set "
                                  f"{len(synthetic) - 1}D {synthetic}: compare like with like")
    if real != synthetic:
        raise MetricError(metric, f"real items are {real} and synthetic items {synthetic}: the shapes differ")


def check_pair(metric: str, real: np.ndarray, synthetic: np.ndarray) -> None:
    """Every check a comparison of two image sets needs."""
    check_images(metric, real, "the real set")
    check_images(metric, synthetic, "the synthetic set")
    check_same_shape(metric, real.shape[1:], synthetic.shape[1:])


def check_count(metric: str, count: int, minimum: int, what: str, why: str) -> None:
    if count < minimum:
        raise MetricError(metric, f"{what} has {count} samples; {why} needs at least {minimum}")
