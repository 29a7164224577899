"""SamplingService through a real in-process gRPC server over tiny trained models."""

from __future__ import annotations

import io
import zipfile
from concurrent.futures import ThreadPoolExecutor

import grpc
import h5py
import nibabel as nib
import numpy as np
import pydicom
import pytest
from prometheus_client import REGISTRY
from PIL import Image

from ctsynth.client import SamplingClient
from ctsynth.client.sampling import whole_items
from ctsynth.data.dataset_h5 import decode_strings, open_dataset, read_table
from ctsynth.sampling.engine import MESSAGE_ENVELOPE_BYTES
from ctsynth.sampling.formats import size_bound
from ctsynth.storage import open_store
from ctsynth.v1 import common_pb2, sampling_pb2_grpc
from ctsynth.v1 import sampling_pb2 as pb
from tests.served_models import FlakyStore, start_server, wait_until

F = pb.OutputFormat
GAN_MODELS = {"dcgan": {}, "unet-gan": {"condition": common_pb2.CONDITION_TUMOR},
              "stylegan2": {"truncation_psi": 0.7}}


def items(stub, **request) -> list[pb.SampleItem]:
    return [item for batch in stub.Sample(pb.SampleRequest(**request)) for item in batch.items]


def metric(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def rss_bytes() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


# --- reproducibility -----------------------------------------------------------------------

@pytest.mark.parametrize("model, extra", [
    *GAN_MODELS.items(),
    ("ddpm3d", {"sampler": pb.SamplerSettings(steps=3, eta=1.0)}),  # DDIM steps draw noise with eta > 0
    ("ddpm3d", {"sampler": pb.SamplerSettings(kind=pb.SAMPLER_KIND_EULER_ANCESTRAL, steps=3)}),
], ids=["dcgan", "unet-gan", "stylegan2", "ddpm3d-ddim", "ddpm3d-euler-a"])
def test_same_request_same_pixels_and_any_item_regenerates_alone(stub, model, extra):
    first = items(stub, model=model, count=5, seed=123, batch_size=2, **extra)
    again = items(stub, model=model, count=5, seed=123, batch_size=5, **extra)
    assert [i.index for i in first] == list(range(5))
    assert [i.data for i in first] == [i.data for i in again]
    assert len({i.data for i in first}) == 5
    item = first[3]
    alone = items(stub, model=model, count=1, seed=item.seed, condition=item.condition,
                  **{k: v for k, v in extra.items() if k != "condition"})
    assert alone[0].data == item.data and alone[0].seed == item.seed
    other = items(stub, model=model, count=1, seed=124, **extra)
    assert other[0].data != first[0].data


def test_batch_reports_the_model_version_and_the_settings_used(stub):
    batch = next(stub.Sample(pb.SampleRequest(model="ddpm3d:latest", count=1, sampler=pb.SamplerSettings(eta=0.5))))
    assert batch.model == "ddpm3d:1" and batch.total_count == 1
    assert batch.sampler.kind == pb.SAMPLER_KIND_DDIM and batch.sampler.steps == 4  # the model's defaults
    assert batch.sampler.eta == 0.5 and batch.sampler.guidance_scale == 1.0
    psi = next(stub.Sample(pb.SampleRequest(model="stylegan2", count=1, truncation_psi=0.5)))
    assert psi.truncation_psi == 0.5 and not psi.HasField("sampler")


def test_conditional_items_carry_their_condition_and_mask(stub):
    either = items(stub, model="unet-gan", count=12, seed=5)
    assert {i.condition for i in either} == {common_pb2.CONDITION_NO_TUMOR, common_pb2.CONDITION_TUMOR}
    tumor = items(stub, model="unet-gan", count=2, seed=5, condition=common_pb2.CONDITION_TUMOR)
    assert {i.condition for i in tumor} == {common_pb2.CONDITION_TUMOR}
    mask = np.frombuffer(tumor[0].mask, np.uint8)
    assert mask.size == 16 * 16 and set(np.unique(mask)) <= {0, 1}
    assert items(stub, model="dcgan", count=1)[0].mask == b""


# --- formats -------------------------------------------------------------------------------

def test_raw_and_png_formats_decode_to_the_same_image(stub):
    common = dict(model="dcgan", count=2, seed=8)
    f16 = items(stub, format=F.OUTPUT_FORMAT_FLOAT16, **common)[1]
    image = np.frombuffer(f16.data, "<f2").reshape(f16.shape).astype(np.float32)
    assert list(f16.shape) == [1, 16, 16] and f16.dtype == "float16" and 0 <= image.min() <= image.max() <= 1
    hu = items(stub, format=F.OUTPUT_FORMAT_HU_INT16, **common)[1]
    assert hu.dtype == "int16"
    np.testing.assert_allclose(np.frombuffer(hu.data, "<i2").reshape(hu.shape), -1000 + 1400 * image, atol=1.5)
    for kind, top in ((F.OUTPUT_FORMAT_PNG8, 255), (F.OUTPUT_FORMAT_PNG16, 65535)):
        png = np.asarray(Image.open(io.BytesIO(items(stub, format=kind, **common)[1].data)))
        np.testing.assert_allclose(png / top, image[0], atol=0.5 / top + 1e-3)  # + float16 rounding


def test_dicom_and_nifti_volumes_parse(stub):
    volume = items(stub, model="ddpm3d", count=1, seed=2, format=F.OUTPUT_FORMAT_HU_INT16)[0]
    hu = np.frombuffer(volume.data, "<i2").reshape(volume.shape)[0]
    nifti = nib.Nifti1Image.from_bytes(items(stub, model="ddpm3d", count=1, seed=2, format=F.OUTPUT_FORMAT_NIFTI)[0].data)
    np.testing.assert_array_equal(np.asanyarray(nifti.dataobj).transpose(2, 1, 0), hu)
    archive = zipfile.ZipFile(io.BytesIO(items(stub, model="ddpm3d", count=1, seed=2, format=F.OUTPUT_FORMAT_DICOM)[0].data))
    slices = [pydicom.dcmread(io.BytesIO(archive.read(name))) for name in sorted(archive.namelist())]
    np.testing.assert_array_equal(np.stack([ds.pixel_array for ds in slices]), hu)


def test_outputs_have_the_physical_size_of_the_training_data(stub, store_uri):
    store = open_store(store_uri)
    path, _ = open_dataset(store, "tiny", "1", file="volumes.h5")
    cubes = read_table(path)
    with h5py.File(path) as f:
        cube_voxels = np.array(f["volumes"].shape[1:])
    trained = cube_voxels * np.median(cubes["spacing_mm"][cubes["split"] == "train"], axis=0)  # (z, y, x) mm
    assert trained[0] > 80, "the test data's cubes hold a chest, not 8 mm"

    nifti = nib.Nifti1Image.from_bytes(items(stub, model="ddpm3d", count=1, format=F.OUTPUT_FORMAT_NIFTI)[0].data)
    assert nifti.header.get_xyzt_units()[0] == "mm"
    np.testing.assert_allclose(np.array(nifti.shape) * nifti.header.get_zooms(), trained[::-1], rtol=1e-5)
    np.testing.assert_allclose(np.abs(nifti.affine[:3, :3]).sum(0) * nifti.shape, trained[::-1], rtol=1e-5)

    archive = zipfile.ZipFile(io.BytesIO(items(stub, model="ddpm3d", count=1, format=F.OUTPUT_FORMAT_DICOM)[0].data))
    slices = [pydicom.dcmread(io.BytesIO(archive.read(name))) for name in sorted(archive.namelist())]
    position = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in slices])
    dz = float(slices[0].SpacingBetweenSlices)
    for ds in slices:
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert float(ds.SliceThickness) == float(ds.SpacingBetweenSlices) == dz
        assert [float(v) for v in ds.PixelSpacing] == [float(v) for v in slices[0].PixelSpacing]
    np.testing.assert_allclose(position[:, :2], np.broadcast_to(position[0, :2], (len(slices), 2)))  # one column
    np.testing.assert_allclose(np.diff(position[:, 2]), dz, rtol=1e-5)
    row_mm, col_mm = (float(v) for v in slices[0].PixelSpacing)
    extent = [position[-1, 2] - position[0, 2] + dz, slices[0].Rows * row_mm, slices[0].Columns * col_mm]
    np.testing.assert_allclose(extent, trained, rtol=1e-5)
    # The NIfTI puts its first voxel where the DICOM series does, in RAS.
    np.testing.assert_allclose(nifti.affine[:3, 3], position[0] * [-1, -1, 1], atol=1e-4)

    stored = read_table(open_dataset(store, "tiny", "1", file="slices.h5")[0])
    slice_mm = np.median(stored["pixel_mm"][stored["split"] == "train"])
    image = pydicom.dcmread(io.BytesIO(items(stub, model="dcgan", count=1, format=F.OUTPUT_FORMAT_DICOM)[0].data))
    with h5py.File(open_dataset(store, "tiny", "1")[0]) as f:
        slice_extent = f["images"].shape[1] * slice_mm
    image_extent = [image.Rows * float(image.PixelSpacing[0]), image.Columns * float(image.PixelSpacing[1])]
    np.testing.assert_allclose(image_extent, slice_extent, rtol=1e-5)


