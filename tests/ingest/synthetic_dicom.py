"""Small synthetic CT series written with pydicom, for the non-LIDC paths.

Each series is a chest-like volume: air outside, a soft-tissue body, two
lungs and a bright ball, so windowed slices have realistic means and a
resize has something to blur. Everything is deterministic from the arguments.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

INTERCEPT = -1024.0


def chest_volume(slices: int, rows: int, cols: int) -> np.ndarray:
    """(z, y, x) HU: body ellipse at 40 HU, lungs at -850 HU, a 300 HU ball, air elsewhere."""
    z, y, x = np.meshgrid(np.linspace(-1, 1, slices), np.linspace(-1, 1, rows), np.linspace(-1, 1, cols),
                          indexing="ij")
    hu = np.full((slices, rows, cols), -1000.0)
    hu[(x / 0.9) ** 2 + (y / 0.75) ** 2 <= 1] = 40.0
    for side in (-0.4, 0.4):
        hu[((x - side) / 0.3) ** 2 + (y / 0.55) ** 2 <= 1] = -850.0
    hu[(x - 0.4) ** 2 + y**2 + z**2 <= 0.15**2] = 300.0
    return hu


def uid(*parts) -> str:
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def write_series(folder: Path, *, patient: str = "P1", series: str | None = None, slices: int = 6,
                 rows: int = 48, cols: int = 48, spacing: tuple[float, float, float] = (2.5, 0.8, 0.8),
                 z0: float = -50.0, hu: np.ndarray | None = None, modality: str = "CT",
                 orientation=(1, 0, 0, 0, 1, 0), positions: list[float] | None = None,
                 pixel_spacings: list[tuple[float, float]] | None = None) -> list[Path]:
    """Write one series as `folder/slice_NNN.dcm`, returns the paths in slice order.

    `positions` overrides the z of each slice (for gaps and duplicates),
    `pixel_spacings` the PixelSpacing of each slice (for inconsistencies).
    """
    folder.mkdir(parents=True, exist_ok=True)
    series = series or uid(patient, "series", folder.name)
    volume = chest_volume(slices, rows, cols) if hu is None else hu
    positions = positions if positions is not None else [z0 + k * spacing[0] for k in range(slices)]
    paths = []
    for k, z in enumerate(positions):
        ds = _image(patient, series, k, z, volume[min(k, len(volume) - 1)], spacing, modality, orientation)
        if pixel_spacings is not None:
            ds.PixelSpacing = list(pixel_spacings[k])
        path = folder / f"slice_{k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _image(patient, series, k, z, hu, spacing, modality, orientation) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = uid(series, k)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.PatientName = modality, patient, f"TEST^{patient}"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid(patient, "study"), series
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = [-20.0, -20.0, float(z)]
    ds.ImageOrientationPatient = list(orientation)
    ds.PixelSpacing = [spacing[1], spacing[2]]
    ds.SliceThickness = spacing[0]
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, INTERCEPT, "HU"
    ds.PixelData = np.rint(hu - INTERCEPT).astype(np.int16).tobytes()
    return ds


def declare_transfer_syntax(path: Path, syntax_uid: str) -> None:
    """Rewrite `path` claiming a compressed syntax over garbage pixel bytes (undecodable)."""
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = syntax_uid
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\x4f garbage, not a codestream" * 4])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)


def claim_shape(path: Path, rows: int, columns: int) -> None:
    """Rewrite `path`'s header to claim `rows` x `columns` pixels, keeping its (smaller) pixel data."""
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = rows, columns
    ds.save_as(path, enforce_file_format=True)
