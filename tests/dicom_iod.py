"""What the DICOM standard requires of a CT Image file, to check ctsynth's against.

`CT_IMAGE_MODULES` lists, per module of the CT Image IOD (PS3.3 A.3, the
modules every CT image must have), its Type 1 attributes (present, with a
value) and Type 2 attributes (present, possibly empty), including the
conditional ones whose condition a CT image always meets. `ct_image_problems`
checks a dataset against it in Python; `dciodvfy_problems` asks dicom3tools'
validator, where it is installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pydicom
from pydicom.uid import CTImageStorage

# module: (Type 1, Type 2)
CT_IMAGE_MODULES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "File Meta Information": (("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID",
                               "ImplementationClassUID"), ()),
    "Patient": ((), ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")),
    "General Study": (("StudyInstanceUID",),
                      ("StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber")),
    # PatientPosition is 2C: required for CT Image Storage without a Patient Orientation Code Sequence.
    "General Series": (("Modality", "SeriesInstanceUID"), ("SeriesNumber", "PatientPosition")),
    "Frame of Reference": (("FrameOfReferenceUID",), ("PositionReferenceIndicator",)),
    "General Equipment": ((), ("Manufacturer",)),
    "General Image": ((), ("InstanceNumber",)),
    "Image Plane": (("PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient"), ("SliceThickness",)),
    # PixelData is 1C: required unless a Pixel Data Provider URL is given.
    "Image Pixel": (("SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated",
                     "BitsStored", "HighBit", "PixelRepresentation", "PixelData"), ()),
    "CT Image": (("ImageType", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated", "BitsStored",
                  "HighBit", "RescaleIntercept", "RescaleSlope"), ("KVP", "AcquisitionNumber")),
    "SOP Common": (("SOPClassUID", "SOPInstanceUID"), ()),
}


def ct_image_problems(ds: pydicom.Dataset) -> list[str]:
    """Every way `ds` falls short of the CT Image IOD's required attributes and values."""
    problems = []
    for module, (type1, type2) in CT_IMAGE_MODULES.items():
        where = ds.file_meta if module == "File Meta Information" else ds
        for keyword in type1:
            if keyword not in where:
                problems.append(f"{module}: Type 1 {keyword} is missing")
            elif where[keyword].is_empty:
                problems.append(f"{module}: Type 1 {keyword} is empty")
        problems += [f"{module}: Type 2 {keyword} is missing" for keyword in type2 if keyword not in where]
    if ds.get("SOPClassUID") != CTImageStorage:
        problems.append(f"SOP Common: SOPClassUID {ds.get('SOPClassUID')} is not CT Image Storage")
    if ds.get("Modality") != "CT":
        problems.append(f"General Series: Modality {ds.get('Modality')!r} is not CT")
    image_type = list(ds.get("ImageType", []))
    if len(image_type) < 3 or image_type[2] not in ("AXIAL", "LOCALIZER"):
        problems.append(f"CT Image: ImageType {image_type} needs a third value, AXIAL or LOCALIZER")
    if (ds.get("SamplesPerPixel"), ds.get("PhotometricInterpretation")) not in ((1, "MONOCHROME1"),
                                                                               (1, "MONOCHROME2")):
        problems.append("CT Image: one sample per pixel, MONOCHROME1 or MONOCHROME2")
    if ds.get("BitsAllocated") != 16 or ds.get("HighBit") != ds.get("BitsStored", 0) - 1:
        problems.append("CT Image: BitsAllocated 16 and HighBit = BitsStored - 1")
    if len(ds.get("ImageOrientationPatient", [])) != 6 or len(ds.get("ImagePositionPatient", [])) != 3:
        problems.append("Image Plane: orientation needs 6 values and position 3")
    return problems


def dciodvfy_problems(path: Path) -> list[str] | None:
    """The errors and warnings of dicom3tools' IOD validator; None where it is not installed."""
    validator = shutil.which("dciodvfy")
    if validator is None:
        return None
    run = subprocess.run([validator, str(path)], capture_output=True, text=True, check=False)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith(("Error", "Warning"))]
