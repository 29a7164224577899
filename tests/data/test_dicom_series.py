"""Series discovery and loading, and each kind of bad input becoming a problem."""

import shutil

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless

from ctsynth.data import dicom_series
from ctsynth.data.dicom_series import find_series, load_series
from tests.ingest.synthetic_dicom import chest_volume, claim_shape, declare_transfer_syntax, write_series


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


def decoded_paths(monkeypatch):
    """Record every file whose pixels the loader decodes."""
    seen, decode = [], dicom_series.pixel_array

    def recording(path, **kwargs):
        seen.append(str(path))
        return decode(path, **kwargs)

    monkeypatch.setattr(dicom_series, "pixel_array", recording)
    return seen


def truncate(path):
    path.write_bytes(path.read_bytes()[:-200])  # 200 of the 512 pixel bytes


def undecodable(path):
    declare_transfer_syntax(path, JPEGLSLossless)


@pytest.mark.parametrize("damage, reason", [
    pytest.param(truncate, "(512 bytes of pixel data) but the file holds only 312 bytes", id="truncated"),
    pytest.param(undecodable, "cannot decode pixel data (JPEG-LS Lossless", id="undecodable"),
])
def test_damaged_duplicate_that_sorts_first_does_not_displace_the_good_copy(tmp_path, damage, reason):
    # slice_001 and slice_002 share 2.5 mm; slice_001 sorts first (lower InstanceNumber) and is damaged.
    hu = chest_volume(7, 16, 16)
    hu[:, 0, 0] = np.arange(7) * 100
    paths = write_series(tmp_path / "s", slices=7, rows=16, cols=16, hu=hu,
                         positions=[0, 2.5, 2.5, 5, 7.5, 10, 12.5])
    damage(paths[1])
    series, problems = load_only(tmp_path)
    assert series is not None, problems
    np.testing.assert_array_equal(series.z_mm, [0, 2.5, 5, 7.5, 10, 12.5])
    np.testing.assert_array_equal(series.hu[1], np.rint(hu[2]))  # the good copy's pixels
    np.testing.assert_array_equal(series.hu[:, 0, 0], [0, 200, 300, 400, 500, 600])
    assert len(problems) == 1 and problems[0].subject == "s/slice_001.dcm" and reason in problems[0].reason


def test_the_copy_after_a_good_duplicate_is_never_decoded(tmp_path, monkeypatch):
    paths = write_series(tmp_path / "s", slices=4, positions=[0, 2.5, 2.5, 5])
    seen = decoded_paths(monkeypatch)
    series, problems = load_only(tmp_path)
    assert len(series.hu) == 3 and str(paths[2]) not in seen and len(seen) == 3
    assert problems[0].reason == "duplicated slice positions; kept one, dropped s/slice_002.dcm"


def claim_65535_squared(path):
    claim_shape(path, 65535, 65535)


def claim_65535_squared_compressed(path):
    declare_transfer_syntax(path, JPEGLSLossless)
    claim_shape(path, 65535, 65535)


def claim_two_frames(path):
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 2
    ds.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize("claim, reason", [
    pytest.param(claim_65535_squared, "header claims 65535 x 65535 pixels of 16 bits (8589672450 bytes of pixel "
                 "data) but the file holds only 4608 bytes", id="native"),
    pytest.param(claim_65535_squared_compressed, "65535 x 65535 pixels per slice is above the limit of 16777216 pixels",
                 id="compressed"),
    pytest.param(claim_two_frames, "2 frames in one file; only single-frame slices are loaded", id="multi-frame"),
])
def test_a_header_claiming_more_than_the_file_holds_is_refused_undecoded(tmp_path, monkeypatch, claim, reason):
    paths = write_series(tmp_path / "s", slices=6)
    claim(paths[5])
    seen = decoded_paths(monkeypatch)
    series, problems = load_only(tmp_path)
    assert [(p.subject, p.reason) for p in problems] == [("s/slice_005.dcm", reason)]
    assert len(series.hu) == 5 and seen == [str(p) for p in paths[:5]]


def test_a_series_whose_every_file_claims_too_much_names_the_first_reason(tmp_path, monkeypatch):
    for path in write_series(tmp_path / "s", slices=3):
        claim_65535_squared(path)
    seen = decoded_paths(monkeypatch)
    series, problems = load_only(tmp_path)
    assert series is None and seen == []
    assert problems[-1].subject == "s"
    assert problems[-1].reason.startswith("no usable file; s/slice_000.dcm: header claims 65535 x 65535")


def test_a_series_above_the_voxel_limit_is_refused_undecoded(tmp_path, monkeypatch):
    write_series(tmp_path / "s", slices=6, rows=48, cols=48)
    monkeypatch.setattr(dicom_series, "MAX_SERIES_VOXELS", 6 * 48 * 48 - 1)
    seen = decoded_paths(monkeypatch)
    series, problems = load_only(tmp_path)
    assert series is None and seen == []
    assert problems == [dicom_series.SeriesProblem(
        "s", "6 slices of 48 x 48 pixels are 13824 voxels, above the limit of 13823")]
