"""The input errors every metric reports."""

from __future__ import annotations

import numpy as np
import pytest

from ctsynth.metrics.checks import MetricError, check_pair


@pytest.mark.parametrize("real, synthetic, message", [
    (np.zeros((2, 1, 4, 4)) + np.eye(4), np.full((2, 1, 4, 4), np.nan),
     "fid: the synthetic set item 0 contains NaN or infinite values"),
    (np.zeros((2, 1, 4, 4)) + np.eye(4), np.ones((2, 1, 4, 4)), "fid: the synthetic set item 0 is a constant image"),
    (np.zeros((2, 1, 4, 4)) + np.eye(4), np.zeros((2, 1, 4, 4, 4)) + np.eye(4),
     r"fid: the real set is 2D \(1, 4, 4\) and the synthetic set 3D"),
    (np.zeros((2, 1, 4, 4)) + np.eye(4), np.zeros((2, 1, 8, 8)) + np.eye(8), "the shapes differ"),
    (np.zeros((0, 1, 4, 4)), np.zeros((2, 1, 4, 4)) + np.eye(4), "fid: the real set is empty"),
])
def test_bad_sets_name_the_metric_and_the_reason(real, synthetic, message):
    with pytest.raises(MetricError, match=message) as raised:
        check_pair("fid", real, synthetic)
    assert raised.value.metric == "fid" and raised.value.status == "FAILED_PRECONDITION"
