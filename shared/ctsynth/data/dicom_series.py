"""Find the CT series in a DICOM tree and load one as a Hounsfield volume.

Real collections contain stray files, broken transfers and odd series. A
problem with one file or one series is returned as a `SeriesProblem` and
that file or series is left out; nothing here raises for bad data, so one
bad series never stops a large ingest.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, pixel_array
from pydicom.pixels.utils import get_expected_length, get_nr_frames

# Files whose names end like this are expected to be DICOM, so failing to
# read one is reported; any other unreadable file is simply not DICOM.
DICOM_SUFFIXES = (".dcm", ".dicom")
GAP_FACTOR = 1.5  # a step above GAP_FACTOR x the median spacing means missing slices
DUPLICATE_TOLERANCE_MM = 1e-3
SPACING_TOLERANCE_MM = 1e-3
ORIENTATION_TOLERANCE = 1e-4
HEADER_TAGS = ("SeriesInstanceUID", "StudyInstanceUID", "PatientID", "Modality")
GEOMETRY_TAGS = ("Rows", "Columns", "PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient")
PIXEL_TAGS = ("SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated")  # what the pixel data size needs
# Limits on what headers may make a worker allocate: CT slices are 512² (1024²
# on high-resolution scanners); 4096 slices of 512² are 2**30 voxels, 4 GiB as float32.
MAX_SLICE_PIXELS = 4096 * 4096
MAX_SERIES_VOXELS = 2**30


@dataclass(frozen=True)
class SeriesProblem:
    """Why a file or series was left out; `subject` is a path relative to the source root."""

    subject: str
    reason: str


@dataclass(frozen=True)
class SeriesRef:
    """One series found in the tree: enough to load it later, in any process."""

    series_uid: str
    study_uid: str
    patient_id: str
    modality: str
    root: str
    files: tuple[str, ...]

    @property
    def name(self) -> str:
        """The series' folder relative to the source root (its UID if that is the root), for messages."""
        folder = os.path.relpath(os.path.commonpath([os.path.dirname(f) for f in self.files]), self.root)
        return self.series_uid if folder == "." else folder

    def relative(self, path: str) -> str:
        return os.path.relpath(path, self.root)


@dataclass(frozen=True, eq=False)
class CtSeries:
    """A loaded series: HU volume (z, y, x) sorted along the slice normal, feet to head."""

    hu: np.ndarray  # (z, y, x) float32
    spacing: tuple[float, float, float]  # (z, y, x) mm; z is the median slice step
    z_mm: np.ndarray  # (z,) ImagePositionPatient z of each slice, in volume order
    origin_mm: tuple[float, float, float]  # ImagePositionPatient (LPS x, y, z) of the first slice
    patient_id: str
    study_uid: str
    series_uid: str


def find_series(files: Iterable[Path], root: Path) -> tuple[list[SeriesRef], list[SeriesProblem]]:
    """Group DICOM files by SeriesInstanceUID, reading headers only.

    Files that are not DICOM are skipped silently unless their name says they
    should be (`.dcm`); unreadable DICOM files become problems.
    """
    groups: dict[str, list[tuple[str, pydicom.Dataset]]] = defaultdict(list)
    problems = []
    for path in sorted(str(f) for f in files):
        subject = os.path.relpath(path, root)
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(HEADER_TAGS))
        except InvalidDicomError:
            if path.lower().endswith(DICOM_SUFFIXES):
                problems.append(SeriesProblem(subject, "not a readable DICOM file"))
            continue
        except Exception as exc:  # pydicom raises many types for damaged files
            problems.append(SeriesProblem(subject, f"corrupt or truncated file: {_one_line(exc)}"))
            continue
        uid = str(header.get("SeriesInstanceUID", "")).strip()
        if not uid:
            problems.append(SeriesProblem(subject, "no SeriesInstanceUID (truncated, or not an image)"))
            continue
        groups[uid].append((path, header))
    refs = [
        SeriesRef(
            series_uid=uid,
            study_uid=str(members[0][1].get("StudyInstanceUID", "")).strip(),
            patient_id=str(members[0][1].get("PatientID", "")).strip() or "unknown",
            modality=str(members[0][1].get("Modality", "")).strip(),
            root=str(root),
            files=tuple(path for path, _ in members),
        )
        for uid, members in groups.items()
    ]
    return sorted(refs, key=lambda r: (r.patient_id, r.series_uid)), problems


