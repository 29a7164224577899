"""Med3D 3D ResNet features: the architecture read off the weights file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.networks.nets.resnet import ResNet
from safetensors.torch import save_file

from ctsynth.errors import FailedPrecondition
from ctsynth.metrics.med3d import Med3DFeatures, standardize
from tests.metrics.conftest import discs

CPU = torch.device("cpu")


def tiny_resnet(layers=(1, 1, 1, 1), shortcut="B") -> ResNet:
    torch.manual_seed(0)
    return ResNet("basic", list(layers), [4, 8, 8, 8], spatial_dims=3, n_input_channels=1, conv1_t_size=3,
                  conv1_t_stride=2, shortcut_type=shortcut, feed_forward=False, bias_downsample=False).eval()


@pytest.mark.parametrize("layers, shortcut, name", [((1, 1, 1, 1), "B", "resnet10"), ((2, 1, 1, 1), "A", None)])
def test_medicalnet_checkpoints_load_into_the_matching_monai_resnet(tmp_path, layers, shortcut, name):
    network = tiny_resnet(layers, shortcut)
    path = tmp_path / "resnet.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in network.state_dict().items()}}, path)
    space = Med3DFeatures(path, CPU)
    volumes = discs(3, size=8, dims=3)
    with torch.no_grad():
        expected = network(standardize(torch.from_numpy(volumes))).numpy()
    assert np.allclose(space.features(volumes), expected, atol=1e-6) and expected.shape == (3, 8)
    assert space.id.split("-")[1] == (name or "resnet")


def test_safetensors_weights_and_unusable_files(tmp_path):
    network = tiny_resnet()
    save_file(network.state_dict(), tmp_path / "resnet.safetensors")
    assert Med3DFeatures(tmp_path / "resnet.safetensors", CPU).features(discs(2, size=8, dims=3)).shape == (2, 8)
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(FailedPrecondition, match="holds no 3D ResNet state dict.*med3d_weights"):
        Med3DFeatures(tmp_path / "other.pth", CPU)
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(FailedPrecondition, match="is not a readable weights file"):
        Med3DFeatures(tmp_path / "junk.pth", CPU)
