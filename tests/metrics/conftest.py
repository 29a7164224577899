"""Image sets and an InceptionV3 weights file for the metric tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from ctsynth.metrics.inception import WEIGHTS_FILE


def random_inception_weights(path: Path) -> Path:
    """InceptionV3 with seeded random weights in torch-fidelity's layout (its
    state_dict saved with torch.save), standing in for the real file that
    cannot be downloaded here. Kaiming-initialised convolutions keep the
    2048-d features away from zero through the network's depth."""

    class Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):
            return None  # keep the random initialisation

    empty = path.with_name("empty.pth")
    torch.save({}, empty)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        network = Unloaded("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
        for module in network.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    torch.save(network.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory) -> Path:
    return random_inception_weights(tmp_path_factory.mktemp("inception") / WEIGHTS_FILE)


def discs(count: int, size: int = 16, dims: int = 2, seed: int = 0, spread: float = 0.3) -> np.ndarray:
    """(count, 1, *spatial) bright discs of random centre and radius on a dark noisy background."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, size)] * dims, indexing="ij"))
    images = np.empty((count, 1) + (size,) * dims, dtype=np.float32)
    for i in range(count):
        centre = rng.uniform(-spread, spread, dims).reshape((dims,) + (1,) * dims)
        radius = rng.uniform(0.3, 0.6)
        inside = np.sqrt(((grid - centre) ** 2).sum(0)) < radius
        images[i, 0] = np.where(inside, 0.7, 0.2) + rng.normal(0, 0.03, inside.shape)
    return np.clip(images, 0, 1)
