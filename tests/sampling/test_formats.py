"""Every output format parsed back by the library that reads it."""

from __future__ import annotations

import io
import zipfile

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from ctsynth.rpc.errors import InvalidArgument
from ctsynth.sampling.formats import OutputContext, check_format, encode, encode_mask, hounsfield, output_context
from ctsynth.storage import open_store

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
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]
    assert ds.BurnedInAnnotation == "NO" and ds.PatientIdentityRemoved == "YES"
    assert model in ds.DeidentificationMethod and model in ds.SeriesDescription
    assert str(ds.PatientName) == ds.PatientID == "SYNTHETIC"


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
    assert [float(ds.ImagePositionPatient[2]) for ds in slices] == [0.0, 2.0, 4.0, 6.0]
    assert float(slices[0].SliceThickness) == 2.0 and [float(v) for v in slices[0].PixelSpacing] == [0.5, 0.5]
    for ds in slices:
        _synthetic_marks(ds, "ddpm3d:1")
    volume = np.stack([ds.pixel_array for ds in slices])
    np.testing.assert_array_equal(volume, hounsfield(VOLUME[0], WINDOW))


def test_nifti_holds_the_volume_in_xyz_order_with_its_spacing():
    encoded = encode("nifti", VOLUME, CONTEXT_3D)
    image = nib.Nifti1Image.from_bytes(encoded.data)
    assert image.shape == (8, 8, 4)
    np.testing.assert_array_equal(np.diag(image.affine)[:3], [0.5, 0.5, 2.0])
    np.testing.assert_array_equal(np.asanyarray(image.dataobj).transpose(2, 1, 0), hounsfield(VOLUME[0], WINDOW))


def test_mask_is_thresholded_uint8():
    assert encode_mask(np.array([[0.2, 0.7, 0.5]])) == bytes([0, 1, 0])


@pytest.mark.parametrize("name, dims, channels", [
    ("nifti", 2, 1), ("png8", 3, 1), ("png16", 3, 1), ("dicom", 2, 2), ("webp", 2, 1)])
def test_formats_a_model_cannot_fill_name_the_format(name, dims, channels):
    with pytest.raises(InvalidArgument) as raised:
        check_format(name, dims, channels)
    assert raised.value.field == "format"


def test_context_takes_window_and_spacing_from_the_dataset(tmp_path):
    store = open_store(tmp_path.as_uri())
    (tmp_path / "f").write_bytes(b"x")
    store.publish("datasets/lung/1", {"slices.h5": tmp_path / "f"},
                  {"parameters": {"window": [-1200, 600], "isotropic_spacing_mm": 0.8}})
    context = output_context(store, "m:1", 3, "lung:1")
    assert context.window == (-1200.0, 600.0) and context.spacing == (0.8, 0.8, 0.8)
    missing = output_context(store, "m:1", 2, "gone:4")
    assert missing.window == WINDOW and missing.spacing == (1.0, 1.0)
