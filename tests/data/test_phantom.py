"""Phantom LIDC-IDRI series: pylidc loads them like the real scans, with nodules where the readers drew them."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from scipy import ndimage

from ctsynth.data.lidc import dicom_root
from ctsynth.data.phantom import ChestAnatomy, Tissue, phantom_slices, write_phantom_study
from tests.dicom_iod import ct_image_problems, dciodvfy_problems


def series_files(root, scan) -> list:
    return sorted((root / scan.patient_id / scan.study_instance_uid / scan.series_instance_uid).glob("*.dcm"))


@pytest.fixture(scope="module")
def volumes(lidc_phantom_root) -> list[np.ndarray]:
    root, scans = lidc_phantom_root
    with dicom_root(root):
        return [scan.to_volume(verbose=False) for scan in scans]


def test_pylidc_loads_a_chest_in_hu(lidc_phantom_root, lidc_phantom_seed, volumes):
    _, scans = lidc_phantom_root
    for scan, volume in zip(scans, volumes, strict=True):
        zs = scan.slice_zvals
        assert volume.shape == (512, 512, len(zs))
        assert -1010 < volume[:24, :24].mean() < -990  # air in the corners of every slice
        k = len(zs) // 2
        labels = ChestAnatomy.for_scan(scan, lidc_phantom_seed).labels(zs[k])
        median = {tissue: np.median(volume[..., k][labels == tissue]) for tissue in Tissue if (labels == tissue).any()}
        assert -950 <= median[Tissue.LUNG] <= -700
        assert -150 <= median[Tissue.FAT] <= -50
        assert 0 <= median[Tissue.SOFT_TISSUE] <= 80
        assert median[Tissue.BONE] > 300
        assert volume.std(axis=(0, 1)).min() > 100  # no blank slice


def nodule_neighbourhood(scan, shape) -> np.ndarray:
    """Every reader's nodule pixels, widened by 3 pixels in-plane for edges and blur."""
    union = np.zeros(shape, bool)
    for ann in scan.annotations:
        union[ann.bbox()] |= ann.boolean_mask()
    return ndimage.binary_dilation(union, structure=np.ones((3, 3, 1), bool), iterations=3)


def surrounding_hu(volume, excluded, ann, pad=5) -> float:
    rows, cols, ks = ann.bbox()
    window = (slice(max(rows.start - pad, 0), rows.stop + pad), slice(max(cols.start - pad, 0), cols.stop + pad), ks)
    return float(np.median(volume[window][~excluded[window]]))


def test_each_readers_nodule_has_the_hu_of_its_texture(lidc_phantom_root, volumes):
    _, scans = lidc_phantom_root
    checked = Counter()
    for scan, volume in zip(scans, volumes, strict=True):
        excluded = nodule_neighbourhood(scan, volume.shape)
        for ann in scan.annotations:
            inside = float(volume[ann.bbox()][ann.boolean_mask()].mean())
            lung = surrounding_hu(volume, excluded, ann)
            assert -950 < lung < -700, (scan.patient_id, ann.id)
            assert inside - lung > 150, (scan.patient_id, ann.id, ann.texture, inside, lung)
            if ann.texture == 5:
                assert inside > -200, (scan.patient_id, ann.id, inside)
            elif ann.texture <= 2:
                assert -800 < inside < -400, (scan.patient_id, ann.id, inside)
            checked["solid" if ann.texture == 5 else "ground glass" if ann.texture <= 2 else "part-solid"] += 1
    assert set(checked) == {"solid", "part-solid", "ground glass"}, checked


