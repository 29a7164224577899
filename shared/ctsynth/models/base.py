"""The interface every model family implements.

A family is a frozen config dataclass (saved as config.json beside the
weights) plus a `Family` object that builds the modules from it, trains them
one step at a time and samples from them. The training runtime owns the
loop, DDP, precision, checkpoints and Ray; a family owns only the maths.

Conventions: images enter a family as float tensors in [0, 1] with shape
(N, C, *spatial) (C = 1 for CT); `sample` returns the same range and shape.
Masks are (N, 1, *spatial) in {0, 1}; labels are (N,) int64 with
1 = tumor, 0 = no tumor.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ctsynth.errors import InvalidArgument


ITEMS = {2: "slices", 3: "volumes"}  # what a model of each spatial_dims makes


@dataclass(frozen=True)
class FamilyConfig:
    """Base of every family's config. Subclasses add fields with defaults and
    validate them in `validate()` by raising `InvalidArgument(field, reason)`.
    `spatial_dims` says whether the model makes slices (2) or volumes (3);
    `SUPPORTED_DIMS` which of the two a family builds."""

    SUPPORTED_DIMS: ClassVar[tuple[int, ...]] = (2,)

    image_size: int = 64
    channels: int = 1
    seed: int = 0
    spatial_dims: int = 2

    def __post_init__(self) -> None:
        self.check_dims(self.spatial_dims)
        if not 8 <= self.image_size <= 1024:
            raise InvalidArgument("image_size", f"{self.image_size} is outside 8-1024")
        if self.channels < 1:
            raise InvalidArgument("channels", f"{self.channels} must be >= 1")
        self.validate()

    @classmethod
    def check_dims(cls, spatial_dims: int) -> int:
        if spatial_dims not in cls.SUPPORTED_DIMS:
            supported = " or ".join(f"{dims} ({ITEMS[dims]})" for dims in cls.SUPPORTED_DIMS)
            raise InvalidArgument("spatial_dims", f"{spatial_dims}; this family builds {supported}")
        return spatial_dims

    @classmethod
    def dims_in(cls, values: Mapping[str, Any]) -> int:
        """The `spatial_dims` that config values ask for (the default where
        they name none), checked before the rest: it picks the dataset layout
        that other defaults come from."""
        return cls.check_dims(_coerce("spatial_dims", values.get("spatial_dims", cls.spatial_dims), int))

    def validate(self) -> None:
        """Range checks of the subclass's own fields."""

    def to_json(self) -> dict[str, Any]:
        return {field.name: _jsonable(getattr(self, field.name)) for field in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> "FamilyConfig":
        """Build from JSON-like values: unknown keys and wrong types are
        INVALID_ARGUMENT naming the field."""
        fields = {field.name: field for field in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise InvalidArgument(unknown[0], f"unknown hyperparameter for {cls.__name__}; known: {', '.join(sorted(fields))}")
        return cls(**{name: _coerce(name, value, hints[name]) for name, value in values.items()})

    def replace(self, **changes) -> "FamilyConfig":
        return dataclasses.replace(self, **changes)


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


def _coerce(name: str, value, hint):
    """JSON value -> the annotated type (int, float, bool, str, tuple[...], X | None)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [h for h in typing.get_args(hint) if h is not type(None)]
        if value is None:
            return None
        return _coerce(name, value, options[0])
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise InvalidArgument(name, f"expected a list, got {value!r}")
        args = typing.get_args(hint)
        item = args[0]
        return tuple(_coerce(name, v, item) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise InvalidArgument(name, f"expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise InvalidArgument(name, f"expected an integer, got {value!r}")
        try:
            number = float(value)
        except ValueError:
            raise InvalidArgument(name, f"expected an integer, got {value!r}") from None
        if not number.is_integer():
            raise InvalidArgument(name, f"expected an integer, got {value!r}")
        return int(number)
    if hint is float:
        if isinstance(value, bool):
            raise InvalidArgument(name, f"expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise InvalidArgument(name, f"expected a number, got {value!r}") from None
    if hint is str:
        if not isinstance(value, str):
            raise InvalidArgument(name, f"expected a string, got {value!r}")
        return value
    return value


class Precision:
    """Mixed precision for a family's step: autocast plus, for fp16, a
    gradient scaler. Families call `autocast()`, `backward(loss)` and
    `step(optimizer)` instead of the bare torch calls, so one code path
    serves fp32, bf16 (AMX on CPU) and fp16 (CUDA)."""

    MODES = ("fp32", "bf16", "fp16")

    def __init__(self, mode: str = "fp32", device: torch.device | str = "cpu"):
        if mode not in self.MODES:
            raise InvalidArgument("precision", f"{mode!r}; use one of {', '.join(self.MODES)}")
        self.mode = mode
        self.device = torch.device(device)
        self.dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[mode]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=mode == "fp16")

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def backward(self, loss: torch.Tensor, **kwargs) -> None:
        self.scaler.scale(loss).backward(**kwargs)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """Unscale, step and update the scale (a no-op scaler outside fp16)."""
        self.scaler.step(optimizer)
        self.scaler.update()


@dataclass
class Batch:
    """One training batch, already on the family's device."""

    image: torch.Tensor  # (N, C, *spatial) in [0, 1]
    label: torch.Tensor | None = None  # (N,) int64, 1 = tumor
    mask: torch.Tensor | None = None  # (N, 1, *spatial) in {0, 1}


class Family(ABC):
    """One model family: builds, trains one step, samples.

    `modules` holds every network whose weights are saved (e.g. generator,
    discriminator, ema); `trainable` names those DDP must wrap; `optimizers`
    holds every optimizer whose state is saved for an exact resume.
    """

    name: ClassVar[str]
    config_cls: ClassVar[type[FamilyConfig]]
    needs_masks: ClassVar[bool] = False  # trains on masks as a target whatever the config (the U-Net GAN)
    description: ClassVar[str] = ""
    # Sampler settings for quick previews (checkpoint grids): few steps for
    # diffusion families; None where `sample` takes no sampler settings.
    preview_sampler: ClassVar[dict[str, Any] | None] = None

    def __init__(self, config: FamilyConfig, device: torch.device | str = "cpu", precision: str = "fp32"):
        self.config = config
        self.device = torch.device(device)
        self.precision = Precision(precision, self.device)
        self.modules: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}

    @property
    def spatial_dims(self) -> int:
        """2 for slices, 3 for volumes: the config's."""
        return self.config.spatial_dims

    @classmethod
    def conditional(cls, config: FamilyConfig) -> bool:
        """Whether the family's models take the tumor label as a condition."""
        return False

    @classmethod
    def mask_conditioned(cls, config: FamilyConfig) -> bool:
        """Whether the family's models take a nodule mask as a condition:
        `sample(..., masks=)` with masks (count, 1, *spatial) in {0, 1},
        saying where the nodules go, and training on the dataset's masks."""
        return False

    @classmethod
    def uses_masks(cls, config: FamilyConfig) -> bool:
        """Whether training reads the dataset's nodule masks (as a target or as a condition)."""
        return cls.needs_masks or cls.mask_conditioned(config)

    @property
    def trainable(self) -> tuple[str, ...]:
        """Modules updated by optimizers (wrapped by DDP across workers)."""
        return tuple(name for name in self.modules if name != "ema")

    @classmethod
    def batches_per_step(cls, config: FamilyConfig) -> int:
        """How many batches of real rows one `train_step` consumes (the loop
        hands it that many batches' rows at once): n_critic for WGANs."""
        return 1

    def sample_shape(self) -> tuple[int, ...]:
        """(C, *spatial) of one sample."""
        return (self.config.channels,) + (self.config.image_size,) * self.spatial_dims

    @abstractmethod
    def train_step(self, batch: Batch, step: int) -> dict[str, float]:
        """One optimisation step (all optimizers of the family); returns the
        losses as floats. Uses `self.precision` for autocast and backward."""

    @abstractmethod
    @torch.no_grad()
    def sample(self, count: int, generator: torch.Generator, *, labels: torch.Tensor | None = None,
               sampler: Mapping[str, Any] | None = None) -> torch.Tensor:
        """`count` samples in [0, 1], shape (count, *sample_shape()), fully
        determined by `generator`. `labels` (count,) for conditional
        families; `sampler` carries family-specific settings (diffusion
        sampler kind/steps/eta/guidance_scale, GAN truncation_psi).
        Mask-conditioned families (`mask_conditioned`) also take the keyword
        `masks`, (count, 1, *spatial) float in {0, 1}: the nodules each
        sample must show, where they are."""

    def sample_masks(self) -> bool:
        """Whether `sample` returns an extra mask channel after the image."""
        return False

    def checked_masks(self, count: int, masks: torch.Tensor | None) -> torch.Tensor | None:
        """`sample`'s masks as float (count, 1, *spatial) in {0, 1} on the
        family's device; None for a family without mask input, which must
        be given none. INVALID_ARGUMENT naming `mask` otherwise."""
        if not self.mask_conditioned(self.config):
            if masks is not None:
                raise InvalidArgument("mask", f"this {self.name} model takes no mask; pass none")
            return None
        shape = (count, 1, *self.sample_shape()[1:])
        if masks is None:
            raise InvalidArgument("mask", f"this {self.name} model is mask-conditioned and needs masks of shape {shape}")
        masks = torch.as_tensor(masks, device=self.device).float()
        if tuple(masks.shape) != shape:
            raise InvalidArgument("mask", f"masks of shape {tuple(masks.shape)}, this model needs {shape}")
        if bool(((masks != 0) & (masks != 1)).any()):
            raise InvalidArgument("mask", "mask values must be 0 or 1")
        return masks

    # Optional hooks: what a family overrides when it needs more than its config.

    @classmethod
    def resolve_inputs(cls, hyperparameters: dict[str, Any], models) -> tuple[dict[str, Any], dict[str, Any]]:
        """Training-service hook, before the config is built: resolve
        references to other models in the registry `models` (the LDM's vae).
        Returns (hyperparameters, extra inputs the training spec carries)."""
        return dict(hyperparameters), {}

    def prepare(self, store, spec) -> None:
        """Training-runtime hook, before the first step: load what the spec's
        extra inputs name (the LDM's frozen vae weights)."""

    # Held-out items the family measures itself on when its model is
    # published (`validation_metrics`); 0 for families that measure nothing.
    validation_items: ClassVar[int] = 0

    def validation_metrics(self, images: torch.Tensor) -> dict[str, float]:
        """Metrics of the trained model on held-out images (N, C, *spatial)
        in [0, 1], averaged over them (the vae's reconstruction PSNR and SSIM)."""
        return {}

    def sampler_options(self, sampler: Mapping[str, Any], truncation_psi: float | None) -> dict[str, Any]:
        """The `sampler` argument `sample` gets for a request's sampler
        settings and truncation psi, resolved and checked before any work
        (so a reply can say which settings were used, and requests that
        resolve alike batch together). By default a family takes neither."""
        if sampler:
            raise InvalidArgument(f"sampler.{next(iter(sampler))}", f"{self.name} is not a diffusion model")
        if truncation_psi is not None:
            raise InvalidArgument("truncation_psi", f"{self.name} is not a style GAN")
        return {}
