"""An evaluation request, validated and resolved into a plan before any
work: what synthetic set (a model and its sampling settings, or a stored
dataset), against which real dataset split, which metrics.

Every bad value is INVALID_ARGUMENT naming its request field (weights outside
the store and the allowed roots too, whether or not such a file exists); an
unknown model or dataset is NOT_FOUND; weights named in the request that
cannot be read are FAILED_PRECONDITION. References are resolved to
"name:version" here, so a job re-run after a restart evaluates the same
versions, and the same request maps to the same job.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ctsynth.data.dataset_h5 import LAYOUTS
from ctsynth.errors import InvalidArgument
from ctsynth.evaluation.settings import EvaluationSettings
from ctsynth.metrics.domain_extractor import FAMILY as EXTRACTOR_FAMILY
from ctsynth.metrics.inception import HOW_TO as INCEPTION_HOW_TO
from ctsynth.metrics.med3d import HOW_TO as MED3D_HOW_TO
from ctsynth.metrics.segmentation import FAMILY as SEGMENTER_FAMILY
from ctsynth.metrics.weights import local_weights
from ctsynth.registry import Registry, parse_ref
from ctsynth.sampling.engine import SampleSpec
from ctsynth.storage import ObjectStore

# metric -> the dimensionalities it applies to
METRIC_DIMS = {
    "fid": {2}, "kid": {2}, "pr": {2}, "ct-fid": {2, 3}, "fid-3d": {3}, "fid-2.5d": {3}, "ms-ssim": {2, 3},
    "variety": {2, 3}, "memorization": {2, 3}, "utility": {2, 3}, "efficiency": {2, 3},
}
DEFAULT_METRICS = {
    2: ("fid", "kid", "pr", "ct-fid", "variety", "memorization", "utility", "efficiency"),
    3: ("ct-fid", "fid-2.5d", "ms-ssim", "variety", "memorization", "efficiency"),
}
ALTERNATIVES = {2: "fid-3d or fid-2.5d", 3: "fid, kid or pr"}
MAX_REPEATS = 10
# Networks evaluation trains for itself and registers as models; none can be sampled.
NOT_GENERATIVE = {EXTRACTOR_FAMILY: "a feature extractor", SEGMENTER_FAMILY: "a nodule segmenter"}


@dataclass(frozen=True)
class ModelSource:
    """Synthetic samples drawn from a registered model, as the sampling service draws them."""

    model: str  # "name:version"
    count: int
    seed: int
    conditional: bool
    condition: int | None = None  # 1 tumor, 0 no tumor, None: either
    sampler: Mapping[str, Any] = field(default_factory=dict)
    truncation_psi: float | None = None

    def spec(self, seed: int) -> SampleSpec:
        return SampleSpec(model=self.model, count=self.count, seed=seed, condition=self.condition,
                          sampler=dict(self.sampler), truncation_psi=self.truncation_psi, format="float16")


@dataclass(frozen=True)
class EvaluationPlan:
    dataset: str  # the real dataset, "name:version"
    split: str
    spatial_dims: int
    metrics: tuple[str, ...]
    repeats: int = 1
    seed: int = 0
    kid_subset_size: int = 0
    inception_weights: str = ""
    med3d_weights: str = ""
    domain_extractor: str = ""  # "name:version"; empty: trained on demand
    model: ModelSource | None = None
    synthetic_dataset: str = ""  # "name:version" when no model

    @property
    def dataset_name(self) -> str:
        return self.dataset.split(":")[0]

    @property
    def dataset_version(self) -> str:
        return self.dataset.split(":")[1]

    def to_json(self) -> dict[str, Any]:
        """JSON for the job record; 64-bit seeds as strings (JSON numbers are doubles)."""
        values = dataclasses.asdict(self)
        values["metrics"] = list(self.metrics)
        values["seed"] = str(self.seed)
        if self.model is not None:
            values["model"] = {**values["model"], "seed": str(self.model.seed), "sampler": dict(self.model.sampler)}
        return values

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> "EvaluationPlan":
        model = values.get("model")
        return cls(**{**values, "metrics": tuple(values["metrics"]), "seed": int(values["seed"]),
                      "model": None if model is None else ModelSource(**{**model, "seed": int(model["seed"])})})


def _renamed(exc: InvalidArgument, prefix: str) -> InvalidArgument:
    return InvalidArgument(f"{prefix}{exc.field}", str(exc).split(": ", 1)[-1])


def _model_source(values: Mapping[str, Any], models: Registry, max_count: int) -> tuple[ModelSource, int]:
    name, version = models.resolve(parse_ref(values.get("model", ""), "model.model"))
    config = models.store.get_json(f"{models.prefix(name, version)}/config.json")
    if config.get("family") in NOT_GENERATIVE:
        raise InvalidArgument("model.model", f"{name}:{version} is {NOT_GENERATIVE[config['family']]}, "
                                             "not a generative model")
    source = ModelSource(model=f"{name}:{version}", count=int(values.get("count") or 0),
                         seed=int(values.get("seed") or 0), conditional=bool(config.get("conditional")),
                         condition=values.get("condition"), sampler=dict(values.get("sampler") or {}),
                         truncation_psi=values.get("truncation_psi"))
    if source.count < 1:
        raise InvalidArgument("model.count", "set how many samples to draw (1 or more)")
    try:
        source.spec(source.seed).check(max_count)
    except InvalidArgument as exc:
        raise _renamed(exc, "model.") from None
    if source.condition is not None and not source.conditional:
        raise InvalidArgument("model.condition", f"{source.model} is unconditional; leave condition unspecified")
    return source, int(config.get("spatial_dims", 2))


def _synthetic_dims(values: Mapping[str, Any], datasets: Registry, reference: str) -> int:
    name, version = reference.split(":")
    files = datasets.manifest(name, version)["files"]
    dims = int(values.get("spatial_dims") or (2 if LAYOUTS[2].file in files else 3))
    if dims not in LAYOUTS:
        raise InvalidArgument("spatial_dims", f"{dims}; use 2 (slices) or 3 (volumes)")
    if LAYOUTS[dims].file not in files:
        raise InvalidArgument("synthetic_dataset", f"{reference} has no {LAYOUTS[dims].file} for a {dims}D evaluation")
    return dims


def _metrics(requested, dims: int) -> tuple[str, ...]:
    if not requested:
        return DEFAULT_METRICS[dims]
    chosen = []
    for name in requested:
        name = name.strip().lower()
        if name not in METRIC_DIMS:
            raise InvalidArgument("metrics", f"unknown metric {name!r}; known: {', '.join(METRIC_DIMS)}")
        if dims not in METRIC_DIMS[name]:
            raise InvalidArgument("metrics", f"{name} does not apply to {dims}D samples; for {dims}D use "
                                             f"{ALTERNATIVES[dims]} or ct-fid")
        if name not in chosen:
            chosen.append(name)
    return tuple(chosen)


def _weights(values: Mapping[str, Any], key: str, default: str, store: ObjectStore, settings: EvaluationSettings,
             how_to: str) -> str:
    """The request's weights reference, checked now; else the service's default (checked when used)."""
    reference = (values.get(key) or "").strip()
    if reference:
        local_weights(store, reference, settings.weights_roots(), settings.weights_dir(), how_to, key)
    return reference or default


def plan_evaluation(values: Mapping[str, Any], store: ObjectStore, settings: EvaluationSettings,
                    max_count: int) -> EvaluationPlan:
    """The plan for a request given as plain values (the StartEvaluationRequest
    fields; `model` holds `model`, `count`, `seed`, `condition` 0/1/None,
    `sampler` and `truncation_psi`)."""
    datasets, models = Registry(store, "datasets", "dataset"), Registry(store, "models", "model")
    if bool(values.get("model")) == bool(values.get("synthetic_dataset")):
        raise InvalidArgument("synthetic", "set either model (samples drawn from a model) or synthetic_dataset "
                                           "(a stored synthetic set)")
    name, version = datasets.resolve(parse_ref(values.get("dataset", ""), "dataset"))
    manifest = datasets.manifest(name, version)
    model, synthetic = None, ""
    if values.get("model"):
        model, dims = _model_source(values["model"], models, max_count)
    else:
        synthetic = "{}:{}".format(*datasets.resolve(parse_ref(values["synthetic_dataset"], "synthetic_dataset")))
        dims = _synthetic_dims(values, datasets, synthetic)
    if LAYOUTS[dims].file not in manifest["files"]:
        raise InvalidArgument("dataset", f"{name}:{version} has no {LAYOUTS[dims].file} for a {dims}D evaluation")
    split = values.get("split") or "test"
    if split not in manifest.get("splits", {}):
        raise InvalidArgument("split", f"dataset {name}:{version} has no split {split!r}; it has "
                                       f"{', '.join(manifest.get('splits', {})) or 'none'}")
    repeats = int(values.get("repeats") or 1)
    if not 1 <= repeats <= MAX_REPEATS:
        raise InvalidArgument("repeats", f"{repeats} is outside 1-{MAX_REPEATS}")
    if repeats > 1 and model is None:
        raise InvalidArgument("repeats", "a stored synthetic set is one draw; repeats need a model to draw from")
    kid_subset_size = int(values.get("kid_subset_size") or 0)
    if kid_subset_size < 0:
        raise InvalidArgument("kid_subset_size", f"{kid_subset_size} must be >= 0 (0: automatic)")
    extractor = ""
    if values.get("domain_extractor"):
        extractor = "{}:{}".format(*models.resolve(parse_ref(values["domain_extractor"], "domain_extractor")))
    return EvaluationPlan(
        dataset=f"{name}:{version}", split=split, spatial_dims=dims, metrics=_metrics(values.get("metrics"), dims),
        repeats=repeats, seed=int(values.get("seed") or 0), kid_subset_size=kid_subset_size,
        inception_weights=_weights(values, "inception_weights", settings.inception_weights, store, settings,
                                   INCEPTION_HOW_TO),
        med3d_weights=_weights(values, "med3d_weights", settings.med3d_weights, store, settings, MED3D_HOW_TO),
        domain_extractor=extractor, model=model, synthetic_dataset=synthetic)