def test_series_carries_the_scans_uids_and_z_positions(lidc_phantom_root):
    root, scans = lidc_phantom_root
    for scan in scans:
        zs = scan.slice_zvals
        files = series_files(root, scan)
        assert [p.name for p in files] == [f"{k:06d}.dcm" for k in range(1, len(zs) + 1)]
        headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
        np.testing.assert_allclose([float(h.ImagePositionPatient[2]) for h in headers], zs, atol=1e-6)
        np.testing.assert_allclose([float(h.SliceLocation) for h in headers], zs, atol=1e-6)
        assert [h.InstanceNumber for h in headers] == list(range(1, len(zs) + 1))
        assert len({h.SOPInstanceUID for h in headers}) == len(zs)
        for h in headers:
            assert (h.StudyInstanceUID, h.SeriesInstanceUID, h.PatientID) == (
                scan.study_instance_uid, scan.series_instance_uid, scan.patient_id)
            assert h.SOPClassUID == CTImageStorage and h.Modality == "CT"
            assert h.SOPInstanceUID.is_valid and h.file_meta.MediaStorageSOPInstanceUID == h.SOPInstanceUID
            assert h.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
            assert str(h.PatientName) == f"PHANTOM^{scan.patient_id}" and h.SeriesDescription == "ctsynth phantom"
            assert [float(v) for v in h.PixelSpacing] == pytest.approx([scan.pixel_spacing] * 2)
            assert float(h.SliceThickness) == pytest.approx(scan.slice_thickness)
            assert [float(v) for v in h.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
            assert (h.Rows, h.Columns, h.BitsAllocated, h.BitsStored, h.HighBit, h.PixelRepresentation) == (
                512, 512, 16, 16, 15, 1)
            assert (float(h.RescaleSlope), float(h.RescaleIntercept)) == (1.0, -1024.0)
    assert not list(root.rglob("*.partial")), "staging folders left behind"


def test_phantom_slices_meet_the_ct_image_iod(lidc_phantom_root):
    root, scans = lidc_phantom_root
    for scan in scans:
        files = series_files(root, scan)
        for path in files:
            assert ct_image_problems(pydicom.dcmread(path)) == [], path.name
        assert dciodvfy_problems(files[len(files) // 2]) in (None, [])


def test_modality_lut_gives_the_hu_that_were_rendered(lidc_phantom_root, lidc_phantom_seed):
    root, scans = lidc_phantom_root
    scan = scans[0]
    for path, hu in zip(series_files(root, scan), phantom_slices(scan, lidc_phantom_seed), strict=True):
        ds = pydicom.dcmread(path)
        assert ds.pixel_array.dtype == np.int16
        np.testing.assert_array_equal(apply_modality_lut(ds.pixel_array, ds), hu)


def test_seed_fixes_the_bytes_and_a_rewrite_replaces_the_series(lidc_phantom_root, lidc_phantom_seed, tmp_path):
    root, scans = lidc_phantom_root
    scan = scans[0]
    reference = series_files(root, scan)
    again = write_phantom_study(scan, tmp_path, lidc_phantom_seed)
    assert sorted(p.name for p in again.iterdir()) == [p.name for p in reference]
    assert all((again / p.name).read_bytes() == p.read_bytes() for p in reference)
    (again / "stray.dcm").write_bytes(b"")
    assert write_phantom_study(scan, tmp_path, lidc_phantom_seed + 1) == again
    assert sorted(p.name for p in again.iterdir()) == [p.name for p in reference]
    middle = reference[len(reference) // 2]
    before, after = pydicom.dcmread(middle).pixel_array, pydicom.dcmread(again / middle.name).pixel_array
    assert (before != after).mean() > 0.5


def draw_anatomy(seed: int) -> ChestAnatomy:
    return ChestAnatomy.draw(np.random.default_rng(seed), 0.7, (-300.0, 0.0))


def test_anatomy_changes_smoothly_along_z_and_with_the_seed():
    anatomy = draw_anatomy(0)
    base, middle, apex = (np.sum(anatomy.labels(z) == Tissue.LUNG) for z in (-300.0, -165.0, 0.0))
    assert base < middle > apex
    here, next_slice = anatomy.labels(-150.0), anatomy.labels(-147.5)
    assert 0 < np.mean(here != next_slice) < 0.05
    assert (here == Tissue.VESSEL).any()
    assert anatomy.vessels.radius.max() > 5 * anatomy.vessels.radius.min()  # vessels thin toward the periphery
    assert np.mean(here != draw_anatomy(1).labels(-150.0)) > 0.01


def test_bad_arguments_are_refused_before_writing(lidc_phantom_root, tmp_path):
    _, scans = lidc_phantom_root
    with pytest.raises(ValueError, match="seed"):
        write_phantom_study(scans[0], tmp_path / "out", -1)
    assert not (tmp_path / "out").exists()
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(NotADirectoryError):
        write_phantom_study(scans[0], a_file, 0)
