"""Decoding latents tile by tile, so that a 256^3 or 512^3 volume decodes in
the memory of one tile's activations. MONAI's `sliding_window_inference`
does the tiling and the Gaussian blending (it scales the output windows by
the decoder's upsampling itself); MAISI decodes its latents the same way.
GroupNorm sees each tile's own statistics, so a tiled decode is close to
the whole one, not equal to it."""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.inferers import sliding_window_inference

from ctsynth.errors import InvalidArgument


def tiled_decode(decoder: Callable[[torch.Tensor], torch.Tensor], latents: torch.Tensor, tile: int,
                 overlap: float) -> torch.Tensor:
    """Latents (N, L, *spatial/f) -> images: whole when `tile` is 0 or covers
    the latent, else in tiles of `tile` latent voxels per side sharing `overlap` of a tile."""
    spatial = latents.shape[2:]
    if not tile or all(side <= tile for side in spatial):
        return decoder(latents)
    return sliding_window_inference(latents, roi_size=(tile,) * len(spatial), sw_batch_size=1, predictor=decoder,
                                    overlap=overlap, mode="gaussian")


def check_tiling(tile: int, overlap: float) -> None:
    """A first stage's `decode_tile` and `decode_overlap`, INVALID_ARGUMENT naming the field."""
    if tile < 0:
        raise InvalidArgument("decode_tile", f"{tile} must be >= 0 (0 decodes whole)")
    if not 0 <= overlap < 1:
        raise InvalidArgument("decode_overlap", f"{overlap} is outside [0, 1)")
