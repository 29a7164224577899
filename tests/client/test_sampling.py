"""The typed sampling client: arrays, samples with their masks, files with
an index, early exit cancelling the call, options checked before calling,
volumes streamed in slabs joined back (or refused when they do not join)."""

from __future__ import annotations

import json

import grpc
import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from ctsynth.client import SamplingClient
from ctsynth.client.sampling import whole_items
from ctsynth.errors import DataLoss
from ctsynth.sampling.engine import MESSAGE_ENVELOPE_BYTES
from ctsynth.sampling.formats import size_bound
from ctsynth.v1 import sampling_pb2 as pb
from tests.served_models import start_server, wait_until


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


# --- volumes streamed in slabs -------------------------------------------------------------

def test_slabbed_volumes_are_saved_and_returned_as_the_unsplit_ones(client, store_uri, tmp_path):
    # 1000 bytes: under an 8^3 volume's 1024 bytes of voxels; DICOM needs room for two slices.
    limits = {"float16": 1000, "nifti": 1000, "dicom": MESSAGE_ENVELOPE_BYTES + 2 * sum(size_bound("dicom", (1, 8, 8, 8)))}
    for format, limit in limits.items():
        host = start_server(store_uri, max_message_bytes=limit)
        try:
            with grpc.insecure_channel(host.address) as channel:
                small = SamplingClient(channel)
                if format == "float16":
                    assert np.array_equal(small.arrays("ddpm3d", 2, seed=9, progress=False),
                                          client.arrays("ddpm3d", 2, seed=9, progress=False))
                    continue
                streamed = small.save(tmp_path / f"{format}-slabs", "ddpm3d", 2, seed=9, format=format,
                                      progress=False)
        finally:
            host.stop(0)
        unsplit = client.save(tmp_path / format, "ddpm3d", 2, seed=9, format=format, progress=False)
        for got, want in zip(streamed, unsplit, strict=True):
            if format == "nifti":
                a, b = nib.load(got), nib.load(want)
                assert a.shape == b.shape == (8, 8, 8) and np.array_equal(a.affine, b.affine)
                assert a.header.get_zooms() == b.header.get_zooms()
                assert np.array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj))
                continue
            a, b = ([pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))] for folder in (got, want))
            assert len(a) == len(b) == 8 and len({ds.SeriesInstanceUID for ds in a}) == 1
            for x, y in zip(a, b):
                assert [x.ImagePositionPatient, x.PixelSpacing, x.SliceThickness, x.SpacingBetweenSlices] == \
                    [y.ImagePositionPatient, y.PixelSpacing, y.SliceThickness, y.SpacingBetweenSlices]
                assert np.array_equal(x.pixel_array, y.pixel_array)


def slab(index: int, z0: int, slices: int, depth: int = 4) -> pb.SampleBatch:
    data = np.full((1, slices, 2, 2), z0, "<f2").tobytes()
    return pb.SampleBatch(model="m:1", items=[pb.SampleItem(index=index, seed=7, format=pb.OUTPUT_FORMAT_FLOAT16,
                                                            data=data, shape=[1, slices, 2, 2], dtype="float16",
                                                            z0=z0, depth=depth)])


def test_slabs_join_in_order_into_one_item():
    (item, model), = list(whole_items([slab(0, 0, 3), slab(0, 3, 1)]))
    array = np.frombuffer(item.data, "<f2").reshape(item.shape)
    assert model == "m:1" and list(item.shape) == [1, 4, 2, 2] and item.depth == 0
    assert array[0, :, 0, 0].tolist() == [0, 0, 0, 3]


@pytest.mark.parametrize("batches, message", [
    ([slab(0, 2, 2), slab(0, 0, 2)], "item 0: a slab starts at slice 2, the next expected is 0"),
    ([slab(0, 0, 1), slab(0, 2, 2)], "item 0: a slab starts at slice 2, the next expected is 1"),
    ([slab(0, 0, 2), slab(0, 2, 2, depth=6)], "item 0: a slab says the volume has 6 slices, an earlier one 4"),
    ([slab(0, 0, 2), slab(0, 2, 3)], "item 0: a slab of shape [1, 3, 2, 2] at slice 2 does not fit"),
    ([slab(0, 0, 2), slab(1, 0, 4)], "item 0: the stream moved on to item 1 after slices 0-1 of 4"),
    ([slab(0, 0, 2)], "item 0: the stream ended after slices 0-1 of 4"),
], ids=["out-of-order", "gap", "depth", "overrun", "moved-on", "ended"])
def test_slabs_that_do_not_make_a_volume_are_data_loss(batches, message):
    with pytest.raises(DataLoss) as raised:
        list(whole_items(batches))
    assert str(raised.value).startswith(message)


def test_paired_outputs_of_a_mask_conditioned_model_parse_in_the_fields_tools(client, tmp_path):
    """The conditioning mask beside its image: a NIfTI label volume on the
    image's grid, and a DICOM Segmentation that references the item's CT series."""
    import highdicom as hd

    layout = [{"centre": [4, 3, 5], "diameter_mm": 30.0}]
    nifti = client.save(tmp_path / "nifti", "ddpm3d-mask", 1, format="nifti", nodules=layout, steps=2,
                        progress=False)[0]
    image, label = nib.load(nifti), nib.load(tmp_path / "nifti" / "000000_mask.nii")
    np.testing.assert_allclose(label.affine, image.affine)
    voxels = np.asarray(label.dataobj).transpose(2, 1, 0)  # (x, y, z) -> (z, y, x)
    assert label.get_data_dtype() == np.uint8 and voxels[4, 3, 5] == 1 and 0 < voxels.sum() < voxels.size
    series = client.save(tmp_path / "dicom", "ddpm3d-mask", 1, format="dicom", nodules=layout, steps=2,
                         progress=False)[0]
    slices = [pydicom.dcmread(p) for p in sorted(series.glob("*.dcm"))]
    seg = hd.seg.segread(tmp_path / "dicom" / "000000_seg.dcm")
    assert seg.Modality == "SEG" and seg.FrameOfReferenceUID == slices[0].FrameOfReferenceUID
    referenced = {ref.ReferencedSOPInstanceUID for ref in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == {ds.SOPInstanceUID for ds in slices}
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == slices[0].SeriesInstanceUID
    by_slice = {ds.SOPInstanceUID: ds for ds in slices}
    marked = seg.get_pixels_by_source_instance(source_sop_instance_uids=list(by_slice), segment_numbers=[1])
    np.testing.assert_array_equal(marked[..., 0].astype(np.uint8), voxels[[int(by_slice[uid].InstanceNumber) - 1
                                                                            for uid in by_slice]])
