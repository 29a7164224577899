"""Series discovery and loading, and each kind of bad input becoming a problem."""

import shutil

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless

from ctsynth.data.dicom_series import find_series, load_series
from tests.ingest.synthetic_dicom import chest_volume, declare_transfer_syntax, write_series


def files_under(root):
    return sorted(p for p in root.rglob("*") if p.is_file())


def load_only(root):
    """Discover the single series under root and load it: (series, all problems)."""
    refs, problems = find_series(files_under(root), root)
    assert len(refs) == 1, refs
    series, load_problems = load_series(refs[0])
    return series, problems + load_problems


def test_hu_equals_pydicom_modality_lut_on_ct_small(tmp_path):
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "ct.dcm")
    series, problems = load_only(tmp_path)
    ds = pydicom.dcmread(tmp_path / "ct.dcm")
    assert problems == []
    np.testing.assert_array_equal(series.hu[0], apply_modality_lut(ds.pixel_array, ds))
    assert series.hu.dtype == np.float32 and series.hu.shape == (1, 128, 128)
    assert series.spacing == (5.0, 0.661468, 0.661468)  # a lone slice spans its SliceThickness
    assert series.patient_id == "1CT1" and series.series_uid == ds.SeriesInstanceUID
    assert series.z_mm.tolist() == [pytest.approx(-75.699997)]


def test_slices_are_sorted_along_the_normal_whatever_the_file_order(tmp_path):
    hu = chest_volume(5, 16, 16)
    hu[:, 0, 0] = np.arange(5) * 100  # a marker of the true slice order
    write_series(tmp_path / "s", slices=5, rows=16, cols=16, hu=hu[::-1], positions=[40, 30, 20, 10, 0])
    series, problems = load_only(tmp_path)
    assert problems == []
    np.testing.assert_array_equal(series.z_mm, [0, 10, 20, 30, 40])
    np.testing.assert_array_equal(series.hu[:, 0, 0], np.arange(5) * 100)
    assert series.spacing == (10.0, 0.8, 0.8)


def test_oblique_series_sorts_by_projection_on_the_normal(tmp_path):
    # Rows along x, columns along z: the normal is -y, so the order follows -y, not z.
    write_series(tmp_path / "s", slices=3, rows=8, cols=8, orientation=(1, 0, 0, 0, 0, 1), positions=[0, 0, 0])
    refs, _ = find_series(files_under(tmp_path), tmp_path)
    for i, path in enumerate(refs[0].files):
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient = [0.0, float(i) * 2, 5.0]
        ds.save_as(path)
    series, problems = load_only(tmp_path)
    assert problems == [] and series.spacing[0] == pytest.approx(2.0)
    assert series.hu.shape == (3, 8, 8)


def test_series_are_grouped_by_uid_and_non_dicom_files_are_skipped(tmp_path):
    write_series(tmp_path / "a", patient="A", slices=3)
    write_series(tmp_path / "b", patient="B", slices=4)
    (tmp_path / "notes.txt").write_text("not dicom")
    (tmp_path / "a" / "annotation.xml").write_text("<xml/>")
    refs, problems = find_series(files_under(tmp_path), tmp_path)
    assert problems == []
    assert [(r.patient_id, len(r.files)) for r in refs] == [("A", 3), ("B", 4)]
    assert refs[0].name == "a"


def test_damaged_files_are_reported_and_skipped(tmp_path):
    paths = write_series(tmp_path / "s", slices=6)
    data = paths[0].read_bytes()
    (tmp_path / "s" / "stub.dcm").write_bytes(data[:300])  # cut before the UIDs
    paths[5].write_bytes(data[:700])  # cut inside the header, after the UIDs
    (tmp_path / "s" / "noise.dcm").write_bytes(b"\x07" * 512)  # no DICOM preamble
    series, problems = load_only(tmp_path)
    assert series is not None and len(series.hu) == 5
    reasons = {p.subject: p.reason for p in problems}
    assert set(reasons) == {"s/stub.dcm", "s/slice_005.dcm", "s/noise.dcm"}
    assert "no SeriesInstanceUID" in reasons["s/stub.dcm"]
    assert "truncated or incomplete header" in reasons["s/slice_005.dcm"]
    assert "not a readable DICOM file" in reasons["s/noise.dcm"]


