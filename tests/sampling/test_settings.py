"""Sampling settings from the environment, failing fast with the variable's name."""

from __future__ import annotations

import pytest

from ctsynth.sampling.settings import SamplingSettings


def test_defaults_and_overrides_from_the_environment():
    assert SamplingSettings.from_env({}, device="cpu").batch_rows() == 8
    settings = SamplingSettings.from_env({"CTSYNTH_MODEL_CACHE_BYTES": "1000", "CTSYNTH_SAMPLING_BATCHING": "off",
                                          "CTSYNTH_SAMPLING_MAX_BATCH": "4", "CTSYNTH_SAMPLING_MAX_WAIT_MS": "2.5",
                                          "CTSYNTH_SAMPLING_DEVICE": "cpu"})
    assert (settings.model_cache_bytes, settings.batching, settings.batch_rows(), settings.max_wait_ms) == \
        (1000, False, 4, 2.5)


@pytest.mark.parametrize("env, name", [
    ({"CTSYNTH_MODEL_CACHE_BYTES": "lots"}, "CTSYNTH_MODEL_CACHE_BYTES"),
    ({"CTSYNTH_SAMPLING_BATCHING": "maybe"}, "CTSYNTH_SAMPLING_BATCHING"),
    ({"CTSYNTH_SAMPLING_MAX_CONCURRENT": "0"}, "CTSYNTH_SAMPLING_MAX_CONCURRENT"),
    ({"CTSYNTH_SAMPLING_DEVICE": "abacus"}, "CTSYNTH_SAMPLING_DEVICE"),
])
def test_malformed_variables_are_named(env, name):
    with pytest.raises(ValueError, match=name):
        SamplingSettings.from_env(env)
