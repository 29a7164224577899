"""Every output format parsed back by the library that reads it."""

from __future__ import annotations

import io
import zipfile

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from ctsynth.data.nifti import axial_volume
from ctsynth.errors import InvalidArgument
from ctsynth.sampling.formats import (MASK_PNG_VALUE, OutputContext, check_format, encode, encode_slabs, grid_origin_mm,
                                      hounsfield, output_context, size_bound, slice_uid)
from ctsynth.storage import open_store
from tests.dicom_iod import ct_image_problems, dciodvfy_problems

WINDOW = (-1000.0, 400.0)
RNG = np.random.default_rng(0)
SLICE = RNG.random((1, 16, 16), dtype=np.float32)
VOLUME = RNG.random((1, 4, 8, 8), dtype=np.float32)
CONTEXT_2D = OutputContext("dcgan:3", 2, WINDOW)
CONTEXT_3D = OutputContext("ddpm3d:1", 3, WINDOW, (2.0, 0.5, 0.5))


def test_float16_is_little_endian_in_unit_range():
    encoded = encode("float16", SLICE, CONTEXT_2D)
    array = np.frombuffer(encoded.data, "<f2").reshape(encoded.shape)
    assert encoded.dtype == "float16" and encoded.shape == (1, 16, 16)
    np.testing.assert_allclose(array, SLICE, atol=1e-3)


def test_hu_int16_inverts_the_window():
    encoded = encode("hu_int16", np.array([[[0.0, 0.5, 1.0]]], np.float32), CONTEXT_2D)
    assert encoded.dtype == "int16"
    assert np.frombuffer(encoded.data, "<i2").tolist() == [-1000, -300, 400]


@pytest.mark.parametrize("name, bits", [("png8", 8), ("png16", 16)])
def test_png_holds_the_slice_at_its_bit_depth(name, bits):
    encoded = encode(name, SLICE, CONTEXT_2D)
    image = np.asarray(Image.open(io.BytesIO(encoded.data)))
    assert image.shape == (16, 16) and image.dtype == (np.uint8 if bits == 8 else np.uint16)
    np.testing.assert_allclose(image / (2 ** bits - 1), SLICE[0], atol=1 / (2 ** bits - 1))


def _synthetic_marks(ds: pydicom.Dataset, model: str) -> None:
    assert ds.SOPClassUID == pydicom.uid.CTImageStorage and ds.Modality == "CT"
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
    assert ds.BurnedInAnnotation == "NO" and ds.PatientIdentityRemoved == "YES"
    assert model in ds.DeidentificationMethod and model in ds.SeriesDescription
    assert str(ds.PatientName) == "SYNTHETIC^CT" and ds.PatientID == "SYNTHETIC"


def test_dicom_slice_is_a_ct_image_in_hounsfield_units():
    encoded = encode("dicom", SLICE, CONTEXT_2D)
    ds = pydicom.dcmread(io.BytesIO(encoded.data))
    _synthetic_marks(ds, "dcgan:3")
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(hu, hounsfield(SLICE[0], WINDOW))
    assert [float(v) for v in ds.PixelSpacing] == [1.0, 1.0]
    again = pydicom.dcmread(io.BytesIO(encode("dicom", SLICE, CONTEXT_2D).data))
    assert again.SOPInstanceUID != ds.SOPInstanceUID and again.StudyInstanceUID != ds.StudyInstanceUID


def test_dicom_volume_is_a_zip_of_one_series():
    encoded = encode("dicom", VOLUME, CONTEXT_3D)
    with zipfile.ZipFile(io.BytesIO(encoded.data)) as archive:
        slices = [pydicom.dcmread(io.BytesIO(archive.read(name))) for name in sorted(archive.namelist())]
    assert len(slices) == 4
    assert len({ds.SeriesInstanceUID for ds in slices}) == 1 and len({ds.SOPInstanceUID for ds in slices}) == 4
    assert [float(ds.ImagePositionPatient[2]) for ds in slices] == [-3.0, -1.0, 1.0, 3.0]  # centred on 0
    for ds in slices:
        assert float(ds.SliceThickness) == float(ds.SpacingBetweenSlices) == 2.0
        assert [float(v) for v in ds.PixelSpacing] == [0.5, 0.5]
        assert [float(v) for v in ds.ImagePositionPatient[:2]] == [-1.75, -1.75]
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    for ds in slices:
        _synthetic_marks(ds, "ddpm3d:1")
    volume = np.stack([ds.pixel_array for ds in slices])
    np.testing.assert_array_equal(volume, hounsfield(VOLUME[0], WINDOW))