def load_series(ref: SeriesRef) -> tuple[CtSeries | None, list[SeriesProblem]]:
    """Validate and load a series; None (with the reasons) when it is unusable.

    Unreadable or undecodable files, and files whose header claims more
    pixels than they hold or than the limits allow, are left out; a series
    whose files disagree on geometry, that is not CT, or that has missing
    slices is left out whole. Duplicated positions keep the slice with the
    lowest InstanceNumber that decodes, as pylidc does.
    """
    if ref.modality != "CT":
        return None, [SeriesProblem(ref.name, f"modality {ref.modality or 'missing'!r} is not CT")]
    problems: list[SeriesProblem] = []
    headers = []
    for path in ref.files:
        try:
            header, pixel_bytes = _read_header(path)
            reason = _header_problem(header, pixel_bytes)
        except Exception as exc:  # pydicom raises many types for damaged files and values
            reason = f"corrupt or truncated file: {_one_line(exc)}"
        if reason:
            problems.append(SeriesProblem(ref.relative(path), reason))
        else:
            headers.append((path, header))
    if not headers:
        first = problems[0]
        return None, problems + [SeriesProblem(ref.name, f"no usable file; {first.subject}: {first.reason}")]
    inconsistency = _geometry_problem(ref, headers)
    if inconsistency:
        return None, problems + [SeriesProblem(ref.name, inconsistency)]

    normal = _slice_normal(headers[0][1])
    ordered = sorted(
        headers,
        key=lambda item: (_position(item[1], normal), int(item[1].get("InstanceNumber", 0) or 0), item[0]),
    )
    copies = _group_positions(ordered, normal)
    rows, columns = int(headers[0][1].Rows), int(headers[0][1].Columns)
    if len(copies) * rows * columns > MAX_SERIES_VOXELS:
        return None, problems + [SeriesProblem(ref.name, (
            f"{len(copies)} slices of {rows} x {columns} pixels are {len(copies) * rows * columns} voxels, "
            f"above the limit of {MAX_SERIES_VOXELS}"))]

    hu, decoded, failures, duplicates = _decode(copies)
    if duplicates:
        dropped = ", ".join(ref.relative(p) for p in duplicates)
        problems.append(SeriesProblem(ref.name, f"duplicated slice positions; kept one, dropped {dropped}"))
    if not decoded:
        return None, problems + [SeriesProblem(ref.name, f"no slice could be decoded; {failures[0][1]}")]
    problems += [SeriesProblem(ref.relative(path), reason) for path, reason in failures]

    positions = np.array([_position(ds, normal) for _, ds in decoded])
    gap = _gap_problem(positions)
    if gap:
        return None, problems + [SeriesProblem(ref.name, gap)]

    first = decoded[0][1]
    row_mm, col_mm = (float(v) for v in first.PixelSpacing)
    step = float(np.median(np.diff(positions))) if len(positions) > 1 else _thickness(first)
    series = CtSeries(
        hu=hu,
        spacing=(step, row_mm, col_mm),
        z_mm=np.array([float(ds.ImagePositionPatient[2]) for _, ds in decoded]),
        origin_mm=tuple(float(v) for v in first.ImagePositionPatient),
        patient_id=ref.patient_id,
        study_uid=ref.study_uid,
        series_uid=ref.series_uid,
    )
    return series, problems


def _read_header(path: str) -> tuple[pydicom.Dataset, int | None]:
    """The header without pixels, and how many bytes the file holds after the
    Pixel Data element's own header (None for compressed or deflated data,
    whose size says nothing about the decoded size)."""
    with open(path, "rb") as f:
        header = pydicom.dcmread(f, stop_before_pixels=True)
        syntax = header.get("file_meta", pydicom.Dataset()).get("TransferSyntaxUID")
        if syntax is None or not syntax.is_transfer_syntax or syntax.is_compressed or syntax.is_deflated:
            return header, None
        implicit_vr, _ = header.original_encoding
        element_header = 8 if implicit_vr else 12  # tag, (VR, reserved,) 32-bit length
        return header, max(os.fstat(f.fileno()).st_size - f.tell() - element_header, 0)


def _header_problem(header: pydicom.Dataset, pixel_bytes: int | None) -> str | None:
    """Why a file cannot give a slice, judged from its header alone, so that a
    header claiming an absurd size is refused before anything is allocated."""
    missing = [tag for tag in GEOMETRY_TAGS + PIXEL_TAGS if header.get(tag) is None]
    if missing:
        return f"truncated or incomplete header: lacks {', '.join(missing)}"
    frames = get_nr_frames(header, warn=False)
    if frames != 1:
        return f"{frames} frames in one file; only single-frame slices are loaded"
    rows, columns = int(header.Rows), int(header.Columns)
    expected = get_expected_length(header)
    if pixel_bytes is not None and pixel_bytes < expected:
        return (f"header claims {rows} x {columns} pixels of {header.BitsAllocated} bits "
                f"({expected} bytes of pixel data) but the file holds only {pixel_bytes} bytes")
    if rows * columns > MAX_SLICE_PIXELS:
        return f"{rows} x {columns} pixels per slice is above the limit of {MAX_SLICE_PIXELS} pixels"
    return None