def test_dicom_carries_no_training_identifier_and_is_marked_synthetic(stub, store_uri, tmp_path):
    store = open_store(store_uri)
    known = set()
    for file in ("slices.h5", "volumes.h5"):
        path, _ = open_dataset(store, "tiny", "1", file=file)
        table = decode_strings(read_table(path))
        known |= set(table["patient"]) | set(table["series_uid"])
    assert "1.2.3" in known and "train-0" in known
    datasets = [pydicom.dcmread(io.BytesIO(items(stub, model="dcgan", count=1, format=F.OUTPUT_FORMAT_DICOM)[0].data))]
    archive = zipfile.ZipFile(io.BytesIO(items(stub, model="ddpm3d", count=1, format=F.OUTPUT_FORMAT_DICOM)[0].data))
    datasets += [pydicom.dcmread(io.BytesIO(archive.read(name))) for name in archive.namelist()]
    for ds in datasets:
        values = {str(element.value) for element in ds.iterall() if element.VR in ("UI", "LO", "PN", "SH", "CS", "LT")}
        values |= {str(element.value) for element in ds.file_meta}
        assert not values & known
        assert ds.PatientIdentityRemoved == "YES" and ds.BurnedInAnnotation == "NO"
        assert "DERIVED" in ds.ImageType and "ctsynth model" in ds.DeidentificationMethod
        assert ds.SeriesDescription.endswith(":1")


