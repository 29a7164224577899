"""Generation memory and time, and training cost."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from ctsynth.metrics.efficiency import GenerationCost, PeakMemory, training_cost
from ctsynth.storage import open_store


def test_peak_memory_sees_a_transient_allocation():
    with PeakMemory(torch.device("cpu")) as peak:
        block = np.ones(64 * 1024 * 1024, dtype=np.uint8)  # 64 MiB, touched
        del block
    assert peak.memory == "cpu-rss" and peak.peak_bytes >= 48 * 1024 * 1024


HELD_PAGES = textwrap.dedent("""
    import ctypes, numpy as np, torch
    from ctsynth.metrics.efficiency import PeakMemory
    libc = ctypes.CDLL(None)
    libc.mallopt(-3, 512 << 20)  # M_MMAP_THRESHOLD: big blocks come from the heap
    libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: freed heap pages stay with the allocator
    held = np.ones(80 << 20, dtype=np.uint8)
    del held  # 80 MiB of resident pages the allocator now holds for reuse
    with PeakMemory(torch.device("cpu")) as peak:
        block = np.ones(64 << 20, dtype=np.uint8)
        del block
    print(peak.peak_bytes)
""")


def test_peak_memory_sees_an_allocation_served_from_pages_the_allocator_holds():
    """A long-lived process's allocator may serve a block from pages it kept;
    run in a fresh interpreter so the allocator settings stay there."""
    out = subprocess.run([sys.executable, "-c", HELD_PAGES], capture_output=True, text=True, check=True)
    assert int(out.stdout.split()[-1]) >= 60 * 1024 * 1024


def test_time_for_1000_items_is_extrapolated_from_the_measured_run():
    assert GenerationCost(items=50, seconds=2.0, peak_bytes=0, memory="cpu-rss").seconds_per() == pytest.approx(40)


def model(store, job_id: str) -> None:
    history = [{"step": 10, "images_per_s": 4.0, "loss": 1.0}]
    store.publish("models/m/1", {"config.json": json.dumps({"batch_size": 2, "workers": 2}).encode(),
                                 "metrics.json": json.dumps({"history": history}).encode()},
                  {"job_id": job_id, "step": 10})


def test_training_cost_from_the_job_record_or_estimated_from_throughput(tmp_path):
    store = open_store((tmp_path / "store").as_uri())
    model(store, "training-abc")
    estimated = training_cost(store, "m", "1")
    assert estimated == {"training_steps": 10, "training_images_per_s": 4.0, "training_seconds": 10.0,
                         "training_seconds_estimated": 1.0}
    store.put_json("jobs/training/training-abc.json", {"started": "2025-01-01T00:00:00Z",
                                                       "finished": "2025-01-01T00:01:30.500Z"})
    recorded = training_cost(store, "m", "1")
    assert recorded["training_seconds"] == 90.5 and recorded["training_seconds_estimated"] == 0.0
