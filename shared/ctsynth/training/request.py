"""What a client asks of a training job, typed and checked field by field:
the training servicer builds it from a SubmitTrainingRequest, the job keeps
it as JSON (snake_case, the field names below), and `runner.plan` resolves it
against the store into a TrainSpec."""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ctsynth.errors import InvalidArgument
from ctsynth.training.spec import PRECISIONS

BUDGET_KINDS = ("steps", "epochs", "kimg")


@dataclass(frozen=True)
class TrainRequest:
    family: str
    dataset: str  # "name", "name:version" or "name:latest"
    split: str = "train"
    name: str = ""  # the model's name; empty: the family's
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    precision: str = "fp32"
    budget_kind: str = ""  # one of BUDGET_KINDS; empty: the default number of steps
    budget: float = 0.0
    checkpoint_interval: int = 0  # 0: a fifth of the steps
    seed: int = 0
    image_size: int = 0  # 0: the dataset's
    batch_size: int = 0  # 0: the family's default
    resume_from: str = ""  # "name:version" of a model to continue from

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for item in dataclasses.fields(self):
            value, hint = getattr(self, item.name), hints[item.name]
            kind = typing.get_origin(hint) or hint
            number = kind in (int, float) and isinstance(value, (int, float)) and not isinstance(value, bool)
            if not (number or isinstance(value, kind)) or (kind is int and not float(value).is_integer()):
                raise InvalidArgument(item.name, f"expected {kind.__name__}, got {value!r}")
            if number and (not math.isfinite(value) or value < 0):
                raise InvalidArgument(item.name, f"{value} must be a finite number >= 0")
        if self.precision not in PRECISIONS:
            raise InvalidArgument("precision", f"{self.precision!r}; use one of {', '.join(PRECISIONS)}")
        if self.budget_kind not in ("", *BUDGET_KINDS):
            raise InvalidArgument("budget", f"{self.budget_kind!r}; use one of {', '.join(BUDGET_KINDS)}")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> TrainRequest:
        """As `to_json` wrote it; an unknown or missing key is INVALID_ARGUMENT."""
        names = {item.name for item in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise InvalidArgument(unknown[0], f"unknown training request field; known: {', '.join(sorted(names))}")
        for required in ("family", "dataset"):
            if required not in values:
                raise InvalidArgument(required, "is required")
        hints = typing.get_type_hints(cls)  # a job store keeps every number as a double
        return cls(**{key: int(value) if hints[key] is int and isinstance(value, float) and value.is_integer()
                      else value for key, value in values.items()})
