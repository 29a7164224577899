"""The typed sampling client: arrays, samples with their masks, files with
an index, early exit cancelling the call, options checked before calling."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from ctsynth.client import SamplingClient
from ctsynth.v1 import sampling_pb2 as pb
from tests.served_models import wait_until


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