def test_nifti_holds_the_volume_in_xyz_order_in_mm():
    encoded = encode("nifti", VOLUME, CONTEXT_3D)
    image = nib.Nifti1Image.from_bytes(encoded.data)
    assert image.shape == (8, 8, 4)
    assert image.header.get_xyzt_units()[0] == "mm"
    np.testing.assert_allclose(image.header.get_zooms(), [0.5, 0.5, 2.0])
    assert int(image.header["qform_code"]) == int(image.header["sform_code"]) == 1  # scanner coordinates
    np.testing.assert_allclose(image.get_qform(), image.get_sform())
    assert nib.aff2axcodes(image.affine) == ("L", "P", "S")  # DICOM's axial grid, written in RAS
    np.testing.assert_array_equal(np.asanyarray(image.dataobj).transpose(2, 1, 0), hounsfield(VOLUME[0], WINDOW))


def test_nifti_and_dicom_put_every_voxel_at_the_same_point():
    nifti = nib.Nifti1Image.from_bytes(encode("nifti", VOLUME, CONTEXT_3D).data)
    with zipfile.ZipFile(io.BytesIO(encode("dicom", VOLUME, CONTEXT_3D).data)) as archive:
        slices = [pydicom.dcmread(io.BytesIO(archive.read(name))) for name in sorted(archive.namelist())]
    for k, ds in enumerate(slices):
        for row, col in [(0, 0), (7, 0), (0, 7), (5, 3)]:
            # PS3.3 C.7.6.2.1.1: position + col * spacing_col * row direction + row * spacing_row * column direction
            iop = np.array([float(v) for v in ds.ImageOrientationPatient])
            row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
            origin = np.array([float(v) for v in ds.ImagePositionPatient])
            lps = origin + col * col_mm * iop[:3] + row * row_mm * iop[3:]
            ras = nib.affines.apply_affine(nifti.affine, [col, row, k])
            np.testing.assert_allclose(ras, lps * [-1, -1, 1], atol=1e-6)
            assert nifti.dataobj[col, row, k] == ds.pixel_array[row, col]


def test_mask_is_thresholded_uint8():
    image = np.zeros((1, 1, 3), np.float32)
    assert encode("float16", image, CONTEXT_2D, np.array([[[0.2, 0.7, 0.5]]])).mask == bytes([0, 1, 0])


@pytest.mark.parametrize("name, dims, channels", [
    ("nifti", 2, 1), ("png8", 3, 1), ("png16", 3, 1), ("dicom", 2, 2), ("webp", 2, 1)])
def test_formats_a_model_cannot_fill_name_the_format(name, dims, channels):
    with pytest.raises(InvalidArgument) as raised:
        check_format(name, dims, channels)
    assert raised.value.field == "format"


def test_context_takes_the_window_from_the_dataset_and_the_spacing_from_the_model(tmp_path):
    store = open_store(tmp_path.as_uri())
    (tmp_path / "f").write_bytes(b"x")
    store.publish("datasets/lung/1", {"slices.h5": tmp_path / "f"}, {"parameters": {"window": [-1200, 600]}})
    context = output_context(store, "m:1", 3, {"dataset": "lung:1", "spacing_mm": [11.2, 11.2, 11.2]})
    assert context.window == (-1200.0, 600.0) and context.spacing == (11.2, 11.2, 11.2)
    missing = output_context(store, "m:1", 2, {"dataset": "gone:4"})
    assert missing.window == WINDOW and missing.spacing == (1.0, 1.0)
    for unusable in ([1.0], [0.0, 1.0], [float("nan"), 1.0], "1 mm", None):
        assert output_context(store, "m:1", 2, {"spacing_mm": unusable}).spacing_mm is None


@pytest.mark.parametrize("item, context", [(SLICE, CONTEXT_2D), (VOLUME, CONTEXT_3D)], ids=["slice", "volume"])
def test_dicom_meets_the_ct_image_iod(item, context, tmp_path):
    data = encode("dicom", item, context).data
    if context.spatial_dims == 3:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            data = archive.read(sorted(archive.namelist())[1])
    path = tmp_path / "slice.dcm"
    path.write_bytes(data)
    assert ct_image_problems(pydicom.dcmread(path)) == []
    assert dciodvfy_problems(path) in (None, [])


