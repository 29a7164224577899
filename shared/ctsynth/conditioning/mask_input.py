"""Masks a client sends: .npy, NIfTI-1 (.nii, .nii.gz) or PNG bytes, told
apart by their magic bytes, decoded without trusting them.

A mask is binary (0/1; 0/255 in a PNG) or a label map: 0 background,
1 nodule, 2 lung, 3 body, whose nodules are label 1. The result is the
nodule mask, uint8 0/1, shape (N, *spatial) in the array order ([z,] row,
col), or a stack (N, *spatial) of one mask per item. NIfTI volumes are reoriented to the outputs' grid (axial, LPS: a
NIfTI affine of diag(-dx, -dy, dz), see `data.nifti`), so a label volume
this service wrote comes back unchanged. Nothing is unpickled, and a header
that promises more voxels than MAX_MASK_VOXELS is refused before its data
is read, so a small request cannot make the service allocate gigabytes.
"""

from __future__ import annotations

import gzip
import io
import zlib

import numpy as np

from ctsynth.errors import InvalidArgument
from ctsynth.storage import InvalidKey, ObjectNotFound, ObjectStore
from ctsynth.storage.base import validate_key

LABELS = {0: "background", 1: "nodule", 2: "lung", 3: "body"}
NODULE = 1
MAX_MASK_VOXELS = 2 ** 28  # 256 Mi voxels: a 512^3 volume twice over, or a batch of smaller ones
NPY_MAGIC, PNG_MAGIC, GZIP_MAGIC = b"\x93NUMPY", b"\x89PNG\r\n\x1a\n", b"\x1f\x8b"
FIELD = "mask"


def decode_mask(data: bytes) -> np.ndarray:
    """The nodule mask uint8 0/1 that `data` encodes, as stored: (*spatial),
    or (N, *spatial) where an .npy holds a stack (`fit_masks` tells them apart)."""
    if not data:
        raise InvalidArgument(FIELD, "is empty; send .npy, NIfTI or PNG bytes")
    if data.startswith(NPY_MAGIC):
        array = _npy(data)
    elif data.startswith(PNG_MAGIC):
        array = _png(data)
    elif data.startswith(GZIP_MAGIC):
        array = _nifti(_gunzip(data))
    elif len(data) >= 348 and int.from_bytes(data[:4], "little") == 348 and data[344:348] in (b"n+1\0", b"ni1\0"):
        array = _nifti(data)
    else:
        raise InvalidArgument(FIELD, "is neither .npy, NIfTI-1 (.nii, .nii.gz) nor PNG (unknown magic bytes)")
    return nodule_mask(array)


def nodule_mask(array: np.ndarray) -> np.ndarray:
    """A binary mask or label map as the uint8 0/1 nodule mask; other values are refused."""
    if array.dtype == bool:
        return array.astype(np.uint8)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise InvalidArgument(FIELD, f"holds {array.dtype} values; send integers, booleans or floats")
    values = np.unique(array)
    if set(values.tolist()) <= {0, 255}:
        return (array == 255).astype(np.uint8) if 255 in values else np.zeros(array.shape, np.uint8)
    unknown = [v for v in values.tolist() if v not in LABELS]
    if unknown:
        raise InvalidArgument(FIELD, f"holds the value {unknown[0]!r}; a mask is 0/1 (0/255) or a label map "
                                     f"{', '.join(f'{k} {v}' for k, v in LABELS.items())}")
    return (array == NODULE).astype(np.uint8)


def fit_masks(masks: np.ndarray, spatial: tuple[int, ...], count: int) -> np.ndarray:
    """Decoded masks as (1 or `count`, *spatial) for a model of grid `spatial`
    and a request of `count` items; INVALID_ARGUMENT for any other shape or a
    mask without a nodule voxel (a mask-conditioned model is asked for nodules)."""
    if masks.shape == spatial:
        masks = masks[None]
    if masks.shape[1:] != spatial or len(masks) not in (1, count):
        raise InvalidArgument(FIELD, f"of shape {masks.shape}; this model needs {spatial}, or a stack "
                                     f"({count}, {', '.join(map(str, spatial))}) of one mask per item")
    empty = [i for i, mask in enumerate(masks) if not mask.any()]
    if empty:
        where = "" if len(masks) == 1 else f" (item {empty[0]})"
        raise InvalidArgument(FIELD, f"has no nodule voxel{where}; mark the nodules with 1 (or label 1)")
    return masks


def _checked_size(shape: tuple[int, ...]) -> None:
    if any(n < 1 for n in shape) or int(np.prod(shape, dtype=np.int64)) > MAX_MASK_VOXELS:
        raise InvalidArgument(FIELD, f"of shape {tuple(shape)}: at least one and at most {MAX_MASK_VOXELS} voxels")


