"""The per-worker loop without Ray: checkpoints, exact resume, NaN, cancel."""

from __future__ import annotations

import json
import multiprocessing
import os
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from safetensors.torch import load as load_safetensors
from torch import nn

from ctsynth.code_version import code_version
from ctsynth.errors import FailedPrecondition
from ctsynth.models import checkpoint, families
from ctsynth.models.base import Batch, Family, FamilyConfig
from ctsynth.storage import open_store
from ctsynth.training.loop import (CANCEL, NonFiniteLoss, StepBatches, WorkerContext, agree_to_stop, latest_checkpoint,
                                   stopped_key, train_worker)
from ctsynth.training.request import TrainRequest
from ctsynth.training.spec import TrainSpec
from ctsynth.data.dataset_h5 import open_stack
from tests.training.conftest import PIXEL_MM


@dataclass(frozen=True)
class TinyConfig(FamilyConfig):
    latent: int = 4
    lr: float = 1e-2
    explode_at: int = -1  # a step whose loss is made NaN (test hook of this test family only)


class TinyFamily(Family):
    """A linear generator fitted to the batch mean: enough to test the loop."""

    name = "tiny"
    config_cls = TinyConfig

    def __init__(self, config, device="cpu", precision="fp32"):
        super().__init__(config, device, precision)
        pixels = config.image_size ** 2
        self.modules["generator"] = nn.Linear(config.latent, pixels)
        self.optimizers["generator"] = torch.optim.Adam(self.modules["generator"].parameters(), lr=config.lr)

    @classmethod
    def conditional(cls, config):
        return False

    def train_step(self, batch: Batch, step: int) -> dict[str, float]:
        generator = self.modules["generator"]
        z = torch.randn(batch.image.shape[0], self.config.latent)
        fake = torch.sigmoid(generator(z)).view_as(batch.image)
        loss = (fake - batch.image).pow(2).mean()
        if step == self.config.explode_at:
            loss = loss * float("nan")
        self.optimizers["generator"].zero_grad()
        self.precision.backward(loss)
        self.precision.step(self.optimizers["generator"])
        return {"loss": loss.item()}

    @torch.no_grad()
    def sample(self, count, generator, *, labels=None, sampler=None):
        z = torch.randn(count, self.config.latent, generator=generator)
        return torch.sigmoid(self.modules["generator"](z)).view(count, 1, self.config.image_size, -1)


@pytest.fixture(autouse=True)
def tiny_family(monkeypatch):
    monkeypatch.setitem(families._FAMILIES, "tiny", f"{__name__}:TinyFamily")


def make_spec(store, dataset, version="1", **changes) -> TrainSpec:
    values = dict(job_id="job", family="tiny", config={"image_size": 16}, dataset=dataset, model_name="tiny",
                  version=version, store_uri=store.uri, steps=6, batch_size=2, checkpoint_interval=3,
                  log_interval=1, seed=5)
    values.update(changes)
    return TrainSpec(**values)


def final_weights(store, spec) -> dict[str, torch.Tensor]:
    return load_safetensors(store.get_bytes(f"{spec.prefix}/weights.safetensors"))


def test_step_batches_are_a_function_of_step_and_disjoint_across_ranks():
    first = StepBatches(40, 4, seed=1, rank=0, world_size=2)
    second = StepBatches(40, 4, seed=1, rank=1, world_size=2)
    fresh = StepBatches(40, 4, seed=1, rank=0, world_size=2)
    for step in (0, 3, 4, 7, 12):
        assert np.array_equal(first.indices(step), fresh.indices(step))
        assert not set(first.indices(step)) & set(second.indices(step))
    epoch = np.concatenate([first.indices(s) for s in range(5)] + [second.indices(s) for s in range(5)])
    assert sorted(epoch) == list(range(40)), "one epoch visits every item once"
    assert not np.array_equal(first.indices(0), first.indices(5)), "epochs are reshuffled"