def test_the_iod_check_finds_what_is_missing(tmp_path):
    ds = pydicom.dcmread(io.BytesIO(encode("dicom", SLICE, CONTEXT_2D).data))
    del ds.PositionReferenceIndicator, ds.KVP
    ds.PixelSpacing = None
    ds.ImageType = ["DERIVED", "SECONDARY"]
    assert sorted(ct_image_problems(ds)) == [
        "CT Image: ImageType ['DERIVED', 'SECONDARY'] needs a third value, AXIAL or LOCALIZER",
        "CT Image: Type 2 KVP is missing",
        "Frame of Reference: Type 2 PositionReferenceIndicator is missing",
        "Image Plane: Type 1 PixelSpacing is empty",
    ]
    ds.save_as(tmp_path / "bad.dcm")
    found = dciodvfy_problems(tmp_path / "bad.dcm")
    if found is not None:
        assert any("PositionReferenceIndicator" in line for line in found)


# --- slabs of a volume ---------------------------------------------------------------------

def test_raw_slabs_join_on_z_into_the_item_for_any_channel_count():
    two_channels = RNG.random((2, 5, 8, 8), dtype=np.float32)
    whole = encode("float16", two_channels, CONTEXT_3D)
    slabs = list(encode_slabs("float16", two_channels, CONTEXT_3D, 2))
    assert [(z0, s.shape) for z0, s in slabs] == [(0, (2, 2, 8, 8)), (2, (2, 2, 8, 8)), (4, (2, 1, 8, 8))]
    joined = np.concatenate([np.frombuffer(s.data, "<f2").reshape(s.shape) for _, s in slabs], axis=1)
    assert joined.tobytes() == whole.data


def test_nifti_slabs_joined_are_the_file_axial_volume_writes():
    z0, y0, x0 = grid_origin_mm(VOLUME.shape[1:], CONTEXT_3D.spacing)
    file = axial_volume(hounsfield(VOLUME[0], WINDOW), CONTEXT_3D.spacing, (x0, y0, z0),
                        description="synthetic: ctsynth ddpm3d:1").to_bytes()
    slabs = [s.data for _, s in encode_slabs("nifti", VOLUME, CONTEXT_3D, 3)]
    assert len(slabs) == 2 and b"".join(slabs) == file == encode("nifti", VOLUME, CONTEXT_3D).data


def test_dicom_slabs_are_one_series_placed_by_their_z_in_the_volume():
    slabs = list(encode_slabs("dicom", VOLUME, CONTEXT_3D, 3))
    datasets = []
    for _, slab in slabs:
        with zipfile.ZipFile(io.BytesIO(slab.data)) as archive:
            datasets += [(name, pydicom.dcmread(io.BytesIO(archive.read(name)))) for name in archive.namelist()]
    assert [name for name, _ in datasets] == [f"slice_{k:04d}.dcm" for k in range(4)]
    assert len({ds.SeriesInstanceUID for _, ds in datasets}) == 1
    assert [float(ds.ImagePositionPatient[2]) for _, ds in datasets] == [-3.0, -1.0, 1.0, 3.0]  # as unsplit
    assert [ds.InstanceNumber for _, ds in datasets] == [1, 2, 3, 4]


@pytest.mark.filterwarnings("ignore:The value length")  # a 70-character description is too long for LO: known
@pytest.mark.parametrize("name", ["float16", "hu_int16", "dicom", "nifti"])
def test_size_bound_holds_for_slabs_and_a_long_model_name(name):
    context = OutputContext("m" * 64 + ":1234", 3, WINDOW, (2.0, 0.5, 0.5))
    fixed, per_slice = size_bound(name, VOLUME.shape)
    for _, slab in encode_slabs(name, VOLUME, context, 3):
        assert len(slab.data) <= fixed + slab.shape[1] * per_slice
    png_fixed, png_per = size_bound("png16", SLICE.shape)
    assert len(encode("png16", SLICE, CONTEXT_2D).data) <= png_fixed + png_per


# --- masks ---------------------------------------------------------------------------------

