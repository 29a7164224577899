"""Dynamic batching: merged passes, the same pixels as unmerged, cancelled work skipped."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from prometheus_client import REGISTRY

from ctsynth.errors import Unavailable
from ctsynth.models.base import Family, FamilyConfig
from ctsynth.models.dcgan import DCGAN, DCGANConfig
from ctsynth.models.checkpoint import LoadedModel
from ctsynth.sampling.batcher import Batcher


def tiny_model(name: str) -> LoadedModel:
    family = DCGAN(DCGANConfig(image_size=16, latent_dim=8, generator_widths=(16, 8), discriminator_widths=(8, 8)))
    for module in family.modules.values():
        module.eval()
    return LoadedModel(name, "1", family, {})


def batch_stats(reference: str) -> tuple[float, float]:
    labels = {"model": reference}
    return (REGISTRY.get_sample_value("ctsynth_sampling_batch_items_count", labels) or 0.0,
            REGISTRY.get_sample_value("ctsynth_sampling_batch_items_sum", labels) or 0.0)


def test_concurrent_work_is_merged_into_one_pass_with_unmerged_pixels():
    model = tiny_model("merge")
    # A pass starts only once 4 items wait (max_wait is far away), so the merge is certain.
    batcher = Batcher(max_batch=4, max_wait_s=60)
    with ThreadPoolExecutor(4) as pool:
        futures = list(pool.map(lambda seed: batcher.submit(model, {}, [seed], None), [10, 11, 12, 13]))
        merged = [future.result(30) for future in futures]
    batcher.close()
    assert batch_stats("merge:1") == (1.0, 4.0)
    alone = Batcher(max_batch=4, enabled=False)
    for seed, result in zip([10, 11, 12, 13], merged):
        assert torch.equal(alone.submit(model, {}, [seed], None).result(), result)


def test_results_come_back_per_request_in_order():
    model = tiny_model("order")
    batcher = Batcher(max_batch=4, max_wait_s=60)
    first = batcher.submit(model, {}, [1, 2, 3], None)
    second = batcher.submit(model, {}, [4, 5, 6], None)  # 6 items: two passes of 4 rows
    both = torch.cat([first.result(30), second.result(30)])
    batcher.close()
    assert batch_stats("order:1") == (2.0, 6.0)
    reference = Batcher(max_batch=4, enabled=False).submit(model, {}, [1, 2, 3, 4, 5, 6], None).result()
    assert torch.equal(both, reference)


def test_cancelled_work_is_not_sampled():
    model = tiny_model("cancel")
    batcher = Batcher(max_batch=2, max_wait_s=60)
    gone = batcher.submit(model, {}, [1], None)
    assert gone.cancel()
    kept = batcher.submit(model, {}, [2], None)
    other = batcher.submit(model, {}, [3], None)
    assert kept.result(30).shape == (1, 1, 16, 16) and other.result(30).shape == (1, 1, 16, 16)
    batcher.close()
    assert batch_stats("cancel:1") == (1.0, 2.0)


class SharedNoise(Family):
    """Draws one noise value for the whole batch: it cannot be sampled per item in a batch."""

    name = "shared_noise"
    config_cls = FamilyConfig

    def train_step(self, batch, step):
        return {}

    def sample(self, count, generator, *, labels=None, sampler=None):
        level = torch.rand((1,), generator=generator)
        return level.expand(count, 1, 8, 8).clone()


def test_a_family_that_shares_noise_across_a_batch_is_sampled_item_by_item():
    model = LoadedModel("shared", "1", SharedNoise(FamilyConfig(image_size=8)), {})
    batcher = Batcher(max_batch=4, enabled=False)
    assert batcher.rows(model) == 4
    together = batcher.submit(model, {}, [1, 2], None).result()
    assert batcher.rows(model) == 1
    assert torch.equal(together[1], batcher.submit(model, {}, [2], None).result()[0])
    assert not torch.equal(together[0], together[1])


def test_errors_reach_every_merged_request():
    model = tiny_model("errors")
    batcher = Batcher(max_batch=2, max_wait_s=60)
    futures = [batcher.submit(model, {"truncation_psi": 0.5}, [seed], None) for seed in (1, 2)]
    for future in futures:
        with pytest.raises(Exception, match="truncation_psi"):
            future.result(30)
    batcher.close()


def test_close_waits_for_every_worker_and_refuses_new_work():
    """A worker still alive at interpreter exit dies inside torch and aborts the process (issue 12, item 9)."""
    batcher = Batcher(max_batch=4, max_wait_s=0.01)
    results = [batcher.submit(tiny_model(f"close-{n}"), {}, [n], None) for n in range(3)]
    assert all(future.result(30).shape[0] == 1 for future in results)
    workers = [thread for thread in threading.enumerate() if thread.name.startswith("batcher-close-")]
    assert len(workers) == 3
    batcher.close()
    assert not any(thread.is_alive() for thread in workers)
    with pytest.raises(Unavailable, match="shutting down"):
        batcher.submit(tiny_model("close-0"), {}, [1], None)
