"""The device-utilization gauge on a machine without a GPU: this process's CPU share."""

from __future__ import annotations

import os

import torch
from prometheus_client import REGISTRY

from ctsynth.sampling.utilization import CpuShare, watch_utilization


def spin_one_tick() -> None:
    """Burn CPU until the process's CPU time visibly advances."""
    start = sum(os.times()[:2])
    while sum(os.times()[:2]) == start:
        pass


def test_cpu_share_is_a_fraction_of_the_machine():
    share = CpuShare()
    spin_one_tick()
    assert 0 < share() <= 1


def test_the_gauge_reports_under_cpu_without_a_gpu():
    assert watch_utilization(torch.device("cpu")) == "cpu"
    spin_one_tick()
    assert 0 < REGISTRY.get_sample_value("ctsynth_device_utilization_ratio", {"device": "cpu"}) <= 1