# --- bad input and faults ------------------------------------------------------------------

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("request_fields, code, detail", [
    (dict(model="nope", count=1), grpc.StatusCode.NOT_FOUND, "no model named 'nope'"),
    (dict(model="dcgan:7", count=1), grpc.StatusCode.NOT_FOUND, "model 'dcgan' has no version 7"),
    (dict(model="Bad Name", count=1), INVALID, "model: "),
    (dict(model="dcgan", count=0), INVALID, "count: "),
    (dict(model="dcgan", count=10001), INVALID, "count: 10001 is outside 1-10000"),
    (dict(model="dcgan", count=1, condition=common_pb2.CONDITION_TUMOR), INVALID, "condition: "),
    (dict(model="dcgan", count=1, format=F.OUTPUT_FORMAT_NIFTI), INVALID, "format: "),
    (dict(model="ddpm3d", count=1, format=F.OUTPUT_FORMAT_PNG8), INVALID, "format: "),
    (dict(model="dcgan", count=1, format=42), INVALID, "format: "),
    (dict(model="dcgan", count=1, sampler=pb.SamplerSettings(kind=pb.SAMPLER_KIND_DDIM)), INVALID, "sampler.kind: "),
    (dict(model="dcgan", count=1, truncation_psi=0.5), INVALID, "truncation_psi: "),
    (dict(model="stylegan2", count=1, truncation_psi=1.5), INVALID, "truncation_psi: "),
    (dict(model="ddpm3d", count=1, sampler=pb.SamplerSettings(steps=-1)), INVALID, "sampler.steps: "),
    (dict(model="ddpm3d", count=1, sampler=pb.SamplerSettings(steps=500)), INVALID, "sampler.steps: "),
    (dict(model="ddpm3d", count=1, sampler=pb.SamplerSettings(guidance_scale=-1)), INVALID, "sampler.guidance_scale: "),
    (dict(model="ddpm3d", count=1, sampler=pb.SamplerSettings(eta=-0.1)), INVALID, "sampler.eta: "),
    (dict(model="dcgan", count=1, batch_size=-2), INVALID, "batch_size: "),
    (dict(model="ddpm3d", count=1, slab_slices=0), INVALID, "slab_slices: 0 must be >= 1"),
    (dict(model="ddpm3d", count=1, slab_slices=-3), INVALID, "slab_slices: -3 must be >= 1"),
    (dict(model="ddpm3d", count=1, slab_slices=2 ** 31 - 1), INVALID, "slab_slices: 2147483647 is above "),
    (dict(model="dcgan", count=1, slab_slices=1), INVALID, "slab_slices: dcgan:1 makes 2D images"),
])
def test_bad_input_gets_a_precise_status(stub, request_fields, code, detail):
    with pytest.raises(grpc.RpcError) as raised:
        items(stub, **request_fields)
    assert raised.value.code() == code
    assert raised.value.details().startswith(detail)


