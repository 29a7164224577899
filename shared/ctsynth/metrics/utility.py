"""Utility of synthetic data for a downstream task (seed 002 §II-D): a small
tumor-presence classifier trained three ways,

(a) real: on the real training split;
(b) augmentation utility: on the real training split plus the synthetic set;
(c) feature-extraction utility: pre-trained on the synthetic set alone, then
    only its last (fully connected) layer fine-tuned on the real training
    split, every other layer frozen;

each scored by accuracy and AUC on the real test split, over R repeats with
their own seeds (repeat r uses synthetic draw r mod the number of draws).
Paired Wilcoxon signed-rank tests of (b) and (c) against (a) say whether the
differences in accuracy are significant (seed 002 marks p < 0.05).

Synthetic items need tumor labels: the condition a conditional model
generated them with, or the labels of a stored synthetic dataset.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats
from torch.nn import functional as F

from ctsynth.metrics.checks import MetricError, check_count, check_same_shape
from ctsynth.metrics.networks import TumorClassifier, batched, fit, seeded

ARMS = ("real", "augmented", "extraction")
SIGNIFICANCE = 0.05  # seed 002 marks p < 0.05
MIN_WILCOXON_PAIRS = 6  # the fewest pairs whose smallest possible p (2^(1-n)) is below SIGNIFICANCE
Labelled = tuple[np.ndarray, np.ndarray]  # (N, 1, *spatial) images, (N,) 0/1 labels


@dataclass(frozen=True)
class UtilitySettings:
    steps: int = 200  # per training run, and again for the fine-tuning of (c)
    batch_size: int = 32
    lr: float = 1e-3
    widths: tuple[int, ...] = (16, 32, 64)


@dataclass(frozen=True)
class UtilityResult:
    accuracy: dict[str, list[float]]  # arm -> per repeat
    auc: dict[str, list[float]]
    p_augmentation: float
    p_extraction: float

    def gains(self, arm: str) -> np.ndarray:
        """Accuracy of `arm` minus that of the real-only classifier, per repeat."""
        return np.array(self.accuracy[arm]) - np.array(self.accuracy["real"])

    def details(self) -> dict[str, float]:
        values = {f"accuracy_{arm}": float(np.mean(self.accuracy[arm])) for arm in ARMS}
        values.update({f"auc_{arm}": float(np.mean(self.auc[arm])) for arm in ARMS})
        values.update(gain_augmentation=float(self.gains("augmented").mean()),
                      gain_extraction=float(self.gains("extraction").mean()),
                      p_augmentation=self.p_augmentation, p_extraction=self.p_extraction,
                      repeats=float(len(self.accuracy["real"])))
        return values


def rank_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count half)."""
    ranks = stats.rankdata(scores)
    positives = labels == 1
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def paired_wilcoxon(treated: Sequence[float], baseline: Sequence[float]) -> float:
    """Two-sided p-value of the paired Wilcoxon signed-rank test; 1 when no pair differs."""
    differences = np.asarray(treated) - np.asarray(baseline)
    if np.allclose(differences, 0):
        return 1.0
    return float(stats.wilcoxon(treated, baseline).pvalue)


def min_wilcoxon_p(pairs: int) -> float:
    """The smallest two-sided p-value the exact signed-rank test can give on
    `pairs` pairs (every difference of one sign): 2^(1 - pairs)."""
    return 2.0 ** (1 - pairs)


def wilcoxon_when_meaningful(treated: Sequence[float], baseline: Sequence[float]) -> tuple[float | None, str]:
    """`paired_wilcoxon`, or None and the reason when there are too few pairs
    for any outcome to reach p < SIGNIFICANCE (fewer than MIN_WILCOXON_PAIRS)."""
    pairs = len(treated)
    if pairs < MIN_WILCOXON_PAIRS:
        floor = f"its smallest possible two-sided p is {min_wilcoxon_p(pairs):.3g}" if pairs else "there are no pairs"
        return None, (f"{pairs} repeat(s) are too few for the paired Wilcoxon test: on {pairs} pair(s) {floor}, "
                      f"so it cannot reach p < {SIGNIFICANCE}; use at least {MIN_WILCOXON_PAIRS} repeats")
    return paired_wilcoxon(treated, baseline), ""


