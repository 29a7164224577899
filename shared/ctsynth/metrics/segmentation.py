"""Nodule segmentation as a yardstick for mask-conditioned generators.

- A segmenter: MONAI's `UNet` (2D or 3D by `spatial_dims`), trained on
  (image, mask) pairs with MONAI's DiceCELoss (or DiceFocalLoss), seeded
  (initialisation and minibatches), thresholded into 0/1 masks. One trained
  on a dataset version's real training split is cached in the model
  registry like the CT feature extractor (`ctseg<2d|3d>-<dataset>-<version>`,
  family "segmenter", safetensors + JSON, reused when the settings and the
  dataset "name:version" match), so a second evaluation does not train again.
- Conditioning fidelity: the generated images segmented and compared with
  the masks they were asked for (Dice, detection sensitivity, false
  positives per image). The same numbers on the real test split's own
  (image, mask) pairs are the reference: what a perfect generator, one whose
  samples are as segmentable as real CT, would score.
- HU statistics inside nodules, generated vs real, optionally per LIDC
  texture rating (1-5).
- Segmentation utility (seed 002's protocol for a segmentation task): the
  segmenter trained on real pairs vs real + synthetic pairs, Dice on the
  held-out real pairs, over seeded repeats, with a paired Wilcoxon test.

Masks are (N, 1, *spatial) in {0, 1}; images (N, 1, *spatial) in [0, 1].
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.losses import DiceCELoss, DiceFocalLoss
from monai.metrics import compute_dice
from monai.networks.nets import UNet
from scipy import ndimage

from ctsynth.errors import InvalidArgument
from ctsynth.metrics.checks import MetricError, check_count, check_same_shape
from ctsynth.metrics.networks import batched, fit, seeded
from ctsynth.metrics.published import dataset_model_name, find_trained, publish_trained, read_trained
from ctsynth.metrics.utility import repeat_seed, wilcoxon_when_meaningful
from ctsynth.storage import ObjectStore

FAMILY = "segmenter"
LOSSES = {"dice_ce": DiceCELoss, "dice_focal": DiceFocalLoss}
UTILITY_ARMS = ("real", "augmented")
RATINGS = range(1, 6)  # LIDC texture: 1 non-solid (ground glass) ... 5 solid
Pairs = tuple[np.ndarray, np.ndarray]  # (N, 1, *spatial) images, (N, 1, *spatial) 0/1 masks


@dataclass(frozen=True)
class SegmenterConfig:
    """The segmenter's network and training settings (all of them are the cache key)."""

    spatial_dims: int = 2
    image_size: int = 0  # side of the training images; 0: unrecorded
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 2
    loss: str = "dice_ce"  # or "dice_focal"
    steps: int = 300
    batch_size: int = 16
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3):
            raise InvalidArgument("spatial_dims", f"{self.spatial_dims}; use 2 or 3")
        if len(self.channels) < 2 or min(self.channels) < 1:
            raise InvalidArgument("channels", f"{self.channels}: give at least two positive channel counts")
        if len(self.strides) != len(self.channels) - 1 or min(self.strides) < 1:
            raise InvalidArgument("strides", f"{self.strides}: give one positive stride per level below the "
                                             f"first ({len(self.channels) - 1})")
        if self.loss not in LOSSES:
            raise InvalidArgument("loss", f"{self.loss!r}; use one of {', '.join(LOSSES)}")
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise InvalidArgument(name, f"{getattr(self, name)} must be >= 1")
        for name in ("num_res_units", "image_size"):
            if getattr(self, name) < 0:
                raise InvalidArgument(name, f"{getattr(self, name)} must be >= 0")
        if self.lr <= 0:
            raise InvalidArgument("lr", f"{self.lr} must be > 0")

    @property
    def divisor(self) -> int:
        """Every spatial side must be a multiple of this (the U-Net's total downsampling)."""
        return math.prod(self.strides)

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "channels": list(self.channels), "strides": list(self.strides)}

    @classmethod
    def from_json(cls, values: dict) -> "SegmenterConfig":
        return cls(**{**values, "channels": tuple(values["channels"]), "strides": tuple(values["strides"])})


