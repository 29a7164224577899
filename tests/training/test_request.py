"""TrainRequest on its own: read back from a job's JSON with the field named
when it is malformed, and planned into the steps its budget means."""

from __future__ import annotations

import pytest

from ctsynth.errors import InvalidArgument
from ctsynth.storage import open_store
from ctsynth.training import runner
from ctsynth.training.request import TrainRequest
from tests.training.conftest import publish_dataset


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("training-request")
    store = open_store((root / "store").as_uri())
    publish_dataset(store, "tiny", root / "tiny")
    return store


@pytest.mark.parametrize(("family", "steps"), [("dcgan", 4), ("wgan", 2)])
def test_an_epoch_budget_counts_every_real_row_a_step_takes(store, family, steps):
    hyper = {"n_critic": 2} if family == "wgan" else {}
    train = TrainRequest(family=family, dataset="tiny", batch_size=2, budget_kind="epochs", budget=1.0,
                         hyperparameters=hyper)
    # 8 train slices: dcgan takes 2 a step, wgan 2 x n_critic (one batch per critic update).
    assert runner.plan(train, store, job_id="j", version="1").steps == steps


@pytest.mark.parametrize(("values", "field"), [
    ({"family": "dcgan", "dataset": "tiny", "batchSize": 2}, "batchSize"),
    ({"dataset": "tiny"}, "family"),
    ({"family": "dcgan", "dataset": "tiny", "workers": 1.5}, "workers"),
    ({"family": "dcgan", "dataset": "tiny", "seed": -1}, "seed"),
    ({"family": "dcgan", "dataset": "tiny", "budget": float("nan")}, "budget"),
    ({"family": "dcgan", "dataset": "tiny", "budget_kind": "hours"}, "budget"),
    ({"family": "dcgan", "dataset": "tiny", "name": 3}, "name"),
    ({"family": "dcgan", "dataset": "tiny", "hyperparameters": []}, "hyperparameters"),
])
def test_a_malformed_request_names_its_field(values, field):
    with pytest.raises(InvalidArgument) as err:
        TrainRequest.from_json(values)
    assert err.value.field == field
