"""The device-utilization gauge: the GPU's busy fraction through NVML when
`pynvml` is installed and the service samples on a GPU, otherwise the share
of the machine's CPUs this process used since the previous scrape."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import torch

from ctsynth.observability.metrics import DEVICE_UTILIZATION


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


def _nvml_reader(device: torch.device) -> Callable[[], float] | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
    except pynvml.NVMLError:
        return None
    return lambda: pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100


def watch_utilization(device: torch.device) -> str:
    """Point the gauge at `device`; returns the label it reports under."""
    reader = _nvml_reader(device) if device.type == "cuda" else None
    label = str(device) if reader is not None else "cpu"
    DEVICE_UTILIZATION.labels(label).set_function(reader or CpuShare())
    return label