def test_too_small_split_is_a_failed_precondition():
    with pytest.raises(FailedPrecondition, match="fewer than batch size 8 x 2 workers"):
        StepBatches(10, 8, seed=0, rank=0, world_size=2)
    with pytest.raises(FailedPrecondition, match="fewer than batch size 8 x 5 batches per step x 1 workers"):
        StepBatches(39, 8, seed=0, rank=0, world_size=1, draws=5)
    assert len(StepBatches(40, 8, seed=0, rank=0, world_size=1, draws=5).indices(0)) == 40


def test_training_publishes_a_complete_model_version(store, tiny_dataset):
    spec = make_spec(store, tiny_dataset)
    result = train_worker(spec, WorkerContext())
    assert result["step"] == 6
    manifest = store.read_manifest(spec.prefix, verify=True)
    assert set(manifest["files"]) == {"weights.safetensors", "optimizer.safetensors", "training_state.json",
                                      "config.json", "metrics.json", "samples.png"}
    config = store.get_json(f"{spec.prefix}/config.json")
    assert config["family"] == "tiny" and config["dataset"] == tiny_dataset and config["seed"] == 5
    assert config["config"]["image_size"] == 16 and config["ctsynth_version"]
    assert config["code_version"] == code_version()
    history = store.get_json(f"{spec.prefix}/metrics.json")["history"]
    assert [h["step"] for h in history] == [1, 2, 3, 4, 5, 6]
    assert latest_checkpoint(store, spec.prefix)[0] == 3
    from PIL import Image
    import io
    assert Image.open(io.BytesIO(store.get_bytes(f"{spec.prefix}/samples.png"))).size == (64, 64)


def test_config_records_the_training_slices_pixel_size_at_the_model_resolution(store, tiny_dataset):
    spec = make_spec(store, tiny_dataset, config={"image_size": 8}, steps=1, checkpoint_interval=0)
    train_worker(spec, WorkerContext())
    # The stored 16-pixel slices are resized to 8 pixels: each pixel covers twice the tissue.
    assert store.get_json(f"{spec.prefix}/config.json")["spacing_mm"] == pytest.approx([PIXEL_MM * 2] * 2)


def test_resume_from_a_checkpoint_continues_bit_for_bit(store, tiny_dataset):
    straight = make_spec(store, tiny_dataset, version="1")
    train_worker(straight, WorkerContext())
    interrupted = make_spec(store, tiny_dataset, version="2")
    train_worker(interrupted, WorkerContext())
    # Forget everything after the step-3 checkpoint, as if the worker died at step 4.
    for name in store.read_manifest(interrupted.prefix)["files"]:
        store.delete(f"{interrupted.prefix}/{name}")
    store.delete(f"{interrupted.prefix}/manifest.json")
    train_worker(interrupted, WorkerContext())
    a, b = final_weights(store, straight), final_weights(store, interrupted)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    history = store.get_json(f"{interrupted.prefix}/metrics.json")["history"]
    assert [h["step"] for h in history] == [1, 2, 3, 4, 5, 6]


def test_checkpoint_round_trip_is_exact(store, tiny_dataset):
    family = TinyFamily(TinyConfig(image_size=16))
    batch = Batch(image=torch.rand(2, 1, 16, 16))
    family.train_step(batch, 0)
    copy = TinyFamily(TinyConfig(image_size=16))
    checkpoint.load_weights_bytes(copy, checkpoint.weights_bytes(family))
    tensors, meta = checkpoint.training_state(family, step=1)
    torch.manual_seed(0)
    expected = family.train_step(batch, 1)
    checkpoint.restore_training_state(copy, tensors, meta)
    torch.manual_seed(0)
    assert copy.train_step(batch, 1) == expected


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint(store, tiny_dataset):
    spec = make_spec(store, tiny_dataset, config={"image_size": 16, "explode_at": 4})
    with pytest.raises(NonFiniteLoss, match="loss loss became nan at step 4"):
        train_worker(spec, WorkerContext())
    assert latest_checkpoint(store, spec.prefix)[0] == 3
    assert not store.exists(f"{spec.prefix}/manifest.json")