MASK_VOLUME = RNG.random((1, 8, 16, 16), dtype=np.float32)  # tiny, as the slab tests' volumes
MASK_MAP = (RNG.random((1, 8, 16, 16)) > 0.8).astype(np.float32) * 0.9  # a probability map: > 0.5 is nodule
MASK = MASK_MAP[0] > 0.5
ALL_FORMATS = ["float16", "hu_int16", "png8", "png16", "dicom", "nifti"]


def _zip_datasets(data: bytes) -> list[pydicom.Dataset]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [pydicom.dcmread(io.BytesIO(archive.read(name))) for name in sorted(archive.namelist())]


def _check_seg(data: bytes, slices: list[pydicom.Dataset], mask: np.ndarray, tmp_path) -> None:
    """A SEG of `mask` over exactly `slices`, in their Frame of Reference, valid and read back by highdicom."""
    path = tmp_path / "seg.dcm"
    path.write_bytes(data)
    assert dciodvfy_problems(path) in (None, [])  # as every DICOM test here: checked where dicom3tools is installed
    seg = hd.seg.segread(path)
    uids = [ds.SOPInstanceUID for ds in slices]
    (series,) = seg.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == slices[0].SeriesInstanceUID
    assert [item.ReferencedSOPInstanceUID for item in series.ReferencedInstanceSequence] == uids
    assert seg.FrameOfReferenceUID == slices[0].FrameOfReferenceUID
    assert seg.StudyInstanceUID == slices[0].StudyInstanceUID
    assert seg.PatientIdentityRemoved == "YES" and seg.SeriesInstanceUID != slices[0].SeriesInstanceUID
    for ds, frame in zip(slices, mask, strict=True):
        pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=[ds.SOPInstanceUID], segment_numbers=[1])
        np.testing.assert_array_equal(pixels[0, ..., 0].astype(bool), frame)


@pytest.mark.parametrize("name", ["float16", "hu_int16"])
def test_raw_masks_are_uint8_zero_one_split_like_the_data(name):
    whole = encode(name, MASK_VOLUME, CONTEXT_3D, MASK_MAP)
    assert whole.mask == MASK.astype(np.uint8).tobytes()
    slabs = list(encode_slabs(name, MASK_VOLUME, CONTEXT_3D, 3, MASK_MAP))
    assert [len(s.mask) for _, s in slabs] == [3 * 256, 3 * 256, 2 * 256]
    assert b"".join(s.mask for _, s in slabs) == whole.mask


@pytest.mark.parametrize("name", ["png8", "png16"])
def test_png_mask_is_an_8_bit_label_of_0_and_255(name):
    encoded = encode(name, MASK_VOLUME[:, 0], CONTEXT_2D, MASK_MAP[:, 0])
    label = Image.open(io.BytesIO(encoded.mask))
    assert label.mode == "L" and label.size == (16, 16)
    np.testing.assert_array_equal(np.asarray(label), np.where(MASK[0], MASK_PNG_VALUE, 0).astype(np.uint8))
    assert MASK_PNG_VALUE == 255 and MASK[0].any()


def test_nifti_mask_is_a_label_volume_on_the_image_grid():
    encoded = encode("nifti", MASK_VOLUME, CONTEXT_3D, MASK_MAP)
    image, label = nib.Nifti1Image.from_bytes(encoded.data), nib.Nifti1Image.from_bytes(encoded.mask)
    assert label.shape == image.shape == (16, 16, 8) and label.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(label.affine, image.affine)
    np.testing.assert_array_equal(label.get_qform(), image.get_qform())
    np.testing.assert_array_equal(label.get_sform(), image.get_sform())
    assert label.header.get_zooms() == image.header.get_zooms() and nib.aff2axcodes(label.affine) == ("L", "P", "S")
    assert label.header.get_intent()[0] == "label" and label.header.get_xyzt_units()[0] == "mm"
    voxels = np.asanyarray(label.dataobj)
    assert voxels.dtype == np.uint8
    np.testing.assert_array_equal(voxels.transpose(2, 1, 0), MASK.astype(np.uint8))


def test_nifti_mask_slabs_joined_are_the_whole_mask_file():
    whole = encode("nifti", MASK_VOLUME, CONTEXT_3D, MASK_MAP).mask
    slabs = [s.mask for _, s in encode_slabs("nifti", MASK_VOLUME, CONTEXT_3D, 3, MASK_MAP)]
    assert len(slabs) == 3 and b"".join(slabs) == whole and len(slabs[1]) == 3 * 256


