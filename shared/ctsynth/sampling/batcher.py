"""Dynamic batching: concurrent requests for one model share forward passes.

Each model has a worker thread. It takes the first waiting piece of work,
keeps collecting for up to `max_wait_s` or until a full batch of `rows`
items is waiting, then runs the merged items of equal sampler options in
forward passes of exactly `rows` rows (see `seeds.sample_rows`: that is why
an item's pixels do not depend on what it was merged with) and hands each
piece of work its own rows back, in order.

With batching off, work runs at once in the caller's thread, in the same
fixed-size passes, so both modes return the same pixels.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ctsynth.errors import Unavailable
from ctsynth.models.checkpoint import LoadedModel
from ctsynth.observability.prometheus import SAMPLING_BATCH, SAMPLING_QUEUE
from ctsynth.sampling.seeds import NotPerItem, sample_rows

log = logging.getLogger("ctsynth.sampling")

# Output bytes of one forward pass at most: small items (2D slices, small cubes)
# are batched up to max_batch, while a large volume, which keeps a device busy
# on its own, runs alone rather than padded to many rows.
PASS_BYTES = 8 * 1024 * 1024
_STOP = object()


def item_bytes(model: LoadedModel) -> int:
    """float32 bytes of one sample as the family returns it (image plus mask channel)."""
    family = model.family
    shape = family.sample_shape()
    channels = shape[0] + (1 if family.sample_masks() else 0)
    return 4 * channels * math.prod(shape[1:])


@dataclass
class Work:
    """Items of one request waiting for a forward pass."""

    model: LoadedModel
    options: tuple[tuple[str, Any], ...]  # the sampler settings, hashable: work merges only with equal ones
    seeds: list[int]
    labels: list[int] | None
    masks: np.ndarray | None = None  # (len(seeds), 1, *spatial) uint8 0/1 for mask-conditioned models
    future: Future = field(default_factory=Future)


class Batcher:
    """Runs `family.sample` for pieces of work, merging concurrent ones per model."""

    def __init__(self, *, max_batch: int = 32, max_wait_s: float = 0.005, enabled: bool = True):
        if max_batch < 1:
            raise ValueError(f"max_batch {max_batch} must be >= 1")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.enabled = enabled
        self._lock = threading.Lock()
        self._queues: dict[str, queue.SimpleQueue] = {}
        self._workers: list[threading.Thread] = []  # live and retired, joined by close()
        self._closed = False
        self._per_item_only: set[str] = set()

    def rows(self, model: LoadedModel) -> int:
        """The fixed number of rows of every forward pass of `model`."""
        if model.reference in self._per_item_only:
            return 1
        return max(1, min(self.max_batch, PASS_BYTES // item_bytes(model)))

    def submit(self, model: LoadedModel, options: Mapping[str, Any], seeds: Sequence[int],
               labels: Sequence[int] | None, masks: np.ndarray | None = None) -> Future:
        """A future of the items' samples, (len(seeds), C, *spatial) on the CPU;
        `masks`, one per seed, are the conditions of a mask-conditioned model."""
        work = Work(model, tuple(sorted(options.items())), list(seeds), None if labels is None else list(labels),
                    masks)
        if not self.enabled:
            self._run([work])
            return work.future
        with self._lock:
            if self._closed:
                raise Unavailable("the sampler is shutting down")
            pending = self._queues.get(model.reference)
            if pending is None:
                pending = self._queues[model.reference] = queue.SimpleQueue()
                # Daemon so that a batcher nobody closes cannot hold the process open; close() joins it.
                worker = threading.Thread(target=self._serve, args=(model.reference, pending), daemon=True,
                                          name=f"batcher-{model.reference}")
                self._workers = [thread for thread in self._workers if thread.is_alive()] + [worker]
                worker.start()
            SAMPLING_QUEUE.labels(model.reference).inc(len(work.seeds))
            pending.put(work)
        return work.future

    def retire(self, model: LoadedModel) -> None:
        """Stop `model`'s worker once the work queued before is done (the model left the cache)."""
        with self._lock:
            pending = self._queues.pop(model.reference, None)
        if pending is not None:
            pending.put(_STOP)

    def close(self) -> None:
        """Stop every worker and wait until each has ended.

        A worker left running frees its last model's tensors when it wakes
        for the stop; if the interpreter is finalizing by then, the thread is
        killed inside torch's C++ code and the process aborts (SIGABRT).
        """
        with self._lock:
            self._closed = True
            queues, self._queues = list(self._queues.values()), {}
            workers, self._workers = self._workers, []
        for pending in queues:
            pending.put(_STOP)
        for worker in workers:
            worker.join()

    def _serve(self, reference: str, pending: queue.SimpleQueue) -> None:
        stop = False
        while not stop:
            collected: list[Work] = []
            waiting, deadline = 0, None
            while not collected or waiting < self.rows(collected[0].model):
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    work = pending.get(timeout=timeout)
                except queue.Empty:
                    break
                if work is _STOP:
                    stop = True
                    break
                SAMPLING_QUEUE.labels(reference).dec(len(work.seeds))
                if work.future.cancelled():  # its request is gone: it fills no rows
                    continue
                collected.append(work)
                waiting += len(work.seeds)
                deadline = deadline or time.monotonic() + self.max_wait_s
            if collected:
                self._run(collected)

    def _run(self, collected: list[Work]) -> None:
        """Sample every live piece of work, grouped by options, in fixed-size passes."""
        groups: dict[tuple, list[Work]] = {}
        for work in collected:
            if work.future.set_running_or_notify_cancel():  # False: its request is gone
                groups.setdefault(work.options, []).append(work)
        for group in groups.values():
            try:
                results = self._sample(group)
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                for work in group:
                    work.future.set_exception(exc)
                continue
            for work, result in zip(group, results):
                work.future.set_result(result)

    def _sample(self, group: list[Work]) -> list[torch.Tensor]:
        model = group[0].model
        seeds = [seed for work in group for seed in work.seeds]
        labels = None if group[0].labels is None else [label for work in group for label in work.labels]
        masks = None if group[0].masks is None else np.concatenate([work.masks for work in group])
        options = dict(group[0].options)
        try:
            merged = self._passes(model, seeds, labels, options, masks)
        except NotPerItem as exc:
            log.warning("sampling items one by one", extra={"model": model.reference, "reason": str(exc)})
            self._per_item_only.add(model.reference)
            merged = self._passes(model, seeds, labels, options, masks)
        return list(merged.split([len(work.seeds) for work in group]))

    def _passes(self, model: LoadedModel, seeds: list[int], labels: list[int] | None,
                options: dict[str, Any], masks: np.ndarray | None) -> torch.Tensor:
        rows = self.rows(model)
        outputs = []
        for start in range(0, len(seeds), rows):
            part, end = seeds[start:start + rows], start + rows
            SAMPLING_BATCH.labels(model.reference).observe(len(part))
            outputs.append(sample_rows(model.family, part, None if labels is None else labels[start:end],
                                       options, rows, None if masks is None else masks[start:end]).float().cpu())
        return torch.cat(outputs)
