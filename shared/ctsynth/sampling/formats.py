"""Encoders from a sampled item, (C, *spatial) floats in [0, 1], to the
bytes a client receives: raw float16, raw HU int16, PNG 8/16-bit, DICOM,
NIfTI.

HU values invert the dataset's window: HU = lo + x (hi - lo), with the
window the model's training set was made with. DICOM objects are CT Image
Storage built from nothing but the pixels, fresh UIDs and the model's name,
so no identifier of a training study can reach them; a volume is one file
per slice, packed into a ZIP archive (one item = one blob).

A volume too large for one message is encoded as z-slabs (`encode_slabs`),
one at a time, whose parts joined in order are the whole item: raw arrays
joined on z, the ZIPs' slice files (named and placed by their z in the whole
volume, one series), the NIfTI file's bytes (header, then voxels, z slowest).

Geometry is the training data's (`spacing_mm` of the model's config.json,
recorded at training time), so a viewer shows true sizes: the grid is
centred on the origin, axial, in DICOM's LPS patient coordinates, and the
NIfTI affine is the same grid in RAS (x and y negated).

Masks. An item may come with its nodule mask, (1, *spatial) like the image
(a probability map: > 0.5 is nodule), encoded in the item's format into
`Encoded.mask`: raw uint8 0/1 for float16 and hu_int16 (joined on z like the
data); an 8-bit grayscale PNG of 0/255 for png8/png16 (255 so that the label
is visible in any viewer; nonzero is nodule); a uint8 0/1 NIfTI label volume
with the image's header but for its data type, streamed per slab like the
image (the first slab's part starts with the header); for DICOM, one
Segmentation (`ctsynth.data.dicom_seg`) of the whole item referencing every
CT slice of its series, delivered with the last slab only (the other slabs'
masks are empty). A slice's SOP Instance UID is derived from its series UID
and z alone, so the last slab can reference the slices of earlier slabs,
whose datasets are gone, through header-only stand-ins.
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
from PIL import Image
from pydicom.uid import generate_uid

from ctsynth.data.ct_image import CtSeriesHeader, SlicePlane, ct_header, ct_slice, grid_origin_mm
from ctsynth.data.dicom_seg import nodule_segmentation, segmentation_bytes
from ctsynth.data.nifti import axial_volume
from ctsynth.errors import InvalidArgument, NotFound
from ctsynth.registry import Registry, parse_ref
from ctsynth.storage import ObjectNotFound, ObjectStore

DEFAULT_WINDOW = (-1000.0, 400.0)  # HU, the ingest default (seed 000)
SYNTHETIC = "SYNTHETIC"
SYNTHETIC_NAME = "SYNTHETIC^CT"  # family^given: a one-word name is the retired PN form


@dataclass(frozen=True)
class OutputContext:
    """What the encoders know about a model's pixels."""

    model: str  # "name:version"
    spatial_dims: int
    window: tuple[float, float] = DEFAULT_WINDOW
    spacing_mm: tuple[float, ...] | None = None  # mm per spatial axis, ([z,] y, x); None: unknown, 1 mm nominal

    @property
    def spacing(self) -> tuple[float, ...]:
        return self.spacing_mm or (1.0,) * self.spatial_dims


def output_context(store: ObjectStore, model: str, spatial_dims: int, config: Mapping[str, Any]) -> OutputContext:
    """The window of the dataset the model was trained on (the default when
    it is unknown or gone) and the voxel size its config.json recorded."""
    datasets = Registry(store, "datasets", "dataset")
    try:
        name, version = datasets.resolve(parse_ref(config.get("dataset", ""), "dataset"))
        parameters = datasets.manifest(name, version).get("parameters", {})
    except (InvalidArgument, NotFound, ObjectNotFound):
        parameters = {}
    lo, hi = parameters.get("window") or DEFAULT_WINDOW
    return OutputContext(model, spatial_dims, (float(lo), float(hi)), _spacing(config.get("spacing_mm"), spatial_dims))


def _spacing(value, spatial_dims: int) -> tuple[float, ...] | None:
    """A config's `spacing_mm` if it is one positive finite size per axis; None
    for models trained before it was recorded or on data without one."""
    if not isinstance(value, (list, tuple)) or len(value) != spatial_dims:
        return None
    if not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in value):
        return None
    return tuple(float(v) for v in value)


@dataclass(frozen=True)
class Encoded:
    data: bytes
    shape: tuple[int, ...]  # (C, *spatial) of the decoded array
    dtype: str
    mask: bytes = b""  # the item's (or slab's) mask in the same format; empty: no mask (or not in this slab)


Mask = np.ndarray | None  # (*spatial) bool of an item, or None