def test_cancel_marker_stops_training_without_publishing(store, tiny_dataset):
    spec = make_spec(store, tiny_dataset)
    store.put_json(f"{spec.prefix}/{CANCEL}", {})
    assert train_worker(spec, WorkerContext())["cancelled"] is True
    assert not store.exists(f"{spec.prefix}/manifest.json")
    record = store.get_json(stopped_key(spec.prefix, 0))
    assert (record["rank"], record["step"], record["last_trained"]) == (0, 0, None)


def test_masks_required_but_absent_is_a_failed_precondition(store, tmp_path, monkeypatch):
    from tests.training.conftest import publish_dataset

    dataset = publish_dataset(store, "clean", tmp_path / "clean", with_nodules=False)
    monkeypatch.setattr(TinyFamily, "needs_masks", True)
    with pytest.raises(FailedPrecondition, match="needs tumor masks"):
        train_worker(make_spec(store, dataset), WorkerContext())


class RecordingContext:
    """The JobContext surface `runner.run` uses, keeping the warnings."""

    def __init__(self):
        self.warnings: list[tuple[str, str]] = []

    def warn(self, subject, reason):
        self.warnings.append((subject, reason))

    def label(self, key, value): ...
    def progress(self, *args, **kwargs): ...
    def report(self, *args, **kwargs): ...
    def check_cancelled(self): ...


@pytest.mark.parametrize("hyper, warned", [({"image_size": 8}, True), ({}, False)], ids=["resized", "same-size"])
def test_a_job_warns_when_the_dataset_is_resized_to_the_model(store, tiny_dataset, monkeypatch, hyper, warned):
    from ctsynth.training import runner
    from ctsynth.v1 import common_pb2

    monkeypatch.setattr(runner.ray_driver, "fit", lambda spec: train_worker(spec, WorkerContext()))
    ctx = RecordingContext()
    request = TrainRequest(family="tiny", dataset=tiny_dataset, budget_kind="steps", budget=1, batch_size=2,
                           hyperparameters=hyper).to_json()
    runner.run(common_pb2.Job(id="job"), request, ctx, store)
    if warned:
        assert ctx.warnings == [(tiny_dataset, "its 16x16 images are resized to the model's image_size 8 "
                                               "for training")]
    else:
        assert ctx.warnings == []


def test_each_critic_update_sees_a_whole_batch_of_rows_no_other_update_sees(store, tmp_path, monkeypatch):
    from ctsynth.models.wgan import WGAN
    from tests.training.conftest import publish_dataset

    dataset = publish_dataset(store, "forty", tmp_path / "forty", per_split=40)
    critic_rows, generator_rows = [], []
    critic_terms, generator_terms = WGAN.critic_terms, WGAN.generator_terms

    def spy_critic(self, critic, real, fake):
        critic_rows.append(real.detach().flatten(1).clone())
        return critic_terms(self, critic, real, fake)

    def spy_generator(self, critic, fake, real):
        generator_rows.append(fake.shape[0])
        return generator_terms(self, critic, fake, real)

    monkeypatch.setattr(WGAN, "critic_terms", spy_critic)
    monkeypatch.setattr(WGAN, "generator_terms", spy_generator)
    config = {"image_size": 16, "latent_dim": 4, "generator_hidden": [8], "discriminator_hidden": [8], "n_critic": 5}
    spec = make_spec(store, dataset, family="wgan", config=config, steps=1, batch_size=8, checkpoint_interval=0)
    train_worker(spec, WorkerContext())
    assert [rows.shape[0] for rows in critic_rows] == [8] * 5
    assert len(torch.unique(torch.cat(critic_rows), dim=0)) == 40, "no row is seen twice or dropped"
    assert generator_rows == [8]


# Two ranks in two fresh processes joined by gloo on loopback, as Ray Train's
# workers are; each writes what it returns to a file for the test to read.
HANG_GUARD_S = 300  # only against a hang; a healthy run takes a few seconds