def _npy(data: bytes) -> np.ndarray:
    from numpy.lib import format as npy

    stream = io.BytesIO(data)
    try:
        version = npy.read_magic(stream)
        read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, _, dtype = read_header(stream)  # the header alone, nothing allocated yet
    except (ValueError, SyntaxError) as exc:
        raise InvalidArgument(FIELD, f"is not a readable .npy file ({exc})") from None
    if dtype.hasobject:
        raise InvalidArgument(FIELD, "is an .npy of Python objects; send a numeric array")
    _checked_size(shape)
    stream.seek(0)
    try:
        return np.load(stream, allow_pickle=False)
    except (ValueError, EOFError) as exc:
        raise InvalidArgument(FIELD, f"is a truncated or damaged .npy file ({exc})") from None


def _png(data: bytes) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            _checked_size((image.height, image.width))
            if image.mode not in ("1", "L", "I", "I;16", "P"):
                raise InvalidArgument(FIELD, f"is a {image.mode} PNG; send a one-channel (grey or palette) PNG")
            return np.asarray(image.convert("L") if image.mode in ("1", "P") else image)
    except (UnidentifiedImageError, OSError, SyntaxError, zlib.error) as exc:
        raise InvalidArgument(FIELD, f"is a truncated or damaged PNG ({exc})") from None


def _gunzip(data: bytes) -> bytes:
    """gzip data, decompressed no further than a mask can be (a gzip bomb stops there)."""
    limit = MAX_MASK_VOXELS * 8 + 352 * 2  # float64 voxels and the header
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            out = stream.read(limit + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise InvalidArgument(FIELD, f"is truncated or damaged gzip data ({exc})") from None
    if len(out) > limit:
        raise InvalidArgument(FIELD, f"decompresses to more than {limit} bytes")
    return out


def _nifti(data: bytes) -> np.ndarray:
    """A NIfTI-1 volume (or image) as (z, y, x) (or (row, col)) on the outputs' LPS axial grid."""
    import nibabel as nib

    try:
        header = nib.Nifti1Header.from_fileobj(io.BytesIO(data), check=True)
        shape = header.get_data_shape()
    except Exception as exc:  # noqa: BLE001 - nibabel raises many kinds on a bad header
        raise InvalidArgument(FIELD, f"is not a readable NIfTI-1 file ({exc})") from None
    _checked_size(shape)
    if len(shape) not in (2, 3) and not (len(shape) > 3 and all(n == 1 for n in shape[3:])):
        raise InvalidArgument(FIELD, f"is a NIfTI of shape {shape}; send one 2D or 3D label image")
    expected = int(header["vox_offset"]) + int(np.prod(shape)) * header.get_data_dtype().itemsize
    if len(data) < expected:
        raise InvalidArgument(FIELD, f"is a truncated NIfTI file ({len(data)} of {expected} bytes)")
    image = nib.Nifti1Image.from_bytes(data)
    voxels = np.asanyarray(image.dataobj).reshape(shape[:3])
    if voxels.ndim == 3:
        wanted = nib.orientations.axcodes2ornt(("L", "P", "S"))
        transform = nib.orientations.ornt_transform(nib.orientations.io_orientation(image.affine), wanted)
        voxels = nib.orientations.apply_orientation(voxels, transform)
        voxels = voxels.transpose(2, 1, 0)  # (x, y, z) -> (z, y, x)
        if voxels.shape[0] == 1:
            voxels = voxels[0]  # a one-slice volume is a 2D image
    else:
        voxels = voxels.T  # (x, y) -> (row, col)
    return np.ascontiguousarray(voxels)


MAX_MASK_OBJECT_BYTES = MAX_MASK_VOXELS * 8 + 2 ** 20  # float64 voxels and a header: the largest mask file


def read_mask_object(store: ObjectStore, uri: str) -> bytes:
    """The bytes of a mask stored in `store`, named by its URI there or its
    key; an object elsewhere, missing or too large is INVALID_ARGUMENT naming `mask.uri`."""
    field = "mask.uri"
    root = store.uri.rstrip("/") + "/"
    if uri.startswith(root):
        key = uri[len(root):]
    elif "://" in uri:
        raise InvalidArgument(field, f"{uri} is outside this service's object store ({store.uri})")
    else:
        key = uri
    try:
        validate_key(key)
        size = store.stat(key).size
    except InvalidKey as exc:
        raise InvalidArgument(field, f"{uri!r} is not an object key ({exc})") from None
    except ObjectNotFound:
        raise InvalidArgument(field, f"no object {store.uri_for(key)}") from None
    if size > MAX_MASK_OBJECT_BYTES:
        raise InvalidArgument(field, f"{store.uri_for(key)} holds {size} bytes; a mask is at most "
                                     f"{MAX_MASK_OBJECT_BYTES}")
    return store.get_bytes(key)
