"""Each preprocessing step on inputs whose right answer is known."""

import numpy as np
import pytest

from ctsynth.data import preprocess as pp


def test_window_clips_and_scales_to_unit_range():
    hu = np.array([-2000.0, -1000.0, -300.0, 400.0, 3000.0])
    np.testing.assert_allclose(pp.window(hu, -1000, 400), [0, 0, 0.5, 1, 1], atol=1e-7)
    assert pp.window(hu, -1000, 400).dtype == np.float32


def test_window_rejects_empty_range():
    with pytest.raises(ValueError, match="below"):
        pp.window(np.zeros(3), 400, 400)


def test_fitted_shape_keeps_physical_aspect():
    # 100 slices x 2.5 mm = 250 mm against 512 x 0.5 mm = 256 mm.
    assert pp.fitted_shape((100, 512, 512), (2.5, 0.5, 0.5), 128) == (125, 128, 128)
    assert pp.fitted_shape((30, 60), (1.0, 1.0), 64) == (32, 64)


def test_pad_to_centres_and_fills():
    out = pp.pad_to(np.ones((2, 3)), (5, 6), fill=7)
    assert out.shape == (5, 6)
    assert out[1:3, 1:4].sum() == 6 and out[0, 0] == 7 and out[4, 5] == 7
    with pytest.raises(ValueError):
        pp.pad_to(np.ones((4, 4)), (3, 4))


def test_view_planes_orients_axes_with_superior_up():
    volume = np.arange(2 * 3 * 4).reshape(2, 3, 4)  # (z, y, x)
    assert pp.view_planes(volume, "axial").shape == (2, 3, 4)
    coronal = pp.view_planes(volume, "coronal")
    assert coronal.shape == (3, 2, 4)
    assert coronal[1, 0, 2] == volume[1, 1, 2]  # top row is the highest z
    sagittal = pp.view_planes(volume, "sagittal")
    assert sagittal.shape == (4, 2, 3)
    assert sagittal[3, 1, 2] == volume[0, 2, 3]
    assert pp.plane_spacing((2.5, 0.7, 0.6), "sagittal") == (2.5, 0.7)


def test_resize_image_samples_pixel_centres():
    ramp = np.broadcast_to(np.arange(64, dtype=np.float32), (8, 64))
    half = pp.resize_image(ramp, (8, 32))
    # Output column j covers input columns 2j and 2j+1: its centre is at 2j + 0.5.
    np.testing.assert_allclose(half[:, 2:-2], np.broadcast_to(2 * np.arange(2, 30) + 0.5, (8, 28)), atol=1e-4)
    stack = np.stack([ramp, 1 - ramp])
    assert pp.resize_image(stack, (3, 5)).shape == (2, 3, 5)


def test_resize_image_is_antialiased():
    checker = (np.indices((64, 64)).sum(0) % 2).astype(np.float32)
    np.testing.assert_allclose(pp.resize_image(checker, (16, 16)), 0.5, atol=0.02)


def test_resample_volume_is_linear_and_antialiased():
    ramp = np.broadcast_to(np.arange(8, dtype=np.float32)[:, None, None], (8, 4, 4))
    up = pp.resample_volume(ramp, (16, 4, 4))
    # Pixel-centre linear interpolation: output z centres at (i + 0.5) / 2 - 0.5.
    np.testing.assert_allclose(up[2:-2, 0, 0], (np.arange(2, 14) + 0.5) / 2 - 0.5, atol=1e-5)
    checker = (np.indices((32, 32, 32)).sum(0) % 2).astype(np.float32)
    np.testing.assert_allclose(pp.resample_volume(checker, (8, 8, 8)), 0.5, atol=0.02)


def test_resize_labels_is_nearest_and_keeps_values():
    labels = np.kron(np.array([[0, 3], [5, 0]], dtype=np.uint8), np.ones((4, 4), np.uint8))
    np.testing.assert_array_equal(pp.resize_labels(labels, (2, 2)), [[0, 3], [5, 0]])
    assert pp.resize_labels(labels, (16, 16)).dtype == np.uint8


def test_min_pixel_rule_restores_a_vanished_nodule_at_its_centroid():
    labels = np.zeros((512, 512), np.uint8)
    labels[301:304, 101:104] = 4  # 9 pixels between the rows/cols that 64 x 64 samples
    assert pp.resize_mask(labels, (64, 64), 0).sum() == 0
    out = pp.resize_mask(labels, (64, 64), 10)
    assert np.count_nonzero(out) == 10
    assert set(np.unique(out)) == {0, 4}
    rows, cols = np.nonzero(out)
    expected = (np.array([302, 102]) + 0.5) * 64 / 512 - 0.5
    assert abs(rows.mean() - expected[0]) < 1 and abs(cols.mean() - expected[1]) < 1


