"""Efficiency, seed 002's last columns: memory and time to generate (GB for
a batch, minutes for 1000 images) and what training cost.

Memory is the peak the generation added: CUDA's peak allocation on a GPU;
on the CPU the kernel's resident-set high-water mark above its level at the
start (torch allocates outside Python's tracers).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch
from google.protobuf import timestamp_pb2

from ctsynth.registry import Registry
from ctsynth.storage import ObjectNotFound, ObjectStore

REFERENCE_COUNT = 1000
PAGE_BYTES = 4096


@dataclass(frozen=True)
class GenerationCost:
    items: int
    seconds: float
    peak_bytes: int
    memory: str  # "cuda-allocated" or "cpu-rss"

    def seconds_per(self, count: int = REFERENCE_COUNT) -> float:
        """Time for `count` items, extrapolated linearly from the measured run."""
        return self.seconds * count / self.items


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_BYTES


def _peak_rss_bytes() -> int:
    """The kernel's high-water mark of this process's RSS (VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


def _release_free_heap() -> None:
    """Hand the pages glibc's allocator keeps for reuse back to the kernel
    (malloc_trim), so an allocation inside the measured block must fault in
    fresh pages and shows in the RSS; a no-op where libc has no malloc_trim."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)


def _reset_peak_rss() -> None:
    """Linux resets VmHWM to the current RSS when 5 is written to clear_refs."""
    _release_free_heap()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


class PeakMemory:
    """Context manager: `peak_bytes` the block added on `device`: CUDA's
    allocator peak, or the kernel's exact RSS high-water mark on the CPU
    (reset on entry), so no short-lived allocation is missed."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_bytes = 0
        self.memory = "cuda-allocated" if device.type == "cuda" else "cpu-rss"

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            _reset_peak_rss()
            self._base = _rss_bytes()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            self.peak_bytes = max(_peak_rss_bytes() - self._base, 0)


def _timestamp(text: str) -> float:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromJsonString(text)
    return stamp.ToNanoseconds() / 1e9


def training_cost(store: ObjectStore, name: str, version: str) -> dict[str, float]:
    """Training time and throughput of a model version: wall time from its
    training job's record when there is one, else estimated from the images
    per second its metrics.json reports (`training_seconds_estimated` = 1)."""
    models = Registry(store, "models", "model")
    prefix = models.prefix(name, version)
    manifest = models.manifest(name, version)
    history = store.get_json(f"{prefix}/metrics.json").get("history", []) if "metrics.json" in manifest["files"] else []
    config = store.get_json(f"{prefix}/config.json")
    steps = float(manifest.get("step", history[-1]["step"] if history else 0))
    cost = {"training_steps": steps}
    if history and history[-1].get("images_per_s"):
        cost["training_images_per_s"] = float(history[-1]["images_per_s"])
    try:
        job = store.get_json(f"jobs/training/{manifest.get('job_id') or '-'}.json")
        started, finished = (_timestamp(job[key]) for key in ("started", "finished"))
        cost.update(training_seconds=finished - started, training_seconds_estimated=0.0)
    except (ObjectNotFound, KeyError):
        if "training_images_per_s" in cost:
            images = steps * config.get("batch_size", 1) * config.get("workers", 1)
            cost.update(training_seconds=images / cost["training_images_per_s"], training_seconds_estimated=1.0)
    return cost

