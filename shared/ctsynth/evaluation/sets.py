"""The image sets an evaluation compares, as arrays (N, 1, *spatial) in [0, 1]:
real dataset splits, stored synthetic datasets, and synthetic draws made
in-process by the sampling service's own engine (same validation, per-item
seeds and encoders as a `Sample` call, without a second network hop).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from ctsynth.data.dataset_h5 import layout, open_stack
from ctsynth.evaluation.plan import ModelSource
from ctsynth.metrics.efficiency import GenerationCost, PeakMemory
from ctsynth.sampling.engine import Cancellation, SamplingEngine
from ctsynth.storage import ObjectStore

SUBSET_SEED = 0  # fixed: the cached real features stay valid across evaluations


@dataclass(frozen=True)
class ImageSet:
    images: np.ndarray  # (N, 1, *spatial) float32 in [0, 1]
    labels: np.ndarray | None  # (N,) 0/1 tumor presence; None when unknown
    masks: np.ndarray | None = None  # (N, 1, *spatial) uint8, volumes read for slice labels only
    cost: GenerationCost | None = None  # how the draw was made, for efficiency

    def __len__(self) -> int:
        return len(self.images)

    @property
    def side(self) -> int:
        return int(self.images.shape[-1])


def draw_seed(seed: int, draw: int) -> int:
    """The request seed of synthetic draw `draw`: the evaluation's seed for
    draw 0 (so `ctsynth sample --seed` regenerates it), a hash after; hashed
    apart from item seeds so that no two draws share an item."""
    if draw == 0:
        return seed
    return int.from_bytes(hashlib.blake2b(f"{seed}:draw:{draw}".encode(), digest_size=8).digest(), "little")


def split_size(manifest: dict, split: str | None, dims: int, limit: int) -> int:
    """How many items `read_split` returns, from the manifest alone."""
    return min(layout(dims).items(manifest, split), limit)


def read_split(store: ObjectStore, dataset: str, split: str | None, dims: int, limit: int,
               with_masks: bool = False) -> ImageSet:
    """Items of one split (None: all), a fixed seeded subset of `limit` when
    there are more. Labels are tumor presence: a slice's nodule flag, or any
    mask voxel of a volume."""
    rows, _ = open_stack(store, dataset, dims, split, with_mask=with_masks, condition=True)
    picks = np.arange(len(rows))
    if len(rows) > limit:
        picks = np.sort(np.random.default_rng(SUBSET_SEED).permutation(len(rows))[:limit])
    items = [rows[int(i)] for i in picks]
    empty = (0, 1) + (1,) * dims
    images = np.stack([item["image"].numpy() for item in items]) if items else np.zeros(empty, np.float32)
    labels = np.array([int(item["label"]) for item in items], dtype=np.int64)
    masks = None
    if with_masks:
        masks = np.stack([item["mask"].numpy().astype(np.uint8) for item in items]) if items else np.zeros(empty, np.uint8)
    return ImageSet(images, labels, masks)


def resized(images: ImageSet, side: int) -> ImageSet:
    """The set at `side` pixels a side (bilinear / trilinear, as training resizes)."""
    if images.side == side or len(images) == 0:
        return images
    pixels = torch.from_numpy(images.images)
    mode = "bilinear" if pixels.dim() == 4 else "trilinear"
    scaled = F.interpolate(pixels, size=(side,) * (pixels.dim() - 2), mode=mode, align_corners=False).clamp(0, 1)
    masks = None
    if images.masks is not None:
        masks = F.interpolate(torch.from_numpy(images.masks).float(), size=(side,) * (pixels.dim() - 2),
                              mode="nearest").to(torch.uint8).numpy()
    return ImageSet(scaled.numpy(), images.labels, masks)


def generate(engine: SamplingEngine, source: ModelSource, draw: int, check_cancelled: Callable[[], None],
             progress: Callable[[int], None]) -> ImageSet:
    """Synthetic draw `draw` of `source` through the sampling engine, timed
    (model loading excluded) and with its peak memory."""
    spec = source.spec(draw_seed(source.seed, draw))
    engine.cache.get(spec.model)  # load before timing
    images, labels = [], []
    with PeakMemory(engine.device) as peak, closing(engine.stream(spec, Cancellation())) as pieces:
        started = time.perf_counter()
        for piece in pieces:
            for item in piece.items:
                images.append(np.frombuffer(item.encoded.data, "<f2").reshape(item.encoded.shape))
                labels.append(item.label)
            progress(len(images))
            check_cancelled()
        seconds = time.perf_counter() - started
    known = source.conditional and all(label is not None for label in labels)
    return ImageSet(np.stack(images).astype(np.float32), np.array(labels, dtype=np.int64) if known else None,
                    cost=GenerationCost(len(images), seconds, peak.peak_bytes, peak.memory))
