"""FID, KID and PR on InceptionV3 features through torch-fidelity, with a
weights file built here in torch-fidelity's layout."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset
from torch_fidelity import calculate_metrics

from ctsynth.errors import FailedPrecondition
from ctsynth.metrics.feature_metrics import fid, kid, precision_recall
from ctsynth.metrics.frechet import FeatureStatistics
from ctsynth.metrics.inception import InceptionFeatures, to_uint8_rgb
from tests.metrics.conftest import discs

CPU = torch.device("cpu")


class Tensors(Dataset):
    """What torch-fidelity's own callers hand it: one uint8 (3, H, W) tensor per item."""

    def __init__(self, tensors: torch.Tensor):
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.tensors[i]


def test_grayscale_becomes_three_identical_uint8_channels():
    images = np.array([[[[0.0, 0.5], [1.0, 1.2]]]], dtype=np.float32)
    rgb = to_uint8_rgb(images)
    assert rgb.dtype == torch.uint8 and rgb.shape == (1, 3, 2, 2)
    assert rgb[0, :, 0, 1].tolist() == [128, 128, 128] and rgb[0, 0].flatten().tolist() == [0, 128, 255, 255]


def test_our_path_equals_calculate_metrics_on_the_same_images(inception_weights):
    real, synthetic = discs(8, seed=1), discs(8, seed=2, spread=0.7)
    space = InceptionFeatures(inception_weights, CPU, batch_size=8)
    real_features, synthetic_features = space.features(real), space.features(synthetic)
    assert real_features.shape == (8, 2048)
    ours = {"fid": fid("fid", FeatureStatistics.from_features(real_features), synthetic_features),
            "kid": kid("kid", real_features, synthetic_features, subset_size=6, subsets=10)[0],
            **precision_recall("pr", real_features, synthetic_features)}
    direct = calculate_metrics(
        input1=Tensors(to_uint8_rgb(synthetic)), input2=Tensors(to_uint8_rgb(real)), fid=True, kid=True, prc=True,
        feature_extractor="inception-v3-compat", feature_extractor_weights_path=str(inception_weights),
        kid_subset_size=6, kid_subsets=10, prc_neighborhood=3, cuda=False, cache=False, save_cpu_ram=True,
        verbose=False)
    assert ours["fid"] > 0
    assert ours["fid"] == pytest.approx(direct["frechet_inception_distance"], rel=1e-4)
    assert ours["kid"] == pytest.approx(direct["kernel_inception_distance_mean"], rel=1e-5)
    assert (ours["precision"], ours["recall"]) == (direct["precision"], direct["recall"])
    assert space.id.startswith("inception-v3-compat-") and len(space.id) == len("inception-v3-compat-") + 16


def test_missing_or_unsafe_weights_say_how_to_provide_them(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    unsafe = tmp_path / "unsafe.pth"
    unsafe.write_bytes(pickle.dumps({"fc.weight": Payload()}))
    with pytest.raises(FailedPrecondition, match="not a weights-only PyTorch file.*--inception-weights"):
        InceptionFeatures(unsafe, CPU)
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, other)
    with pytest.raises(FailedPrecondition, match="not hold InceptionV3 weights.*pt_inception-2015-12-05-6726825d"):
        InceptionFeatures(other, CPU)


def test_the_file_is_read_once_and_torch_fidelity_gets_only_the_checked_tensors(inception_weights, monkeypatch):
    loads = []
    load = torch.load

    def recording(source, *args, **kwargs):
        loads.append((type(source), kwargs.get("weights_only")))
        return load(source, *args, **kwargs)

    monkeypatch.setattr(torch, "load", recording)
    InceptionFeatures(inception_weights, CPU)
    assert loads == [(io.BytesIO, True), (io.BytesIO, False)], "no load opens the file; the first is weights-only"