def test_dicom_slice_mask_is_a_seg_of_that_slice(tmp_path):
    encoded = encode("dicom", MASK_VOLUME[:, 0], CONTEXT_2D, MASK_MAP[:, 0])
    ct = pydicom.dcmread(io.BytesIO(encoded.data))
    _check_seg(encoded.mask, [ct], MASK[:1], tmp_path)


def test_dicom_volume_mask_is_one_seg_of_every_slice(tmp_path):
    encoded = encode("dicom", MASK_VOLUME, CONTEXT_3D, MASK_MAP)
    _check_seg(encoded.mask, _zip_datasets(encoded.data), MASK, tmp_path)


def test_dicom_slabs_carry_the_whole_seg_in_the_last_slab(tmp_path):
    slabs = list(encode_slabs("dicom", MASK_VOLUME, CONTEXT_3D, 3, MASK_MAP))
    assert [z0 for z0, _ in slabs] == [0, 3, 6] and [bool(s.mask) for _, s in slabs] == [False, False, True]
    slices = [ds for _, slab in slabs for ds in _zip_datasets(slab.data)]
    assert len(slices) == 8 and len({ds.SOPInstanceUID for ds in slices}) == 8
    assert [ds.SOPInstanceUID for ds in slices] == [slice_uid(slices[0].SeriesInstanceUID, k + 1) for k in range(8)]
    _check_seg(slabs[-1][1].mask, slices, MASK, tmp_path)


@pytest.mark.parametrize("name", ALL_FORMATS)
def test_no_mask_no_mask_bytes(name):
    item = MASK_VOLUME[:, 0] if name in ("png8", "png16") else MASK_VOLUME
    context = CONTEXT_2D if item.ndim == 3 else CONTEXT_3D
    assert encode(name, item, context).mask == b""
    if item.ndim == 4:
        assert all(s.mask == b"" for _, s in encode_slabs(name, item, context, 3))


@pytest.mark.parametrize("name", ALL_FORMATS)
@pytest.mark.parametrize("which", range(4))
def test_a_mask_that_does_not_fit_the_item_names_the_mask(name, which):
    item, context = (MASK_VOLUME[:, 0], CONTEXT_2D) if name in ("png8", "png16") else (MASK_VOLUME, CONTEXT_3D)
    shapes = [(1, 16, 8), (2, 16, 16), (16, 16), (1, 1, 16, 16)] if item.ndim == 3 else \
        [(1, 8, 16, 8), (2, 8, 16, 16), (8, 16, 16), (1, 7, 16, 16)]  # a plane or z off, 2 channels, no channel axis
    bad = np.zeros(shapes[which], np.float32)
    with pytest.raises(InvalidArgument) as raised:
        encode(name, item, context, bad)
    assert raised.value.field == "mask"
    if item.ndim == 4:
        with pytest.raises(InvalidArgument) as raised:
            encode_slabs(name, item, context, 3, bad)  # refused at the call, before any slab
        assert raised.value.field == "mask"


@pytest.mark.filterwarnings("ignore:The value length")  # a 70-character description is too long for LO: known
@pytest.mark.parametrize("name", ALL_FORMATS)
def test_size_bound_with_masks_holds_for_slabs_and_a_long_model_name(name):
    model = "m" * 64 + ":1234"
    if name in ("png8", "png16"):
        item, context = MASK_VOLUME[:, 0], OutputContext(model, 2, WINDOW)
        fixed, per_slice = size_bound(name, item.shape, mask=True)
        encoded = encode(name, item, context, MASK_MAP[:, 0])
        assert len(encoded.data) + len(encoded.mask) <= fixed + per_slice
        return
    context = OutputContext(model, 3, WINDOW, (2.0, 0.5, 0.5))
    fixed, per_slice = size_bound(name, MASK_VOLUME.shape, mask=True)
    assert (fixed, per_slice) != size_bound(name, MASK_VOLUME.shape)
    for slices in (3, 8):
        for _, slab in encode_slabs(name, MASK_VOLUME, context, slices, MASK_MAP):
            assert len(slab.data) + len(slab.mask) <= fixed + slab.shape[1] * per_slice
    if name == "dicom":
        fixed, per_slice = size_bound(name, SLICE.shape, mask=True)
        encoded = encode(name, SLICE, OutputContext(model, 2, WINDOW), SLICE > 0.5)
        assert len(encoded.data) + len(encoded.mask) <= fixed + per_slice
