"""Real-set features cached in the object store."""

from __future__ import annotations

import numpy as np
import pytest

from ctsynth.metrics.feature_cache import FeatureCache, cache_key
from ctsynth.storage import open_store


class CountingSpace:
    """A feature space that counts its calls."""

    name = "test"

    def __init__(self, id: str = "counting-0123456789abcdef"):
        self.id = id
        self.calls = 0

    def features(self, images: np.ndarray) -> np.ndarray:
        self.calls += 1
        return images.reshape(len(images), -1)[:, :4].astype(np.float32)


@pytest.fixture
def store(tmp_path):
    return open_store((tmp_path / "store").as_uri())


def images() -> np.ndarray:
    return np.random.default_rng(0).random((6, 1, 4, 4)).astype(np.float32)


def test_second_use_of_a_real_set_skips_the_extractor(store):
    space, loads = CountingSpace(), []

    def load():
        loads.append(1)
        return images()

    first = FeatureCache(store).real("tiny", "1", "test", space, 4, 6, load)
    second = FeatureCache(store).real("tiny", "1", "test", space, 4, 6, load)  # a fresh cache object: a new job
    assert space.calls == 1 and len(loads) == 1
    assert np.array_equal(first.features, second.features)
    assert np.allclose(second.statistics.sigma, np.cov(first.features.astype(np.float64), rowvar=False))
    assert store.exists("cache/features/tiny/1/test/counting-0123456789abcdef-4px.safetensors")


def test_entries_are_keyed_by_version_split_and_extractor(store):
    space, other = CountingSpace(), CountingSpace("counting-other")
    for version, split, extractor, side in (("1", "test", space, 4), ("2", "test", space, 4),
                                            ("1", "train", space, 4), ("1", "test", space, 8), ("1", "test", other, 4)):
        FeatureCache(store).real("tiny", version, split, extractor, side, 6, images)
    assert (space.calls, other.calls) == (4, 1)
    assert cache_key("tiny", "2", "train", "x", 64) == "cache/features/tiny/2/train/x-64px.safetensors"


def test_a_stale_or_corrupt_entry_is_recomputed(store):
    space = CountingSpace()
    FeatureCache(store).real("tiny", "1", "test", space, 4, 6, images)
    FeatureCache(store).real("tiny", "1", "test", space, 4, 5, lambda: images()[:5])  # the split changed size
    store.put(cache_key("tiny", "1", "test", space.id, 4), b"not safetensors")
    entry = FeatureCache(store).real("tiny", "1", "test", space, 4, 6, images)
    assert space.calls == 3 and entry.features.shape == (6, 4)