def _binary(mask: np.ndarray) -> np.ndarray:
    """A mask probability map as bool: > 0.5 is nodule."""
    return np.asarray(mask) > 0.5


def hounsfield(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """[0, 1] -> int16 HU, the inverse of the dataset's window."""
    lo, hi = window
    return np.clip(np.rint(lo + image.astype(np.float64) * (hi - lo)), -32768, 32767).astype(np.int16)


def _raw_mask(mask: Mask) -> bytes:
    return b"" if mask is None else mask.astype(np.uint8).tobytes()


def _float16(image: np.ndarray, context: OutputContext, mask: Mask = None) -> Encoded:
    return Encoded(image.astype("<f2").tobytes(), image.shape, "float16", _raw_mask(mask))


def _hu_int16(image: np.ndarray, context: OutputContext, mask: Mask = None) -> Encoded:
    return Encoded(hounsfield(image, context.window).astype("<i2").tobytes(), image.shape, "int16", _raw_mask(mask))


def _png_bytes(plane: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(plane).save(buffer, format="PNG")
    return buffer.getvalue()


def _png(bits: int) -> Callable[[np.ndarray, OutputContext, Mask], Encoded]:
    dtype = np.uint8 if bits == 8 else np.uint16

    def encode(image: np.ndarray, context: OutputContext, mask: Mask = None) -> Encoded:
        plane = np.rint(np.clip(image[0], 0, 1) * (2 ** bits - 1)).astype(dtype)
        label = b"" if mask is None else _png_bytes(np.where(mask, np.uint8(MASK_PNG_VALUE), np.uint8(0)))
        return Encoded(_png_bytes(plane), image.shape, np.dtype(dtype).name, label)

    return encode


def slice_uid(series_uid: str, number: int) -> str:
    """The SOP Instance UID of slice `number` (1-based) of a synthetic series:
    a function of the (fresh, random) series UID, so unique and reproducible."""
    return generate_uid(entropy_srcs=[series_uid, "slice", str(number)])


def _mark_synthetic(ds, context: OutputContext) -> None:
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = f"synthetic: generated by ctsynth model {context.model}"
    ds.BurnedInAnnotation = "NO"
    ds.StudyDescription = "synthetic CT (ctsynth)"
    lo, hi = context.window
    ds.WindowCenter, ds.WindowWidth = f"{(lo + hi) / 2:g}", f"{hi - lo:g}"


def _dicom_source(header: CtSeriesHeader, plane: SlicePlane, shape: tuple[int, int], context: OutputContext,
                  number: int):
    """Slice `number`'s dataset without Pixel Data, as `_dicom_slice` writes it: what its SEG references."""
    ds = ct_header(header, plane, shape, instance_uid=slice_uid(header.series_uid, number), number=number)
    _mark_synthetic(ds, context)
    return ds


def _dicom_slice(header: CtSeriesHeader, plane: SlicePlane, hu: np.ndarray, context: OutputContext,
                 number: int) -> bytes:
    """One CT Image Storage object (2D HU plane), marked synthetic."""
    ds = ct_slice(header, plane, hu, instance_uid=slice_uid(header.series_uid, number), number=number)
    _mark_synthetic(ds, context)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


Slab = Callable[[int, int], Encoded]  # slices [z0, z1) of one volume, encoded


def _series_header(context: OutputContext) -> CtSeriesHeader:
    return CtSeriesHeader(
        patient_name=SYNTHETIC_NAME, patient_id=SYNTHETIC, study_uid=generate_uid(), series_uid=generate_uid(),
        frame_uid=generate_uid(), description=f"synthetic CT from ctsynth model {context.model}",
        comments="SYNTHETIC IMAGE - NOT FOR DIAGNOSTIC USE", created=datetime.now(timezone.utc))


def _dicom_mask(sources: list, mask: np.ndarray, context: OutputContext) -> bytes:
    return segmentation_bytes(nodule_segmentation(sources, mask, context.model))


def _dicom_image(image: np.ndarray, context: OutputContext, mask: Mask = None) -> Encoded:
    """A 2D item as one .dcm; its mask, one SEG over that slice."""
    hu = hounsfield(image[0], context.window)
    y0, x0 = grid_origin_mm(hu.shape, context.spacing)
    plane = SlicePlane((x0, y0, 0.0), context.spacing)  # a lone slice has no known thickness
    header = _series_header(context)
    seg = b"" if mask is None else _dicom_mask([_dicom_source(header, plane, hu.shape, context, 1)], mask[None],
                                               context)
    return Encoded(_dicom_slice(header, plane, hu, context, 1), image.shape, "int16", seg)


def _dicom_volume(image: np.ndarray, context: OutputContext, mask: Mask = None) -> Slab:
    """A volume's slabs as ZIPs of slice_NNNN.dcm of one series, slice k (of
    the whole volume) at z_0 + k dz, so the slabs' files together are the
    series; its mask, one SEG over every slice, with the last slab."""
    header = _series_header(context)
    dz, dy, dx = context.spacing
    depth = image.shape[1]
    z_first, y0, x0 = grid_origin_mm(image.shape[1:], context.spacing)

    def plane(k: int) -> SlicePlane:
        return SlicePlane((x0, y0, z_first + k * dz), (dy, dx), thickness_mm=dz, spacing_mm=dz)

    def slab(z0: int, z1: int) -> Encoded:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for k in range(z0, z1):
                pixels = hounsfield(image[0, k], context.window)
                archive.writestr(f"slice_{k:04d}.dcm", _dicom_slice(header, plane(k), pixels, context, k + 1))
        seg = b""
        if mask is not None and z1 == depth:
            sources = [_dicom_source(header, plane(k), image.shape[2:], context, k + 1) for k in range(depth)]
            seg = _dicom_mask(sources, mask, context)
        return Encoded(buffer.getvalue(), (image.shape[0], z1 - z0, *image.shape[2:]), "int16", seg)

    return slab


def _nifti_header(shape_zyx: tuple[int, ...], context: OutputContext, label: bool = False) -> bytes:
    """The header (and empty extension block) `axial_volume` writes for a
    volume of `shape_zyx`, made from a one-voxel stand-in so that no whole
    volume is built: the file is this followed by the int16 voxels (uint8
    0/1 for a `label` volume, the mask), x fastest."""
    import nibabel as nib

    z0, y0, x0 = grid_origin_mm(shape_zyx, context.spacing)
    stand_in = axial_volume(np.zeros((1, 1, 1), np.int16), context.spacing, (x0, y0, z0),
                            description=f"synthetic{' nodule mask' if label else ''}: ctsynth {context.model}")
    if label:
        stand_in.set_data_dtype(np.uint8)
        stand_in.header["intent_code"] = nib.nifti1.intent_codes["label"]
    stand_in = stand_in.to_bytes()
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(stand_in))
    header.set_data_shape(shape_zyx[::-1])
    return header.binaryblock + stand_in[len(header.binaryblock):int(header["vox_offset"])]


def _nifti_volume(image: np.ndarray, context: OutputContext, mask: Mask = None) -> Slab:
    """int16 HU in NIfTI's (x, y, z) order, in mm, with the DICOM output's grid
    as a RAS affine; the first slab starts with the header, so the slabs'
    bytes joined are the .nii file. The mask: a uint8 label .nii of the same
    grid, split the same way."""
    header = _nifti_header(image.shape[1:], context)
    label = None if mask is None else _nifti_header(image.shape[1:], context, label=True)

    def slab(z0: int, z1: int) -> Encoded:
        voxels = hounsfield(image[0, z0:z1], context.window).astype("<i2").tobytes()
        start = z0 == 0
        mask_part = b"" if mask is None else (label if start else b"") + mask[z0:z1].astype(np.uint8).tobytes()
        return Encoded((header if start else b"") + voxels, (image.shape[0], z1 - z0, *image.shape[2:]), "int16",
                       mask_part)

    return slab


def _sliced(encode_array: Callable[[np.ndarray, OutputContext, Mask], Encoded]
            ) -> Callable[[np.ndarray, OutputContext, Mask], Slab]:
    """A raw format's slabs: the slab's slices encoded as an array of their own."""
    return lambda image, context, mask=None: lambda z0, z1: encode_array(
        image[:, z0:z1], context, None if mask is None else mask[z0:z1])


@dataclass(frozen=True)
class _Format:
    image: Callable[[np.ndarray, OutputContext, Mask], Encoded] | None  # 2D items; None: volumes only
    volume: Callable[[np.ndarray, OutputContext, Mask], Slab] | None  # 3D items; None: 2D only
    single_channel: bool

    @property
    def spatial_dims(self) -> tuple[int, ...]:
        return (2,) * (self.image is not None) + (3,) * (self.volume is not None)


FORMATS: dict[str, _Format] = {
    "float16": _Format(_float16, _sliced(_float16), False),
    "hu_int16": _Format(_hu_int16, _sliced(_hu_int16), False),
    "png8": _Format(_png(8), None, True),
    "png16": _Format(_png(16), None, True),
    "dicom": _Format(_dicom_image, _dicom_volume, True),
    "nifti": _Format(None, _nifti_volume, True),
}

# Bounds of what an encoding adds to the pixels: a DICOM slice's header (1.5
# KiB with an 8-character model reference, under 1.7 KiB with the longest) with
# its ZIP entries and deflate's worst case; the NIfTI header; a PNG's chunks
# and row filter bytes. A DICOM SEG: its header (3.1 KiB with the longest
# model reference) and, per frame (CT slice), its functional groups and
# references to the slice (0.7 KiB with pydicom's 64-character UIDs) besides
# its bit-packed pixels.
DICOM_SLICE_OVERHEAD = 2048
NIFTI_HEADER_BYTES = 352
PNG_OVERHEAD = 1024
SEG_OVERHEAD = 6144
SEG_FRAME_OVERHEAD = 1024
MASK_PNG_VALUE = 255  # a PNG mask's nodule pixels (background 0)


def size_bound(name: str, shape: tuple[int, ...], mask: bool = False) -> tuple[int, int]:
    """(fixed, per slice): an item of `shape` (C, *spatial) encoded as `name`,
    or a slab of n of its slices, takes at most fixed + n * per_slice bytes (a
    2D item is one slice), data and, with `mask`, its encoded mask together.
    A DICOM item's SEG covers the whole item and comes in one slab (the last),
    so it is counted in `fixed`."""
    channels, *spatial = shape
    plane = math.prod(spatial[-2:])
    depth = spatial[0] if len(spatial) == 3 else 1
    if name in ("png8", "png16"):
        fixed, per_slice = PNG_OVERHEAD + spatial[0], plane * (1 if name == "png8" else 2)
        return (2 * fixed, per_slice + plane) if mask else (fixed, per_slice)
    if name == "dicom":
        seg = SEG_OVERHEAD + depth * (SEG_FRAME_OVERHEAD + math.ceil(plane / 8)) if mask else 0
        return DICOM_SLICE_OVERHEAD + seg, 2 * plane + DICOM_SLICE_OVERHEAD
    header = NIFTI_HEADER_BYTES if name == "nifti" else 0
    return header * (1 + mask), 2 * channels * plane + plane * mask


def check_format(name: str, spatial_dims: int, channels: int) -> None:
    """INVALID_ARGUMENT naming `format` when a model's samples cannot be written as `name`."""
    if name not in FORMATS:
        raise InvalidArgument("format", f"unknown format {name!r}; use one of {', '.join(FORMATS)}")
    spec = FORMATS[name]
    if spatial_dims not in spec.spatial_dims:
        kind = "volumes" if spatial_dims == 3 else "2D images"
        raise InvalidArgument("format", f"{name} cannot hold {kind}; this model makes {spatial_dims}D samples")
    if spec.single_channel and channels != 1:
        raise InvalidArgument("format", f"{name} holds one channel; this model makes {channels}")


def _checked_mask(mask, image: np.ndarray) -> Mask:
    """An item's mask, (1, *spatial) as the image's (C, *spatial), as bool; INVALID_ARGUMENT naming `mask` else."""
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != (1, *image.shape[1:]):
        raise InvalidArgument("mask", f"shape {tuple(mask.shape)} does not fit an item of shape {image.shape}; "
                                      f"expected {(1, *image.shape[1:])}")
    return _binary(mask[0])


def encode(name: str, image: np.ndarray, context: OutputContext, mask: np.ndarray | None = None) -> Encoded:
    """One item (C, *spatial) in [0, 1] as `name` (checked with `check_format`
    first), with its mask (1, *spatial), a map > 0.5 at the nodule, in
    `Encoded.mask` in the same format (empty for no mask)."""
    image = np.asarray(image, dtype=np.float32)
    mask = _checked_mask(mask, image)
    if image.ndim == 3:
        return FORMATS[name].image(image, context, mask)
    return FORMATS[name].volume(image, context, mask)(0, image.shape[1])


def encode_slabs(name: str, image: np.ndarray, context: OutputContext, slices: int,
                 mask: np.ndarray | None = None) -> Iterator[tuple[int, Encoded]]:
    """A volume (C, Z, Y, X) as (z0, slab) of at most `slices` slices each, in
    order, encoded one at a time: joined on z they are `encode`'s item. With
    the whole volume's `mask` (1, Z, Y, X), each slab's `mask` holds its part:
    raw and NIfTI masks split like the data, DICOM's SEG whole in the last slab."""
    image = np.asarray(image, dtype=np.float32)
    slab, depth = FORMATS[name].volume(image, context, _checked_mask(mask, image)), image.shape[1]  # checked now
    return ((z0, slab(z0, min(depth, z0 + slices))) for z0 in range(0, depth, slices))

