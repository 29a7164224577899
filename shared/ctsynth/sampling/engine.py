"""A sampling request from validation to encoded items, streamed in pieces.

`SamplingEngine.stream(spec, cancellation)` checks the request against the
model, admits it through the limiter, and keeps two pieces of it in flight
in the batcher: while one is encoded and sent the next is being sampled, so
the first piece is ready after one piece's work whatever the count, and a
request holds at most two pieces of memory however slowly its client reads.

A piece is one message. A volume too large for one (or for the request's
`slab_slices`) goes out as z-slabs, one piece each, encoded one at a time,
so that no message and no encoded buffer holds the whole volume.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ctsynth.conditioning.layout import Nodule
from ctsynth.conditioning.plausible import LayoutPrior, dataset_prior
from ctsynth.errors import InvalidArgument, NotFound, ResourceExhausted
from ctsynth.models.base import Family
from ctsynth.models.checkpoint import LoadedModel
from ctsynth.observability.prometheus import SAMPLING_DURATION, SAMPLING_FIRST_ITEM, SAMPLING_ITEMS, SAMPLING_REQUESTS
from ctsynth.sampling.batcher import Batcher, item_bytes
from ctsynth.sampling.cache import ModelCache
from ctsynth.sampling.conditions import ItemConditions, NoduleRequest, item_conditions
from ctsynth.sampling.formats import (Encoded, OutputContext, check_format, encode, encode_slabs, output_context,
                                      size_bound)
from ctsynth.sampling.limits import Limiter
from ctsynth.sampling.seeds import either_label, item_seed
from ctsynth.sampling.settings import SamplingSettings
from ctsynth.sampling.utilization import watch_utilization
from ctsynth.storage import ObjectNotFound, ObjectStore

log = logging.getLogger("ctsynth.sampling")
Conditioned = tuple[np.ndarray, list[tuple[Nodule, ...]]]  # a pass's conditioning masks and nodule lists

PIECES_IN_FLIGHT = 2
# What a message holds besides its items' data and masks (model reference,
# settings, indexes, shape...), with room to spare.
MESSAGE_ENVELOPE_BYTES = 512


@dataclass(frozen=True)
class SampleSpec:
    """A sampling request. `sampler` holds only the settings the caller set
    (kind, steps, eta, guidance_scale); `condition` is 1 (tumor), 0 (no
    tumor) or None (unconditional, or either for a conditional model)."""

    model: str
    count: int
    seed: int = 0
    condition: int | None = None
    sampler: Mapping[str, Any] = field(default_factory=dict)
    truncation_psi: float | None = None
    format: str = "float16"
    batch_size: int = 0  # items per piece; 0: the server decides
    slab_slices: int | None = None  # volumes: at most this many slices per piece; None: as many as fit
    nodules: NoduleRequest = field(default_factory=NoduleRequest)  # mask-conditioned models: where nodules go

    def check(self, max_count: int) -> None:
        """The checks that need no model; INVALID_ARGUMENT naming the field."""
        self.nodules.check()
        if not 1 <= self.count <= max_count:
            raise InvalidArgument("count", f"{self.count} is outside 1-{max_count} (the limit per request)")
        if not 0 <= self.seed < 2 ** 64:
            raise InvalidArgument("seed", f"{self.seed} is not a 64-bit unsigned integer")
        if self.batch_size < 0:
            raise InvalidArgument("batch_size", f"{self.batch_size} must be >= 0 (0: the server decides)")
        if self.slab_slices is not None and self.slab_slices < 1:
            raise InvalidArgument("slab_slices", f"{self.slab_slices} must be >= 1 (unset: as many as fit a message)")
        if self.sampler.get("steps", 0) < 0:
            raise InvalidArgument("sampler.steps", f"{self.sampler['steps']} must be >= 0 (0: the sampler's default)")
        for name in ("eta", "guidance_scale"):
            if self.sampler.get(name, 0) < 0:
                raise InvalidArgument(f"sampler.{name}", f"{self.sampler[name]} must be >= 0")
        if self.truncation_psi is not None and not 0 <= self.truncation_psi <= 1:
            raise InvalidArgument("truncation_psi", f"{self.truncation_psi} must be in [0, 1]")


@dataclass(frozen=True)
class Item:
    index: int
    seed: int
    label: int | None  # the condition it was sampled with
    encoded: Encoded
    mask: bytes  # the mask the model made, or the one it was conditioned on, in the item's format; else empty
    z0: int = 0  # a slab's first slice
    depth: int = 0  # the slices of the volume a slab is part of; 0: the item is whole
    nodules: tuple[Nodule, ...] = ()  # mask-conditioned models: the nodules the item was asked for


@dataclass(frozen=True)
class Piece:
    """Consecutive items of a request, with the settings they were made with."""

    model: str  # "name:version"
    items: list[Item]
    options: Mapping[str, Any]  # sampler settings actually used (and truncation_psi when given)


class Cancellation:
    """Set when the caller is gone; cancels the work its request still has queued."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._futures: set[Future] = set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            futures, self._futures = self._futures, set()
        for future in futures:
            future.cancel()

    def watch(self, future: Future) -> None:
        with self._lock:
            if not self._cancelled:
                self._futures.add(future)
        if self._cancelled:
            future.cancel()
        future.add_done_callback(self._forget)

    def _forget(self, future: Future) -> None:
        with self._lock:
            self._futures.discard(future)


