"""The CT feature extractor: trained here, versioned like a model, 2D and 3D."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctsynth.errors import InvalidArgument
from ctsynth.metrics.domain_extractor import (DomainExtractorConfig, extractor_name, find_domain_extractor,
                                              load_domain_extractor, publish_domain_extractor, quarter_turns,
                                              train_domain_extractor)
from ctsynth.registry import Registry
from ctsynth.servicers.training import model_message
from ctsynth.storage import open_store
from tests.metrics.conftest import discs

CPU = torch.device("cpu")


@pytest.mark.parametrize("dims", [2, 3])
def test_trains_publishes_and_loads_as_a_feature_space(tmp_path, dims):
    store = open_store((tmp_path / "store").as_uri())
    images = discs(12, size=8, dims=dims)
    labels = np.arange(12) % 2
    config = DomainExtractorConfig(spatial_dims=dims, widths=(4, 8), steps=3, batch_size=4)
    model, history = train_domain_extractor(images, labels, config, CPU)
    assert len(history) == 3 and {"tumor_loss", "rotation_loss", "tumor_accuracy"} <= set(history[-1])
    name = extractor_name("tiny", "1", f"{dims}d")
    reference = publish_domain_extractor(store, name, model, config, "tiny:1", history)
    assert reference == f"ctfeat{dims}d-tiny-1:1"
    assert find_domain_extractor(store, f"ctfeat{dims}d-tiny-1", config, "tiny:1") == reference
    assert find_domain_extractor(store, f"ctfeat{dims}d-tiny-1", config, "tiny:2") is None
    space = load_domain_extractor(store, reference, CPU)
    features = space.features(images)
    assert features.shape == (12, 8) and features.dtype == np.float32
    with torch.no_grad():
        assert np.allclose(features, model.eval().encoder(torch.from_numpy(images)).numpy(), atol=1e-6)
    assert space.name == "ct" and space.id.startswith(f"ct-ctfeat{dims}d-tiny-1-1-")
    listed = model_message(Registry(store, "models", "model"), f"ctfeat{dims}d-tiny-1", "1")
    assert listed.family == "domain_extractor" and listed.spatial_dims == dims and "tumor_loss" in listed.headline


def test_training_is_seeded():
    images, labels = discs(8, size=8), np.arange(8) % 2
    config = DomainExtractorConfig(widths=(4,), steps=2, batch_size=4, seed=5)
    first, _ = train_domain_extractor(images, labels, config, CPU)
    second, _ = train_domain_extractor(images, labels, config, CPU)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


def test_quarter_turns_rotate_the_axial_plane_of_each_item():
    volume = torch.arange(8.0).reshape(1, 1, 2, 2, 2).repeat(2, 1, 1, 1, 1)
    turned = quarter_turns(volume, torch.tensor([0, 1]))
    assert torch.equal(turned[0], volume[0]) and torch.equal(turned[1], torch.rot90(volume[1], 1, (-2, -1)))


def test_long_dataset_names_get_a_hashed_name_and_other_models_are_refused(tmp_path):
    assert extractor_name("a" * 64, "3", "2d").startswith("ctfeat2d-") and len(extractor_name("a" * 64, "3", "2d")) < 64
    store = open_store((tmp_path / "store").as_uri())
    store.publish("models/gan/1", {"config.json": b'{"family": "dcgan"}', "weights.safetensors": b""}, {})
    with pytest.raises(InvalidArgument, match="gan:1 is a dcgan model, not a domain feature extractor"):
        load_domain_extractor(store, "gan", CPU)
    with pytest.raises(InvalidArgument, match="spatial_dims"):
        DomainExtractorConfig(spatial_dims=4)
