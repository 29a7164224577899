"""Slices of volumes along the three planes."""

from __future__ import annotations

import numpy as np

from ctsynth.metrics.planes import PlaneFeatures, plane_slices


def test_slices_are_taken_across_each_planes_axis():
    volumes = np.arange(2 * 4 * 5 * 6, dtype=np.float32).reshape(2, 1, 4, 5, 6)
    axial = plane_slices(volumes, "axial", 2)
    assert axial.shape == (4, 1, 5, 6)
    assert np.array_equal(axial[0, 0], volumes[0, 0, 0]) and np.array_equal(axial[1, 0], volumes[0, 0, 3])
    assert np.array_equal(axial[2, 0], volumes[1, 0, 0])
    coronal = plane_slices(volumes, "coronal", 10)  # more than the 5 there are: all of them
    assert coronal.shape == (10, 1, 4, 6) and np.array_equal(coronal[7, 0], volumes[1, 0, :, 2, :])
    sagittal = plane_slices(volumes, "sagittal", 3)
    assert sagittal.shape == (6, 1, 4, 5) and np.array_equal(sagittal[1, 0], volumes[0, 0, :, :, 2])


def test_plane_features_apply_a_2d_space_to_the_slices():
    class Means:
        name, id = "ct", "ct-x"

        def features(self, images):
            return images.reshape(len(images), -1).mean(1, keepdims=True)

    volumes = np.random.default_rng(0).random((3, 1, 4, 4, 4)).astype(np.float32)
    space = PlaneFeatures(Means(), "coronal", 2)
    assert space.id == "ct-x-coronal2" and space.name == "ct"
    assert np.allclose(space.features(volumes)[:, 0], plane_slices(volumes, "coronal", 2).mean(axis=(1, 2, 3)))
