"""Plans survive the job record, and pick defaults per dimensionality."""

from __future__ import annotations

import pytest
from google.protobuf import json_format, struct_pb2

from ctsynth.errors import InvalidArgument
from ctsynth.evaluation.plan import DEFAULT_METRICS, EvaluationPlan, ModelSource, _model_source, plan_evaluation
from ctsynth.jobs.manager import job_id_for, normalize_request
from ctsynth.registry import Registry
from ctsynth.storage import open_store
from tests.evaluation.conftest import tiny_settings


def test_a_plan_reads_back_from_the_stored_job_request_unchanged():
    plan = EvaluationPlan(dataset="tiny:1", split="test", spatial_dims=2, metrics=("ct-fid", "variety"), repeats=3,
                          seed=2 ** 64 - 1, model=ModelSource(model="unet-gan:1", count=8, seed=2 ** 63 + 5,
                                                              conditional=True, condition=1,
                                                              sampler={"eta": 0.5}, truncation_psi=None))
    request = normalize_request(plan.to_json())
    stored = struct_pb2.Struct()
    stored.update(request)
    again = normalize_request(json_format.MessageToDict(stored))  # as JobManager.recover reads it
    assert EvaluationPlan.from_json(again) == plan
    assert job_id_for("evaluation", again) == job_id_for("evaluation", request)


def test_defaults_follow_the_model_and_names_resolve_to_versions(store, store_root):
    settings = tiny_settings(store_root)
    flat = plan_evaluation({"model": {"model": "dcgan", "count": 4}, "dataset": "tiny"}, store, settings, 100)
    volumes = plan_evaluation({"model": {"model": "ddpm3d:latest", "count": 4}, "dataset": "tiny:1",
                               "split": "validation"}, store, settings, 100)
    assert (flat.spatial_dims, flat.metrics, flat.split) == (2, DEFAULT_METRICS[2], "test")
    assert (volumes.spatial_dims, volumes.metrics, volumes.split) == (3, DEFAULT_METRICS[3], "validation")
    assert flat.model.model == "dcgan:1" and volumes.model.model == "ddpm3d:1" and flat.dataset == "tiny:1"
    stored = plan_evaluation({"synthetic_dataset": "tiny", "dataset": "tiny", "metrics": ["Variety", "variety"]},
                             store, settings, 100)
    assert (stored.synthetic_dataset, stored.spatial_dims, stored.metrics) == ("tiny:1", 2, ("variety",))


def test_a_registered_segmenter_is_refused_as_the_model_to_evaluate(tmp_path):
    store = open_store((tmp_path / "store").as_uri())
    store.publish("models/ctseg2d-tiny-1/1", {"config.json": b'{"family": "segmenter"}',
                                              "weights.safetensors": b""}, {})
    with pytest.raises(InvalidArgument, match="ctseg2d-tiny-1:1 is a nodule segmenter, not a generative model"):
        _model_source({"model": "ctseg2d-tiny-1", "count": 4}, Registry(store, "models", "model"), 100)
