"""The diffusion families (`vae`, `ldm`, `rflow`, `ddpm3d`, `controlnet`) on tiny configs:
32^2 slices, 16^3 volumes (the latent ones on a 3D vae too), two U-Net
levels, T = 8 training timesteps."""

from __future__ import annotations

import math

import pytest
import torch
from monai.metrics import SSIMMetric

from ctsynth.diffusion import kinds_for
from ctsynth.errors import InvalidArgument
from ctsynth.models.base import Batch, Family
from ctsynth.models.ddpm3d import DDPM3D
from ctsynth.models.ldm import LDM
from ctsynth.models.rflow import RFlow
from ctsynth.models.families import get_family
from ctsynth.models.tiling import tiled_decode
from ctsynth.models.vae import VAE
from ctsynth.models.vqvae import VQVAE, codebook_usage

VAE_TINY = {"image_size": 32, "autoencoder_channels": [8, 16, 16], "latent_channels": 3, "norm_num_groups": 8,
            "mid_attention": False, "learning_rate": 1e-3, "disc_start": 1, "disc_channels": 8, "disc_layers": 2}
UNET_TINY = {"unet_channels": [8, 16], "attention_levels": [False, True], "num_res_blocks": 1, "num_heads": 2,
             "norm_num_groups": 8, "gradient_checkpointing": False, "num_train_timesteps": 8, "learning_rate": 1e-3,
             "warmup_steps": 0, "sampler_kind": "ddim", "sampler_steps": 3}
VAE_TINY_3D = {**VAE_TINY, "spatial_dims": 3, "image_size": 16}
FLOW_TINY = {"sampler_kind": "rflow", "sampler_steps": 3}
VQ_TINY = {"image_size": 32, "autoencoder_channels": [8, 16], "num_res_layers": 1, "num_res_channels": 8,
           "num_embeddings": 16, "embedding_dim": 3, "learning_rate": 1e-3}
TINY = {"vae": VAE_TINY,
        "vae_3d": VAE_TINY_3D,
        "vqvae": VQ_TINY,
        "vqvae_3d": {**VQ_TINY, "spatial_dims": 3, "image_size": 16},
        "ldm": {"image_size": 32, "autoencoder": "vae:1", "autoencoder_config": VAE_TINY, **UNET_TINY},
        "ldm_3d": {"spatial_dims": 3, "image_size": 16, "autoencoder": "vae:2", "autoencoder_config": VAE_TINY_3D,
                   **UNET_TINY},
        "rflow": {"image_size": 32, "autoencoder": "vae:1", "autoencoder_config": VAE_TINY, **UNET_TINY,
                  **FLOW_TINY},
        "rflow_3d": {"spatial_dims": 3, "image_size": 16, "autoencoder": "vae:2", "autoencoder_config": VAE_TINY_3D,
                     **UNET_TINY, **FLOW_TINY},
        "rflow_vq": {"image_size": 32, "autoencoder": "vqvae:1", "autoencoder_family": "vqvae",
                     "autoencoder_config": VQ_TINY, **UNET_TINY, **FLOW_TINY},
        "ddpm3d": {"image_size": 16, **UNET_TINY},
        "ddpm3d_mask": {"image_size": 16, **UNET_TINY, "mask_channel": True}}
# ControlNets on a conditional 2D ldm (guided sampling doubles the masks) and on a 3D rflow: f = 4, so the
# conditioning embedding halves the mask twice.
CONTROLNET_TINY = {"conditioning_embedding_num_channels": [8, 8, 8], "learning_rate": 1e-3,
                   "gradient_checkpointing": False}
TINY["controlnet"] = {"image_size": 32, "base": "ldm:1", "base_family": "ldm",
                      "base_config": {**TINY["ldm"], "conditional": True}, **CONTROLNET_TINY}
TINY["controlnet_3d"] = {"spatial_dims": 3, "image_size": 16, "base": "rflow:2", "base_family": "rflow",
                         "base_config": TINY["rflow_3d"], **CONTROLNET_TINY}
DIFFUSION = ("ldm", "ldm_3d", "rflow", "rflow_3d", "rflow_vq", "ddpm3d")