def _decode(copies):
    """Decode one slice per position straight into one preallocated HU volume.

    The copies at a position are tried in order until one decodes, so a
    damaged duplicate never displaces a good one; the copies after it are
    dropped undecoded. Pixels are read from the file, not kept on the header
    datasets, so the volume is the only full-size copy. Returns the volume,
    the (path, header) pairs that decoded, (path, reason) for those that did
    not, and the paths of the dropped duplicates.
    """
    first = copies[0][0][1]
    hu = np.empty((len(copies), first.Rows, first.Columns), dtype=np.float32)
    decoded, failures, dropped = [], [], []
    for group in copies:
        for k, (path, header) in enumerate(group):
            try:
                hu[len(decoded)] = apply_modality_lut(pixel_array(path), header)
            except Exception as exc:  # decoders raise many types
                failures.append((path, f"cannot decode pixel data ({_syntax_name(header)}): {_one_line(exc)}"))
            else:
                decoded.append((path, header))
                dropped += [p for p, _ in group[k + 1 :]]
                break
    return hu[: len(decoded)], decoded, failures, dropped


def _geometry_problem(ref: SeriesRef, datasets: list[tuple[str, pydicom.Dataset]]) -> str | None:
    """Why the files of a series cannot form one volume, or None."""
    first_path, first = datasets[0]
    checks = (
        ("Rows x Columns", lambda ds: np.array([ds.Rows, ds.Columns]), 0),
        ("PixelSpacing", lambda ds: np.array(ds.PixelSpacing, dtype=float), SPACING_TOLERANCE_MM),
        ("ImageOrientationPatient", lambda ds: np.array(ds.ImageOrientationPatient, dtype=float),
         ORIENTATION_TOLERANCE),
    )
    for label, value, tolerance in checks:
        reference = value(first)
        for path, ds in datasets[1:]:
            if value(ds).shape != reference.shape or not np.allclose(value(ds), reference, rtol=0, atol=tolerance):
                return (f"inconsistent {label} within the series: {value(ds).tolist()} in "
                        f"{ref.relative(path)} vs {reference.tolist()} in {ref.relative(first_path)}")
    return None


def _slice_normal(ds: pydicom.Dataset) -> np.ndarray:
    orientation = np.array(ds.ImageOrientationPatient, dtype=float)
    return np.cross(orientation[:3], orientation[3:])


def _position(ds: pydicom.Dataset, normal: np.ndarray) -> float:
    """Distance of the slice along the normal: the sort key that works for any orientation."""
    return float(np.dot(np.array(ds.ImagePositionPatient, dtype=float), normal))


def _group_positions(ordered, normal):
    """The sorted (path, header) pairs grouped by slice position, each group in preference order."""
    groups = [[ordered[0]]]
    for item in ordered[1:]:
        if abs(_position(item[1], normal) - _position(groups[-1][0][1], normal)) < DUPLICATE_TOLERANCE_MM:
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


def _gap_problem(positions: np.ndarray) -> str | None:
    if len(positions) < 3:
        return None
    steps = np.diff(positions)
    median = float(np.median(steps))
    worst = int(np.argmax(steps))
    if steps[worst] > GAP_FACTOR * median:
        return (f"missing slices: a gap of {steps[worst]:.2f} mm after position {positions[worst]:.2f} mm "
                f"(median spacing {median:.2f} mm)")
    return None


def _thickness(ds: pydicom.Dataset) -> float:
    """The z extent of a lone slice: SliceThickness, or 1 mm if it is not recorded."""
    try:
        return float(ds.SliceThickness) or 1.0
    except (AttributeError, TypeError, ValueError):
        return 1.0


def _syntax_name(ds: pydicom.Dataset) -> str:
    uid = ds.get("file_meta", pydicom.Dataset()).get("TransferSyntaxUID")
    return uid.name if uid else "unknown transfer syntax"


def _one_line(exc: Exception) -> str:
    """Decoder messages span lines and tabs; a warning is one line."""
    return " ".join(str(exc).split())