def build_unet(config: SegmenterConfig) -> UNet:
    """(N, 1, *spatial) -> (N, 1, *spatial) nodule logits."""
    return UNet(spatial_dims=config.spatial_dims, in_channels=1, out_channels=1, channels=config.channels,
                strides=config.strides, num_res_units=config.num_res_units)


class Segmenter:
    """A trained U-Net; `reference` is its registry "name:version" ("" when unpublished)."""

    def __init__(self, network: UNet, config: SegmenterConfig, device: torch.device, reference: str = "",
                 weights_sha256: str = "", batch_size: int = 32):
        self.network = network.to(device).eval()
        self.config, self.device = config, device
        self.reference, self.weights_sha256 = reference, weights_sha256
        self.batch_size = batch_size

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """(N, 1, *spatial) nodule probabilities."""
        check_segmentable("segmentation", images.shape, self.config)
        return batched(lambda x: torch.sigmoid(self.network(x)), images, self.device, self.batch_size)

    def predict(self, images: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        """(N, 1, *spatial) uint8 masks: probability > `threshold`."""
        if not 0 < threshold < 1:
            raise InvalidArgument("threshold", f"{threshold} must lie in (0, 1)")
        return (self.probabilities(images) > threshold).astype(np.uint8)


def check_segmentable(metric: str, shape: tuple[int, ...], config: SegmenterConfig) -> None:
    """(N, 1, *spatial) of the segmenter's dimensionality, every side a multiple of its downsampling."""
    if len(shape) != config.spatial_dims + 2 or shape[1] != 1:
        raise MetricError(metric, f"items of shape {tuple(shape[1:])} are not single-channel "
                                  f"{config.spatial_dims}D images for a {config.spatial_dims}D segmenter")
    if any(side % config.divisor for side in shape[2:]):
        raise MetricError(metric, f"spatial shape {tuple(shape[2:])} is not a multiple of {config.divisor}, the "
                                  f"segmenter's downsampling (strides {config.strides})")


def check_masks(metric: str, images: np.ndarray, masks: np.ndarray, what: str) -> None:
    """Masks of the images' shape with values in {0, 1}."""
    check_count(metric, len(images), 1, what, "segmentation")
    if masks.shape != images.shape:
        raise MetricError(metric, f"{what}: masks {masks.shape} do not match images {images.shape}")
    if not np.isin(masks, (0, 1)).all():
        raise MetricError(metric, f"{what}: masks must hold only 0 and 1")


def train_segmenter(images: np.ndarray, masks: np.ndarray, config: SegmenterConfig, device: torch.device,
                    on_step: Callable[[int, dict[str, float]], None] | None = None,
                    metric: str = "segmenter") -> tuple[Segmenter, list[dict[str, float]]]:
    """Train on (image, mask) pairs; deterministic given `config.seed` (the
    initialisation and the minibatches are seeded)."""
    check_masks(metric, images, masks, "the training pairs")
    check_segmentable(metric, images.shape, config)
    network = seeded(lambda: build_unet(config), config.seed).to(device)
    loss = LOSSES[config.loss](sigmoid=True)

    def loss_fn(batch: list[torch.Tensor], generator: torch.Generator):
        pixels, target = batch
        return loss(network(pixels), target), {}

    history = fit(network, network.parameters(), loss_fn, (images.astype(np.float32), masks.astype(np.float32)),
                  steps=config.steps, batch_size=config.batch_size, lr=config.lr, seed=config.seed, device=device,
                  on_step=on_step)
    return Segmenter(network, config, device), history


# -- the cache: one segmenter per dataset version and settings -------------------


def segmenter_name(dataset: str, version: str, spatial_dims: int) -> str:
    """The registry name of the segmenter trained on demand for a dataset version."""
    return dataset_model_name(f"ctseg{spatial_dims}d", dataset, version)


def publish_segmenter(store: ObjectStore, name: str, segmenter: Segmenter, dataset: str,
                      history: list[dict[str, float]], job_id: str = "") -> str:
    """Publish a new version of `name`; returns "name:version"."""
    config = segmenter.config
    return publish_trained(store, name, FAMILY, segmenter.network, config.to_json(), config.spatial_dims, dataset,
                           history, config.steps, job_id)


def find_segmenter(store: ObjectStore, name: str, config: SegmenterConfig, dataset: str) -> str | None:
    """The newest version of `name` trained with `config` on `dataset`, if any."""
    return find_trained(store, name, config.to_json(), dataset)


def load_segmenter(store: ObjectStore, reference: str, device: torch.device, field: str = "segmenter") -> Segmenter:
    """A published segmenter, its files checked against the manifest."""
    reference, description, weights, weights_sha256 = read_trained(store, reference, FAMILY, "a nodule segmenter",
                                                                   field)
    config = SegmenterConfig.from_json(description["config"])
    network = build_unet(config)
    network.load_state_dict(weights)
    return Segmenter(network, config, device, reference, weights_sha256)


def cached_segmenter(store: ObjectStore, dataset: str, config: SegmenterConfig, pairs: Callable[[], Pairs],
                     device: torch.device, on_step: Callable[[int, dict[str, float]], None] | None = None,
                     job_id: str = "") -> Segmenter:
    """The segmenter for `dataset` ("name:version") and `config`: the
    registered one when there is one, else trained on `pairs()` (the real
    training split, read only on a miss), published, and loaded back."""
    name = segmenter_name(*dataset.split(":"), config.spatial_dims)
    reference = find_segmenter(store, name, config, dataset)
    if reference is None:
        images, masks = pairs()
        segmenter, history = train_segmenter(images, masks, config, device, on_step)
        reference = publish_segmenter(store, name, segmenter, dataset, history, job_id)
    return load_segmenter(store, reference, device)


# -- conditioning fidelity ----------------------------------------------------------------


def dice_scores(predicted: np.ndarray, requested: np.ndarray) -> np.ndarray:
    """(N,) Dice of each predicted mask with its requested mask (MONAI's
    compute_dice). Defined explicitly at the edges: nothing requested and
    nothing found scores 1 (perfect agreement); nothing requested but
    something found, or the reverse, scores 0."""
    scores = compute_dice(torch.from_numpy(np.asarray(predicted, np.float32)),
                          torch.from_numpy(np.asarray(requested, np.float32)), include_background=True,
                          ignore_empty=False)
    return scores.reshape(-1).double().numpy()


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components of one (*spatial) mask, diagonal neighbours connected (8 / 26-connectivity)."""
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    return ndimage.label(mask > 0, structure=structure)


@dataclass(frozen=True)
class Detection:
    """Nodule-level agreement of predicted with requested masks."""

    images: int
    requested: int  # requested nodules: connected components of the requested masks
    detected: int  # ... that some predicted voxel overlaps
    false_positives: int  # predicted components that overlap no requested voxel

    @property
    def sensitivity(self) -> float | None:
        """detected / requested; None when no nodule was requested."""
        return self.detected / self.requested if self.requested else None

    @property
    def false_positives_per_image(self) -> float:
        return self.false_positives / self.images


def detection(predicted: np.ndarray, requested: np.ndarray) -> Detection:
    """A requested nodule counts as detected when the predicted mask overlaps
    it in at least one voxel (IoU > 0; no centroid criterion). A predicted
    component overlapping no requested nodule is a false positive. Components
    are 8-connected in 2D, 26-connected in 3D."""
    requested_total = detected = false_positives = 0
    for found, asked in zip(predicted[:, 0], requested[:, 0]):
        asked_labels, asked_count = _components(asked)
        found_labels, found_count = _components(found)
        requested_total += asked_count
        detected += int(np.count_nonzero(np.unique(asked_labels[found > 0])))
        false_positives += found_count - int(np.count_nonzero(np.unique(found_labels[asked > 0])))
    return Detection(len(predicted), requested_total, detected, false_positives)


@dataclass(frozen=True)
class Fidelity:
    """How well segmented images match the masks they were asked for."""

    dice_per_image: np.ndarray  # (N,)
    detection: Detection

    @property
    def dice(self) -> float:
        return float(self.dice_per_image.mean())

    def details(self, prefix: str = "") -> dict[str, float]:
        """Floats for a report; sensitivity is left out when no nodule was requested."""
        values = {"dice": self.dice, "false_positives_per_image": self.detection.false_positives_per_image,
                  "requested_nodules": float(self.detection.requested),
                  "detected_nodules": float(self.detection.detected)}
        if self.detection.sensitivity is not None:
            values["sensitivity"] = self.detection.sensitivity
        return {f"{prefix}{key}": value for key, value in values.items()}


def mask_fidelity(predicted: np.ndarray, requested: np.ndarray) -> Fidelity:
    """Dice and detection of 0/1 predicted masks against requested masks."""
    return Fidelity(dice_scores(predicted, requested), detection(predicted, requested))


def conditioning_fidelity(segmenter: Segmenter, images: np.ndarray, masks: np.ndarray, threshold: float = 0.5,
                          metric: str = "conditioning-dice", what: str = "the generated images") -> Fidelity:
    """Segment generated `images` and compare with the `masks` they were
    generated for. Called on the real test split's own pairs it gives the
    reference: what a perfect generator would score (see `reference_fidelity`)."""
    check_masks(metric, images, masks, what)
    check_segmentable(metric, images.shape, segmenter.config)
    return mask_fidelity(segmenter.predict(images, threshold), masks)


def reference_fidelity(segmenter: Segmenter, test_images: np.ndarray, test_masks: np.ndarray,
                       threshold: float = 0.5, metric: str = "conditioning-dice") -> Fidelity:
    """The segmenter on the real test split's (image, mask) pairs: the score
    of a generator whose images are as segmentable as real CT."""
    return conditioning_fidelity(segmenter, test_images, test_masks, threshold, metric, "the real test split")


# -- HU inside nodules -------------------------------------------------------------------


@dataclass(frozen=True)
class HUStats:
    """HU of every voxel inside the masks, pooled over the items."""

    voxels: int
    items: int  # items with at least one nodule voxel
    mean: float | None  # None when there are no nodule voxels
    std: float | None  # population std (ddof 0)


@dataclass(frozen=True)
class NoduleHU:
    overall: HUStats
    by_rating: dict[int, HUStats] = field(default_factory=dict)  # only when ratings were given


def to_hu(images: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Pixels in [0, 1] under the window (lo, hi) back in HU: lo + x (hi - lo)
    (values outside the window were clipped to it when the images were made)."""
    lo, hi = window
    if not hi > lo:
        raise InvalidArgument("window", f"({lo}, {hi}): hi must exceed lo")
    return lo + np.asarray(images, np.float64) * (hi - lo)


def _hu_stats(hu: np.ndarray, masks: np.ndarray) -> HUStats:
    inside = masks > 0
    values = hu[inside]
    items = int(inside.reshape(len(inside), -1).any(axis=1).sum()) if len(inside) else 0
    if values.size == 0:
        return HUStats(0, 0, None, None)
    return HUStats(int(values.size), items, float(values.mean()), float(values.std()))


def nodule_hu(images: np.ndarray, masks: np.ndarray, window: tuple[float, float],
              ratings: Sequence[int] | np.ndarray | None = None, metric: str = "nodule-hu") -> NoduleHU:
    """Mean and std HU inside the masks; with `ratings` (one integer texture
    rating 1-5 per item, LIDC) also per rating, over the items rated so."""
    check_masks(metric, images, masks, "the images")
    hu = to_hu(images, window)
    overall = _hu_stats(hu, masks)
    if ratings is None:
        return NoduleHU(overall)
    ratings = np.asarray(ratings)
    if ratings.shape != (len(images),) or not np.issubdtype(ratings.dtype, np.integer):
        raise MetricError(metric, f"ratings must be one integer per item ({len(images)}), got shape {ratings.shape} "
                                  f"of {ratings.dtype}")
    if not np.isin(ratings, RATINGS).all():
        raise MetricError(metric, f"ratings must lie in 1-5 (LIDC texture), got {sorted(set(ratings.tolist()))}")
    return NoduleHU(overall, {int(r): _hu_stats(hu[ratings == r], masks[ratings == r])
                              for r in sorted(set(ratings.tolist()))})


def compare_nodule_hu(generated: NoduleHU, real: NoduleHU) -> dict[str, float]:
    """Report floats: generated and real mean/std HU and their differences,
    overall and per rating present in both; a side with no nodule voxels is left out."""
    values: dict[str, float] = {}

    def add(prefix: str, synthetic: HUStats, reference: HUStats) -> None:
        for side, stats in (("generated", synthetic), ("real", reference)):
            if stats.mean is not None:
                values[f"{prefix}{side}_mean_hu"] = stats.mean
                values[f"{prefix}{side}_std_hu"] = stats.std
        if synthetic.mean is not None and reference.mean is not None:
            values[f"{prefix}mean_hu_difference"] = synthetic.mean - reference.mean
            values[f"{prefix}std_hu_difference"] = synthetic.std - reference.std

    add("", generated.overall, real.overall)
    for rating in sorted(set(generated.by_rating) & set(real.by_rating)):
        add(f"rating{rating}_", generated.by_rating[rating], real.by_rating[rating])
    return values


# -- segmentation utility (seed 002's protocol) -----------------------------------------


@dataclass(frozen=True)
class SegmentationUtilityResult:
    dice: dict[str, list[float]]  # arm ("real", "augmented") -> mean Dice on the real test pairs, per repeat
    p_value: float | None  # paired Wilcoxon, augmented vs real; None when too few repeats ...
    p_note: str = ""  # ... and why

    def gains(self) -> np.ndarray:
        """Dice of the real + synthetic segmenter minus that of the real-only one, per repeat."""
        return np.array(self.dice["augmented"]) - np.array(self.dice["real"])

    def details(self) -> dict[str, float]:
        values = {f"dice_{arm}": float(np.mean(self.dice[arm])) for arm in UTILITY_ARMS}
        values.update(gain=float(self.gains().mean()), repeats=float(len(self.dice["real"])))
        if self.p_value is not None:
            values["p_augmentation"] = self.p_value
        return values


def segmentation_utility(train: Pairs, test: Pairs, synthetic: Sequence[Pairs], repeats: int,
                         config: SegmenterConfig, device: torch.device, seed: int = 0, threshold: float = 0.5,
                         metric: str = "segmentation-utility",
                         on_repeat: Callable[[int], None] | None = None) -> SegmentationUtilityResult:
    """Seed 002's augmentation utility for segmentation: per repeat r (seed
    `repeat_seed(seed, r)`, synthetic draw r mod the number of draws) one
    segmenter on the real training pairs and one on those plus the synthetic
    pairs (the generated images with the masks they were asked for), each
    scored by mean Dice on the real test pairs; paired Wilcoxon test of the
    two arms when there are enough repeats."""
    check_masks(metric, *train, "the real training split")
    check_masks(metric, *test, "the real test split")
    if not synthetic:
        raise MetricError(metric, "no synthetic draws")
    for number, (images, masks) in enumerate(synthetic):
        check_same_shape(metric, train[0].shape[1:], images.shape[1:])
        check_masks(metric, images, masks, f"synthetic draw {number}")
    if repeats < 1:
        raise MetricError(metric, f"repeats is {repeats}; use at least 1")
    dice: dict[str, list[float]] = {arm: [] for arm in UTILITY_ARMS}
    for repeat in range(repeats):
        run_config = dataclasses.replace(config, seed=repeat_seed(seed, repeat))
        images, masks = synthetic[repeat % len(synthetic)]
        sets = {"real": train, "augmented": (np.concatenate([train[0], images]), np.concatenate([train[1], masks]))}
        for arm, (pixels, targets) in sets.items():
            segmenter, _ = train_segmenter(pixels, targets, run_config, device, metric=metric)
            dice[arm].append(conditioning_fidelity(segmenter, *test, threshold, metric, "the real test split").dice)
        if on_repeat is not None:
            on_repeat(repeat + 1)
    p_value, note = wilcoxon_when_meaningful(dice["augmented"], dice["real"])
    return SegmentationUtilityResult(dice, p_value, note)
