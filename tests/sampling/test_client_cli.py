"""The typed client (arrays, files, early exit) and `ctsynth sample`."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from ctsynth.cli.main import main
from ctsynth.client import SamplingClient
from ctsynth.v1 import sampling_pb2 as pb
from tests.sampling.conftest import wait_until

RUNS = 3  # the in-process test above is the exact check; these catch what only a process exit shows


@pytest.fixture(scope="module")
def client(channel) -> SamplingClient:
    return SamplingClient(channel)


def test_arrays_are_the_streamed_float16_pixels(client, stub):
    arrays = client.arrays("dcgan", 3, seed=4, progress=False)
    raw = [item.data for batch in stub.Sample(pb.SampleRequest(model="dcgan", count=3, seed=4)) for item in batch.items]
    assert arrays.shape == (3, 1, 16, 16) and arrays.dtype == np.float16
    assert [a.tobytes() for a in arrays] == raw


def test_samples_carry_seed_condition_model_and_mask(client):
    samples = list(client.sample("unet-gan", 2, seed=1, condition="no-tumor", format="png16", progress=False))
    assert [s.condition for s in samples] == ["no-tumor", "no-tumor"] and samples[0].model == "unet-gan:1"
    assert samples[0].array.dtype == np.uint16 and samples[0].mask.shape == (1, 16, 16)
    again = next(client.sample("unet-gan", 1, seed=samples[1].seed, condition="no-tumor", format="png16",
                               progress=False))
    assert np.array_equal(again.array, samples[1].array)


def test_leaving_the_loop_early_cancels_the_call(client, host):
    for sample in client.sample("dcgan", 10000, batch_size=1, progress=False):
        break
    limiter = host.servicers["sampling"].engine.limiter
    assert wait_until(lambda: limiter.active == 0)


@pytest.mark.parametrize("model, format, check", [
    ("dcgan", "float16", lambda p: np.load(p).dtype == np.float16),
    ("dcgan", "hu_int16", lambda p: np.load(p).dtype == np.int16),
    ("dcgan", "png8", lambda p: Image.open(p).mode == "L"),
    ("dcgan", "dicom", lambda p: pydicom.dcmread(p).Modality == "CT"),
    ("ddpm3d", "dicom", lambda p: len(list(p.glob("*.dcm"))) == 8),
    ("ddpm3d", "nifti", lambda p: nib.load(p).shape == (8, 8, 8)),
])
def test_save_writes_one_file_per_item_and_an_index(client, tmp_path, model, format, check):
    written = client.save(tmp_path, model, 2, seed=3, format=format, progress=False)
    assert len(written) == 2 and all(check(path) for path in written)
    index = json.loads((tmp_path / "samples.json").read_text())
    assert index["model"] == f"{model}:1" and [item["file"] for item in index["items"]] == [p.name for p in written]
    assert index["items"][0]["seed"] == 3


def test_unknown_option_values_are_refused_before_calling(client):
    with pytest.raises(ValueError, match="sampler.kind: unknown 'plms'"):
        next(client.sample("dcgan", 1, sampler="plms"))


def test_cli_sample_writes_the_files(store_uri, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--store", store_uri, "sample", "--model", "unet-gan", "--count", "3", "--seed", "2",
                 "--condition", "tumor", "--format", "png", "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == f"3 samples in {out}"
    assert sorted(p.name for p in out.iterdir()) == [
        "000000.png", "000000_mask.npy", "000001.png", "000001_mask.npy", "000002.png", "000002_mask.npy",
        "samples.json"]


def test_cli_sample_leaves_no_batcher_thread_behind(store_uri, tmp_path):
    """Issue 12, item 9: one run in about six ended with SIGABRT (exit 134)
    after writing its files, from a batcher thread still running at
    interpreter exit. The command joins every batcher worker before it returns."""
    before = set(threading.enumerate())  # the module's own service has batchers of its own
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
])
def test_cli_bad_input_exits_non_zero_with_one_line(store_uri, tmp_path, capsys, args, message):
    assert main(["--store", store_uri, "sample", *args, "--out", str(tmp_path), "--quiet"]) != 0
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"ctsynth: error: {message}") and "\n" not in error
