"""`controlnet` on tiny bases (a conditional 2D ldm, a 3D rflow): it starts
as its base exactly, learns the mask without moving the base, refuses bad
bases and masks by name, and loads a published base from the store."""

from __future__ import annotations

import json

import pytest
import torch

from ctsynth.errors import DataLoss, InvalidArgument, NotFound
from ctsynth.models import checkpoint
from ctsynth.models.base import Batch, Family
from ctsynth.models.controlnet import ControlNet, ControlNetConfig
from ctsynth.registry import Registry
from ctsynth.storage import open_store
from ctsynth.training.grid import grid_images
from ctsynth.training.spec import TrainSpec
from tests.models.test_diffusion_families import TINY, batch, make

BASE_CASE = {"controlnet": "ldm", "controlnet_3d": "rflow_3d"}


def trained_base(case: str) -> Family:
    """The base of a TINY controlnet case after two steps, its EMA moved off MONAI's zero output layer."""
    base = make(BASE_CASE[case], **({"conditional": True} if case == "controlnet" else {}))
    for step in range(2):
        base.train_step(batch(base, step), step)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter in base.modules["ema"].parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return base


def on(base: Family, case: str, **changes) -> ControlNet:
    """A controlnet of `case` on `base`, its weights loaded as `prepare` would."""
    torch.manual_seed(1)
    controlnet = ControlNet(ControlNetConfig.from_json({**TINY[case], "base_config": base.config.to_json(),
                                                        **changes}))
    controlnet.load_base_weights(checkpoint.module_weights(base))
    return controlnet


def masks(family: Family, count: int, corner: int) -> torch.Tensor:
    """A nodule in the first (corner 0) or last (corner 1) quarter of every spatial axis."""
    spatial = family.sample_shape()[1:]
    mask = torch.zeros(count, 1, *spatial)
    mask[(slice(None), slice(None)) + tuple(slice(0, n // 4) if corner == 0 else slice(3 * n // 4, n)
                                            for n in spatial)] = 1
    return mask


def draw(family: Family, mask: torch.Tensor | None, seed: int = 3) -> torch.Tensor:
    labels = torch.tensor([0, 1]) if family.conditional(family.config) else None
    rows = {} if mask is None else {"masks": mask}
    return family.sample(2, torch.Generator().manual_seed(seed), labels=labels, **rows)


def state(family: Family, name: str) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in family.modules[name].state_dict().items()}


def train(family: Family, steps: int) -> None:
    for step in range(steps):
        family.train_step(batch(family, step), step)


@pytest.mark.parametrize("case", ["controlnet", "controlnet_3d"])
def test_an_untrained_or_unscaled_controlnet_samples_exactly_as_its_base(case):
    base = trained_base(case)
    expected = draw(base, None)
    controlnet = on(base, case)
    assert torch.equal(draw(controlnet, masks(controlnet, 2, 0)), expected)  # zero convolutions: no residual
    train(controlnet, 3)
    assert not torch.equal(draw(controlnet, masks(controlnet, 2, 0)), expected)
    unscaled = on(base, case, conditioning_scale=0.0)
    checkpoint.load_weights_bytes(unscaled, checkpoint.weights_bytes(controlnet))
    assert torch.equal(draw(unscaled, masks(unscaled, 2, 0)), expected)


@pytest.mark.parametrize("case", ["controlnet", "controlnet_3d"])
def test_only_the_controlnet_trains_and_the_mask_then_steers_the_samples(case):
    controlnet = on(trained_base(case), case)
    assert controlnet.trainable == ("controlnet",) and list(controlnet.optimizers) == ["controlnet"]
    frozen = {name: state(controlnet, name) for name in ("unet", "autoencoder")}
    before = state(controlnet, "controlnet")
    train(controlnet, 3)
    for name, weights in frozen.items():
        assert all(torch.equal(value, controlnet.modules[name].state_dict()[key]) for key, value in weights.items())
        assert all(parameter.grad is None for parameter in controlnet.modules[name].parameters()), name
    assert any(not torch.equal(value, controlnet.modules["controlnet"].state_dict()[key])
               for key, value in before.items())
    first, other = draw(controlnet, masks(controlnet, 2, 0)), draw(controlnet, masks(controlnet, 2, 1))
    assert first.shape == (2, *controlnet.sample_shape()) and 0 <= first.min() and first.max() <= 1
    assert not torch.equal(first, other)
    assert torch.equal(first, draw(controlnet, masks(controlnet, 2, 0)))


def test_the_controlnet_starts_as_a_copy_of_the_base_encoder_with_zero_outputs():
    base = trained_base("controlnet")
    controlnet = on(base, "controlnet")
    shared = {key: value for key, value in controlnet.modules["controlnet"].state_dict().items()
              if key in base.modules["ema"].state_dict()}
    assert any(key.startswith("down_blocks.") for key in shared) and "conv_in.conv.weight" in shared
    assert all(torch.equal(value, base.modules["ema"].state_dict()[key]) for key, value in shared.items())
    outputs = [key for key in controlnet.modules["controlnet"].state_dict()
               if key.startswith(("controlnet_down_blocks.", "controlnet_mid_block."))]
    assert outputs and all(not controlnet.modules["controlnet"].state_dict()[key].any() for key in outputs)