def _agreement_rank(rank: int, init_file: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    cases = [(False, False), (True, False), (False, True), (True, True)]  # (rank 0 wants, rank 1 wants)
    agreed = [agree_to_stop(case[rank]) for case in cases]
    dist.destroy_process_group()
    with open(out, "w") as f:
        json.dump(agreed, f)


def _training_rank(rank: int, init_file: str, out: str, spec_json: dict, cancel_after: int) -> None:
    import torch.distributed as dist

    families._FAMILIES["tiny"] = f"{__name__}:TinyFamily"
    spec = TrainSpec.from_json(spec_json)
    if rank == 0:  # the cancel marker appears once rank 0 has trained step `cancel_after`
        train_step = TinyFamily.train_step

        def train_then_cancel(self, batch, step):
            losses = train_step(self, batch, step)
            if step == cancel_after:
                open_store(spec.store_uri).put_json(f"{spec.prefix}/{CANCEL}", {})
            return losses

        TinyFamily.train_step = train_then_cancel
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    result = train_worker(spec, WorkerContext(rank=rank, world_size=2))
    dist.destroy_process_group()
    with open(out, "w") as f:
        json.dump(result, f)


def _run_two_ranks(tmp_path, target, *args) -> list:
    context = multiprocessing.get_context("spawn")
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # inherited by the children: gloo pairs on loopback
    outs = [tmp_path / f"rank-{rank}.json" for rank in range(2)]
    ranks = [context.Process(target=target, args=(rank, str(tmp_path / "pg-init"), str(outs[rank]), *args))
             for rank in range(2)]
    for process in ranks:
        process.start()
    try:
        for process in ranks:
            process.join(HANG_GUARD_S)
    finally:
        hung = [process.pid for process in ranks if process.is_alive()]
        for process in ranks:
            if process.is_alive():
                process.kill()  # only the processes this test started
                process.join()
    assert not hung, f"ranks with pids {hung} did not finish"
    assert [process.exitcode for process in ranks] == [0, 0]
    return [json.loads(out.read_text()) for out in outs]


def test_every_rank_agrees_to_stop_when_any_rank_wants_to(tmp_path):
    assert agree_to_stop(True) is True and agree_to_stop(False) is False, "one process: the local flag"
    assert _run_two_ranks(tmp_path, _agreement_rank) == [[False, True, True, True]] * 2


def test_cancel_stops_every_rank_before_the_same_step(store, tiny_dataset, tmp_path):
    spec = make_spec(store, tiny_dataset, steps=40, checkpoint_interval=0, workers=2)
    results = _run_two_ranks(tmp_path, _training_rank, spec.to_json(), 2)
    # Rank 0 sees the marker before step 3; neither rank trains step 3 or later.
    assert results == [{"step": 3, "cancelled": True}] * 2
    records = [store.get_json(stopped_key(spec.prefix, rank)) for rank in range(2)]
    assert [(r["rank"], r["step"], r["last_trained"]) for r in records] == [(0, 3, 2), (1, 3, 2)]
    assert store.get_json(f"{spec.prefix}/progress.json")["step"] == 3
    assert not store.exists(f"{spec.prefix}/manifest.json")


def test_a_published_model_carries_its_family_metrics_on_the_validation_split(store, tiny_dataset, monkeypatch):
    """Known answer: the tiny family's "metric" is the mean intensity of what
    it is shown, so the record must be the mean of the first 5 validation slices."""
    monkeypatch.setattr(TinyFamily, "validation_items", 5)
    monkeypatch.setattr(TinyFamily, "validation_metrics", lambda self, images: {"mean": images.mean().item()})
    spec = make_spec(store, tiny_dataset)
    train_worker(spec, WorkerContext())
    dataset, _ = open_stack(store, tiny_dataset, 2, "validation")
    expected = torch.stack([dataset[i]["image"] for i in range(5)]).mean().item()
    record = store.get_json(f"{spec.prefix}/metrics.json")["validation"]
    assert record == {"mean": pytest.approx(expected, rel=1e-6), "items": 5}
    assert store.read_manifest(spec.prefix)["headline"]["validation_mean"] == pytest.approx(expected, rel=1e-6)
    checkpoint_metrics = store.get_json(f"{spec.prefix}/checkpoints/000000003/metrics.json")
    assert "validation" not in checkpoint_metrics  # measured once, for the published version
