"""CT Image Storage objects that carry every attribute the CT Image IOD requires.

Every CT file ctsynth writes (synthetic samples in `sampling.formats`,
phantom studies in `data.phantom`) is built here, so the IOD's modules
(DICOM PS3.3 A.3: Patient, General Study, General Series, Frame of
Reference, General Equipment, General Image, Image Plane, Image Pixel,
CT Image, SOP Common) get each Type 1 attribute with a value and each
Type 2 attribute at least empty in one place; callers supply only what
differs: identity, UIDs, pixels and geometry.

Geometry is DICOM's patient coordinate system (LPS, mm) with axial slices
of a supine, head-first patient: columns run along +x (the patient's left),
rows along +y (posterior), slices along +z (superior).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pydicom.valuerep import DSfloat

AXIAL = (1, 0, 0, 0, 1, 0)  # ImageOrientationPatient: rows along +x, columns along +y


@dataclass(frozen=True)
class CtSeriesHeader:
    """What the slices of one series share."""

    patient_name: str
    patient_id: str
    study_uid: str
    series_uid: str
    frame_uid: str
    description: str  # SeriesDescription
    comments: str  # ImageComments
    created: datetime  # study, series and content date and time


@dataclass(frozen=True)
class SlicePlane:
    """Where one slice lies (Image Plane module)."""

    position_mm: tuple[float, float, float]  # centre of the first pixel, LPS
    pixel_mm: tuple[float, float]  # (between rows, between columns)
    thickness_mm: float | None = None  # None: unknown (Type 2, left empty)
    spacing_mm: float | None = None  # SpacingBetweenSlices of a volume's slices


def ct_slice(header: CtSeriesHeader, plane: SlicePlane, stored: np.ndarray, *, instance_uid: str, number: int,
             intercept: float = 0.0) -> Dataset:
    """Slice `number` (1-based) of a series: signed 16-bit `stored` values, HU = stored + intercept."""
    ds = ct_header(header, plane, stored.shape, instance_uid=instance_uid, number=number, intercept=intercept)
    ds.PixelData = np.ascontiguousarray(stored, dtype="<i2").tobytes()
    return ds


def ct_header(header: CtSeriesHeader, plane: SlicePlane, shape: tuple[int, int], *, instance_uid: str, number: int,
              intercept: float = 0.0) -> Dataset:
    """`ct_slice`'s dataset for a (rows, columns) slice without its Pixel Data:
    what objects derived from the slice (a segmentation) need to reference it."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = instance_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian

    ds.PatientName, ds.PatientID = header.patient_name, header.patient_id
    ds.PatientBirthDate = ds.PatientSex = ""
    ds.StudyInstanceUID, ds.StudyID = header.study_uid, "1"
    ds.AccessionNumber = ds.ReferringPhysicianName = ""
    date, time = header.created.strftime("%Y%m%d"), header.created.strftime("%H%M%S")
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.InstanceCreationDate = date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = ds.InstanceCreationTime = time
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "CT", header.series_uid, 1
    ds.SeriesDescription = header.description
    # Laterality (2C) is for paired parts: the chest is not one, so it stays absent.
    ds.BodyPartExamined, ds.PatientPosition = "CHEST", "HFS"  # supine, head first
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = header.frame_uid, ""
    ds.Manufacturer = "ctsynth"

    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.InstanceNumber, ds.AcquisitionNumber = number, 1
    ds.ImageComments = header.comments
    ds.ImagePositionPatient = [_ds(v) for v in plane.position_mm]
    ds.ImageOrientationPatient = list(AXIAL)
    ds.PixelSpacing = [_ds(v) for v in plane.pixel_mm]
    ds.SliceThickness = "" if plane.thickness_mm is None else _ds(plane.thickness_mm)
    if plane.spacing_mm is not None:
        ds.SpacingBetweenSlices = _ds(plane.spacing_mm)
    ds.SliceLocation = _ds(plane.position_mm[2])

    ds.KVP = ""  # no X-ray tube made these pixels
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = _ds(intercept), 1, "HU"
    ds.Rows, ds.Columns = shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    return ds


def _ds(value: float) -> DSfloat:
    """A decimal string that fits DICOM's 16 characters."""
    return DSfloat(float(value), auto_format=True)


def grid_origin_mm(shape: Sequence[int], spacing: Sequence[float]) -> tuple[float, ...]:
    """LPS position (same axis order as `shape`) of the first voxel's centre
    that centres a grid of `shape` voxels on the origin (the synthetic outputs' grid)."""
    return tuple(-(n - 1) / 2 * s for n, s in zip(shape, spacing, strict=True))
