"""Models loaded from the object store on first use and kept in memory,
least recently used first out when their weights exceed a byte budget.

Concurrent first requests for one model load it once: the first caller
loads, the others wait for its result (or its error, which is not cached,
so a fixed store serves the next request).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future

import torch

from ctsynth.models.checkpoint import LoadedModel, load_model
from ctsynth.observability.prometheus import MODEL_CACHE_BYTES, MODEL_CACHE_HITS, MODEL_CACHE_MISSES
from ctsynth.registry import Registry, parse_ref
from ctsynth.storage import ObjectStore

Loader = Callable[[ObjectStore, str, torch.device], LoadedModel]


class ModelCache:
    """`get("name[:version|:latest]")` -> LoadedModel, cached by (name, version)."""

    def __init__(self, store: ObjectStore, device: torch.device, budget_bytes: int, *,
                 loader: Loader = load_model, on_evict: Callable[[LoadedModel], None] = lambda model: None):
        self._store = store
        self._models = Registry(store, "models", "model")
        self._device = device
        self._budget = budget_bytes
        self._loader = loader
        self._on_evict = on_evict
        self._lock = threading.Lock()
        self._held: OrderedDict[tuple[str, str], tuple[LoadedModel, int]] = OrderedDict()
        self._loading: dict[tuple[str, str], Future] = {}

    def resolve(self, reference: str, field: str = "model") -> tuple[str, str]:
        """(name, version) of a published model; NOT_FOUND otherwise. A
        cached explicit version needs no store round trip (versions are immutable)."""
        ref = parse_ref(reference, field)
        if ref.version is not None and (ref.name, ref.version) in self._held:
            return ref.name, ref.version
        return self._models.resolve(ref)

    def get(self, reference: str, field: str = "model") -> LoadedModel:
        key = self.resolve(reference, field)
        with self._lock:
            if key in self._held:
                self._held.move_to_end(key)
                MODEL_CACHE_HITS.inc()
                return self._held[key][0]
            pending = self._loading.get(key)
            loader = pending is None
            if loader:
                pending = self._loading[key] = Future()
        if not loader:
            MODEL_CACHE_HITS.inc()
            return pending.result()
        MODEL_CACHE_MISSES.inc()
        try:
            model = self._loader(self._store, f"{key[0]}:{key[1]}", self._device)
        except BaseException as exc:
            with self._lock:
                del self._loading[key]
            pending.set_exception(exc)
            raise
        self._keep(key, model)
        pending.set_result(model)
        return model

    def _keep(self, key: tuple[str, str], model: LoadedModel) -> None:
        evicted = []
        with self._lock:
            del self._loading[key]
            self._held[key] = (model, model.weight_bytes())
            while len(self._held) > 1 and self.bytes > self._budget:
                evicted.append(self._held.popitem(last=False)[1][0])
            MODEL_CACHE_BYTES.set(self.bytes)
        for old in evicted:
            self._on_evict(old)

    @property
    def bytes(self) -> int:
        return sum(size for _, size in self._held.values())

    def references(self) -> list[str]:
        """Cached models, least recently used first."""
        with self._lock:
            return [f"{name}:{version}" for name, version in self._held]