def test_corrupt_weights_are_refused_with_data_loss(stub, store_uri):
    store = open_store(store_uri)
    if not store.exists("models/broken/1/manifest.json"):
        files = {name: store.get_bytes(f"models/dcgan/1/{name}") for name in ("config.json", "weights.safetensors")}
        store.publish("models/broken/1", files, {"name": "broken", "version": "1"})
        store.put("models/broken/1/weights.safetensors", files["weights.safetensors"][:-8] + b"corrupt!")
    with pytest.raises(grpc.RpcError) as raised:
        items(stub, model="broken", count=1)
    assert raised.value.code() == grpc.StatusCode.DATA_LOSS
    assert "sha256" in raised.value.details()


def test_unreachable_store_is_unavailable_and_the_client_retries(store_uri):
    flaky = FlakyStore(open_store(store_uri), failures=10 ** 6)
    host = start_server(store_uri, store=flaky)
    try:
        with grpc.insecure_channel(host.address) as channel:
            with pytest.raises(grpc.RpcError) as raised:
                list(SamplingClient(channel, retries=0).sample("dcgan", 1, progress=False))
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            flaky.failures = 2
            samples = list(SamplingClient(channel, retries=3, backoff_s=0.01).sample("dcgan", 2, progress=False))
            assert [s.index for s in samples] == [0, 1] and flaky.failures == 0
    finally:
        host.stop(0)


# --- streaming, cancellation, limits -------------------------------------------------------

def engine(host):
    return host.servicers["sampling"].engine


def test_cancelling_a_stream_stops_the_work_and_frees_the_slot(stub, host):
    sent = metric("ctsynth_sampling_items_total", model="dcgan")
    call = stub.Sample(pb.SampleRequest(model="dcgan", count=10000, batch_size=1))
    next(call)
    assert engine(host).limiter.active == 1
    call.cancel()
    assert wait_until(lambda: engine(host).limiter.active == 0 and engine(host).limiter.bytes == 0)
    assert wait_until(lambda: metric("ctsynth_sampling_queue_items", model="dcgan:1") == 0)
    assert metric("ctsynth_sampling_items_total", model="dcgan") - sent < 100


def test_a_deadline_ends_the_work(stub, host):
    with pytest.raises(grpc.RpcError) as raised:
        list(stub.Sample(pb.SampleRequest(model="dcgan", count=10000, batch_size=1), timeout=0.5))
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert wait_until(lambda: engine(host).limiter.active == 0)


