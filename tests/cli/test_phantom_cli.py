"""`ctsynth phantom`: writes series pylidc can load, reports what it wrote, refuses bad input in one line."""

from __future__ import annotations

import pytest

from ctsynth.cli.main import main
from ctsynth.data.lidc import dicom_root, scans_for_patients


def test_scans_writes_the_first_annotated_scan_with_progress(tmp_path, capsys):
    assert main(["phantom", "--out", str(tmp_path), "--scans", "1", "--seed", "3"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == f"wrote 1 series (87 DICOM files) under {tmp_path.resolve()}"
    assert "1/1" in captured.err  # one progress step per scan
    scan, = scans_for_patients(["LIDC-IDRI-0078"])  # pylidc scan 1
    with dicom_root(tmp_path):
        assert len(scan.load_all_dicom_images(verbose=False)) == 87


def test_patients_selects_scans_by_patient_id(tmp_path, capsys):
    assert main(["phantom", "--out", str(tmp_path / "new"), "--patients", " LIDC-IDRI-0957 ,"]) == 0
    assert "wrote 1 series (65 DICOM files)" in capsys.readouterr().out  # the smallest annotated scan
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["LIDC-IDRI-0957"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--scans", "0"], "--scans: count must be between 1 and 883"),
        (["--scans", "1019"], "--scans: count must be between 1 and 883"),
        (["--patients", "LIDC-IDRI-0078,LIDC-IDRI-9999"], "unknown LIDC-IDRI patient id(s): LIDC-IDRI-9999"),
        (["--patients", ","], "--patients: give at least one patient id"),
        (["--scans", "1", "--seed", "-1"], "seed must be >= 0"),
    ],
)
def test_bad_selection_exits_2_with_one_line(tmp_path, capsys, args, needle):
    assert main(["phantom", "--out", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ctsynth: error: ") and needle in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_out_pointing_at_a_file_exits_2(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("keep me")
    assert main(["phantom", "--out", str(a_file), "--scans", "1"]) == 2
    assert f"ctsynth: error: {a_file} exists and is not a directory" in capsys.readouterr().err
    assert a_file.read_text() == "keep me"


@pytest.mark.parametrize("args", [[], ["--scans", "1", "--patients", "LIDC-IDRI-0078"]])
def test_scans_and_patients_are_one_or_the_other(tmp_path, args):
    with pytest.raises(SystemExit) as excinfo:
        main(["phantom", "--out", str(tmp_path), *args])
    assert excinfo.value.code == 2
