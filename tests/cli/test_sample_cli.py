"""`ctsynth sample`: files written, a clean exit every time, one-line errors."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from ctsynth.cli.main import main

RUNS = 3  # the in-process test is the exact check; these catch what only a process exit shows


def test_cli_sample_writes_the_files(store_uri, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--store", store_uri, "sample", "--model", "unet-gan", "--count", "3", "--seed", "2",
                 "--condition", "tumor", "--format", "png", "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == f"3 samples in {out}"
    assert sorted(p.name for p in out.iterdir()) == [
        "000000.png", "000000_mask.png", "000001.png", "000001_mask.png", "000002.png", "000002_mask.png",
        "samples.json"]


def test_cli_sample_with_a_layout_or_a_mask_file_writes_the_conditioning_masks(store_uri, tmp_path, capsys):
    import json

    import numpy as np

    out = tmp_path / "layout"
    assert main(["--store", store_uri, "sample", "--model", "ddpm3d-mask", "--count", "2", "--steps", "2",
                 "--nodule", "4,4,4:25:texture=5", "--nodule", "mm:0,0,-20:12", "--out", str(out), "--quiet"]) == 0
    index = json.loads((out / "samples.json").read_text())
    assert [len(entry["nodules"]) for entry in index["items"]] == [2, 2]
    assert index["items"][0]["nodules"][0] == {"centre": [4.0, 4.0, 4.0], "units": "voxel", "diameter_mm": 25.0,
                                               "characteristics": {"texture": 5}}
    assert index["items"][0]["nodules"][1]["units"] == "mm"
    mask = np.zeros((8, 8, 8), np.uint8)
    mask[2:5, 2:5, 2:5] = 1
    np.save(tmp_path / "mask.npy", mask)
    out = tmp_path / "masked"
    assert main(["--store", store_uri, "sample", "--model", "ddpm3d-mask", "--count", "1", "--steps", "2",
                 "--mask", str(tmp_path / "mask.npy"), "--out", str(out), "--quiet"]) == 0
    np.testing.assert_array_equal(np.load(out / "000000_mask.npy")[0], mask)


def test_cli_sample_leaves_no_batcher_thread_behind(store_uri, tmp_path):
    """Issue 12, item 9: one run in about six ended with SIGABRT (exit 134)
    after writing its files, from a batcher thread still running at
    interpreter exit. The command joins every batcher worker before it returns."""
    before = set(threading.enumerate())  # a sampling service of the session has batchers of its own
    assert main(["--store", store_uri, "sample", "--model", "unet-gan", "--count", "2", "--seed", "5",
                 "--format", "png", "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert [t.name for t in set(threading.enumerate()) - before if t.name.startswith("batcher-")] == []


def test_cli_sample_exits_cleanly_every_time(store_uri, tmp_path):
    """The same as separate processes, which is where the abort showed."""
    command = [sys.executable, "-m", "ctsynth.cli.main", "--store", store_uri, "sample", "--model", "unet-gan",
               "--count", "2", "--seed", "5", "--format", "png", "--quiet"]
    for run in range(RUNS):
        out = tmp_path / str(run)
        result = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"run {run}: exit {result.returncode}: {result.stderr[-2000:]}"
        assert "terminate called" not in result.stderr
        assert (out / "samples.json").is_file()


@pytest.mark.parametrize("args, message", [
    (["--model", "dcgan", "--count", "0"], "INVALID_ARGUMENT: count: "),
    (["--model", "dcgan", "--count", "1", "--format", "nifti"], "INVALID_ARGUMENT: format: "),
    (["--model", "ghost", "--count", "1"], "NOT_FOUND: "),
    (["--model", "ddpm3d-mask", "--count", "1", "--nodule", "4,4,40:5"], "INVALID_ARGUMENT: nodules[0].centre: "),
    (["--model", "ddpm3d-mask", "--count", "1", "--nodules", "2", "--nodule", "4,4,4:5"],
     "INVALID_ARGUMENT: nodule_count: give one of"),
    (["--model", "dcgan", "--count", "1", "--nodules", "1"], "INVALID_ARGUMENT: nodule_count: this dcgan model"),
])
def test_cli_bad_input_exits_non_zero_with_one_line(store_uri, tmp_path, capsys, args, message):
    assert main(["--store", store_uri, "sample", *args, "--out", str(tmp_path), "--quiet"]) != 0
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"ctsynth: error: {message}") and "\n" not in error


@pytest.mark.parametrize("nodule", ["4,4,4", "a,b,c:5", "4,4,4:5:texture", "4,4,4:5:texture=x", ""])
def test_cli_a_malformed_nodule_is_a_usage_error_with_an_example(store_uri, tmp_path, capsys, nodule):
    with pytest.raises(SystemExit) as exited:
        main(["--store", store_uri, "sample", "--model", "ddpm3d-mask", "--count", "1", "--nodule", nodule,
              "--out", str(tmp_path), "--quiet"])
    assert exited.value.code == 2
    assert "e.g. 20,64,40:8" in capsys.readouterr().err
