"""Layouts drawn as masks: centre and diameter as asked, in voxels or mm, and
every layout a grid cannot hold refused with the nodule's field named."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from ctsynth.conditioning.layout import MAX_NODULES, Nodule, check_layout, rasterise
from ctsynth.errors import InvalidArgument

SHAPE, SPACING = (40, 64, 64), (2.5, 0.7, 0.7)  # a thick-slice CT grid: z, rows, cols in mm


def measured(mask: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """(centroid in voxels, extent in mm per axis) of a mask's voxels."""
    points = np.argwhere(mask)
    return points.mean(axis=0), (points.max(axis=0) - points.min(axis=0) + 1) * np.asarray(spacing)


@pytest.mark.parametrize("diameter", [4.0, 10.0, 25.0])
def test_a_nodule_is_a_ball_of_its_diameter_in_mm_on_an_anisotropic_grid(diameter):
    mask = rasterise([Nodule((20, 30, 33), diameter)], SHAPE, SPACING)
    centre, extent = measured(mask, SPACING)
    np.testing.assert_allclose(centre, (20, 30, 33), atol=1e-9)  # symmetric about the asked centre
    # Extent along each axis: the diameter to within one voxel of that axis.
    assert np.all(np.abs(extent - diameter) <= np.asarray(SPACING)), extent
    volume = mask.sum() * np.prod(SPACING)
    assert volume == pytest.approx(np.pi / 6 * diameter ** 3, rel=0.25 if diameter < 8 else 0.08)
    assert ndimage.label(mask)[1] == 1 and set(np.unique(mask)) == {0, 1} and mask.dtype == np.uint8


def test_millimetre_centres_are_lps_positions_on_the_outputs_grid():
    """(x, y, z) mm on the grid centred on the origin: (0, 0, 0) is the
    grid's centre, +x one column per 0.7 mm, +z one slice per 2.5 mm."""
    at_origin = rasterise([Nodule((0.0, 0.0, 0.0), 6.0, units="mm")], SHAPE, SPACING)
    np.testing.assert_allclose(measured(at_origin, SPACING)[0], [(n - 1) / 2 for n in SHAPE], atol=1e-9)
    moved = rasterise([Nodule((7.0, -3.5, 10.0), 6.0, units="mm")], SHAPE, SPACING)
    shift = measured(moved, SPACING)[0] - measured(at_origin, SPACING)[0]
    np.testing.assert_allclose(shift, (10.0 / 2.5, -3.5 / 0.7, 7.0 / 0.7), atol=1e-9)


def test_a_nodule_smaller_than_a_voxel_still_marks_its_voxel_and_2d_works():
    mask = rasterise([Nodule((10, 12), 0.3)], (32, 32), (1.0, 1.0))
    assert mask.sum() == 1 and mask[10, 12] == 1
    two = rasterise([Nodule((8, 8), 5.0), Nodule((24, 20), 7.0)], (32, 32), (1.0, 1.0))
    labels, count = ndimage.label(two)
    assert count == 2
    np.testing.assert_allclose(sorted(ndimage.center_of_mass(two, labels, [1, 2])), [(8, 8), (24, 20)], atol=1e-9)


def test_overlapping_nodules_merge_and_characteristics_do_not_change_the_mask():
    plain = rasterise([Nodule((20, 30, 30), 10.0)], SHAPE, SPACING)
    rated = rasterise([Nodule((20, 30, 30), 10.0, characteristics=(("texture", 5), ("malignancy", 4)))],
                      SHAPE, SPACING)
    assert np.array_equal(plain, rated)
    both = rasterise([Nodule((20, 30, 30), 10.0), Nodule((20, 30, 35), 10.0)], SHAPE, SPACING)
    assert ndimage.label(both)[1] == 1 and both.sum() > plain.sum()


@pytest.mark.parametrize("nodules, field, reason", [
    ([Nodule((20, 30, 64), 5.0)], "nodules[0].centre", "outside"),
    ([Nodule((20, 30), 5.0)], "nodules[0].centre", "3 finite coordinates"),
    ([Nodule((0.0, 0.0, 60.0), 5.0, units="mm")], "nodules[0].centre", "outside"),  # z extent is +-48.75 mm
    ([Nodule((5, 5, 5), 5.0), Nodule((20, 30, 30), 46.0)], "nodules[1].diameter_mm", "larger than the item"),
    ([Nodule((20, 30, 30), 0.0)], "nodules[0].diameter_mm", "must be > 0"),
    ([Nodule((20, 30, 30), float("nan"))], "nodules[0].diameter_mm", "must be > 0"),
    ([Nodule((20, 30, 30), 5.0, units="inch")], "nodules[0].units", "use one of"),
    ([Nodule((20, 30, 30), 5.0, characteristics=(("texture", 6),))], "nodules[0].characteristics", "outside 1-5"),
    ([Nodule((20, 30, 30), 5.0, characteristics=(("colour", 1),))], "nodules[0].characteristics", "unknown"),
    ([Nodule((20, 30, 30), 3.0)] * (MAX_NODULES + 1), "nodules", "at most"),
])
def test_a_layout_the_grid_cannot_hold_is_refused_naming_the_nodule(nodules, field, reason):
    with pytest.raises(InvalidArgument, match=reason) as error:
        rasterise(nodules, SHAPE, SPACING)
    assert error.value.field == field


def test_a_centre_outside_the_body_is_refused_where_the_body_is_known():
    body = np.zeros(SHAPE, bool)
    body[:, 16:48, 16:48] = True
    check_layout([Nodule((20, 30, 30), 5.0)], SHAPE, SPACING, body)
    with pytest.raises(InvalidArgument, match="outside the body") as error:
        check_layout([Nodule((20, 30, 30), 5.0), Nodule((20, 5, 30), 5.0)], SHAPE, SPACING, body)
    assert error.value.field == "nodules[1].centre"
