"""The model cache: LRU by bytes, one load per model however many ask at once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from prometheus_client import REGISTRY

from ctsynth.models.dcgan import DCGAN, DCGANConfig
from ctsynth.models.checkpoint import LoadedModel
from ctsynth.sampling.cache import ModelCache
from ctsynth.storage import StoreUnavailable, open_store
from tests.served_models import FlakyStore


def publish_stub(store, tmp_path, name: str, versions: int = 1) -> None:
    """Published versions with a manifest only: the cache's loader is faked."""
    (tmp_path / "x").write_bytes(b"x")
    for version in range(1, versions + 1):
        store.publish(f"models/{name}/{version}", {"config.json": tmp_path / "x"}, {})


class FakeLoader:
    """Loads a tiny DCGAN per call, counting calls; waits on `gate` when set."""

    def __init__(self, gate: threading.Event | None = None, fail: Exception | None = None):
        self.calls: list[str] = []
        self.gate = gate
        self.fail = fail

    def __call__(self, store, reference, device) -> LoadedModel:
        self.calls.append(reference)
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail is not None:
            raise self.fail
        name, version = reference.split(":")
        family = DCGAN(DCGANConfig(image_size=16, latent_dim=8, generator_widths=(16, 8), discriminator_widths=(8, 8)))
        return LoadedModel(name, version, family, {})


@pytest.fixture
def store(tmp_path):
    store = open_store((tmp_path / "store").as_uri())
    for name in ("a", "b", "c"):
        publish_stub(store, tmp_path, name, versions=2)
    return store


def model_bytes() -> int:
    return FakeLoader()(None, "m:1", "cpu").weight_bytes()


def counter(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_resolves_latest_and_counts_hits_and_misses(store):
    loader = FakeLoader()
    cache = ModelCache(store, torch.device("cpu"), 10 * model_bytes(), loader=loader)
    hits, misses = counter("ctsynth_model_cache_hits_total"), counter("ctsynth_model_cache_misses_total")
    first = cache.get("a")
    assert first.reference == "a:2"
    assert cache.get("a:latest") is first and cache.get("a:2") is first
    assert cache.get("a:1").reference == "a:1"
    assert loader.calls == ["a:2", "a:1"]
    assert counter("ctsynth_model_cache_hits_total") - hits == 2
    assert counter("ctsynth_model_cache_misses_total") - misses == 2


def test_least_recently_used_leave_when_over_budget(store):
    evicted = []
    cache = ModelCache(store, torch.device("cpu"), 2 * model_bytes(), loader=FakeLoader(),
                       on_evict=lambda model: evicted.append(model.reference))
    cache.get("a:1")
    cache.get("b:1")
    cache.get("a:1")  # b is now the least recently used
    cache.get("c:1")
    assert evicted == ["b:1"]
    assert cache.references() == ["a:1", "c:1"]
    assert cache.bytes <= 2 * model_bytes()


def test_concurrent_first_requests_load_once(store):
    gate = threading.Event()
    loader = FakeLoader(gate)
    cache = ModelCache(store, torch.device("cpu"), 10 * model_bytes(), loader=loader)
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(cache.get, "b:1") for _ in range(8)]
        gate.set()
        models = [future.result(10) for future in futures]
    assert loader.calls == ["b:1"]
    assert all(model is models[0] for model in models)


def test_a_cached_version_is_served_while_the_store_is_down(store):
    flaky = FlakyStore(store)
    cache = ModelCache(flaky, torch.device("cpu"), 10 * model_bytes(), loader=FakeLoader())
    loaded = cache.get("a:1")
    flaky.failures = 10 ** 6
    assert cache.get("a:1") is loaded
    with pytest.raises(StoreUnavailable):
        cache.get("a")  # the latest needs a listing


def test_a_failed_load_is_not_cached(store):
    loader = FakeLoader(fail=StoreUnavailable("down"))
    cache = ModelCache(store, torch.device("cpu"), 10 * model_bytes(), loader=loader)
    with pytest.raises(StoreUnavailable):
        cache.get("c:1")
    loader.fail = None
    assert cache.get("c:1").reference == "c:1"
    assert loader.calls == ["c:1", "c:1"]
