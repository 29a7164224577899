"""ListModels and GetModel on both services with a broken model version among
whole ones: the broken one is listed as such, the others still list, and no
error names a server path."""

from __future__ import annotations

import json

import grpc
import pytest

from ctsynth.client import open_channel
from ctsynth.config import ServerSettings
from ctsynth.servicers import host_services
from ctsynth.v1 import common_pb2, sampling_pb2, sampling_pb2_grpc, training_pb2_grpc

BROKEN_KEY = "models/dcgan/2/weights.safetensors"
NO_CONFIG_KEY = "models/ddpm3d/2/config.json"  # the file listing itself reads


def publish_model(store, name: str, version: str, family: str) -> None:
    """A version as training publishes it, as far as listing reads it."""
    config = {"family": family, "dataset": "tiny:1", "spatial_dims": 2, "sample_shape": [1, 16, 16]}
    store.publish(f"models/{name}/{version}",
                  {"config.json": json.dumps(config).encode(), "weights.safetensors": b"\0" * 128},
                  {"job_id": f"job-{name}-{version}", "step": 4})


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("model-listing")
    host = host_services(["training", "sampling"], ServerSettings(store_uri=(root / "store").as_uri(), port=0))
    store = host.servicers["training"]._store
    publish_model(store, "dcgan", "1", "dcgan")
    publish_model(store, "dcgan", "2", "dcgan")
    publish_model(store, "ddpm3d", "1", "ddpm3d")
    publish_model(store, "ddpm3d", "2", "ddpm3d")
    store.delete(BROKEN_KEY)
    store.delete(NO_CONFIG_KEY)
    channel = open_channel(host.address)
    yield channel, root
    channel.close()
    host.stop(0)


STUBS = {"training": training_pb2_grpc.TrainingServiceStub, "sampling": sampling_pb2_grpc.SamplingServiceStub}


@pytest.mark.parametrize("service", STUBS)
def test_a_broken_version_is_listed_as_broken_and_the_others_still_list(served, service):
    channel, root = served
    listed = {(m.name, m.version): m for m in
              STUBS[service](channel).ListModels(common_pb2.ListModelsRequest(), timeout=30).models}
    assert set(listed) == {("dcgan", "1"), ("dcgan", "2"), ("ddpm3d", "1"), ("ddpm3d", "2")}
    assert not listed["dcgan", "1"].broken_reason and listed["dcgan", "1"].weights.size_bytes == 128
    assert listed["ddpm3d", "1"].family == "ddpm3d" and not listed["ddpm3d", "1"].broken_reason
    reason = listed["dcgan", "2"].broken_reason
    assert f"{BROKEN_KEY} is listed in its manifest but missing" in reason
    assert f"{NO_CONFIG_KEY} is listed in its manifest but missing" in listed["ddpm3d", "2"].broken_reason
    assert str(root) not in reason + listed["ddpm3d", "2"].broken_reason
    by_family = STUBS[service](channel).ListModels(common_pb2.ListModelsRequest(family="ddpm3d"), timeout=30)
    assert [(m.name, m.version) for m in by_family.models] == [("ddpm3d", "1")]  # a broken one has no family


@pytest.mark.parametrize("service", STUBS)
def test_getting_a_broken_version_is_data_loss_naming_the_store_key(served, service):
    channel, root = served
    with pytest.raises(grpc.RpcError) as err:
        STUBS[service](channel).GetModel(common_pb2.GetModelRequest(model="dcgan:2"), timeout=30)
    assert err.value.code() == grpc.StatusCode.DATA_LOSS
    assert BROKEN_KEY in err.value.details() and str(root) not in err.value.details()
    assert STUBS[service](channel).GetModel(common_pb2.GetModelRequest(model="dcgan:1"), timeout=30).version == "1"


def test_sampling_a_broken_version_is_data_loss(served):
    channel, root = served
    with pytest.raises(grpc.RpcError) as err:
        list(sampling_pb2_grpc.SamplingServiceStub(channel).Sample(
            sampling_pb2.SampleRequest(model="dcgan:2", count=1), timeout=60))
    assert err.value.code() == grpc.StatusCode.DATA_LOSS
    assert BROKEN_KEY in err.value.details() and str(root) not in err.value.details()
