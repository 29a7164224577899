"""2.5D features of volumes: a 2D feature space applied to slices along one
axis (MAISI's 2.5D FID reports the mean of the axial, coronal and sagittal
FIDs). Evenly spaced slices keep the cost bounded on 128^3 volumes.
"""

from __future__ import annotations

import numpy as np

from ctsynth.metrics.feature_cache import FeatureSpace

# The axis of (N, C, D, H, W) each plane's slices are taken across.
PLANES = {"axial": 2, "coronal": 3, "sagittal": 4}


def plane_slices(volumes: np.ndarray, plane: str, per_volume: int) -> np.ndarray:
    """(N, C, D, H, W) -> (N * k, C, a, b): k <= per_volume evenly spaced
    slices of each volume across the plane's axis."""
    axis = PLANES[plane]
    depth = volumes.shape[axis]
    picks = np.unique(np.linspace(0, depth - 1, min(per_volume, depth)).round().astype(int))
    slices = np.take(volumes, picks, axis=axis)  # (N, C, k, a, b) after moving the axis
    slices = np.moveaxis(slices, axis, 1)
    return np.ascontiguousarray(slices.reshape(-1, volumes.shape[1], *slices.shape[3:]))


class PlaneFeatures:
    """A 2D feature space over the slices of volumes in one plane."""

    def __init__(self, space: FeatureSpace, plane: str, per_volume: int):
        self.space = space
        self.plane = plane
        self.per_volume = per_volume
        self.name = space.name
        self.id = f"{space.id}-{plane}{per_volume}"

    def features(self, images: np.ndarray) -> np.ndarray:
        return self.space.features(plane_slices(images, self.plane, self.per_volume))
