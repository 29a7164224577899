"""Nodule layouts and their masks.

A layout is a list of nodules, each a centre and a diameter in mm (and,
optionally, the LIDC reader ratings it should look like). `rasterise` draws
it as the binary mask a mask-conditioned model takes: every voxel whose
centre lies within diameter / 2 of the nodule's centre, in mm, so a nodule
is round on an anisotropic grid too. A nodule smaller than a voxel still
marks the voxel it is centred in: an empty mask would silently ask for no
nodule at all.

Centres are voxel indices in the array's axis order ([z,] row, col), or
positions in mm in the patient coordinates of the outputs (DICOM's LPS,
given as (x, y[, z]) like ImagePositionPatient), on the grid the outputs
use: centred on the origin, axial (`grid_origin_mm`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ctsynth.data.ct_image import grid_origin_mm
from ctsynth.errors import InvalidArgument

MAX_NODULES = 32  # LIDC-IDRI's most annotated scan has 23 nodules >= 3 mm
UNITS = ("voxel", "mm")
RATINGS = {"malignancy": 5, "texture": 5, "subtlety": 5, "calcification": 6, "sphericity": 5, "margin": 5,
           "lobulation": 5, "spiculation": 5, "internal_structure": 4}  # pylidc's characteristics and their ranges


@dataclass(frozen=True)
class Nodule:
    centre: tuple[float, ...]  # voxel ([z,] row, col) or LPS mm (x, y[, z]), as `units` says
    diameter_mm: float
    units: str = "voxel"
    characteristics: tuple[tuple[str, int], ...] = ()  # (rating name, 1-based value), e.g. (("texture", 5),)

    def rating(self, name: str) -> int | None:
        return dict(self.characteristics).get(name)

    def voxel_centre(self, shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
        """The centre as (fractional) voxel indices in the array's axis order."""
        if self.units == "voxel":
            return np.asarray(self.centre, float)
        origin = grid_origin_mm(shape, spacing)
        array_order = np.asarray(self.centre, float)[::-1]  # (x, y, z) -> (z, y, x)
        return (array_order - origin) / np.asarray(spacing, float)

    def to_json(self) -> dict:
        return {"centre": list(self.centre), "units": self.units, "diameter_mm": self.diameter_mm,
                "characteristics": dict(self.characteristics)}


def check_layout(nodules: Sequence[Nodule], shape: Sequence[int], spacing: Sequence[float],
                 body: np.ndarray | None = None) -> None:
    """INVALID_ARGUMENT naming `nodules[i].<field>` for a nodule this grid cannot hold.

    `body` (bool, `shape`), where known, is where a nodule may be centred
    (inside the body, or the lungs): a centre outside it is refused.
    """
    if len(nodules) > MAX_NODULES:
        raise InvalidArgument("nodules", f"{len(nodules)} nodules; at most {MAX_NODULES} per item")
    extent_mm = [n * s for n, s in zip(shape, spacing)]
    for i, nodule in enumerate(nodules):
        field = f"nodules[{i}]"
        if nodule.units not in UNITS:
            raise InvalidArgument(f"{field}.units", f"{nodule.units!r}; use one of {', '.join(UNITS)}")
        if len(nodule.centre) != len(shape) or not all(np.isfinite(nodule.centre)):
            raise InvalidArgument(f"{field}.centre", f"{list(nodule.centre)} needs {len(shape)} finite coordinates "
                                                     f"for a {len(shape)}D item")
        if not np.isfinite(nodule.diameter_mm) or nodule.diameter_mm <= 0:
            raise InvalidArgument(f"{field}.diameter_mm", f"{nodule.diameter_mm} must be > 0")
        if nodule.diameter_mm > min(extent_mm):
            raise InvalidArgument(f"{field}.diameter_mm", f"{nodule.diameter_mm:g} mm is larger than the item "
                                                          f"({' x '.join(f'{e:g}' for e in extent_mm)} mm)")
        for name, value in nodule.characteristics:
            if name not in RATINGS:
                raise InvalidArgument(f"{field}.characteristics", f"unknown rating {name!r}; known: "
                                                                  f"{', '.join(RATINGS)}")
            if not 1 <= value <= RATINGS[name]:
                raise InvalidArgument(f"{field}.characteristics", f"{name} {value} is outside 1-{RATINGS[name]}")
        voxel = nodule.voxel_centre(shape, spacing)
        index = np.round(voxel).astype(int)
        if any(not -0.5 <= v < n - 0.5 for v, n in zip(voxel, shape)):
            raise InvalidArgument(f"{field}.centre", f"{list(nodule.centre)} ({nodule.units}) is outside the "
                                                     f"{' x '.join(map(str, shape))} item")
        if body is not None and not body[tuple(index)]:
            raise InvalidArgument(f"{field}.centre", f"{list(nodule.centre)} ({nodule.units}) is outside the body")


def rasterise(nodules: Sequence[Nodule], shape: Sequence[int], spacing: Sequence[float],
              body: np.ndarray | None = None) -> np.ndarray:
    """The layout as a uint8 0/1 mask of `shape` (checked with `check_layout` first)."""
    check_layout(nodules, shape, spacing, body)
    mask = np.zeros(tuple(shape), np.uint8)
    spacing = np.asarray(spacing, float)
    for nodule in nodules:
        centre = nodule.voxel_centre(shape, spacing)
        radius = nodule.diameter_mm / 2
        # Only the box around the nodule is measured: a 512^3 grid stays cheap.
        lo = np.maximum(np.floor(centre - radius / spacing), 0).astype(int)
        hi = np.minimum(np.ceil(centre + radius / spacing) + 1, shape).astype(int)
        axes = np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi)), indexing="ij")
        distance2 = sum(((axis - c) * s) ** 2 for axis, c, s in zip(axes, centre, spacing))
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        mask[box] |= (distance2 <= radius ** 2).astype(np.uint8)
        mask[tuple(np.round(centre).astype(int))] = 1
    return mask