def family_of(case: str) -> str:
    """The family a TINY case builds ("ldm_3d" -> "ldm", "rflow_vq" on a vqvae -> "rflow", "ddpm3d_mask" with
    the mask input channel -> "ddpm3d", "controlnet_3d" on a 3D rflow -> "controlnet")."""
    return case.removesuffix("_3d").removesuffix("_vq").removesuffix("_mask")



def make(name: str, precision: str = "fp32", seed: int = 0, **changes) -> Family:
    cls = get_family(family_of(name))
    torch.manual_seed(seed)
    return cls(cls.config_cls.from_json({**TINY[name], **changes}), precision=precision)


def batch(family: Family, seed: int = 0) -> Batch:
    """Two random items, the second with a nodule (a cube mask in its first octant)."""
    generator = torch.Generator().manual_seed(seed)
    spatial = family.sample_shape()[1:]
    mask = torch.zeros(2, 1, *spatial)
    mask[(1, 0) + tuple(slice(0, n // 2) for n in spatial)] = 1
    return Batch(image=torch.rand(2, *family.sample_shape(), generator=generator), label=torch.tensor([0, 1]),
                 mask=mask)


def parameters(family: Family, name: str) -> list[torch.Tensor]:
    return [p.detach().clone() for p in family.modules[name].parameters()]


def changed(before: list[torch.Tensor], family: Family, name: str) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, family.modules[name].parameters()))


@pytest.fixture(scope="module")
def trained() -> dict[str, Family]:
    """One family of each kind (the LDM conditional) after two training steps; only sampled from."""
    families = {"vae": make("vae"), "ldm": make("ldm", conditional=True), "ldm_3d": make("ldm_3d"),
                "rflow": make("rflow", conditional=True), "rflow_3d": make("rflow_3d"), "rflow_vq": make("rflow_vq"),
                "ddpm3d": make("ddpm3d")}
    for family in families.values():
        for step in range(2):
            family.train_step(batch(family, step), step)
    return families


def test_registry_resolves_the_diffusion_families():
    assert [get_family(name) for name in ("vae", "vqvae", "ldm", "rflow", "ddpm3d")] == [VAE, VQVAE, LDM, RFlow,
                                                                                         DDPM3D]
    assert {case: make(case).spatial_dims for case in TINY} == {
        "vae": 2, "vae_3d": 3, "vqvae": 2, "vqvae_3d": 3, "ldm": 2, "ldm_3d": 3, "rflow": 2, "rflow_3d": 3,
        "rflow_vq": 2, "ddpm3d": 3, "ddpm3d_mask": 3, "controlnet": 2, "controlnet_3d": 3}


@pytest.mark.parametrize("name, changes", [
    ("ldm", {"spatial_dims": 3}), ("rflow_3d", {"spatial_dims": 2}), ("ddpm3d", {"spatial_dims": 2}),
    ("vae", {"spatial_dims": 4}),
])
def test_a_model_of_other_dimensions_than_its_family_or_first_stage_is_refused(name, changes):
    with pytest.raises(InvalidArgument) as error:
        make(name, **changes)
    assert error.value.field == "spatial_dims"


@pytest.mark.parametrize("name", TINY)
def test_training_steps_give_finite_losses_and_update_the_trainable_modules(name):
    family = make(name)
    before = {module: parameters(family, module) for module in family.modules}
    for step in range(3):
        losses = family.train_step(batch(family, step), step)
        assert losses and all(math.isfinite(value) for value in losses.values()), losses
    for module in family.trainable:
        assert changed(before[module], family, module), module
    if name in DIFFUSION:
        assert changed(before["ema"], family, "ema")


@pytest.mark.parametrize("name, kind", [(name, kind) for name in DIFFUSION
                                        for kind in kinds_for(make(name).config.OBJECTIVE)])
def test_every_sampler_gives_seeded_samples_in_range(trained, name, kind):
    family = trained[name]
    request = {"kind": kind} if kind == "ddpm" else {"kind": kind, "steps": 3}

    labels = torch.tensor([0, 1]) if family.conditional(family.config) else None  # guided for the LDM

    def draw(seed: int) -> torch.Tensor:
        return family.sample(2, torch.Generator().manual_seed(seed), labels=labels, sampler=request)

    first = draw(1)
    assert first.shape == (2, *family.sample_shape())
    assert first.min() >= 0 and first.max() <= 1
    assert torch.equal(first, draw(1))
    assert not torch.equal(first, draw(2))


def test_the_vae_decodes_seeded_gaussian_latents(trained):
    vae = trained["vae"]
    first = vae.sample(3, torch.Generator().manual_seed(1))
    assert first.shape == (3, 1, 32, 32) and first.min() >= 0 and first.max() <= 1
    assert torch.equal(first, vae.sample(3, torch.Generator().manual_seed(1)))
    assert not torch.equal(first, vae.sample(3, torch.Generator().manual_seed(2)))
    with pytest.raises(InvalidArgument):
        vae.sample(1, torch.Generator(), sampler={"kind": "ddim"})


def test_guidance_makes_tumor_and_no_tumor_samples_differ():
    ldm = make("ldm", conditional=True)
    with torch.no_grad():  # MONAI zero-initialises the output convolution: untrained, every label predicts 0
        for parameter in ldm.modules["ema"].parameters():
            parameter.normal_(0, 0.2)

    def draw(labels: list[int] | None, scale: float = 3.0) -> torch.Tensor:
        return ldm.sample(2, torch.Generator().manual_seed(3), labels=None if labels is None else torch.tensor(labels),
                          sampler={"guidance_scale": scale})

    tumor, no_tumor = draw([1, 1]), draw([0, 0])
    assert (tumor - no_tumor).abs().max() > 1e-3
    assert torch.equal(draw([1, 0])[0], tumor[0]) and torch.equal(draw([1, 0])[1], no_tumor[1])
    assert not torch.allclose(tumor, draw([1, 1], scale=1.0), atol=1e-3)
    torch.testing.assert_close(draw([1, 1], scale=0.0), draw(None), atol=1e-4, rtol=0)  # w = 0: the null class
    with pytest.raises(InvalidArgument) as error:
        draw([0, 2])
    assert error.value.field == "labels"


def test_unconditional_families_refuse_labels(trained):
    with pytest.raises(InvalidArgument):
        trained["ddpm3d"].sample(1, torch.Generator(), labels=torch.tensor([1]))


def cube_masks(count: int, side: int, corner: int) -> torch.Tensor:
    """`count` masks of a side^3 volume, each a cube of side/2 at corner 0 (origin) or 1 (far corner)."""
    masks = torch.zeros(count, 1, side, side, side)
    half = slice(0, side // 2) if corner == 0 else slice(side // 2, side)
    masks[:, :, half, half, half] = 1
    return masks


def test_the_mask_channel_puts_the_bright_nodule_where_the_mask_is():
    """Trained on volumes that are bright exactly where their mask is, the
    mask-conditioned DDPM draws the bright region where a new mask asks,
    and the same seed with the other mask moves it. (T = 50 steps of a
    steep schedule, so that the tiny U-Net learns every noise level in 150
    steps; the ancestral chain is the sampler it trained for.)"""
    family = make("ddpm3d_mask", learning_rate=3e-3, ema_decay=0.0, num_train_timesteps=50, beta_end=0.3,
                  sampler_kind="ddpm", sampler_steps=50)
    generator = torch.Generator().manual_seed(0)
    for step in range(150):
        masks = torch.cat([cube_masks(1, 16, 0), cube_masks(1, 16, 1)])[torch.randperm(2, generator=generator)]
        family.train_step(Batch(image=0.15 + 0.7 * masks, mask=masks), step)
    for corner in (0, 1):
        masks = cube_masks(2, 16, corner)
        drawn = family.sample(2, torch.Generator().manual_seed(5), masks=masks)
        inside, outside = drawn[masks == 1].mean(), drawn[masks == 0].mean()
        assert inside > outside + 0.2, (corner, float(inside), float(outside))


@pytest.mark.parametrize("masks, reason", [
    (None, "needs masks of shape"),
    (torch.zeros(2, 1, 8, 8, 8), "this model needs"),
    (torch.full((2, 1, 16, 16, 16), 0.5), "0 or 1"),
])
def test_a_mask_conditioned_model_refuses_missing_or_malformed_masks(masks, reason):
    with pytest.raises(InvalidArgument, match=reason) as error:
        make("ddpm3d_mask").sample(2, torch.Generator(), masks=masks, sampler={"kind": "ddim", "steps": 2})
    assert error.value.field == "mask"


def test_a_model_without_mask_input_refuses_masks_and_trains_without_them(trained):
    with pytest.raises(InvalidArgument, match="takes no mask"):
        trained["ddpm3d"].sample(1, torch.Generator(), masks=cube_masks(1, 16, 0))
    with pytest.raises(InvalidArgument, match="trains on nodule masks"):
        make("ddpm3d_mask").train_step(Batch(image=torch.rand(2, 1, 16, 16, 16)), 0)


def test_a_latent_grid_keeps_every_masked_cell():
    """A single nodule voxel survives the mask's reduction to the latent grid."""
    ldm = make("ldm_3d", mask_channel=True)
    mask = torch.zeros(1, 1, 16, 16, 16)
    mask[0, 0, 5, 9, 13] = 1
    grid = ldm.mask_condition(mask)
    assert grid.shape[2:] == ldm.diffusion_shape()[1:] and grid.sum() == 1
    factor = 16 // grid.shape[-1]
    assert grid[0, 0, 5 // factor, 9 // factor, 13 // factor] == 1


@pytest.mark.parametrize("name, changes, field", [
    ("vae", {"latent_channels": 0}, "latent_channels"),
    ("vae", {"autoencoder_channels": [8, 16]}, "autoencoder_channels"),  # factor 2: neither 4 nor 8
    ("vae", {"autoencoder_channels": [8, 16, 20]}, "autoencoder_channels"),  # not a multiple of 8 groups
    ("vae", {"adversarial": "wasserstein"}, "adversarial"),
    ("vae", {"kl_weight": -1.0}, "kl_weight"),
    ("ldm", {"beta_end": 1e-4}, "beta_end"),
    ("ldm", {"schedule": "cosine"}, "schedule"),
    ("ldm", {"prediction_type": "sample"}, "prediction_type"),
    ("ldm", {"sampler_kind": "heun"}, "sampler_kind"),
    ("ldm", {"sampler_steps": 9}, "sampler_steps"),
    ("ldm", {"scale_factor": 0.0}, "scale_factor"),
    ("ldm", {"autoencoder_config": {**VAE_TINY, "latent_channels": 0}}, "autoencoder_config.latent_channels"),
    ("ldm", {"autoencoder_config": {**VAE_TINY, "image_size": 64}}, "autoencoder_config"),
    ("ldm", {"unet_channels": [8] * 5, "attention_levels": [False] * 5}, "unet_channels"),  # 8^2 latents: 3 halvings
    ("ddpm3d", {"p_uncond": 1.0}, "p_uncond"),
    ("ddpm3d", {"num_heads": 3}, "num_heads"),
    ("ddpm3d", {"attention_levels": [True]}, "attention_levels"),
    ("ddpm3d", {"sampler_kind": "ddpm", "sampler_steps": 5}, "sampler_steps"),  # ddpm runs all T steps
    ("ddpm3d", {"ema_decay": 1.0}, "ema_decay"),
])
def test_out_of_range_hyperparameter_is_named(name, changes, field):
    with pytest.raises(InvalidArgument) as error:
        get_family(name).config_cls.from_json({**TINY[name], **changes})
    assert error.value.field == field


def test_gradient_checkpointing_keeps_the_loss_and_saves_fewer_activations():
    plain, checkpointed = make("ddpm3d"), make("ddpm3d", gradient_checkpointing=True)
    checkpointed.modules["unet"].load_state_dict(plain.modules["unet"].state_dict())
    data = batch(plain)
    saved_bytes, losses = [], []
    for family in (plain, checkpointed):
        storages: dict[int, int] = {}

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
            return tensor

        torch.manual_seed(5)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            losses.append(family.train_step(data, 0)["loss"])
        saved_bytes.append(sum(storages.values()))
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert saved_bytes[1] < 0.5 * saved_bytes[0]
    assert list(checkpointed.modules["unet"].state_dict()) == list(plain.modules["unet"].state_dict())


def test_ldm_estimates_the_scale_factor_once_and_keeps_it_as_state():
    ldm = make("ldm")
    first_stage = ldm.modules["autoencoder"]
    images = batch(ldm).image
    torch.manual_seed(11)
    latents = first_stage.vae.encode_stage_2_inputs(images)
    torch.manual_seed(11)
    ldm.train_step(batch(ldm), 0)
    expected = 1 / latents.std()
    assert first_stage.scale_factor.item() == pytest.approx(expected.item(), rel=1e-5)
    assert first_stage.scale_factor.item() != 1.0
    ldm.train_step(batch(ldm, 1), 1)
    assert first_stage.scale_factor.item() == pytest.approx(expected.item(), rel=1e-5)
    assert "scale_factor" in first_stage.state_dict()
    fixed = make("ldm", scale_factor=0.31778)
    fixed.train_step(batch(fixed), 0)
    assert fixed.modules["autoencoder"].scale_factor.item() == pytest.approx(0.31778)


def test_ldm_keeps_the_loaded_vae_frozen():
    vae, ldm = make("vae"), make("ldm", seed=1)
    vae.train_step(batch(vae), 0)
    ldm.load_autoencoder_state(vae.modules["autoencoder"].state_dict())
    assert ldm.trainable == ("unet",)
    before = parameters(ldm, "autoencoder")
    ldm.train_step(batch(ldm), 0)
    assert not changed(before, ldm, "autoencoder")
    latents = torch.randn(2, *ldm.config.first_stage_config().latent_shape())
    scale = ldm.modules["autoencoder"].scale_factor
    torch.testing.assert_close(ldm.decode(latents * scale),
                               vae.modules["autoencoder"].decode(latents).clamp(0, 1))


def test_learning_rate_warms_up_linearly():
    family = make("ddpm3d", warmup_steps=4)
    family.train_step(batch(family), 0)
    assert family.optimizers["unet"].param_groups[0]["lr"] == pytest.approx(1e-3 / 4)
    assert [family.learning_rate(step) for step in (1, 3, 10)] == pytest.approx([5e-4, 1e-3, 1e-3])


def test_sampler_requests_are_validated_by_the_family(trained):
    for request, field in (({"kind": "heun"}, "sampler.kind"), ({"stepz": 3}, "sampler.stepz"),
                           ({"kind": "ddpm", "steps": 3}, "sampler.steps")):
        with pytest.raises(InvalidArgument) as error:
            trained["ddpm3d"].sample(1, torch.Generator(), sampler=request)
        assert error.value.field == field


def test_vae_adversarial_loss_starts_at_disc_start():
    vae = make("vae", disc_start=1)
    before = parameters(vae, "discriminator")
    first = vae.train_step(batch(vae), 0)
    assert first["adversarial_g"] == first["adversarial_d"] == 0.0
    assert not changed(before, vae, "discriminator")
    second = vae.train_step(batch(vae, 1), 1)
    assert second["adversarial_d"] > 0 and second["adversarial_g"] != 0
    assert changed(before, vae, "discriminator")
    plain = make("vae", adversarial="none")
    assert "discriminator" not in plain.modules and "adversarial_d" not in plain.train_step(batch(plain), 5)


@pytest.mark.parametrize("name", ["vae", "vae_3d"])
def test_vae_validation_metrics_use_the_posterior_mean(name):
    vae = make(name)
    images = batch(vae).image
    metrics = vae.validation_metrics(images)
    reconstruction = vae.modules["autoencoder"].reconstruct(images).clamp(0, 1)
    mse = (reconstruction - images).pow(2).flatten(1).mean(1)
    assert metrics["psnr"] == pytest.approx((10 * torch.log10(1 / mse)).mean().item(), rel=1e-4)
    ssim = SSIMMetric(spatial_dims=vae.spatial_dims, data_range=1.0)(reconstruction, images).mean().item()
    assert metrics["ssim"] == pytest.approx(ssim, rel=1e-4) and ssim < 0.5  # untrained: far from 1


def test_vae_perceptual_loss_needs_a_local_weights_file(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    with pytest.raises(InvalidArgument) as error:
        make("vae", perceptual_weights=str(tmp_path / "missing.pt"))
    assert error.value.field == "perceptual_weights"
    weights = tmp_path / "resnet50.pt"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), weights)
    for name in ("vae", "vae_3d"):  # volumes: the 2D network on slices of the three planes (MONAI's 2.5D loss)
        vae = make(name, perceptual_weights=str(weights), adversarial="none")
        losses = vae.train_step(batch(vae), 0)
        assert math.isfinite(losses["perceptual"]) and losses["perceptual"] > 0, name
        assert losses["loss"] == pytest.approx(losses["l1"] + 1e-6 * losses["kl"] + 0.001 * losses["perceptual"],
                                               rel=1e-5)


def test_rflow_trains_on_the_straight_path_from_data_to_noise_with_the_velocity_as_target():
    rflow = make("rflow_3d")
    x0 = torch.rand(3, *rflow.diffusion_shape(), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(4)
    noisy, timesteps, target = rflow.noised(x0)
    torch.manual_seed(4)
    noise = torch.randn_like(x0)
    t = (timesteps.float() / rflow.config.num_train_timesteps).view(-1, 1, 1, 1, 1)
    torch.testing.assert_close(noisy, (1 - t) * x0 + t * noise)
    torch.testing.assert_close(target, x0 - noise)
    assert 0 <= timesteps.min() and timesteps.max() < 8  # MAISI's timestep transform makes them real numbers


def test_rflow_draws_its_training_timesteps_as_configured():
    assert make("rflow").noise_scheduler.sample_method == "uniform"
    logit_normal = make("rflow", timestep_sampling="logit-normal", logit_normal_scale=0.5)
    assert logit_normal.noise_scheduler.sample_method == "logit-normal"
    with pytest.raises(InvalidArgument) as error:
        make("rflow", timestep_sampling="cosine")
    assert error.value.field == "timestep_sampling"


def test_a_3d_vae_decodes_large_latents_tile_by_tile_close_to_whole():
    vae = make("vae_3d")
    autoencoder = vae.modules["autoencoder"].eval()
    latents = torch.randn(1, *vae.config.latent_shape()[:1], 16, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        whole = autoencoder.decode(latents)
        assert torch.equal(tiled_decode(autoencoder.decode, latents, 16, 0.25), whole)  # one tile
        tiled = tiled_decode(autoencoder.decode, latents, 12, 0.5)
    assert tiled.shape == whole.shape == (1, 1, 64, 64, 64)
    # GroupNorm sees each tile's statistics, so tiles are close to the whole decode, not equal (as in MAISI).
    assert (tiled - whole).abs().mean() < 0.25 * whole.std()
    assert torch.corrcoef(torch.stack([tiled.flatten(), whole.flatten()]))[0, 1] > 0.95


def test_codebook_usage_counts_perplexity_and_dead_codes():
    assert codebook_usage(torch.tensor([0, 1, 2, 3] * 5), 8) == {"perplexity": pytest.approx(4.0), "dead_codes": 4.0}
    assert codebook_usage(torch.zeros(10, dtype=torch.long), 4) == {"perplexity": pytest.approx(1.0),
                                                                     "dead_codes": 3.0}


@pytest.mark.parametrize("name", ["vqvae", "vqvae_3d"])
def test_vqvae_reports_reconstruction_and_codebook_use_without_moving_the_codebook(name):
    vqvae = make(name)
    vqvae.train_step(batch(vqvae), 0)
    codebook = vqvae.modules["autoencoder"].quantizer.quantizer.embedding.weight.detach().clone()
    metrics = vqvae.validation_metrics(batch(vqvae, 1).image)
    assert set(metrics) == {"psnr", "ssim", "perplexity", "dead_codes"}
    assert 1 <= metrics["perplexity"] <= 16 and 0 <= metrics["dead_codes"] <= 15
    assert torch.equal(vqvae.modules["autoencoder"].quantizer.quantizer.embedding.weight, codebook)
    assert vqvae.modules["autoencoder"].training  # left as it was


def test_a_latent_model_on_a_vqvae_decodes_through_the_codebook():
    rflow = make("rflow_vq")
    first_stage = rflow.modules["autoencoder"]
    assert first_stage.config.num_embeddings == 16 and not first_stage.training
    latents = torch.randn(1, *rflow.diffusion_shape())
    network = first_stage.vae
    quantised, _ = network.quantize(latents / first_stage.scale_factor)
    torch.testing.assert_close(rflow.decode(latents), network.decode(quantised).float().clamp(0, 1))