def test_min_pixel_rule_tops_up_shrunken_nodules_and_leaves_large_ones():
    labels = np.zeros((128, 128), np.uint8)
    labels[10:18, 10:18] = 2  # 64 px -> 4 px at 32 x 32: too few
    labels[60:120, 60:120] = 1  # large: unchanged by the rule
    out = pp.resize_mask(labels, (32, 32), 10)
    np.testing.assert_array_equal(out[15:30, 15:30], pp.resize_labels(labels, (32, 32))[15:30, 15:30])
    small = out[:12, :12]
    assert np.count_nonzero(small) >= 10 and small.max() == 2


def test_min_pixel_rule_works_in_3d():
    labels = np.zeros((40, 200, 200), np.uint8)
    labels[20, 50:52, 50:52] = 5
    out = pp.resize_mask(labels, (20, 25, 25), 10)
    assert np.count_nonzero(out) == 10 and out.max() == 5


def test_volume_to_cube_keeps_a_sphere_round():
    spacing = (2.5, 0.5, 0.5)
    z, y, x = np.meshgrid(np.arange(40) * 2.5, np.arange(160) * 0.5, np.arange(200) * 0.5, indexing="ij")
    sphere = (((z - 50) ** 2 + (y - 40) ** 2 + (x - 50) ** 2) <= 30**2).astype(np.float32)
    cube, voxel = pp.volume_to_cube(sphere, spacing, 50)
    assert cube.shape == (50, 50, 50) and voxel == pytest.approx(2.0)
    inside = cube > 0.5
    extents = [np.ptp(np.nonzero(inside)[axis]) for axis in range(3)]
    assert max(extents) - min(extents) <= 1  # same diameter along every axis
    assert extents[0] == pytest.approx(60 / voxel, abs=2)
    mask = pp.mask_to_cube(sphere.astype(np.uint8), spacing, 50, 10)
    assert abs(int(mask.sum()) - int(inside.sum())) < 0.05 * inside.sum()


def test_padding_is_air_and_symmetric():
    cube, _ = pp.volume_to_cube(np.ones((10, 40, 40), np.float32), (1.0, 1.0, 1.0), 40)
    filled = np.flatnonzero(cube[:, 20, 20] > 0.5)
    assert (filled[0], filled[-1]) == (15, 24)
    assert cube[0].max() == 0


def test_slice_means():
    stack = np.stack([np.zeros((4, 4)), np.full((4, 4), 0.5)])
    np.testing.assert_allclose(pp.slice_means(stack), [0, 0.5])


def test_balance_keeps_all_tumour_slices_and_as_many_others():
    has = np.array([1, 0, 0, 1, 0, 0, 0, 0], bool)
    kept = pp.balance(has, np.random.default_rng(0))
    assert set(np.flatnonzero(has)) <= set(kept)
    assert len(kept) == 4 and has[kept].sum() == 2
    assert np.array_equal(kept, pp.balance(has, np.random.default_rng(0)))
    assert not all(np.array_equal(kept, pp.balance(has, np.random.default_rng(s))) for s in range(1, 6))


def test_balance_samples_tumour_slices_down_when_they_are_the_majority():
    has = np.array([1, 1, 1, 1, 0], bool)
    kept = pp.balance(has, np.random.default_rng(1))
    assert 4 in kept and len(kept) == 2


def test_balance_keeps_a_single_class_whole():
    assert len(pp.balance(np.zeros(5, bool), np.random.default_rng(0))) == 5


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (0.7, 0.2, 0.2), (1.2, -0.1, -0.1), (0.5, float("nan"), 0.5)])
def test_check_split_rejects_bad_fractions(fractions):
    with pytest.raises(ValueError):
        pp.check_split(fractions)


def test_split_counts():
    assert pp.split_counts(10, (0.7, 0.15, 0.15)) == (7, 2, 1) or pp.split_counts(10, (0.7, 0.15, 0.15)) == (7, 1, 2)
    assert sum(pp.split_counts(17, (0.7, 0.15, 0.15))) == 17
    assert pp.split_counts(3, (0.8, 0.1, 0.1)) == (1, 1, 1)  # three patients give a test patient
    assert pp.split_counts(2, (0.5, 0.0, 0.5)) == (1, 0, 1)
    assert pp.split_counts(5, (1.0, 0.0, 0.0)) == (5, 0, 0)


def test_split_patients_is_seeded_and_patient_level():
    patients = [f"p{i}" for i in range(20) for _ in range(3)]  # three series each
    first = pp.split_patients(patients, (0.7, 0.15, 0.15), seed=7)
    assert first == pp.split_patients(list(reversed(patients)), (0.7, 0.15, 0.15), seed=7)
    assert set(first) == set(patients)
    assert sorted(first.values()).count("train") == 14
    assert first != pp.split_patients(patients, (0.7, 0.15, 0.15), seed=8)
