"""The device-utilization gauge: each GPU's busy fraction through NVML
(`nvidia-ml-py`) when the service samples on a GPU, otherwise the share of
the machine's CPUs this process used since the previous scrape. CPU figures
are only ever labelled `cpu`: without NVML or a GPU there is no GPU series."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import torch

from ctsynth.observability.prometheus import DEVICE_UTILIZATION


class CpuShare:
    """Process CPU seconds per wall second per CPU, between successive calls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = (time.monotonic(), self._cpu_seconds())

    @staticmethod
    def _cpu_seconds() -> float:
        times = os.times()
        return times.user + times.system

    def __call__(self) -> float:
        now, cpu = time.monotonic(), self._cpu_seconds()
        with self._lock:
            (then, before), self._last = self._last, (now, cpu)
        elapsed = now - then
        return 0.0 if elapsed <= 0 else min(1.0, (cpu - before) / (elapsed * (os.cpu_count() or 1)))


def _nvml_readers() -> dict[str, Callable[[], float]]:
    """A reader per GPU that NVML sees, labelled `gpu<NVML index>`; none where
    NVML is missing, fails, or finds no device."""
    try:
        import pynvml
    except ImportError:
        return {}
    try:
        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except pynvml.NVMLError:
        return {}
    return {f"gpu{index}": (lambda handle=handle: pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100)
            for index, handle in enumerate(handles)}


def watch_utilization(device: torch.device) -> tuple[str, ...]:
    """Point the gauge at `device`; returns the labels it reports under."""
    readers = _nvml_readers() if device.type == "cuda" else {}
    DEVICE_UTILIZATION.clear()  # a previous watch's series must not outlive it
    for label, reader in (readers or {"cpu": CpuShare()}).items():
        DEVICE_UTILIZATION.labels(label).set_function(reader)
    return tuple(readers) or ("cpu",)
