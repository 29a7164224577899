"""Client masks: every encoding decodes to the same nodule mask, NIfTI on the
outputs' grid whatever its orientation, and hostile bytes are refused
precisely without being trusted."""

from __future__ import annotations

import gzip
import io

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from ctsynth.conditioning.mask_input import MAX_MASK_VOXELS, decode_mask, fit_masks
from ctsynth.data.nifti import axial_volume
from ctsynth.errors import InvalidArgument


def volume() -> np.ndarray:
    """An asymmetric (z, y, x) label map: nodule 1, lung 2, body 3, so any axis flip shows."""
    labels = np.zeros((6, 8, 10), np.uint8)
    labels[1:5, 1:7, 1:9] = 3
    labels[2:4, 2:6, 2:8] = 2
    labels[2, 3, 6] = labels[3, 4, 7] = 1
    return labels


def npy(array: np.ndarray, **kwargs) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, **kwargs)
    return buffer.getvalue()


def png(array: np.ndarray, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode if mode != "L" else None).save(buffer, format="PNG")
    return buffer.getvalue()


def test_npy_binary_label_map_bool_float_and_stacks():
    labels = volume()
    nodules = (labels == 1).astype(np.uint8)
    for data in (npy(labels), npy(nodules), npy(nodules.astype(bool)), npy(nodules.astype(np.float32))):
        np.testing.assert_array_equal(decode_mask(data), nodules)
    stack = np.stack([nodules, np.roll(nodules, 1, axis=2)])
    np.testing.assert_array_equal(decode_mask(npy(stack)), stack)


def test_png_masks_0_1_0_255_and_label_maps():
    labels = volume()[2]
    nodules = (labels == 1).astype(np.uint8)
    for data in (png(nodules), png(nodules * 255), png(labels)):
        np.testing.assert_array_equal(decode_mask(data), nodules)


def test_our_own_nifti_label_volume_comes_back_unchanged_and_gzip_works():
    labels = volume()
    image = axial_volume(labels.astype(np.int16), (2.5, 0.7, 0.7), (-3.2, -2.5, -6.0))
    nodules = (labels == 1).astype(np.uint8)
    np.testing.assert_array_equal(decode_mask(image.to_bytes()), nodules)
    np.testing.assert_array_equal(decode_mask(gzip.compress(image.to_bytes())), nodules)


def test_a_nifti_in_another_orientation_is_reoriented_to_the_outputs_grid():
    """The same voxels stored RAS (x and y reversed relative to ours, so the
    affine is diag(+dx, +dy, dz)) decode to the same (z, y, x) mask."""
    labels = volume()
    ras_data = labels.transpose(2, 1, 0)[::-1, ::-1, :]
    image = nib.Nifti1Image(np.ascontiguousarray(ras_data).astype(np.uint8), np.diag([0.7, 0.7, 2.5, 1.0]))
    np.testing.assert_array_equal(decode_mask(image.to_bytes()), (labels == 1).astype(np.uint8))


def object_npy() -> bytes:
    return npy(np.array([{"a": 1}], dtype=object), allow_pickle=True)


def huge_npy() -> bytes:
    """A valid header promising 2^40 uint8 voxels, followed by almost nothing."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (2 ** 20, 2 ** 20)})
    return b"\x93NUMPY\x01\x00" + header.getvalue()[8:] + b"\x00" * 16


def truncated_nifti() -> bytes:
    return axial_volume(volume().astype(np.int16), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)).to_bytes()[:-50]


def gzip_bomb() -> bytes:
    """A NIfTI header promising a 2^30-voxel volume, gzipped: small on the wire."""
    header = nib.Nifti1Header()
    header.set_data_shape((1024, 1024, 1024))
    header.set_data_dtype(np.uint8)
    return gzip.compress(header.binaryblock + b"\x00" * 4 + b"\x00" * (1 << 20))


@pytest.mark.parametrize("data, reason", [
    (b"", "is empty"),
    (b"GIF89a....", "unknown magic"),
    (object_npy(), "Python objects"),
    (huge_npy(), "at most"),
    (npy(volume())[:-20], "truncated"),
    (npy(np.full((4, 4), 7, np.int16)), "the value 7"),
    (npy(np.full((4, 4), 0.5, np.float32)), "the value 0.5"),
    (npy(np.zeros((4, 4), np.complex64)), "complex64"),
    (png(np.zeros((4, 4, 3), np.uint8), "RGB"), "RGB PNG"),
    (png(np.zeros((4, 4), np.uint8))[:30], "truncated or damaged PNG"),
    (truncated_nifti(), "truncated NIfTI"),
    (gzip_bomb(), "at most"),
    (gzip.compress(b"x" * 100)[:-6], "truncated or damaged gzip"),
])
def test_hostile_or_broken_masks_are_refused_naming_the_mask(data, reason):
    with pytest.raises(InvalidArgument, match=reason) as error:
        decode_mask(data)
    assert error.value.field == "mask"


def test_the_voxel_limit_is_what_a_512_cube_batch_needs():
    assert MAX_MASK_VOXELS >= 2 * 512 ** 3


def test_masks_fit_the_models_grid_one_for_all_or_one_per_item():
    nodules = (volume() == 1).astype(np.uint8)
    assert fit_masks(nodules, (6, 8, 10), 3).shape == (1, 6, 8, 10)
    assert fit_masks(np.stack([nodules] * 3), (6, 8, 10), 3).shape == (3, 6, 8, 10)
    slices = np.stack([nodules[2]] * 6)  # (6, 8, 10): one volume for a 3D model, six slices for a 2D one
    assert fit_masks(slices, (8, 10), 6).shape == (6, 8, 10)
    for masks, reason in ((nodules, "this model needs"), (np.stack([nodules] * 2), "this model needs"),
                          (np.zeros_like(nodules), "no nodule voxel")):
        with pytest.raises(InvalidArgument, match=reason) as error:
            fit_masks(masks, (6, 8, 10) if masks.ndim == 4 or not masks.any() else (6, 8, 12), 3)
        assert error.value.field == "mask"
