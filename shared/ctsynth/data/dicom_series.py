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

# Files whose names end like this are expected to be DICOM, so failing to
# read one is reported; any other unreadable file is simply not DICOM.
DICOM_SUFFIXES = (".dcm", ".dicom")
GAP_FACTOR = 1.5  # a step above GAP_FACTOR x the median spacing means missing slices
DUPLICATE_TOLERANCE_MM = 1e-3
SPACING_TOLERANCE_MM = 1e-3
ORIENTATION_TOLERANCE = 1e-4
HEADER_TAGS = ("SeriesInstanceUID", "StudyInstanceUID", "PatientID", "Modality")
GEOMETRY_TAGS = ("Rows", "Columns", "PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient")


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

    Unreadable or undecodable files are left out; a series whose files
    disagree on geometry, that is not CT, or that has missing slices is left
    out whole. Duplicated positions keep the slice with the lowest
    InstanceNumber, as pylidc does.
    """
    if ref.modality != "CT":
        return None, [SeriesProblem(ref.name, f"modality {ref.modality or 'missing'!r} is not CT")]
    problems: list[SeriesProblem] = []
    headers = []
    for path in ref.files:
        try:
            headers.append((path, pydicom.dcmread(path, stop_before_pixels=True)))
        except Exception as exc:  # pydicom raises many types for damaged files
            problems.append(SeriesProblem(ref.relative(path), f"corrupt or truncated file: {_one_line(exc)}"))
    complete = []
    for path, header in headers:
        missing = [tag for tag in GEOMETRY_TAGS if header.get(tag) is None]
        if missing:
            reason = f"truncated or incomplete header: lacks {', '.join(missing)}"
            problems.append(SeriesProblem(ref.relative(path), reason))
        else:
            complete.append((path, header))
    headers = complete
    if not headers:
        return None, problems + [SeriesProblem(ref.name, "no readable files")]
    inconsistency = _geometry_problem(ref, headers)
    if inconsistency:
        return None, problems + [SeriesProblem(ref.name, inconsistency)]

    normal = _slice_normal(headers[0][1])
    ordered = sorted(
        headers,
        key=lambda item: (_position(item[1], normal), int(item[1].get("InstanceNumber", 0) or 0), item[0]),
    )
    ordered, duplicates = _drop_duplicates(ordered, normal)
    if duplicates:
        dropped = ", ".join(ref.relative(p) for p in duplicates)
        problems.append(SeriesProblem(ref.name, f"duplicated slice positions; kept one, dropped {dropped}"))

    hu, decoded, failures = _decode(ordered)
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
        patient_id=ref.patient_id,
        study_uid=ref.study_uid,
        series_uid=ref.series_uid,
    )
    return series, problems


def _decode(ordered):
    """Decode each file straight into one preallocated HU volume.

    Pixels are read from the file, not kept on the header datasets, so the
    volume is the only full-size copy. Returns the volume, the (path, header)
    pairs that decoded, and (path, reason) for those that did not.
    """
    first = ordered[0][1]
    hu = np.empty((len(ordered), first.Rows, first.Columns), dtype=np.float32)
    decoded, failures = [], []
    for path, header in ordered:
        try:
            hu[len(decoded)] = apply_modality_lut(pixel_array(path), header)
        except Exception as exc:  # decoders raise many types
            failures.append((path, f"cannot decode pixel data ({_syntax_name(header)}): {_one_line(exc)}"))
        else:
            decoded.append((path, header))
    return hu[: len(decoded)], decoded, failures


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


def _drop_duplicates(ordered, normal):
    """Keep the first slice at each position (lowest InstanceNumber); return kept and dropped paths."""
    kept, dropped = [ordered[0]], []
    for item in ordered[1:]:
        if abs(_position(item[1], normal) - _position(kept[-1][1], normal)) < DUPLICATE_TOLERANCE_MM:
            dropped.append(item[0])
        else:
            kept.append(item)
    return kept, dropped


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