def test_requests_beyond_the_limits_are_resource_exhausted(store_uri):
    host = start_server(store_uri, max_concurrent=1, max_bytes_in_flight=64 * 1024)
    try:
        with grpc.insecure_channel(host.address) as channel:
            stub = sampling_pb2_grpc.SamplingServiceStub(channel)
            with pytest.raises(grpc.RpcError) as raised:
                items(stub, model="dcgan", count=100, batch_size=100)  # 2 x 100 x 1 KiB x 2 > 64 KiB
            assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "65536" in raised.value.details()
            call = stub.Sample(pb.SampleRequest(model="dcgan", count=10000, batch_size=1))
            next(call)
            with pytest.raises(grpc.RpcError) as raised:
                items(stub, model="dcgan", count=1)
            assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit is 1" in raised.value.details()
            call.cancel()
            assert wait_until(lambda: engine(host).limiter.active == 0)
            assert len(items(stub, model="dcgan", count=1)) == 1
    finally:
        host.stop(0)


def test_concurrent_requests_are_merged_into_one_forward_pass(store_uri):
    # A pass starts only once max_batch items wait (max_wait is far away): the merge is certain.
    host = start_server(store_uri, max_batch=4, max_wait_ms=60_000)
    try:
        with grpc.insecure_channel(host.address) as channel:
            stub = sampling_pb2_grpc.SamplingServiceStub(channel)
            items(stub, model="unet-gan", count=4)  # load the model first
            count = metric("ctsynth_sampling_batch_items_count", model="unet-gan:1")
            total = metric("ctsynth_sampling_batch_items_sum", model="unet-gan:1")
            with ThreadPoolExecutor(4) as pool:
                results = list(pool.map(lambda seed: items(stub, model="unet-gan", count=1, seed=seed), range(4)))
            assert metric("ctsynth_sampling_batch_items_count", model="unet-gan:1") - count == 1
            assert metric("ctsynth_sampling_batch_items_sum", model="unet-gan:1") - total == 4
        unmerged = start_server(store_uri, max_batch=4, batching=False)
        try:
            with grpc.insecure_channel(unmerged.address) as channel:
                stub = sampling_pb2_grpc.SamplingServiceStub(channel)
                assert [items(stub, model="unet-gan", count=1, seed=seed)[0].data for seed in range(4)] == \
                    [result[0].data for result in results]
        finally:
            unmerged.stop(0)
    finally:
        host.stop(0)


def test_load_32_clients_by_20_requests_without_errors_or_memory_growth(stub, host):
    def client(number: int) -> int:
        received = 0
        for request in range(20):
            received += len(items(stub, model="dcgan", count=1 + request % 3, seed=number * 100 + request))
        return received

    client(0)  # warm up
    before = rss_bytes()
    with ThreadPoolExecutor(32) as pool:
        received = list(pool.map(client, range(32)))
    growth = rss_bytes() - before
    assert received == [sum(1 + r % 3 for r in range(20))] * 32
    assert growth < 200 * 1024 * 1024, f"RSS grew by {growth / 2 ** 20:.0f} MiB"
    assert engine(host).limiter.active == 0


# --- volumes above the max message size ---------------------------------------------------

RAW_LIMIT = 1000  # bytes: below the 1024 bytes of an 8^3 volume's float16 or HU voxels alone
DICOM_LIMIT = MESSAGE_ENVELOPE_BYTES + size_bound("dicom", (1, 8, 8, 8))[0] + 2 * size_bound("dicom", (1, 8, 8, 8))[1]


def limited_batches(store_uri: str, limit: int, **request) -> list[pb.SampleBatch]:
    host = start_server(store_uri, max_message_bytes=limit)
    try:
        with grpc.insecure_channel(host.address) as channel:
            return list(sampling_pb2_grpc.SamplingServiceStub(channel).Sample(pb.SampleRequest(**request)))
    finally:
        host.stop(0)