class SamplingEngine:
    """The sampling service's library side: cache, batcher, limiter, encoders."""

    def __init__(self, store: ObjectStore, settings: SamplingSettings, *, max_message_bytes: int):
        self.settings = settings
        self.store = store
        self.device = settings.torch_device()
        self.batcher = Batcher(max_batch=settings.batch_rows(), max_wait_s=settings.max_wait_ms / 1000,
                               enabled=settings.batching)
        self.cache = ModelCache(store, self.device, settings.model_cache_bytes, on_evict=self.batcher.retire)
        self.limiter = Limiter(settings.max_concurrent, settings.max_bytes_in_flight)
        self.max_message_bytes = max_message_bytes
        self._contexts: dict[str, OutputContext] = {}
        self._priors: dict[str, LayoutPrior | None] = {}
        watch_utilization(self.device)

    def stream(self, spec: SampleSpec, cancellation: Cancellation) -> Iterator[Piece]:
        """The request's items in order, piece by piece; ends early, without
        error, once `cancellation` is set."""
        started = time.perf_counter()
        spec.check(self.settings.max_count)
        model = self.cache.get(spec.model)
        family = model.family
        if spec.condition is not None and not family.conditional(family.config):
            raise InvalidArgument("condition", f"{model.reference} ({family.name}) is unconditional; "
                                               "leave condition unspecified")
        check_format(spec.format, family.spatial_dims, family.sample_shape()[0])
        options = family.sampler_options(spec.sampler, spec.truncation_psi)
        context = self._context(model)
        conditions = item_conditions(family, spec.nodules, context.spacing, spec.count, lambda: self._prior(model))
        shape = family.sample_shape()
        fixed, per_slice = size_bound(spec.format, shape, mask=family.sample_masks() or conditions is not None)
        budget = self.max_message_bytes - MESSAGE_ENVELOPE_BYTES
        depth = shape[1] if family.spatial_dims == 3 else 1
        slab = self._slab_slices(spec, model, (budget - fixed) // per_slice, depth)
        rows = min(spec.count, spec.batch_size or self.batcher.rows(model),
                   max(1, budget // (fixed + depth * per_slice)))
        # A piece is held as float32 samples and as encoded bytes (at most as large).
        with self.limiter.admit(PIECES_IN_FLIGHT * rows * item_bytes(model) * 2):
            SAMPLING_REQUESTS.labels(model.name, spec.format).inc()
            pieces = self._pieces(model, spec, options, context, conditions, rows, slab, cancellation)
            for number, piece in enumerate(pieces):
                if number == 0:
                    SAMPLING_FIRST_ITEM.observe(time.perf_counter() - started)
                yield piece
                SAMPLING_ITEMS.labels(model.name).inc(sum(item.z0 == 0 for item in piece.items))
            if not cancellation.cancelled:
                SAMPLING_DURATION.observe(time.perf_counter() - started)

    def _slab_slices(self, spec: SampleSpec, model: LoadedModel, fitting: int, depth: int) -> int | None:
        """Slices per piece of a volume that is split; None: items come whole.
        `fitting` is how many of an item's slices one message can hold."""
        if fitting < 1:
            raise ResourceExhausted(f"one {'slice' if depth > 1 else 'item'} of {model.reference} as {spec.format} "
                                    f"may take more than the max message size of {self.max_message_bytes} bytes "
                                    "(CTSYNTH_MAX_MESSAGE_BYTES)")
        if spec.slab_slices is None:
            return fitting if fitting < depth else None
        if model.family.spatial_dims == 2:
            raise InvalidArgument("slab_slices", f"{model.reference} makes 2D images, which are not split; "
                                                 "leave it unset")
        if spec.slab_slices > fitting:
            raise InvalidArgument("slab_slices", f"{spec.slab_slices} is above {fitting}, the most slices of "
                                                 f"{model.reference} as {spec.format} that fit the max message size "
                                                 f"of {self.max_message_bytes} bytes")
        return spec.slab_slices if spec.slab_slices < depth else None

    def _pieces(self, model: LoadedModel, spec: SampleSpec, options: dict[str, Any], context: OutputContext,
                conditions: ItemConditions | None, rows: int, slab: int | None,
                cancellation: Cancellation) -> Iterator[Piece]:
        family = model.family
        conditional = family.conditional(family.config)
        starts = iter(range(0, spec.count, rows))
        pending: deque[tuple[int, list[int], list[int] | None, Conditioned | None, Future]] = deque()

        def submit_next() -> None:
            start = next(starts, None)
            if start is None or cancellation.cancelled:
                return
            indexes = range(start, min(start + rows, spec.count))
            seeds = [item_seed(spec.seed, i) for i in indexes]
            labels = [either_label(s) if spec.condition is None else spec.condition for s in seeds] \
                if conditional else None
            conditioned = None if conditions is None else conditions.items(indexes, seeds)
            future = self.batcher.submit(model, options, seeds, labels, None if conditioned is None else conditioned[0])
            cancellation.watch(future)
            pending.append((start, seeds, labels, conditioned, future))

        try:
            for _ in range(PIECES_IN_FLIGHT):
                submit_next()
            while pending:
                start, seeds, labels, conditioned, future = pending.popleft()
                submit_next()
                try:
                    samples = future.result().numpy()
                except CancelledError:
                    return
                for items in self._messages(family, spec, context, slab, samples, start, seeds, labels, conditioned):
                    if cancellation.cancelled:
                        return
                    yield Piece(model.reference, items, options)
        finally:
            for *_, future in pending:
                future.cancel()

    @staticmethod
    def _messages(family: Family, spec: SampleSpec, context: OutputContext, slab: int | None, samples, start: int,
                  seeds: list[int], labels: list[int] | None, conditioned: Conditioned | None) -> Iterator[list[Item]]:
        """The items of one forward pass's samples: all in one message, or each volume's slabs one per message."""
        channels = family.sample_shape()[0]
        made = family.sample_masks() or conditioned is not None
        masks = samples[:, channels:] if conditioned is None else conditioned[0]  # (n, 1, *spatial)

        def item(i: int, encoded: Encoded, z0: int = 0, depth: int = 0) -> Item:
            return Item(start + i, seeds[i], None if labels is None else labels[i], encoded, encoded.mask, z0, depth,
                        () if conditioned is None else conditioned[1][i])

        if slab is None:
            yield [item(i, encode(spec.format, sample[:channels], context, mask=masks[i] if made else None))
                   for i, sample in enumerate(samples)]
            return
        for i, sample in enumerate(samples):
            for z0, encoded in encode_slabs(spec.format, sample[:channels], context, slab,
                                            mask=masks[i] if made else None):
                yield [item(i, encoded, z0, sample.shape[1])]

    def _prior(self, model: LoadedModel) -> LayoutPrior | None:
        """Nodule statistics of the model's training set (None where it is not in the store)."""
        if model.reference not in self._priors:
            try:
                prior = dataset_prior(self.store, model.config.get("dataset", ""), model.family.spatial_dims,
                                      model.family.config.image_size)
            except (InvalidArgument, NotFound, ObjectNotFound, ValueError) as exc:
                log.warning("no nodule layout statistics", extra={"model": model.reference, "reason": str(exc)})
                prior = None
            self._priors[model.reference] = prior
        return self._priors[model.reference]

    def _context(self, model: LoadedModel) -> OutputContext:
        if model.reference not in self._contexts:
            self._contexts[model.reference] = output_context(self.store, model.reference, model.family.spatial_dims,
                                                             model.config)
        return self._contexts[model.reference]

    def close(self) -> None:
        self.batcher.close()
