"""One evaluation's shared state: the synthetic draws, the real splits, the
feature spaces and their features, each made at most once and only when a
metric asks for it (a cached real set is never read back from its dataset).

Feature spaces:
- "inception": InceptionV3 from the configured weights (fid, kid, pr);
- "med3d": a Med3D ResNet from the configured weights (fid-3d);
- "ct": the CT extractor for the evaluation's dimensionality (ct-fid,
  memorization, variety's recall): the request's, or one trained on demand
  on the training split at the evaluation's resolution and registered, so
  the next evaluation of the same dataset reuses it;
- "ct-planes": a 2D CT extractor trained on slices of the training volumes
  in all three planes (fid-2.5d without InceptionV3 weights).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from ctsynth.data.dataset_h5 import layout
from ctsynth.errors import FailedPrecondition, ServiceError
from ctsynth.evaluation.plan import EvaluationPlan
from ctsynth.evaluation.sets import ImageSet, generate, read_split, resized, split_size
from ctsynth.evaluation.settings import EvaluationSettings
from ctsynth.metrics.checks import check_images
from ctsynth.metrics.domain_extractor import (DomainExtractorConfig, DomainFeatures, extractor_name,
                                              find_domain_extractor, load_domain_extractor,
                                              publish_domain_extractor, train_domain_extractor)
from ctsynth.metrics.feature_cache import FeatureCache, FeatureSpace, RealFeatures
from ctsynth.metrics.inception import HOW_TO as INCEPTION_HOW_TO
from ctsynth.metrics.inception import InceptionFeatures
from ctsynth.metrics.med3d import HOW_TO as MED3D_HOW_TO
from ctsynth.metrics.med3d import Med3DFeatures
from ctsynth.metrics.planes import PLANES, plane_slices
from ctsynth.metrics.weights import local_weights
from ctsynth.registry import Registry
from ctsynth.sampling.engine import SamplingEngine
from ctsynth.storage import ObjectStore


class Reporter(Protocol):
    """What a run tells its job (a `JobContext` is one)."""

    def progress(self, stage: str, done: int, total: int, unit: str, message: str = "") -> None: ...

    def warn(self, subject: str, reason: str) -> None: ...

    def check_cancelled(self) -> None: ...


class EvaluationRun:
    """The draws, real splits and feature spaces of one evaluation (see the module doc)."""

    def __init__(self, store: ObjectStore, plan: EvaluationPlan, settings: EvaluationSettings,
                 engine: Callable[[], SamplingEngine], reporter: Reporter, job_id: str = ""):
        self.store, self.plan, self.settings = store, plan, settings
        self.reporter, self.job_id = reporter, job_id
        self.device = settings.torch_device()
        self.cache = FeatureCache(store)
        self.manifest = Registry(store, "datasets", "dataset").manifest(plan.dataset_name, plan.dataset_version)
        self._engine = engine
        self.draws: list[ImageSet] = []
        self._splits: dict[str, ImageSet] = {}
        self._spaces: dict[str, FeatureSpace | ServiceError] = {}
        self._features: dict[tuple[str, int], np.ndarray] = {}

    def stepper(self, stage: str, total: int, unit: str) -> Callable[..., None]:
        """A callback for long loops: reports progress, stops when the job is cancelled."""
        def step(done: int, *_) -> None:
            self.reporter.progress(stage, done, total, unit)
            self.reporter.check_cancelled()
        return step

    # -- synthetic -----------------------------------------------------------

    def make_draws(self) -> None:
        plan = self.plan
        if plan.model is None:
            self.reporter.progress("reading the synthetic set", 0, 1, "sets")
            self.draws = [read_split(self.store, plan.synthetic_dataset, None, plan.spatial_dims,
                                     self.settings.real_limit(plan.spatial_dims))]
            return
        engine = self._engine()
        total = plan.repeats * plan.model.count
        for draw in range(plan.repeats):
            done = draw * plan.model.count
            self.draws.append(generate(engine, plan.model, draw, self.reporter.check_cancelled,
                                       lambda n: self.reporter.progress("generating", done + n, total, "samples")))

    @property
    def side(self) -> int:
        """The resolution of the comparison: the synthetic set's."""
        return self.draws[0].side

    # -- real ------------------------------------------------------------------

    def real(self, split: str | None = None) -> ImageSet:
        """A real split (default: the plan's) at the comparison's resolution;
        a model is compared with data resized as it was trained on it."""
        split = split or self.plan.split
        if split not in self._splits:
            self.reporter.progress(f"reading the {split} split", 0, 1, "splits")
            self._splits[split] = self._read(split, self.settings.real_limit(self.plan.spatial_dims))
        return self._splits[split]

    def _read(self, split: str, limit: int) -> ImageSet:
        """Masks are kept for training volumes only (slice labels of the 2.5D extractor)."""
        items = read_split(self.store, self.plan.dataset, split, self.plan.spatial_dims, limit,
                           with_masks=self.plan.spatial_dims == 3 and split == "train")
        return resized(items, self.side) if self.plan.model is not None else items

    def real_preview(self, count: int) -> ImageSet:
        """A few real items of the plan's split for the report, without
        reading the whole split when no metric did."""
        if self.plan.split in self._splits:
            return self._splits[self.plan.split]
        return self._read(self.plan.split, count)

    @property
    def heldout_split(self) -> str:
        """Real data the model never saw: the plan's split unless that is the training split."""
        if self.plan.split != "train":
            return self.plan.split
        for split in ("test", "validation"):
            if split in self.manifest.get("splits", {}):
                return split
        raise FailedPrecondition(f"dataset {self.plan.dataset} has no held-out split (test or validation)")

    def real_item_shape(self) -> tuple[int, ...]:
        """(C, *spatial) of a real item as compared, without reading any (from
        the manifest; a model's resolution for a model)."""
        dims = self.plan.spatial_dims
        stored = layout(dims).item_shape(self.manifest)
        if self.plan.model is not None:
            return (1,) + (self.side,) * dims
        return (1, *stored) if stored else self.real().images.shape[1:]

    def real_features(self, space: FeatureSpace, metric: str, split: str | None = None) -> RealFeatures:
        """Features of a real split, from the cache; on a miss the split is
        read, checked for `metric` (NaN, constant images) and featurized."""
        split = split or self.plan.split
        items = split_size(self.manifest, split, self.plan.spatial_dims,
                           self.settings.real_limit(self.plan.spatial_dims))

        def images() -> np.ndarray:
            self.reporter.progress(f"{space.name} features of the {split} split", 0, items, "images")
            pixels = self.real(split).images
            check_images(metric, pixels, f"the real {split} split")
            return pixels

        return self.cache.real(self.plan.dataset_name, self.plan.dataset_version, split, space, self.side, items,
                               images)

    def synthetic_features(self, space: FeatureSpace, draw: int) -> np.ndarray:
        key = (space.id, draw)
        if key not in self._features:
            self._features[key] = space.features(self.draws[draw].images)
        return self._features[key]

    # -- feature spaces --------------------------------------------------------------

    def space(self, kind: str) -> FeatureSpace:
        """A feature space by kind (see the module doc); a failure to make
        one is remembered and raised for every metric that needs it."""
        if kind not in self._spaces:
            try:
                self._spaces[kind] = self._make_space(kind)
            except ServiceError as exc:
                self._spaces[kind] = exc
        found = self._spaces[kind]
        if isinstance(found, ServiceError):
            raise found
        return found

    @property
    def domain_extractor(self) -> str:
        """The CT extractor used, "name:version" (empty when none was needed)."""
        found = self._spaces.get("ct")
        return found.reference if isinstance(found, DomainFeatures) else ""

    def _make_space(self, kind: str) -> FeatureSpace:
        settings, plan = self.settings, self.plan
        if kind == "inception":
            weights = local_weights(self.store, plan.inception_weights, settings.weights_roots(),
                                    settings.weights_dir(), INCEPTION_HOW_TO, "inception_weights")
            return InceptionFeatures(weights, self.device, settings.batch_size)
        if kind == "med3d":
            weights = local_weights(self.store, plan.med3d_weights, settings.weights_roots(),
                                    settings.weights_dir(), MED3D_HOW_TO, "med3d_weights")
            return Med3DFeatures(weights, self.device)
        if kind == "ct" and plan.domain_extractor:
            space = load_domain_extractor(self.store, plan.domain_extractor, self.device)
            if space.config.spatial_dims != plan.spatial_dims:
                raise FailedPrecondition(f"domain extractor {plan.domain_extractor} is {space.config.spatial_dims}D "
                                         f"and the evaluation {plan.spatial_dims}D")
            return space
        variant = {"ct": f"{plan.spatial_dims}d", "ct-planes": "25d"}[kind]
        return self._trained_extractor(variant)

    def _trained_extractor(self, variant: str) -> DomainFeatures:
        plan = self.plan
        name = extractor_name(plan.dataset_name, plan.dataset_version, variant)
        config = DomainExtractorConfig(spatial_dims=3 if variant == "3d" else 2, image_size=self.side,
                                       steps=self.settings.extractor_steps)
        reference = find_domain_extractor(self.store, name, config, plan.dataset)
        if reference is None:
            images, labels = self._extractor_training_set(variant)
            model, history = train_domain_extractor(
                images, labels, config, self.device,
                on_step=self.stepper(f"training the CT feature extractor {name}", config.steps, "steps"))
            reference = publish_domain_extractor(self.store, name, model, config, plan.dataset, history, self.job_id)
        return load_domain_extractor(self.store, reference, self.device)

    def _extractor_training_set(self, variant: str) -> tuple[np.ndarray, np.ndarray]:
        train = self.real("train")
        if len(train) == 0:
            raise FailedPrecondition(f"dataset {self.plan.dataset} has no training split to train a CT feature "
                                     "extractor on; name one with domain_extractor")
        if variant != "25d":
            return train.images, train.labels
        per_volume = self.settings.slices_per_axis
        images = np.concatenate([plane_slices(train.images, plane, per_volume) for plane in PLANES])
        masks = np.concatenate([plane_slices(train.masks, plane, per_volume) for plane in PLANES])
        return images, masks.reshape(len(masks), -1).any(axis=1).astype(np.int64)
