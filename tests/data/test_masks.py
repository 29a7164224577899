"""Our (z, y, x) nodule masks equal pylidc's own masks, slice for slice, on phantom series."""

import numpy as np
import pytest

from ctsynth.data.dicom_series import find_series, load_series
from ctsynth.data.masks import find_scan, known_series, nodule_masks


@pytest.fixture(scope="module")
def loaded(lidc_phantom_root):
    """[(scan, CtSeries)] for the phantom scans."""
    root, scans = lidc_phantom_root
    refs, problems = find_series(sorted(p for p in root.rglob("*") if p.is_file()), root)
    assert problems == []
    series = {ref.series_uid: load_series(ref) for ref in refs}
    assert all(not p for _, p in series.values())
    return [(scan, series[scan.series_instance_uid][0]) for scan in scans]


def pylidc_volume(scan, pieces) -> np.ndarray:
    """pylidc's own frame (row, col, slice): every piece max-painted at its bbox."""
    volume = np.zeros((512, 512, len(scan.slice_zvals)), np.uint8)
    for mask, bbox, value in pieces:
        volume[bbox] = np.maximum(volume[bbox], mask.astype(np.uint8) * value)
    return volume


def as_ours(volume: np.ndarray) -> np.ndarray:
    """pylidc (row, col, slice) -> our (z, y, x); valid because both sort slices by ascending z."""
    return np.moveaxis(volume, 2, 0)


def test_phantom_slices_sit_at_pylidc_z(loaded):
    for scan, series in loaded:
        np.testing.assert_allclose(series.z_mm, scan.slice_zvals)


def test_merged_mask_equals_pylidc_boolean_masks(loaded):
    for scan, series in loaded:
        ours, problems = nodule_masks(scan, series.z_mm, series.hu.shape, "merge")
        expected = pylidc_volume(scan, [(a.boolean_mask(), a.bbox(), a.malignancy) for a in scan.annotations])
        assert problems == []
        assert expected.any()
        np.testing.assert_array_equal(ours.labels, as_ours(expected))


@pytest.mark.parametrize("level", [0.5, 1.0])
def test_consensus_mask_equals_pylidc_consensus(loaded, level):
    from pylidc.utils import consensus

    scan, series = loaded[0]
    ours, _ = nodule_masks(scan, series.z_mm, series.hu.shape, "consensus", level)
    pieces = []
    for cluster in scan.cluster_annotations(verbose=False):
        cmask, cbbox = consensus(cluster, clevel=level, ret_masks=False)
        pieces.append((cmask, cbbox, max(a.malignancy for a in cluster)))
    np.testing.assert_array_equal(ours.labels, as_ours(pylidc_volume(scan, pieces)))
    merged, _ = nodule_masks(scan, series.z_mm, series.hu.shape, "merge")
    assert ours.mask.sum() < merged.mask.sum()  # agreement is a subset of the union


def test_masks_follow_z_not_slice_order(loaded):
    scan, series = loaded[0]
    forward, _ = nodule_masks(scan, series.z_mm, series.hu.shape)
    backward, _ = nodule_masks(scan, series.z_mm[::-1], series.hu.shape)
    np.testing.assert_array_equal(backward.labels, forward.labels[::-1])


def test_a_missing_slice_is_reported_and_the_rest_stays_aligned(loaded):
    scan, series = loaded[0]
    full, _ = nodule_masks(scan, series.z_mm, series.hu.shape)
    gone = int(np.flatnonzero(full.mask.any(axis=(1, 2)))[0])
    z_mm = np.delete(series.z_mm, gone)
    partial, problems = nodule_masks(scan, z_mm, (len(z_mm), *series.hu.shape[1:]))
    np.testing.assert_array_equal(partial.labels, np.delete(full.labels, gone, axis=0))
    assert len(problems) == 1 and f"{series.z_mm[gone]:g}" in problems[0].reason


def test_masks_cover_the_drawn_nodules(loaded):
    scan, series = loaded[0]
    ours, _ = nodule_masks(scan, series.z_mm, series.hu.shape)
    ring = np.roll(ours.mask, 8, axis=2) & ~ours.mask
    assert series.hu[ours.mask].mean() > series.hu[ring].mean() + 300


def test_nodule_metadata(loaded):
    for scan, series in loaded:
        masks, _ = nodule_masks(scan, series.z_mm, series.hu.shape)
        clusters = scan.cluster_annotations(verbose=False)
        assert [n.readers for n in masks.nodules] == [len(c) for c in clusters]
        for info, cluster in zip(masks.nodules, clusters):
            malignancy = [a.malignancy for a in cluster]
            assert info.malignancy_max == max(malignancy)
            assert info.malignancy_median == np.median(malignancy)
            assert info.diameter_mm == pytest.approx(np.median([a.diameter for a in cluster]))
            zs = [z for a in cluster for z in a.contour_slice_zvals]
            assert min(zs) <= info.centroid_z_mm <= max(zs)


def test_series_lookup(loaded):
    scan, series = loaded[0]
    assert find_scan(series.series_uid).id == scan.id
    assert find_scan("1.2.3.4") is None
    assert known_series([series.series_uid, "1.2.3.4"]) == {series.series_uid}
