"""Pure array steps that turn a Hounsfield volume into training slices and cubes.

Every function here takes and returns arrays (no files, no DICOM), so each
step is tested on known inputs. Conventions:

- volumes are (z, y, x), slices (rows, cols), stacks of slices (n, rows, cols);
- spacings are in mm and follow the same axis order;
- intensities are windowed to [0, 1] before any resampling, so air is 0 and
  padding with 0 adds air;
- labels are small non-negative integers (0 = background); masks are labels;
- resampling uses pixel-centre alignment (`align_corners=False`) everywhere so
  image and mask grids coincide.

The procedures follow the research we implement: HU clipped to [-1000, 400]
and scaled to [0, 1], bilinear resize for images and nearest-neighbour for
masks with a minimum nodule size, a low-intensity filter, tumour/non-tumour
balancing by sampling (seed 000, sec. 3), and isotropic cubes (seed 001, III-B).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

VIEWS = ("axial", "coronal", "sagittal")
SPLITS = ("train", "validation", "test")
SPLIT_TOLERANCE = 1e-6


def window(hu: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Clip HU to [lo, hi] and scale linearly to [0, 1] (float32)."""
    if not lo < hi:
        raise ValueError(f"window minimum {lo} must be below its maximum {hi}")
    out = np.clip(np.asarray(hu, dtype=np.float32), lo, hi)
    out -= np.float32(lo)
    out *= np.float32(1.0 / (hi - lo))
    return out


# --- geometry -----------------------------------------------------------------


def fitted_shape(shape: Sequence[int], spacing: Sequence[float], size: int) -> tuple[int, ...]:
    """Grid that keeps the physical aspect and makes the longest extent `size`.

    Resampling to this shape and then padding to `size` along every axis
    gives a square (or cube) whose pixels are isotropic: nothing is squashed.
    """
    extents = [n * s for n, s in zip(shape, spacing)]
    longest = max(extents)
    return tuple(max(1, min(size, round(e * size / longest))) for e in extents)


def fitted_spacing(shape: Sequence[int], spacing: Sequence[float], size: int) -> float:
    """The pixel (voxel) size in mm of the `fitted_shape` grid padded to `size`:
    the longest physical extent over `size`, the same along every axis."""
    return max(n * s for n, s in zip(shape, spacing)) / size


def isotropic_shape(shape: Sequence[int], spacing: Sequence[float], target_mm: float) -> tuple[int, ...]:
    """Grid with `target_mm` voxels covering the same physical extent."""
    return tuple(max(1, round(n * s / target_mm)) for n, s in zip(shape, spacing))


def pad_to(array: np.ndarray, shape: Sequence[int], fill: float = 0) -> np.ndarray:
    """Pad the trailing axes symmetrically around the centre up to `shape`.

    The extra pixel of an odd difference goes after, so the centre stays put.
    """
    lead = array.ndim - len(shape)
    pads = [(0, 0)] * lead
    for n, target in zip(array.shape[lead:], shape):
        if n > target:
            raise ValueError(f"cannot pad axis of length {n} down to {target}")
        before = (target - n) // 2
        pads.append((before, target - n - before))
    return np.pad(array, pads, mode="constant", constant_values=fill)


def view_planes(volume: np.ndarray, view: str) -> np.ndarray:
    """The (n, rows, cols) stack of `view` slices of a (z, y, x) volume, as a view.

    Coronal and sagittal planes are flipped so that the superior end (high z
    index: slices are sorted along the slice normal, feet to head) is at the top.
    """
    if view == "axial":
        return volume
    if view == "coronal":
        return volume.transpose(1, 0, 2)[:, ::-1, :]
    if view == "sagittal":
        return volume.transpose(2, 0, 1)[:, ::-1, :]
    raise ValueError(f"unknown view {view!r}; use one of {VIEWS}")


def plane_spacing(spacing: Sequence[float], view: str) -> tuple[float, float]:
    """(row, col) pixel spacing of the planes `view_planes` returns."""
    z, y, x = spacing
    return {"axial": (y, x), "coronal": (z, x), "sagittal": (z, y)}[view]


# --- resampling -----------------------------------------------------------------


