"""Settings of the sampling service, from CTSYNTH_SAMPLING_* variables (and
CTSYNTH_MODEL_CACHE_BYTES), validated at start-up.

`max_batch` fixes the rows of every forward pass, and with it the exact
pixels a seed gives (see `seeds`): changing it changes results at the level
of float rounding, so keep it fixed across the replicas of one deployment.
Its default is 32 on a GPU and 8 on the CPU, where a pass costs about in
proportion to its rows, so a lone item padded to a full pass costs less.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ctsynth.config import torch_device
from ctsynth.env_values import env_float, env_int

GIB = 1024 ** 3
MIB = 1024 ** 2


@dataclass(frozen=True)
class SamplingSettings:
    device: str = "auto"  # "auto": the first GPU when there is one, else the CPU
    model_cache_bytes: int = 4 * GIB
    max_batch: int = 0  # 0: 32 on a GPU, 8 on the CPU
    max_wait_ms: float = 5.0
    batching: bool = True
    max_count: int = 10000
    max_concurrent: int = 64
    max_bytes_in_flight: int = 512 * MIB

    def __post_init__(self) -> None:
        if self.max_batch < 0 or self.max_count < 1 or self.max_concurrent < 1 or self.max_bytes_in_flight < 1:
            raise ValueError("max_batch must be >= 0, max_count, max_concurrent and max_bytes_in_flight >= 1")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms {self.max_wait_ms} must be >= 0")
        self.torch_device()  # fails fast on a malformed device name

    def batch_rows(self) -> int:
        """The rows of every forward pass (before the per-model byte bound)."""
        return self.max_batch or (32 if self.torch_device().type == "cuda" else 8)

    def torch_device(self) -> torch.device:
        return torch_device(self.device, "CTSYNTH_SAMPLING_DEVICE")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "SamplingSettings":
        env = os.environ if env is None else env
        batching = env.get("CTSYNTH_SAMPLING_BATCHING", "").strip().lower()
        if batching not in ("", "1", "0", "true", "false", "on", "off"):
            raise ValueError(f"CTSYNTH_SAMPLING_BATCHING={batching!r}: use on or off")
        values = dict(
            device=env.get("CTSYNTH_SAMPLING_DEVICE", "").strip() or "auto",
            model_cache_bytes=env_int(env, "CTSYNTH_MODEL_CACHE_BYTES", cls.model_cache_bytes, minimum=1),
            max_batch=env_int(env, "CTSYNTH_SAMPLING_MAX_BATCH", cls.max_batch),
            max_wait_ms=env_float(env, "CTSYNTH_SAMPLING_MAX_WAIT_MS", cls.max_wait_ms),
            batching=batching not in ("0", "false", "off"),
            max_count=env_int(env, "CTSYNTH_SAMPLING_MAX_COUNT", cls.max_count, minimum=1),
            max_concurrent=env_int(env, "CTSYNTH_SAMPLING_MAX_CONCURRENT", cls.max_concurrent, minimum=1),
            max_bytes_in_flight=env_int(env, "CTSYNTH_SAMPLING_MAX_BYTES", cls.max_bytes_in_flight, minimum=1),
        )
        values.update(overrides)
        return cls(**values)
