"""Tiny trained models (GAN and diffusion, 2D and 3D) in one store, and a
real in-process sampling server over it: the session fixtures `store_uri`,
`host`, `channel` and `stub` that the sampling, client and CLI tests share
(a plugin of the root conftest, so the models are trained once per run;
a folder's own fixture of the same name takes precedence there)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator

import grpc
import pytest

from ctsynth.config import ServerSettings
from ctsynth.rpc.server import ServiceHost, ServiceSpec, build_server
from ctsynth.sampling.settings import SamplingSettings
from ctsynth.servicers import SERVICES
from ctsynth.servicers.sampling import SamplingServicer
from ctsynth.storage import StoreUnavailable, open_store
from ctsynth.training.loop import WorkerContext, train_worker
from ctsynth.training.spec import TrainSpec
from ctsynth.v1 import sampling_pb2_grpc
from tests.training.conftest import publish_dataset

TINY = {
    "dcgan": {"image_size": 16, "latent_dim": 8, "generator_widths": [16, 8], "discriminator_widths": [8, 8]},
    "unet_gan": {"image_size": 16, "base_channels": 8, "max_channels": 16, "bottleneck_size": 4, "patch_grid": 4,
                 "attention": False},
    "stylegan2": {"image_size": 16, "z_dim": 16, "w_dim": 16, "mapping_layers": 2, "channel_base": 128,
                  "channel_max": 16, "ada": False},
    "ddpm3d": {"image_size": 8, "unet_channels": [8, 8], "attention_levels": [False, False], "num_res_blocks": 1,
               "num_heads": 1, "norm_num_groups": 8, "flash_attention": False, "gradient_checkpointing": False,
               "num_train_timesteps": 20, "sampler_kind": "ddim", "sampler_steps": 4, "sampler_guidance_scale": 1.0},
}


def train(store, dataset: str, family: str, name: str | None = None, steps: int = 1, **changes) -> str:
    """Train `family` (its TINY config with `changes`) for `steps` steps and publish it as `name`:1."""
    name = name or family.replace("_", "-")
    spec = TrainSpec(job_id=f"job-{name}", family=family, config={**TINY[family], **changes}, dataset=dataset,
                     model_name=name,
                     version="1", store_uri=store.uri, steps=steps, batch_size=2, log_interval=1, seed=3)
    train_worker(spec, WorkerContext())
    return f"{name}:1"


@pytest.fixture(scope="session")
def store_uri(tmp_path_factory) -> str:
    """A store with the dataset `tiny`, one trained model per family of TINY
    and `ddpm3d-mask`, the 3D DDPM with the nodule mask as input."""
    root = tmp_path_factory.mktemp("sampling")
    store = open_store((root / "store").as_uri())
    dataset = publish_dataset(store, "tiny", root / "tiny")
    for family in TINY:
        train(store, dataset, family)
    train(store, dataset, "ddpm3d", "ddpm3d-mask", mask_channel=True)
    return store.uri


class FlakyStore:
    """The store, unreachable for its next `failures` listings."""

    def __init__(self, store, failures: int = 0):
        self._store, self.failures = store, failures

    def list(self, prefix: str = ""):
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailable("object store down")
        return self._store.list(prefix)

    def __getattr__(self, name):
        return getattr(self._store, name)


def wait_until(condition: Callable[[], bool], seconds: float = 20.0) -> bool:
    """Poll `condition` until it holds or `seconds` pass (a bound on the wait, not a timing assertion)."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def start_server(store_uri: str, store=None, max_message_bytes: int | None = None, **sampling) -> ServiceHost:
    """The sampling service on a loopback port, with SamplingSettings overrides
    (and a store object of the test's own in place of the one at `store_uri`,
    and a max message size of its own)."""
    settings = dataclasses.replace(ServerSettings.from_env(store_uri=store_uri), host="127.0.0.1", port=0,
                                   metrics_port=None, max_workers=48, grace_seconds=1.0, auth_token=None)
    if max_message_bytes is not None:
        settings = dataclasses.replace(settings, max_message_bytes=max_message_bytes)
    chosen = SamplingSettings.from_env({}, device="cpu", **{"max_batch": 8, **sampling})
    base = SERVICES["sampling"]
    spec = ServiceSpec(base.name, base.full_name,
                       lambda opened, server_settings: SamplingServicer(store or opened, server_settings, chosen),
                       base.register)
    return build_server([spec], settings)


@pytest.fixture(scope="session")
def host(store_uri) -> Iterator[ServiceHost]:
    host = start_server(store_uri)
    yield host
    host.stop(0)


@pytest.fixture(scope="session")
def channel(host) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(host.address) as channel:
        yield channel


@pytest.fixture(scope="session")
def stub(channel) -> sampling_pb2_grpc.SamplingServiceStub:
    return sampling_pb2_grpc.SamplingServiceStub(channel)
