"""A training run, fully resolved: what the driver hands every worker.

The service turns a SubmitTrainingRequest into a TrainSpec (validating the
family config, resolving the dataset version and the budget); the spec is
JSON so it crosses process and cluster boundaries unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ctsynth.errors import InvalidArgument

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class TrainSpec:
    job_id: str
    family: str
    config: dict[str, Any]  # the family config as JSON (validated)
    dataset: str  # "name:version", resolved
    model_name: str
    version: str
    store_uri: str
    steps: int
    batch_size: int
    split: str = "train"
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    precision: str = "fp32"
    checkpoint_interval: int = 0  # 0: only at the end
    log_interval: int = 10
    seed: int = 0
    max_failures: int = 2
    resume_from: str = ""  # object-store prefix of a checkpoint to start from
    extra: dict[str, Any] = field(default_factory=dict)  # family-specific inputs (e.g. the LDM's VAE prefix)

    def __post_init__(self) -> None:
        checks = {
            "steps": self.steps >= 1,
            "batch_size": 1 <= self.batch_size <= 4096,
            "scaling.workers": 1 <= self.workers <= 1024,
            "scaling.gpus_per_worker": 0 <= self.gpus_per_worker <= 16,
            "scaling.cpus_per_worker": 0 < self.cpus_per_worker <= 256,
            "checkpoint_interval": self.checkpoint_interval >= 0,
            "log_interval": self.log_interval >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise InvalidArgument(name, f"{getattr(self, name.split('.')[-1])} is out of range")
        if self.precision not in PRECISIONS:
            raise InvalidArgument("precision", f"{self.precision!r}; use one of {', '.join(PRECISIONS)}")

    @property
    def prefix(self) -> str:
        """Where the model version is published."""
        return f"models/{self.model_name}/{self.version}"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> "TrainSpec":
        return cls(**values)