def test_gradient_checkpointing_of_the_controlnet_and_the_frozen_unet_keeps_the_step():
    plain, checkpointed = make("controlnet_3d"), make("controlnet_3d", gradient_checkpointing=True)
    checkpoint.load_weights_bytes(checkpointed, checkpoint.weights_bytes(plain))
    losses = []
    for family in (plain, checkpointed):
        torch.manual_seed(3)
        losses.append(family.train_step(batch(family), 0)["loss"])
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    torch.testing.assert_close(state(checkpointed, "controlnet"), state(plain, "controlnet"))


@pytest.mark.parametrize("changes, field", [
    ({"base_family": "vae"}, "base_family"),
    ({"base_config": {**TINY["ldm"], "num_heads": 3}}, "base_config.num_heads"),
    ({"base_config": {**TINY["ldm"], "mask_channel": True}}, "base_config"),
    ({"image_size": 64}, "base_config"),
    ({"spatial_dims": 3, "image_size": 16}, "spatial_dims"),
    ({"conditioning_embedding_num_channels": [8, 8]}, "conditioning_embedding_num_channels"),  # halves once; f = 4
    ({"conditioning_embedding_num_channels": [8, 0, 8]}, "conditioning_embedding_num_channels"),
    ({"conditioning_scale": -1.0}, "conditioning_scale"),
    ({"ema_decay": 1.0}, "ema_decay"),
])
def test_a_bad_base_or_controlnet_hyperparameter_is_named(changes, field):
    with pytest.raises(InvalidArgument) as error:
        ControlNetConfig.from_json({**TINY["controlnet"], **changes})
    assert error.value.field == field


@pytest.mark.parametrize("mask, reason", [
    (None, "this controlnet model is mask-conditioned and needs masks of shape"),
    (torch.zeros(2, 1, 16, 16), "this model needs"),
    (torch.full((2, 1, 32, 32), 0.5), "0 or 1"),
])
def test_sampling_refuses_missing_or_malformed_masks(mask, reason):
    controlnet = make("controlnet")
    with pytest.raises(InvalidArgument, match=reason) as error:
        draw(controlnet, mask) if mask is not None else controlnet.sample(2, torch.Generator())
    assert error.value.field == "mask"


def test_training_needs_the_dataset_masks():
    controlnet = make("controlnet_3d")
    with pytest.raises(InvalidArgument, match="trains on nodule masks") as error:
        controlnet.train_step(Batch(image=torch.rand(2, 1, 16, 16, 16)), 0)
    assert error.value.field == "mask"


def publish(store, name: str, family: Family) -> None:
    """A version as training publishes it: config.json and weights.safetensors under a manifest."""
    config = {"family": family.name, "config": family.config.to_json()}
    store.publish(f"models/{name}/1", {"config.json": json.dumps(config).encode(),
                                       "weights.safetensors": checkpoint.weights_bytes(family)}, {"job_id": name})


def test_resolve_and_prepare_load_exactly_the_published_base(tmp_path):
    store = open_store((tmp_path / "store").as_uri())
    base = trained_base("controlnet_3d")
    publish(store, "rflow-3d", base)
    publish(store, "vae", make("vae"))
    models = Registry(store, "models", "model")
    hyper = {key: value for key, value in TINY["controlnet_3d"].items()
             if key not in ("base_config", "base_family", "spatial_dims", "image_size")}
    resolved, extra = ControlNet.resolve_inputs({**hyper, "base": "rflow-3d"}, models)
    assert extra == {"base_prefix": "models/rflow-3d/1"}
    assert (resolved["base"], resolved["base_family"], resolved["spatial_dims"], resolved["image_size"]) == (
        "rflow-3d:1", "rflow", 3, 16)
    assert resolved["base_config"] == json.loads(json.dumps(base.config.to_json()))
    config = ControlNetConfig.from_json(resolved)
    spec = TrainSpec(job_id="job", family="controlnet", config=config.to_json(), dataset="lidc:1",
                     model_name="controlnet", version="1", store_uri=store.uri, steps=1, batch_size=1, extra=extra)
    torch.manual_seed(5)
    controlnet = ControlNet(config)
    controlnet.prepare(store, spec)
    published = checkpoint.module_weights(base)
    for module, source in (("unet", "ema"), ("autoencoder", "autoencoder")):
        loaded = controlnet.modules[module].state_dict()
        assert loaded.keys() == {key.partition(".")[2] for key in published if key.startswith(f"{source}.")}
        assert all(torch.equal(value, published[f"{source}.{key}"]) for key, value in loaded.items()), module
    assert torch.equal(draw(controlnet, masks(controlnet, 2, 1)), draw(base, None))

    for reference, error in (("", InvalidArgument), ("Rflow 3d", InvalidArgument), ("rflow-3d:x", InvalidArgument),
                             ("vae", InvalidArgument), ("missing", NotFound)):
        with pytest.raises(error) as raised:
            ControlNet.resolve_inputs({**hyper, "base": reference}, models)
        if error is InvalidArgument:
            assert raised.value.field == "base", reference

    store.put("models/rflow-3d/1/weights.safetensors", checkpoint.weights_bytes(make("rflow_3d", seed=9)))
    with pytest.raises(DataLoss):
        ControlNet(config).prepare(store, spec)


@pytest.mark.parametrize("case", ["controlnet", "controlnet_3d", "ddpm3d_mask"])
def test_the_checkpoint_grid_of_a_mask_conditioned_model_gives_it_masks(case):
    family = make(case)
    tiles = grid_images(family, seed=0)
    assert tiles.shape[1:] == family.sample_shape()[-2:] and 0 <= tiles.min() and tiles.max() <= 1
