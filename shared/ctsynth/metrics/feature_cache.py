"""Real-set features and statistics, cached in the object store.

Featurizing the real set is half the work of an FID (all of it for the
second model compared with the same data), and the real set only changes
with a new dataset version. Entries live at

    cache/features/<dataset>/<version>/<split>/<extractor id>-<side>px.safetensors

where the extractor id names the network and the sha256 of its weights, so
new weights never meet stale features, and <side> is the resolution the real
images were featurized at (a model trained at 64² is compared with the
dataset resized to 64², as it was trained on it). An entry is one object (a put is
atomic), holding the features, their statistics and the item count; an
entry that does not parse or counts other items is recomputed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as load_arrays
from safetensors.numpy import save as save_arrays

from ctsynth.metrics.frechet import FeatureStatistics
from ctsynth.storage import ObjectNotFound, ObjectStore

log = logging.getLogger("ctsynth.metrics")

CACHE_ROOT = "cache/features"


class FeatureSpace(Protocol):
    """A network that maps images to feature vectors."""

    name: str  # the report's feature space: "inception", "ct", "med3d"
    id: str  # network and weights digest; a cache key segment

    def features(self, images: np.ndarray) -> np.ndarray:
        """(N, C, *spatial) in [0, 1] -> (N, D) float32."""


@dataclass(frozen=True)
class RealFeatures:
    features: np.ndarray  # (N, D) float32
    statistics: FeatureStatistics


def cache_key(dataset: str, version: str, split: str, extractor: str, side: int) -> str:
    return f"{CACHE_ROOT}/{dataset}/{version}/{split}/{extractor}-{side}px.safetensors"


class FeatureCache:
    def __init__(self, store: ObjectStore):
        self.store = store

    def real(self, dataset: str, version: str, split: str, space: FeatureSpace, side: int, items: int,
             images: Callable[[], np.ndarray]) -> RealFeatures:
        """The features of `items` real images of a split at `side` pixels a
        side, from the cache or computed from `images()` (called only on a
        miss) and cached."""
        key = cache_key(dataset, version, split, space.id, side)
        cached = self._load(key, items)
        if cached is not None:
            return cached
        features = np.ascontiguousarray(space.features(images()), dtype=np.float32)
        entry = RealFeatures(features, FeatureStatistics.from_features(features, reference=True))
        self.store.put(key, save_arrays({"features": features, **entry.statistics.arrays()},
                                        metadata={"extractor": space.id, "items": str(len(features))}))
        return entry

    def _load(self, key: str, items: int) -> RealFeatures | None:
        try:
            arrays = load_arrays(self.store.get_bytes(key))
        except ObjectNotFound:
            return None
        except SafetensorError as exc:
            log.warning("recomputing an unreadable feature cache entry", extra={"key": key, "error": str(exc)})
            return None
        if len(arrays["features"]) != items:
            return None
        return RealFeatures(arrays["features"], FeatureStatistics.from_arrays(arrays))