def resize_image(images: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Bilinear, anti-aliased resize of (..., H, W) float images to `shape` (float32)."""
    lead = images.shape[:-2]
    batch = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32).reshape(-1, 1, *images.shape[-2:]))
    out = F.interpolate(batch, size=tuple(shape), mode="bilinear", align_corners=False, antialias=True)
    return out.numpy().reshape(*lead, *shape)


def resample_volume(volume: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Linear, anti-aliased resample of a (z, y, x) float volume to `shape` (float32).

    Separable, with the 2-D slices' kernel: each axial plane is resized
    with `resize_image`, then the z axis by treating the stack as one
    (z, y*x) image. Linear interpolation when enlarging, a widened triangle
    filter when shrinking, so a 16x reduction to a small cube does not alias.
    """
    depth, rows, cols = shape
    planes = np.asarray(volume, dtype=np.float32)
    if planes.shape[1:] != (rows, cols):
        planes = resize_image(planes, (rows, cols))
    if planes.shape[0] == depth:
        return planes
    columns = planes.reshape(1, planes.shape[0], rows * cols)
    return resize_image(columns, (depth, rows * cols)).reshape(depth, rows, cols)


def resize_labels(labels: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resize of an n-d integer array (pixel-centre aligned)."""
    return labels[np.ix_(*_nearest_index(labels.shape, shape))]


def _nearest_index(before: Sequence[int], after: Sequence[int]) -> list[np.ndarray]:
    """Per axis, the source index each output position samples."""
    return [np.minimum(((np.arange(t) + 0.5) * n / t).astype(np.intp), n - 1) for n, t in zip(before, after)]


def resize_mask(labels: np.ndarray, shape: Sequence[int], min_pixels: int) -> np.ndarray:
    """Nearest resize of an n-d label mask that keeps small nodules visible.

    Every connected component (full connectivity) that had pixels before and
    has fewer than `min_pixels` after (vanished ones included) gets a disk
    (a ball in 3-D) of `min_pixels` pixels painted at its scaled centroid,
    with the component's highest label. `min_pixels=0` is a plain nearest
    resize. Components are found in the labels' bounding box only, so a
    large volume with small nodules stays cheap.
    """
    labels = np.asarray(labels)
    index = _nearest_index(labels.shape, shape)
    out = labels[np.ix_(*index)]
    box = _bounding_box(labels) if min_pixels > 0 else None
    if box is None:
        return out
    crop = labels[box]
    components, count = ndimage.label(crop > 0, ndimage.generate_binary_structure(crop.ndim, crop.ndim))
    # The output pixels that sample inside the box, as box coordinates.
    inside = [i[(i >= b.start) & (i < b.stop)] - b.start for i, b in zip(index, box)]
    after = np.bincount(components[np.ix_(*inside)].ravel(), minlength=count + 1)
    small = np.flatnonzero(after[1:] < min_pixels) + 1
    if not small.size:
        return out
    values = ndimage.maximum(crop, components, small)
    centres = ndimage.center_of_mass(crop > 0, components, small)
    scale = np.array(shape) / np.array(labels.shape)
    offset = np.array([b.start for b in box])
    for value, centre in zip(values, centres):
        _paint_ball(out, (np.array(centre) + offset + 0.5) * scale - 0.5, min_pixels, value)
    return out


def _bounding_box(labels: np.ndarray) -> tuple[slice, ...] | None:
    """Slices around the non-zero labels, None if there are none.

    Each axis is searched inside the range already found for the previous
    ones, so a few nodule slices in a large volume cost little more than one pass.
    """
    box: list[slice] = []
    for axis in range(labels.ndim):
        region = labels[tuple(box)]
        hits = np.flatnonzero(region.any(axis=tuple(a for a in range(labels.ndim) if a != axis)))
        if not hits.size:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def _paint_ball(out: np.ndarray, centre: np.ndarray, count: int, value) -> None:
    """Set the `count` pixels nearest to `centre` (raster order breaks ties)."""
    centre = np.clip(centre, 0, np.array(out.shape) - 1)
    # Even with the centre in a corner the window holds the `count` nearest pixels.
    radius = math.ceil(2 * count ** (1 / out.ndim)) + 1
    lo = np.maximum(np.floor(centre).astype(int) - radius, 0)
    hi = np.minimum(np.floor(centre).astype(int) + radius + 1, out.shape)
    grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1)
    distance = ((grid - centre) ** 2).sum(-1).ravel()
    nearest = grid.reshape(-1, out.ndim)[np.argsort(distance, kind="stable")[:count]]
    out[tuple(nearest.T)] = value


def volume_to_cube(volume: np.ndarray, spacing: Sequence[float], size: int) -> tuple[np.ndarray, float]:
    """A windowed (z, y, x) volume as an isotropic size³ cube, and its voxel size in mm.

    Seed 001 resamples to isotropic voxels and then to 128³. We do both in
    one anti-aliased resample, straight to the isotropic spacing at which the
    longest physical extent spans `size` voxels, then pad the shorter axes with
    air symmetrically around the centre. Padding (not cropping, not
    stretching) keeps every voxel of anatomy at its true aspect; one resample
    instead of two interpolates once and never holds a full-resolution
    isotropic copy in memory.
    """
    shape = fitted_shape(volume.shape, spacing, size)
    return pad_to(resample_volume(volume, shape), (size,) * 3), fitted_spacing(volume.shape, spacing, size)


def mask_to_cube(labels: np.ndarray, spacing: Sequence[float], size: int, min_pixels: int) -> np.ndarray:
    """The label volume on the same cube grid as `volume_to_cube`, nodules kept visible."""
    shape = fitted_shape(labels.shape, spacing, size)
    return pad_to(resize_mask(labels, shape, min_pixels), (size,) * 3)


# --- selection -----------------------------------------------------------------


def slice_means(images: np.ndarray) -> np.ndarray:
    """Mean windowed intensity of each slice of an (n, rows, cols) stack."""
    return images.reshape(len(images), -1).mean(axis=1, dtype=np.float64).astype(np.float32)


def balance(has_nodule: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a balanced subset: every slice of the rarer class and
    as many of the other class, sampled without replacement.

    With tumour slices the rarer one, all of them are kept (seed 000, sec. 3.3).
    A group with only one class has nothing to balance against and is kept
    whole, so unannotated sources keep all their slices.
    """
    has_nodule = np.asarray(has_nodule, dtype=bool)
    tumour, normal = np.flatnonzero(has_nodule), np.flatnonzero(~has_nodule)
    if tumour.size == 0 or normal.size == 0:
        return np.arange(has_nodule.size)
    rare, common = (tumour, normal) if tumour.size <= normal.size else (normal, tumour)
    sampled = rng.choice(common, size=rare.size, replace=False)
    return np.sort(np.concatenate([rare, sampled]))


def check_split(fractions: Sequence[float]) -> None:
    """ValueError unless `fractions` are three finite numbers >= 0 summing to 1."""
    if len(fractions) != len(SPLITS):
        raise ValueError(f"need {len(SPLITS)} fractions ({', '.join(SPLITS)}), got {len(fractions)}")
    if not all(math.isfinite(f) and f >= 0 for f in fractions):
        raise ValueError(f"fractions must be finite and >= 0, got {tuple(fractions)}")
    if abs(sum(fractions) - 1) > SPLIT_TOLERANCE:
        raise ValueError(f"fractions must sum to 1, got {sum(fractions)}")


def split_counts(n: int, fractions: Sequence[float]) -> tuple[int, ...]:
    """Patients per split: largest-remainder rounding of n * fractions, then
    every split with a positive fraction gets at least one patient when there
    are enough patients (so 3 patients give a non-empty test split)."""
    check_split(fractions)
    raw = [n * f for f in fractions]
    counts = [math.floor(r) for r in raw]
    by_remainder = sorted(range(len(raw)), key=lambda i: (counts[i] - raw[i], i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    wanted = [i for i, f in enumerate(fractions) if f > 0]
    if n >= len(wanted):
        for i in wanted:
            if counts[i] == 0:
                donor = max(range(len(counts)), key=lambda j: counts[j])
                counts[donor] -= 1
                counts[i] += 1
    return tuple(counts)


def split_patients(patients: Sequence[str], fractions: Sequence[float], seed: int) -> dict[str, str]:
    """Seeded patient-level split: each patient lands in exactly one split."""
    unique = sorted(set(patients))
    order = np.random.default_rng(seed).permutation(len(unique))
    assignment = {}
    start = 0
    for name, count in zip(SPLITS, split_counts(len(unique), fractions)):
        for i in order[start : start + count]:
            assignment[unique[i]] = name
        start += count
    return assignment
