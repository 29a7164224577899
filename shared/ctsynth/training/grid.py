"""The 4x4 sample grid written with every checkpoint (seed 004 shows such
grids): a fixed seed so grids of successive checkpoints are comparable."""

from __future__ import annotations

import io
from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image

from ctsynth.conditioning.layout import Nodule, rasterise
from ctsynth.models.base import Family

GRID = 4


@contextmanager
def unwrapped(family: Family):
    """The family with bare modules instead of DDP wrappers, so one rank can
    run a forward pass without the others (DDP forwards are collective)."""
    wrapped = dict(family.modules)
    family.modules.update({name: getattr(module, "module", module) for name, module in wrapped.items()})
    try:
        yield family
    finally:
        family.modules.update(wrapped)


def grid_images(family: Family, seed: int) -> np.ndarray:
    """16 grayscale tiles (16, H, W) in [0, 1]; for 3D, 4 volumes x 4 axial slices."""
    generator = torch.Generator(device=family.device).manual_seed(seed)
    count = GRID * GRID if family.spatial_dims == 2 else GRID
    conditions = {"labels": None}
    if family.conditional(family.config):
        conditions["labels"] = (torch.arange(count, device=family.device) % 2).long()
    if family.mask_conditioned(family.config):
        conditions["masks"] = torch.from_numpy(preview_masks(family.sample_shape()[1:], count)).to(family.device)
    with unwrapped(family):
        samples = family.sample(count, generator, sampler=family.preview_sampler, **conditions)
    images = samples[:, 0].float().cpu().numpy()
    if family.spatial_dims == 3:
        depth = images.shape[1]
        picks = [depth * (i + 1) // (GRID + 1) for i in range(GRID)]
        images = images[:, picks].reshape(-1, *images.shape[2:])
    return np.clip(images, 0, 1)


def preview_masks(spatial: tuple[int, ...], count: int) -> np.ndarray:
    """Fixed layouts for a mask-conditioned model's grid, (count, 1, *spatial)
    float: one nodule of a fifth of the side per item, in turn in each
    quadrant of the axial plane, in the middle of the volume's depth."""
    side = spatial[-1]
    quadrants = [(0.35, 0.35), (0.35, 0.65), (0.65, 0.65), (0.65, 0.35)]
    masks = []
    for i in range(count):
        row, col = quadrants[i % 4]
        centre = ((spatial[0] - 1) / 2,) * (len(spatial) - 2) + (row * (side - 1), col * (side - 1))
        masks.append(rasterise([Nodule(centre, side / 5)], spatial, (1.0,) * len(spatial)))
    return np.stack(masks)[:, None].astype(np.float32)


def tile(images: np.ndarray, columns: int = GRID) -> np.ndarray:
    """(N, H, W) -> one (rows*H, columns*W) mosaic, row-major."""
    count, height, width = images.shape
    rows = -(-count // columns)
    mosaic = np.zeros((rows * height, columns * width), dtype=images.dtype)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        mosaic[row * height:(row + 1) * height, column * width:(column + 1) * width] = image
    return mosaic


def png_bytes(gray: np.ndarray) -> bytes:
    """8-bit grayscale PNG of an array in [0, 1]."""
    buffer = io.BytesIO()
    Image.fromarray(np.round(np.clip(gray, 0, 1) * 255).astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def sample_grid_png(family: Family, seed: int) -> bytes:
    return png_bytes(tile(grid_images(family, seed)))
