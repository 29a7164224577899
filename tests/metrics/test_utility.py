"""The utility test of seed 002 on tiny data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from ctsynth.metrics.checks import MetricError
from ctsynth.metrics.utility import UtilitySettings, paired_wilcoxon, rank_auc, utility
from tests.metrics.conftest import discs

CPU = torch.device("cpu")
TINY = UtilitySettings(steps=4, batch_size=8, widths=(4, 8))


def labelled(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Discs, bright (label 1) on odd items."""
    images = discs(count, size=8, seed=seed)
    labels = np.arange(count) % 2
    images[labels == 1] = np.clip(images[labels == 1] + 0.2, 0, 1)
    return images, labels


def test_runs_end_to_end_and_returns_p_values():
    result = utility(labelled(12, 1), labelled(10, 2), [labelled(8, 3), labelled(8, 4)], repeats=3,
                     settings=TINY, device=CPU, seed=7)
    assert all(len(result.accuracy[arm]) == 3 for arm in ("real", "augmented", "extraction"))
    assert all(0 <= a <= 1 for values in result.accuracy.values() for a in values)
    assert 0 < result.p_augmentation <= 1 and 0 < result.p_extraction <= 1
    details = result.details()
    assert details["repeats"] == 3
    assert details["gain_augmentation"] == pytest.approx(details["accuracy_augmented"] - details["accuracy_real"])
    again = utility(labelled(12, 1), labelled(10, 2), [labelled(8, 3), labelled(8, 4)], repeats=3,
                    settings=TINY, device=CPU, seed=7)
    assert again.accuracy == result.accuracy  # seeded


def test_rank_auc_and_the_wilcoxon_test_against_known_values():
    assert rank_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert rank_auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5
    treated, baseline = [0.9, 0.8, 0.85, 0.7, 0.95], [0.8, 0.75, 0.8, 0.72, 0.9]
    assert paired_wilcoxon(treated, baseline) == stats.wilcoxon(treated, baseline).pvalue
    assert paired_wilcoxon([0.5, 0.6], [0.5, 0.6]) == 1.0


def test_needs_both_classes_and_two_repeats():
    train, test = labelled(8, 1), labelled(8, 2)
    one_class = (train[0], np.zeros(8, dtype=int))
    with pytest.raises(MetricError, match=r"utility: the real training split needs items with and without a tumor"):
        utility(one_class, test, [labelled(8, 3)], repeats=2, settings=TINY, device=CPU)
    with pytest.raises(MetricError, match="1 repeat gives no pairs for the Wilcoxon test"):
        utility(train, test, [labelled(8, 3)], repeats=1, settings=TINY, device=CPU)
    with pytest.raises(MetricError, match="shapes differ"):
        utility(train, test, [(discs(4, size=16), np.zeros(4, dtype=int))], repeats=2, settings=TINY, device=CPU)