def dicom_slices(data: bytes) -> list[tuple[str, pydicom.Dataset]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [(name, pydicom.dcmread(io.BytesIO(archive.read(name)))) for name in sorted(archive.namelist())]


@pytest.mark.parametrize("format, limit, slab", [
    (F.OUTPUT_FORMAT_FLOAT16, RAW_LIMIT, 3), (F.OUTPUT_FORMAT_HU_INT16, RAW_LIMIT, 3),
    (F.OUTPUT_FORMAT_NIFTI, RAW_LIMIT, 1), (F.OUTPUT_FORMAT_DICOM, DICOM_LIMIT, 2)],
    ids=["float16", "hu_int16", "nifti", "dicom"])
def test_a_volume_above_the_max_message_size_streams_in_slabs_that_join_to_it(stub, store_uri, format, limit,
                                                                              slab):
    whole = items(stub, model="ddpm3d", count=2, seed=6, format=format)  # the default 64 MiB: unsplit
    assert all(item.depth == 0 and len(item.data) > limit for item in whole)
    batches = limited_batches(store_uri, limit, model="ddpm3d", count=2, seed=6, format=format)
    assert max(batch.ByteSize() for batch in batches) < limit
    slabs = [item for batch in batches for item in batch.items]
    starts = list(range(0, 8, slab))
    assert [(s.index, s.z0, s.shape[1], s.depth) for s in slabs] == \
        [(i, z0, min(slab, 8 - z0), 8) for i in range(2) for z0 in starts]
    joined = [item for item, _ in whole_items(batches)]
    assert [(i.index, i.seed, list(i.shape), i.dtype) for i in joined] == \
        [(i.index, i.seed, list(i.shape), i.dtype) for i in whole]
    if format != F.OUTPUT_FORMAT_DICOM:  # raw bytes and the .nii file alike: bit-exact
        assert [i.data for i in joined] == [i.data for i in whole]
        return
    for streamed, unsplit in zip(joined, whole):
        got, want = dicom_slices(streamed.data), dicom_slices(unsplit.data)
        assert [name for name, _ in got] == [name for name, _ in want]
        assert len({ds.SeriesInstanceUID for _, ds in got}) == 1
        for (_, a), (_, b) in zip(got, want):
            np.testing.assert_array_equal(a.pixel_array, b.pixel_array)
            for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
                            "SpacingBetweenSlices", "InstanceNumber"):
                assert a.get(keyword) == b.get(keyword), keyword


def test_a_requested_slab_size_splits_a_volume_that_fits(stub):
    batches = list(stub.Sample(pb.SampleRequest(model="ddpm3d", count=1, seed=2, slab_slices=5)))
    assert [(item.z0, item.shape[1], item.depth) for b in batches for item in b.items] == [(0, 5, 8), (5, 3, 8)]
    assert [item.data for item, _ in whole_items(batches)] == [items(stub, model="ddpm3d", count=1, seed=2)[0].data]
    whole = items(stub, model="ddpm3d", count=1, seed=2, slab_slices=8)
    assert whole[0].depth == 0 and list(whole[0].shape) == [1, 8, 8, 8]


def test_a_slice_above_the_max_message_size_is_resource_exhausted(store_uri):
    with pytest.raises(grpc.RpcError) as raised:
        limited_batches(store_uri, RAW_LIMIT, model="ddpm3d", count=1, format=F.OUTPUT_FORMAT_DICOM)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max message size of 1000 bytes" in raised.value.details()


# --- models --------------------------------------------------------------------------------

def test_list_and_get_models(stub):
    listed = stub.ListModels(common_pb2.ListModelsRequest())
    assert {"dcgan", "unet-gan", "stylegan2", "ddpm3d"} <= {m.name for m in listed.models}
    only = stub.ListModels(common_pb2.ListModelsRequest(family="ddpm3d"))
    assert [m.name for m in only.models] == ["ddpm3d", "ddpm3d-mask"] and only.models[0].spatial_dims == 3
    assert [m.mask_conditioned for m in only.models] == [False, True]
    model = stub.GetModel(common_pb2.GetModelRequest(model="unet-gan:latest"))
    assert (model.version, model.family, model.conditional) == ("1", "unet_gan", True)
    assert model.weights.sha256 and list(model.shape) == [1, 16, 16]
    with pytest.raises(grpc.RpcError) as raised:
        stub.GetModel(common_pb2.GetModelRequest(model="missing"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
