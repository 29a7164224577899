"""Settings of the evaluation service, from CTSYNTH_* variables, validated
at start-up.

The weights of pretrained feature extractors are deployment configuration
(they cannot be downloaded on air-gapped clusters); a request may name its
own, in the object store or under the service's allowed roots. The budgets
of the networks evaluation trains itself (the CT feature extractor, the
utility classifiers) and the size caps live here too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import platformdirs
import torch

from ctsynth.config import torch_device
from ctsynth.env_values import env_int
from ctsynth.roots import AllowedRoots


@dataclass(frozen=True)
class EvaluationSettings:
    inception_weights: str = ""  # path or object-store URI; requests may override
    med3d_weights: str = ""
    device: str = "auto"  # "auto": the first GPU when there is one, else the CPU
    batch_size: int = 32  # images per feature-extractor pass
    max_real_items: int = 5000  # real slices per split (a fixed seeded subset beyond)
    max_real_volumes: int = 500  # real volumes per split (seed 001 compares 500)
    extractor_steps: int = 300  # training steps of a CT feature extractor made on demand
    utility_steps: int = 200  # per utility classifier
    utility_repeats: int = 5  # at least this many seeded utility repeats
    slices_per_axis: int = 16  # 2.5D FID: slices per volume and plane
    kid_subsets: int = 100
    weights_cache: str = ""  # where fetched weights are kept; default: the user cache dir
    import_roots: tuple[str, ...] = ()  # where a request's weights may lie besides the store (the service's roots)

    def __post_init__(self) -> None:
        for name in ("inception_weights", "med3d_weights"):  # absolute, so that they can be allowed roots
            value = getattr(self, name)
            if value and "://" not in value:
                object.__setattr__(self, name, os.path.abspath(os.path.expanduser(value)))
        for name in ("batch_size", "max_real_items", "max_real_volumes", "extractor_steps", "utility_steps", "slices_per_axis",
                     "kid_subsets"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.utility_repeats < 2:
            raise ValueError(f"utility_repeats must be >= 2 (the Wilcoxon test pairs repeats), "
                             f"got {self.utility_repeats}")
        self.torch_device()

    def torch_device(self) -> torch.device:
        return torch_device(self.device, "CTSYNTH_EVAL_DEVICE")

    def real_limit(self, spatial_dims: int) -> int:
        """Items read per split (and per stored synthetic set)."""
        return self.max_real_items if spatial_dims == 2 else self.max_real_volumes

    def weights_roots(self) -> AllowedRoots:
        """Where weights may be read from besides the store: the import roots and the configured files."""
        return AllowedRoots(self.import_roots).including(self.inception_weights, self.med3d_weights)

    def weights_dir(self) -> Path:
        if self.weights_cache:
            return Path(self.weights_cache)
        return Path(platformdirs.user_cache_dir("ctsynth")) / "weights"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "EvaluationSettings":
        env = os.environ if env is None else env
        values = dict(
            inception_weights=env.get("CTSYNTH_INCEPTION_WEIGHTS", "").strip(),
            med3d_weights=env.get("CTSYNTH_MED3D_WEIGHTS", "").strip(),
            device=env.get("CTSYNTH_EVAL_DEVICE", "").strip() or "auto",
            batch_size=env_int(env, "CTSYNTH_EVAL_BATCH_SIZE", cls.batch_size, minimum=1),
            max_real_items=env_int(env, "CTSYNTH_EVAL_MAX_REAL", cls.max_real_items, minimum=1),
            max_real_volumes=env_int(env, "CTSYNTH_EVAL_MAX_REAL_VOLUMES", cls.max_real_volumes, minimum=1),
            extractor_steps=env_int(env, "CTSYNTH_EVAL_EXTRACTOR_STEPS", cls.extractor_steps, minimum=1),
            utility_steps=env_int(env, "CTSYNTH_EVAL_UTILITY_STEPS", cls.utility_steps, minimum=1),
            utility_repeats=env_int(env, "CTSYNTH_EVAL_UTILITY_REPEATS", cls.utility_repeats, minimum=2),
            slices_per_axis=env_int(env, "CTSYNTH_EVAL_SLICES_PER_AXIS", cls.slices_per_axis, minimum=1),
            kid_subsets=env_int(env, "CTSYNTH_EVAL_KID_SUBSETS", cls.kid_subsets, minimum=1),
            weights_cache=env.get("CTSYNTH_WEIGHTS_CACHE", "").strip(),
        )
        values.update(overrides)
        return cls(**values)