def test_truncated_pixel_data_drops_the_slice_and_the_gap_drops_the_series(tmp_path):
    paths = write_series(tmp_path / "s", slices=6)
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[: len(data) - 1000])
    series, problems = load_only(tmp_path)
    assert series is None
    assert any(p.subject == "s/slice_002.dcm" for p in problems)
    assert any(p.subject == "s" and "missing slices" in p.reason for p in problems)


def test_missing_slices_are_a_gap(tmp_path):
    write_series(tmp_path / "s", slices=5, positions=[0, 2.5, 5, 12.5, 15])
    series, problems = load_only(tmp_path)
    assert series is None
    assert problems[0].subject == "s" and "gap of 7.50 mm" in problems[0].reason


def test_duplicated_positions_keep_one_slice(tmp_path):
    write_series(tmp_path / "s", slices=5, positions=[0, 2.5, 2.5, 5, 7.5])
    series, problems = load_only(tmp_path)
    assert series is not None and len(series.hu) == 4
    assert len(problems) == 1 and "duplicated" in problems[0].reason and "slice_002.dcm" in problems[0].reason


@pytest.mark.parametrize("change, label", [
    ({"pixel_spacings": [(0.8, 0.8)] * 3 + [(0.9, 0.9)] * 3}, "PixelSpacing"),
])
def test_inconsistent_spacing_drops_the_series(tmp_path, change, label):
    write_series(tmp_path / "s", slices=6, **change)
    series, problems = load_only(tmp_path)
    assert series is None and label in problems[0].reason and "slice_003.dcm" in problems[0].reason


@pytest.mark.parametrize("tag, value, label", [
    ("ImageOrientationPatient", [1, 0, 0, 0, 0.9, 0.43589], "ImageOrientationPatient"),
    ("Rows", None, "Rows x Columns"),
])
def test_inconsistent_geometry_drops_the_series(tmp_path, tag, value, label):
    paths = write_series(tmp_path / "s", slices=4, rows=16, cols=16)
    if tag == "Rows":
        write_series(tmp_path / "t", slices=4, rows=20, cols=16, series=pydicom.dcmread(paths[0]).SeriesInstanceUID,
                     positions=[20, 22.5, 25, 27.5])
    else:
        ds = pydicom.dcmread(paths[1])
        setattr(ds, tag, value)
        ds.save_as(paths[1])
    series, problems = load_only(tmp_path)
    assert series is None and f"inconsistent {label}" in problems[0].reason


def test_non_ct_series_is_dropped(tmp_path):
    write_series(tmp_path / "mr", slices=3, modality="MR")
    series, problems = load_only(tmp_path)
    assert series is None and problems[0].subject == "mr" and "'MR' is not CT" in problems[0].reason


@pytest.mark.parametrize("syntax", [JPEGLSLossless, JPEG2000Lossless])
def test_undecodable_transfer_syntax_names_the_syntax(tmp_path, syntax):
    paths = write_series(tmp_path / "s", slices=4)
    for path in paths:
        declare_transfer_syntax(path, syntax)
    series, problems = load_only(tmp_path)
    assert series is None
    assert problems[0].subject == "s" and syntax.name in problems[0].reason


def test_one_undecodable_file_is_named(tmp_path):
    paths = write_series(tmp_path / "s", slices=4)
    declare_transfer_syntax(paths[0], JPEGLSLossless)
    series, problems = load_only(tmp_path)
    assert len(series.hu) == 3
    assert problems[0].subject == "s/slice_000.dcm" and JPEGLSLossless.name in problems[0].reason
