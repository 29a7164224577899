"""What an ingest job does, validated up front so a bad request fails before any work."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

from ctsynth.data.masks import MASK_MODES
from ctsynth.data.preprocess import VIEWS, check_split
from ctsynth.errors import InvalidArgument

DATASET_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
SOURCE_KINDS = ("auto", "lidc", "dicom", "slices")
MAX_SIZE = 2048
_TUPLE_FIELDS = ("window", "views", "split")


@dataclass(frozen=True)
class IngestOptions:
    """Every parameter of an ingest; saved in the manifest and in the HDF5 files.

    Defaults follow the research: HU window [-1000, 400] scaled to [0, 1],
    256² axial slices, balanced tumour/non-tumour slices, readers merged by
    pixel-wise maximum (seed 000); 128³ isotropic cubes (seed 001).

    `min_mean_intensity` is on the windowed [0, 1] scale: 0.1 drops slices
    whose mean is within 140 HU of air (-1000 HU is 0, 400 HU is 1), i.e.
    slices that are almost all air, outside the thorax. A chest slice averages
    about 0.25-0.4.

    `isotropic_spacing_mm` is the voxel size coronal and sagittal slices are
    cut at (0: the finest spacing of the series); volumes go straight to
    the cube's own isotropic spacing (see preprocess.volume_to_cube).
    `min_nodule_pixels` applies to slices (pixels) and cubes (voxels) alike.
    """

    source: str  # local folder, or an object-store URI prefix (file://..., s3://...)
    dataset: str
    source_kind: str = "auto"  # auto | lidc | dicom | slices
    window: tuple[float, float] = (-1000.0, 400.0)
    views: tuple[str, ...] = ("axial",)
    slice_size: int = 256
    min_mean_intensity: float = 0.1
    balance: bool = True
    min_nodule_pixels: int = 10
    volumes: bool = True
    volume_size: int = 128
    isotropic_spacing_mm: float = 0.0
    export_nifti: bool = False
    mask_mode: str = "merge"  # merge | consensus
    consensus_level: float = 0.5
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    seed: int = 0
    max_series: int = 0  # 0: all

    def __post_init__(self) -> None:
        for name in _TUPLE_FIELDS:  # lists from JSON or callers become tuples
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                object.__setattr__(self, name, tuple(value))
        self._validate()

    def _validate(self) -> None:
        if not isinstance(self.source, str) or not self.source.strip():
            raise InvalidArgument("source", "must be a folder or an object-store URI")
        if not isinstance(self.dataset, str) or not DATASET_NAME.fullmatch(self.dataset):
            raise InvalidArgument("dataset", f"{self.dataset!r} must match {DATASET_NAME.pattern}")
        _one_of("source_kind", self.source_kind, SOURCE_KINDS)
        _one_of("mask_mode", self.mask_mode, MASK_MODES)
        if not (isinstance(self.window, tuple) and len(self.window) == 2 and all(_number(v) for v in self.window)):
            raise InvalidArgument("window", "must be two numbers (HU minimum, maximum)")
        if not self.window[0] < self.window[1]:
            raise InvalidArgument("window", f"minimum {self.window[0]} must be below maximum {self.window[1]}")
        if not isinstance(self.views, tuple) or not self.views:
            raise InvalidArgument("views", f"must name at least one of {VIEWS}")
        for view in self.views:
            _one_of("views", view, VIEWS)
        if len(set(self.views)) != len(self.views):
            raise InvalidArgument("views", f"{self.views} repeats a view")
        for name in ("slice_size", "volume_size"):
            _integer(name, getattr(self, name), 1, MAX_SIZE)
        _integer("min_nodule_pixels", self.min_nodule_pixels, 0, self.slice_size**2)
        _integer("seed", self.seed, 0, 2**63 - 1)
        _integer("max_series", self.max_series, 0, 2**63 - 1)
        if not _number(self.min_mean_intensity) or not 0 <= self.min_mean_intensity < 1:
            raise InvalidArgument("min_mean_intensity", "must be in [0, 1) (windowed intensity)")
        if not _number(self.isotropic_spacing_mm) or self.isotropic_spacing_mm < 0:
            raise InvalidArgument("isotropic_spacing_mm", "must be >= 0 (0: the finest spacing of each series)")
        if not _number(self.consensus_level) or not 0 < self.consensus_level <= 1:
            raise InvalidArgument("consensus_level", "must be in (0, 1]")
        for name in ("balance", "volumes", "export_nifti"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidArgument(name, "must be true or false")
        if not isinstance(self.split, tuple) or not all(_number(v) for v in self.split):
            raise InvalidArgument("split", "must be three numbers (train, validation, test)")
        try:
            check_split(self.split)
        except ValueError as exc:
            raise InvalidArgument("split", str(exc)) from None

    def to_json(self) -> dict:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, data: dict) -> IngestOptions:
        if not isinstance(data, dict):
            raise InvalidArgument("options", "must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in known:
                raise InvalidArgument(key, "unknown option")
        for key in ("source", "dataset"):
            if key not in data:
                raise InvalidArgument(key, "is required")
        return cls(**data)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(name: str, value, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise InvalidArgument(name, f"must be an integer in [{lo}, {hi}], got {value!r}")


def _one_of(name: str, value, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InvalidArgument(name, f"{value!r} is not one of {', '.join(allowed)}")