def repeat_seed(seed: int, repeat: int) -> int:
    """The training seed of repeat `repeat` of a utility test seeded `seed`."""
    return seed * 1000 + repeat


def _bce(model: TumorClassifier, frozen_encoder: bool = False):
    def loss_fn(batch: list[torch.Tensor], generator: torch.Generator):
        images, labels = batch
        if frozen_encoder:
            with torch.no_grad():
                features = model.encoder(images)
            logits = model.head(features).squeeze(1)
        else:
            logits = model(images)
        return F.binary_cross_entropy_with_logits(logits, labels.float()), {}
    return loss_fn


def _train(data: Labelled, settings: UtilitySettings, seed: int, device: torch.device) -> TumorClassifier:
    model = seeded(lambda: TumorClassifier(data[0].ndim - 2, settings.widths), seed).to(device)
    fit(model, model.parameters(), _bce(model), data, steps=settings.steps, batch_size=settings.batch_size,
        lr=settings.lr, seed=seed, device=device)
    return model


def _fine_tune_head(model: TumorClassifier, data: Labelled, settings: UtilitySettings, seed: int,
                    device: torch.device) -> None:
    model.encoder.eval()
    fit(model.head, model.head.parameters(), _bce(model, frozen_encoder=True), data, steps=settings.steps,
        batch_size=settings.batch_size, lr=settings.lr, seed=seed + 1, device=device)


def _check(metric: str, data: Labelled, what: str) -> None:
    images, labels = data
    check_count(metric, len(images), 2, what, "training and scoring a classifier")
    if set(np.unique(labels).tolist()) != {0, 1}:
        raise MetricError(metric, f"{what} needs items with and without a tumor; it has only label(s) "
                                  f"{sorted(set(np.unique(labels).tolist()))}")


def utility(train: Labelled, test: Labelled, synthetic: Sequence[Labelled], repeats: int,
            settings: UtilitySettings, device: torch.device, seed: int = 0, metric: str = "utility",
            on_repeat: Callable[[int], None] | None = None) -> UtilityResult:
    _check(metric, train, "the real training split")
    _check(metric, test, "the real test split")
    for number, draw in enumerate(synthetic):
        check_same_shape(metric, train[0].shape[1:], draw[0].shape[1:])
        check_count(metric, len(draw[0]), 1, f"synthetic draw {number}", "training a classifier")
    if repeats < 2:
        raise MetricError(metric, f"{repeats} repeat gives no pairs for the Wilcoxon test; use at least 2")
    accuracy: dict[str, list[float]] = {arm: [] for arm in ARMS}
    auc: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for repeat in range(repeats):
        run_seed = repeat_seed(seed, repeat)
        images, labels = synthetic[repeat % len(synthetic)]
        augmented = (np.concatenate([train[0], images]), np.concatenate([train[1], labels]))
        extraction = _train((images, labels), settings, run_seed, device)
        _fine_tune_head(extraction, train, settings, run_seed, device)
        models = {"real": _train(train, settings, run_seed, device),
                  "augmented": _train(augmented, settings, run_seed, device), "extraction": extraction}
        for arm, model in models.items():
            scores = batched(model.eval(), test[0], device)
            accuracy[arm].append(float(np.mean((scores > 0) == (test[1] == 1))))
            auc[arm].append(rank_auc(test[1], scores))
        if on_repeat is not None:
            on_repeat(repeat + 1)
    return UtilityResult(accuracy, auc, paired_wilcoxon(accuracy["augmented"], accuracy["real"]),
                         paired_wilcoxon(accuracy["extraction"], accuracy["real"]))
