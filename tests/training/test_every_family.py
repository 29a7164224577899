"""Every model family trains through the training service on a small
ingested phantom LIDC dataset, registers a model that loads, and samples —
diffusion families with every sampler.

The service runs as deployed except that each run's worker function is
called in this process (`fit_in_this_process`). Ray Train itself is
exercised by test_service.py (two workers, cancel, a killed worker),
test_cluster_path.py and the demo test, which trains five of these
families on the local Ray stack.
"""

from __future__ import annotations

import pytest
import torch
from google.protobuf import struct_pb2

from ctsynth.client import open_channel
from ctsynth.config import ServerSettings
from ctsynth.diffusion import kinds_for
from ctsynth.models.checkpoint import load_model
from ctsynth.servicers import host_services
from ctsynth.training import runner
from ctsynth.v1 import common_pb2, ingest_pb2, ingest_pb2_grpc, training_pb2, training_pb2_grpc
from tests.models.test_diffusion_families import FLOW_TINY, UNET_TINY, VAE_TINY, VQ_TINY
from tests.models.test_gan_families import CASES
from tests.training.conftest import fit_in_this_process

State = common_pb2.JobState
GAN_FAMILIES = ("gan", "wgan", "dcgan", "wgan_gp", "unet_gan", "stylegan2")


def _json(values: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items() if k != "image_size"}


HYPER = {name: _json(CASES[name][1]) for name in GAN_FAMILIES}
HYPER["vae"] = _json(VAE_TINY)
HYPER["vqvae"] = _json(VQ_TINY)
HYPER["ddpm3d"] = dict(UNET_TINY)
HYPER["ldm"] = {**UNET_TINY, "autoencoder": "vae"}
HYPER["rflow"] = {**UNET_TINY, **FLOW_TINY, "autoencoder": "vae"}
# The latent families on volumes: a 3D vae published as "vae-3d" and what trains on it.
VOLUME_HYPER = {"vae": {**_json(VAE_TINY), "spatial_dims": 3}, "ldm": {**UNET_TINY, "autoencoder": "vae-3d"},
                "rflow": {**UNET_TINY, **FLOW_TINY, "autoencoder": "vae-3d"}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, lidc_phantom_root):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner.ray_driver, "fit", fit_in_this_process)
        yield from _hosted(tmp_path_factory, lidc_phantom_root)


def _hosted(tmp_path_factory, lidc_phantom_root):
    root, _ = lidc_phantom_root
    store = (tmp_path_factory.mktemp("families") / "store").as_uri()
    host = host_services(["ingest", "training"], ServerSettings(store_uri=store, port=0, grace_seconds=1.0,
                                                                    import_roots=(str(root),)))
    channel = open_channel(host.address)
    ingest = ingest_pb2_grpc.IngestServiceStub(channel)
    job = ingest.StartIngest(ingest_pb2.StartIngestRequest(
        source=str(root), dataset="lidc", slices=ingest_pb2.SliceOptions(size=32),
        volumes=ingest_pb2.VolumeOptions(size=16), split=ingest_pb2.SplitFractions(train=0.5, validation=0, test=0.5)))
    list(ingest.WatchJob(common_pb2.WatchJobRequest(job_id=job.id), timeout=300))
    assert ingest.GetJob(common_pb2.GetJobRequest(job_id=job.id)).state == State.JOB_STATE_SUCCEEDED
    yield training_pb2_grpc.TrainingServiceStub(channel), host.servicers["training"]._store
    channel.close()
    host.stop(0)


def train(stub, family: str, volumes: bool = False) -> common_pb2.Job:
    hyper = struct_pb2.Struct()
    hyper.update(VOLUME_HYPER[family] if volumes else HYPER[family])
    job = stub.SubmitTraining(training_pb2.SubmitTrainingRequest(
        family=family, name=f"{family}-3d" if volumes else "", dataset="lidc", hyperparameters=hyper,
        budget=training_pb2.Budget(steps=2),
        batch_size=1 if volumes or family == "ddpm3d" else 4,  # the phantom train split holds one volume
        checkpoint_interval=1, seed=1))
    list(stub.WatchJob(common_pb2.WatchJobRequest(job_id=job.id), timeout=600))
    return stub.GetJob(common_pb2.GetJobRequest(job_id=job.id))


@pytest.mark.parametrize("family", GAN_FAMILIES)
def test_gan_family_trains_through_the_service(stack, family):
    stub, store = stack
    final = train(stub, family)
    assert final.state == State.JOB_STATE_SUCCEEDED, final.error.message
    model = load_model(store, final.result)
    labels = torch.tensor([0, 1]) if model.config["conditional"] else None
    first = model.family.sample(2, torch.Generator().manual_seed(3), labels=labels)
    again = model.family.sample(2, torch.Generator().manual_seed(3), labels=labels)
    assert torch.equal(first, again) and torch.isfinite(first).all()
    assert first.shape[-2:] == (32, 32)
    history = store.get_json(f"models/{final.result.replace(':', '/')}/metrics.json")["history"]
    assert history[-1]["step"] == 2


