"""Does the model copy its training data? For each synthetic sample, the
distance to its nearest training sample, compared with how close genuinely
new real images (the held-out split) come to the training set: a synthetic
sample closer than the 1st percentile of held-out-to-train distances is
closer than 99% of unseen real data ever gets, which is what a copy looks
like. Seed 001 §III-D warns that FID can mask memorization; this measures
it, in pixel space and in a feature space alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctsynth.metrics.checks import check_count
from ctsynth.metrics.nearest import nearest

PERCENTILE = 1.0


@dataclass(frozen=True)
class Memorization:
    fraction: float  # synthetic samples closer to training data than the threshold
    threshold: float  # the 1st percentile of held-out-to-train distances
    synthetic_distances: np.ndarray  # (N,) to the nearest training sample
    nearest_train: np.ndarray  # (N,) its index
    heldout_distances: np.ndarray  # (M,)

    def closest(self, count: int) -> list[tuple[int, int, float]]:
        """The `count` synthetic samples nearest to training data: (synthetic
        index, training index, distance), nearest first."""
        order = np.argsort(self.synthetic_distances, kind="stable")[:count]
        return [(int(i), int(self.nearest_train[i]), float(self.synthetic_distances[i])) for i in order]


def memorization(synthetic: np.ndarray, train: np.ndarray, heldout: np.ndarray, metric: str = "memorization",
                 percentile: float = PERCENTILE) -> Memorization:
    """Items (images or feature vectors, flattened) of the three sets."""
    check_count(metric, len(train), 1, "the training split", "a nearest neighbour")
    check_count(metric, len(heldout), 2, "the held-out split", "a distance percentile")
    distances, index = nearest(synthetic, train)
    heldout_distances, _ = nearest(heldout, train)
    threshold = float(np.percentile(heldout_distances, percentile))
    return Memorization(float(np.mean(distances < threshold)), threshold, distances, index, heldout_distances)
