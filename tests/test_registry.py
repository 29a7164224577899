"""Model and dataset versions in the object store: what makes a version whole."""

from __future__ import annotations

import pytest

from ctsynth.errors import DataLoss
from ctsynth.registry import Registry
from ctsynth.storage import open_store


@pytest.fixture
def models(tmp_path):
    store = open_store((tmp_path / "store").as_uri())
    store.publish("models/dcgan/1", {"config.json": b'{"family": "dcgan"}', "weights.safetensors": b"w" * 64}, {})
    return Registry(store, "models", "model")


def test_a_whole_version_gives_its_manifest(models):
    manifest = models.intact_manifest("dcgan", "1")
    assert manifest["files"]["weights.safetensors"]["size"] == 64


def test_a_missing_listed_file_is_data_loss_named_by_its_key(models, tmp_path):
    models.store.delete("models/dcgan/1/weights.safetensors")
    with pytest.raises(DataLoss) as err:
        models.intact_manifest("dcgan", "1")
    assert "model dcgan:1 is broken: models/dcgan/1/weights.safetensors is listed in its manifest but missing" \
        == str(err.value)
    assert str(tmp_path) not in str(err.value)


def test_a_listed_file_of_another_size_is_data_loss(models):
    models.store.put("models/dcgan/1/weights.safetensors", b"w" * 10)
    with pytest.raises(DataLoss, match="weights.safetensors has 10 bytes, its manifest lists 64"):
        models.intact_manifest("dcgan", "1")