@pytest.mark.parametrize("volumes", [False, True], ids=["slices", "volumes"])
def test_diffusion_families_train_and_sample_with_every_sampler(stack, volumes):
    stub, store = stack
    families = ("vae", "ldm", "rflow") if volumes else ("vae", "vqvae", "ddpm3d", "ldm", "rflow")
    for family in families:
        final = train(stub, family, volumes)
        assert final.state == State.JOB_STATE_SUCCEEDED, f"{family}: {final.error.message}"
        model = load_model(store, final.result)
        expected = (1, 16, 16, 16) if volumes or family == "ddpm3d" else (1, 32, 32)
        assert model.family.spatial_dims == len(expected) - 1
        kinds = kinds_for(model.family.config.OBJECTIVE) if model.family.preview_sampler else (None,)
        for kind in kinds:
            sampler = {"kind": kind, "steps": 8 if kind == "ddpm" else 3} if kind else None
            out = model.family.sample(1, torch.Generator().manual_seed(0), sampler=sampler)
            assert out.shape[1:] == expected and torch.isfinite(out).all(), (family, kind)
            assert 0 <= out.min() and out.max() <= 1
        if family in ("vae", "vqvae"):  # validation_metrics of the first stages, measured at publication
            validation = store.get_json(f"models/{final.result.replace(':', '/')}/metrics.json").get("validation")
            assert validation is None, "the phantom dataset here has no validation split"
    first_stage = "vae-3d:1" if volumes else "vae:1"
    for family in ("ldm", "rflow"):
        latent = load_model(store, f"{family}-3d" if volumes else family)
        assert latent.config["config"]["autoencoder"] == first_stage, "it records the VAE version it was trained on"
        assert latent.config["config"]["spatial_dims"] == latent.config["spatial_dims"] == (3 if volumes else 2)


def submit(stub, family: str, name: str, hyper: dict, volumes: bool) -> common_pb2.Job:
    values = struct_pb2.Struct()
    values.update(hyper)
    job = stub.SubmitTraining(training_pb2.SubmitTrainingRequest(
        family=family, name=name, dataset="lidc", hyperparameters=values, budget=training_pb2.Budget(steps=2),
        batch_size=1 if volumes else 4, checkpoint_interval=1, seed=1))
    list(stub.WatchJob(common_pb2.WatchJobRequest(job_id=job.id), timeout=600))
    final = stub.GetJob(common_pb2.GetJobRequest(job_id=job.id))
    assert final.state == State.JOB_STATE_SUCCEEDED, f"{name}: {final.error.message}"
    return final


def test_mask_conditioned_families_train_on_the_ingested_reader_masks_and_sample_from_masks(stack):
    """The 3D DDPM with the mask channel, the U-Net GAN from masks and a
    ControlNet on a 2D rflow train on the phantom's reader-union masks and
    then sample where a mask asks."""
    stub, store = stack
    chain = [("ddpm3d", "ddpm3d-mask", {**UNET_TINY, "mask_channel": True}, True),
             ("unet_gan", "unet-gan-mask", {**HYPER["unet_gan"], "mask_input": True}, False),
             ("vae", "vae-cn", HYPER["vae"], False),
             ("rflow", "rflow-cn", {**UNET_TINY, **FLOW_TINY, "autoencoder": "vae-cn"}, False),
             ("controlnet", "controlnet", {"base": "rflow-cn", "conditioning_embedding_num_channels": [8, 8, 8],
                                           "learning_rate": 1e-2,
                                           "gradient_checkpointing": False}, False)]
    for family, name, hyper, volumes in chain:
        final = submit(stub, family, name, hyper, volumes)
        model = load_model(store, final.result)
        if not model.family.mask_conditioned(model.family.config):
            continue
        assert model.config["mask_conditioned"]
        spatial = model.family.sample_shape()[1:]
        masks = torch.zeros(2, 1, *spatial)
        masks[(0, 0) + tuple(slice(n // 4, n // 2) for n in spatial)] = 1
        options = {"kind": "ddim", "steps": 3} if family == "ddpm3d" else None
        first = model.family.sample(2, torch.Generator().manual_seed(3), masks=masks, sampler=options)
        moved = model.family.sample(2, torch.Generator().manual_seed(3), masks=masks.roll(len(spatial) * 2, -1),
                                    sampler=options)
        assert first.shape == (2, 1, *spatial) and torch.isfinite(first).all()
        assert not torch.equal(first[0], moved[0]), name
