"""The device-utilization gauge: this process's CPU share without a GPU, one
series per GPU through NVML (faked here), and never CPU figures under a GPU name."""

from __future__ import annotations

import os
import sys
import types

import pytest
import torch
from prometheus_client import REGISTRY

from ctsynth.sampling.utilization import CpuShare, watch_utilization


def spin_one_tick() -> None:
    """Burn CPU until the process's CPU time visibly advances."""
    start = sum(os.times()[:2])
    while sum(os.times()[:2]) == start:
        pass


def exported() -> dict[str, float]:
    """device label -> value of every ctsynth_device_utilization_ratio series."""
    return {sample.labels["device"]: sample.value
            for metric in REGISTRY.collect() if metric.name == "ctsynth_device_utilization_ratio"
            for sample in metric.samples}


class NVMLError(Exception):
    pass


def fake_nvml(busy: list[int] | None = None, fail: str = "") -> types.ModuleType:
    """A `pynvml` whose devices report `busy` percent; `fail` names a call that raises."""
    module = types.ModuleType("pynvml")
    module.NVMLError = NVMLError

    def call(name, result):
        def function(*args):
            if name == fail:
                raise NVMLError(name)
            return result(*args)
        return function

    module.nvmlInit = call("nvmlInit", lambda: None)
    module.nvmlDeviceGetCount = call("nvmlDeviceGetCount", lambda: len(busy or []))
    module.nvmlDeviceGetHandleByIndex = call("nvmlDeviceGetHandleByIndex", lambda index: index)
    module.nvmlDeviceGetUtilizationRates = call(
        "nvmlDeviceGetUtilizationRates", lambda handle: types.SimpleNamespace(gpu=busy[handle]))
    return module


def test_cpu_share_is_a_fraction_of_the_machine():
    share = CpuShare()
    spin_one_tick()
    assert 0 < share() <= 1


def test_the_gauge_reports_under_cpu_without_a_gpu():
    assert watch_utilization(torch.device("cpu")) == ("cpu",)
    spin_one_tick()
    assert 0 < REGISTRY.get_sample_value("ctsynth_device_utilization_ratio", {"device": "cpu"}) <= 1


def test_each_gpu_nvml_sees_is_a_series_with_its_own_value(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml([30, 85]))
    assert watch_utilization(torch.device("cuda", 0)) == ("gpu0", "gpu1")
    assert exported() == {"gpu0": pytest.approx(0.30), "gpu1": pytest.approx(0.85)}


@pytest.mark.parametrize("nvml", [None, fake_nvml([]), fake_nvml([50], fail="nvmlInit"),
                                  fake_nvml([50], fail="nvmlDeviceGetHandleByIndex")],
                         ids=["absent", "no-devices", "init-raises", "handle-raises"])
def test_without_a_readable_gpu_there_is_no_gpu_series(monkeypatch, nvml):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml([10, 20]))
    watch_utilization(torch.device("cuda", 0))  # series of an earlier watch must not linger
    monkeypatch.setitem(sys.modules, "pynvml", nvml)  # None: `import pynvml` raises ImportError
    assert watch_utilization(torch.device("cuda", 0)) == ("cpu",)
    assert set(exported()) == {"cpu"}
