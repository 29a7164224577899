"""The nodule conditions of a request for a mask-conditioned model, per item.

A request gives a mask (one for every item, or one per item), a layout
(the same nodules in every item) or a nodule count (a plausible layout per
item, drawn from the model's training set with the item's seed, so that an
item regenerated from its seed has the same nodules). Each item gets the
mask the model is conditioned on and the nodule list it is reported with.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ctsynth.conditioning.layout import Nodule, check_layout, rasterise
from ctsynth.conditioning.mask_input import fit_masks
from ctsynth.conditioning.plausible import LayoutPrior
from ctsynth.errors import InvalidArgument
from ctsynth.models.base import Family

DEFAULT_NODULE_COUNT = 1


@dataclass(frozen=True)
class NoduleRequest:
    """What a request says about nodules; at most one of the three."""

    masks: np.ndarray | None = None  # decoded: (*spatial) or (N, *spatial) uint8 0/1
    nodules: tuple[Nodule, ...] = ()
    nodule_count: int = 0

    @property
    def given(self) -> list[str]:
        return [name for name, present in (("mask", self.masks is not None), ("nodules", bool(self.nodules)),
                                           ("nodule_count", self.nodule_count != 0)) if present]

    def check(self) -> None:
        """The checks that need no model."""
        if len(self.given) > 1:
            raise InvalidArgument(self.given[1], f"give one of mask, nodules and nodule_count, not "
                                                 f"{' and '.join(self.given)}")
        if self.nodule_count < 0:
            raise InvalidArgument("nodule_count", f"{self.nodule_count} must be >= 0 (0: the default, "
                                                  f"{DEFAULT_NODULE_COUNT})")


def described(mask: np.ndarray, spacing: Sequence[float]) -> tuple[Nodule, ...]:
    """A mask's nodules: each connected component's centroid (voxels) and equivalent-sphere (or -disc) diameter."""
    labels, found = ndimage.label(mask)
    if not found:
        return ()
    voxel = float(np.prod(spacing))
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, range(1, found + 1))
    centres = ndimage.center_of_mass(mask, labels, range(1, found + 1))
    diameter = ((lambda v: (6 * v / math.pi) ** (1 / 3)) if mask.ndim == 3 else (lambda v: 2 * math.sqrt(v / math.pi)))
    return tuple(Nodule(tuple(round(float(c), 3) for c in centre), round(diameter(size * voxel), 3))
                 for centre, size in zip(centres, sizes))


class ItemConditions:
    """Per item index and seed: the conditioning mask (*spatial) uint8 and its nodules."""

    def __init__(self, request: NoduleRequest, spatial: tuple[int, ...], spacing: Sequence[float], count: int,
                 prior: Callable[[], LayoutPrior | None]):
        self.spatial, self.spacing = spatial, tuple(spacing)
        self._fixed: list[tuple[np.ndarray, tuple[Nodule, ...]]] | None = None
        self._prior: LayoutPrior | None = None
        if request.masks is not None:
            masks = fit_masks(request.masks, spatial, count)
            self._fixed = [(mask, described(mask, spacing)) for mask in masks]
        elif request.nodules:
            known = prior()
            body = known.body_mask(spatial) if known is not None else None
            check_layout(request.nodules, spatial, spacing, body)
            self._fixed = [(rasterise(request.nodules, spatial, spacing), request.nodules)]
        else:
            self._prior = prior()
            if self._prior is None:
                raise InvalidArgument("nodule_count", "the model's training set is not in the store, so no "
                                                      "plausible layout can be drawn; send a mask or nodules")
            self._count = request.nodule_count or DEFAULT_NODULE_COUNT
            self._prior.draw(self._count, spatial, spacing, np.random.default_rng(0))  # fails now, not mid-stream

    def items(self, indexes: Sequence[int], seeds: Sequence[int]) -> tuple[np.ndarray, list[tuple[Nodule, ...]]]:
        """Masks (len, 1, *spatial) uint8 and nodule lists of these items."""
        masks, nodules = [], []
        for index, seed in zip(indexes, seeds):
            if self._fixed is not None:
                mask, listed = self._fixed[index if len(self._fixed) > 1 else 0]
            else:
                listed = tuple(self._prior.draw(self._count, self.spatial, self.spacing,
                                                np.random.default_rng(seed)))
                mask = rasterise(listed, self.spatial, self.spacing)
            masks.append(mask)
            nodules.append(listed)
        return np.stack(masks)[:, None], nodules


def item_conditions(family: Family, request: NoduleRequest, spacing: Sequence[float], count: int,
                    prior: Callable[[], LayoutPrior | None]) -> ItemConditions | None:
    """The per-item conditions of a request for `family`; None for a model
    that takes no mask (which a request then must not send)."""
    if not family.mask_conditioned(family.config):
        if request.given:
            raise InvalidArgument(request.given[0], f"this {family.name} model takes no nodule mask; leave "
                                                    f"{request.given[0]} unset")
        return None
    return ItemConditions(request, tuple(family.sample_shape()[1:]), spacing, count, prior)
