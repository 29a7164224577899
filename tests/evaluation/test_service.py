"""EvaluationService through a real in-process gRPC server on tiny models."""

from __future__ import annotations

import base64
import io
import json
import math
import re
from html.parser import HTMLParser
from urllib.request import url2pathname, urlopen

import grpc
import numpy as np
import pytest
import torch
from monai.networks.nets.resnet import ResNet
from PIL import Image

from ctsynth.evaluation import run as run_module
from ctsynth.evaluation.plan import DEFAULT_METRICS
from ctsynth.metrics.inception import WEIGHTS_FILE, InceptionFeatures
from ctsynth.registry import Registry
from ctsynth.servicers.training import model_message
from ctsynth.v1 import common_pb2, evaluation_pb2
from tests.evaluation.conftest import State, finish
from tests.metrics.conftest import random_inception_weights
from tests.training.conftest import publish_dataset

pb = evaluation_pb2


def start(stub, model: str = "dcgan", count: int = 16, **fields) -> pb.Report:
    """Run an evaluation to its end and return its report."""
    seed = fields.pop("sample_seed", 0)
    job = stub.StartEvaluation(pb.StartEvaluationRequest(
        model=pb.ModelSamples(model=model, count=count, seed=seed), dataset=fields.pop("dataset", "tiny"), **fields))
    final, _ = finish(stub, job)
    assert final.state == State.JOB_STATE_SUCCEEDED, final.error.message
    return stub.GetReport(pb.GetReportRequest(report_id=final.result))


def by_name(report: pb.Report) -> dict[str, pb.MetricResult]:
    return {m.name: m for m in report.metrics}


def read(uri: str) -> bytes:
    with urlopen(uri) as f:
        return f.read()


class Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources, self.tables = [], 0

    def handle_starttag(self, tag, attrs):
        self.tables += tag == "table"
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


# --- a 2D model --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dcgan_run(stub):
    job = stub.StartEvaluation(pb.StartEvaluationRequest(model=pb.ModelSamples(model="dcgan", count=16),
                                                         dataset="tiny"))
    final, events = finish(stub, job)
    assert final.state == State.JOB_STATE_SUCCEEDED, final.error.message
    return job, final, events, stub.GetReport(pb.GetReportRequest(report_id=final.result))


def test_2d_defaults_report_failed_metrics_with_their_reason_while_the_others_complete(dcgan_run):
    _, final, events, report = dcgan_run
    assert [m.name for m in report.metrics] == list(DEFAULT_METRICS[2])
    metrics = by_name(report)
    for name in ("fid", "kid", "pr"):  # no InceptionV3 weights configured
        assert metrics[name].failed and metrics[name].feature_space == "inception"
        assert metrics[name].error.startswith(f"{name}: no weights file is configured")
        assert WEIGHTS_FILE in metrics[name].error and "--inception-weights" in metrics[name].error
    assert metrics["utility"].failed and "dcgan:1 gives none" in metrics["utility"].error
    for name in ("ct-fid", "variety", "memorization", "efficiency"):
        assert not metrics[name].failed, metrics[name].error
        assert math.isfinite(metrics[name].value) and metrics[name].repeats == 1
    assert metrics["ct-fid"].value > 0 and metrics["ct-fid"].feature_space == "ct"
    assert {"kid", "precision", "recall"} <= set(metrics["ct-fid"].details)
    assert 0 <= metrics["memorization"].value <= 1 and "feature_fraction" in metrics["memorization"].details
    assert metrics["variety"].value > 0 and "real_kib" in metrics["variety"].details
    efficiency = metrics["efficiency"].details
    assert efficiency["extrapolated"] == 1 and efficiency["measured_items"] == 16 and efficiency["training_steps"] == 1
    assert {w.subject for w in final.warnings} == {"fid", "kid", "pr", "utility"}
    stages = {e.progress.stage for e in events}
    assert {"generating", "metrics", "report"} <= stages
    assert any(s.startswith("training the CT feature extractor ctfeat2d-tiny-1") for s in stages)


def test_the_report_is_published_and_renders(dcgan_run, store):
    job, final, _, report = dcgan_run
    assert report.id == job.id == final.result and report.job_id == job.id and report.model == "dcgan:1"
    assert report.domain_extractor == "ctfeat2d-tiny-1:1" and report.created.seconds > 0
    assert store.read_manifest(f"reports/{report.id}", verify=True)["model"] == "dcgan:1"
    summary = json.loads(read(report.json.uri))
    assert [m["name"] for m in summary["metrics"]] == [m.name for m in report.metrics]
    assert len(summary["memorization_pairs"]) == 8
    parser = Images()
    parser.feed(read(report.html.uri).decode())
    assert parser.tables >= 2 and len(parser.sources) == len(report.images) >= 5
    for source in parser.sources:
        assert Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))).format == "PNG"
    names = {url2pathname(image.uri).rsplit("/", 1)[1] for image in report.images}
    assert {"samples_real.png", "samples_synthetic.png", "memorization_pairs.png", "memorization_distances.png",
            "training_curves.png"} <= names
    for image in report.images:
        assert Image.open(io.BytesIO(read(image.uri))).size[0] > 0


def test_the_model_registry_gets_the_headline_figures(dcgan_run, store):
    report = dcgan_run[3]
    metrics = by_name(report)
    headline = model_message(Registry(store, "models", "model"), "dcgan", "1").headline
    assert headline["ct_fid"] == pytest.approx(metrics["ct-fid"].value)
    assert headline["ct_fid_recall"] == pytest.approx(metrics["ct-fid"].details["recall"])
    assert headline["memorization"] == pytest.approx(metrics["memorization"].value)
    assert "fid" not in headline and "utility" not in headline  # failed ones are left out
    extractor = model_message(Registry(store, "models", "model"), "ctfeat2d-tiny-1", "1")
    assert extractor.family == "domain_extractor" and extractor.dataset == "tiny:1"


def test_the_same_request_is_the_same_job_and_reports_are_listed(dcgan_run, stub):
    job = dcgan_run[0]
    again = stub.StartEvaluation(pb.StartEvaluationRequest(model=pb.ModelSamples(model="dcgan:1", count=16),
                                                           dataset="tiny:latest"))
    assert again.id == job.id and again.state == State.JOB_STATE_SUCCEEDED
    listed = stub.ListReports(pb.ListReportsRequest(model="dcgan"))
    assert job.id in [r.id for r in listed.reports]
    assert job.id not in [r.id for r in stub.ListReports(pb.ListReportsRequest(model="ddpm3d:1")).reports]
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetReport(pb.GetReportRequest(report_id="evaluation-0000000000000000"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


# --- utility, repeats, 3D, Inception --------------------------------------------------------

def test_a_conditional_model_gets_utility_with_p_values_over_repeated_draws(stub):
    metrics = by_name(start(stub, "unet-gan", count=8, metrics=["utility", "memorization"], repeats=2, seed=4))
    utility = metrics["utility"]
    assert not utility.failed, utility.error
    assert utility.repeats == 2 and 0 < utility.details["p_augmentation"] <= 1
    assert 0 < utility.details["p_extraction"] <= 1 and 0 <= utility.details["accuracy_real"] <= 1
    assert metrics["memorization"].repeats == 2 and metrics["memorization"].std >= 0


@pytest.fixture(scope="module")
def med3d_weights(tmp_path_factory):
    torch.manual_seed(0)
    network = ResNet("basic", [1, 1, 1, 1], [4, 8, 8, 8], spatial_dims=3, n_input_channels=1, conv1_t_size=3,
                     conv1_t_stride=2, shortcut_type="B", feed_forward=False, bias_downsample=False)
    path = tmp_path_factory.mktemp("med3d") / "resnet_10.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in network.state_dict().items()}}, path)
    return path


def test_3d_defaults_and_fid_3d_from_med3d_weights(stub, med3d_weights):
    report = start(stub, "ddpm3d", count=6, metrics=[*DEFAULT_METRICS[3], "fid-3d"],
                   med3d_weights=str(med3d_weights))
    metrics = by_name(report)
    for name, metric in metrics.items():
        assert not metric.failed, metric.error
    assert set(metrics["fid-2.5d"].details) == {"axial", "coronal", "sagittal"}
    assert metrics["fid-2.5d"].value == pytest.approx(np.mean(list(metrics["fid-2.5d"].details.values())))
    assert metrics["fid-2.5d"].feature_space == "ct" and metrics["fid-3d"].feature_space == "med3d"
    assert 0 < metrics["ms-ssim"].value <= 1 and metrics["ms-ssim"].details["scales"] == 2  # 8^3 volumes
    assert 0 < metrics["ms-ssim"].details["diversity_ms_ssim"] <= 1
    assert report.domain_extractor == "ctfeat3d-tiny-1:1"


def test_inception_metrics_and_the_real_feature_cache(stub, store, tmp_path, monkeypatch):
    weights = random_inception_weights(tmp_path / WEIGHTS_FILE)
    calls = []
    original = InceptionFeatures.features
    monkeypatch.setattr(InceptionFeatures, "features", lambda self, images: calls.append(len(images)) or
                        original(self, images))
    first = by_name(start(stub, count=8, metrics=["fid", "kid", "pr"], inception_weights=str(weights)))
    assert all(not m.failed for m in first.values()), [m.error for m in first.values()]
    assert first["fid"].value > 0 and 0 <= first["pr"].details["recall"] <= 1
    assert sorted(calls) == [8, 8]  # the test split (8 slices) and the synthetic draw, once for all three
    assert any(info.key.startswith("cache/features/tiny/1/test/inception-v3-compat-")
               for info in store.list("cache/features/"))
    reads = []
    original_read = run_module.read_split
    monkeypatch.setattr(run_module, "read_split", lambda *args, **kw: reads.append((args[2], args[4])) or
                        original_read(*args, **kw))
    second = by_name(start(stub, count=8, metrics=["fid"], inception_weights=str(weights), sample_seed=1))
    assert len(calls) == 3 and second["fid"].value != first["fid"].value  # only the new synthetic draw
    assert reads == [("test", 16)]  # the real split is not read back: only the report's 16-image grid


# --- bad sets and bad requests ---------------------------------------------------------------

@pytest.mark.parametrize("count, fields, message", [
    (3, {"metrics": ["ct-fid", "memorization"]},
     "ct-fid: the synthetic set has 3 samples; a 3-NN manifold needs at least 4"),
    (8, {"metrics": ["ct-fid", "memorization"], "kid_subset_size": 9},
     r"ct-fid: the KID subset size 9 is larger than the synthetic set \(8 samples\)"),
])
def test_too_few_samples_fail_the_metric_that_needs_them(stub, count, fields, message):
    metrics = by_name(start(stub, count=count, **fields))
    assert metrics["ct-fid"].failed and re.match(message, metrics["ct-fid"].error)
    assert not metrics["memorization"].failed


def test_a_stored_synthetic_set_of_another_shape_fails_each_metric_precisely(stub, store, tmp_path):
    publish_dataset(store, "small", tmp_path / "small", size=8)
    job = stub.StartEvaluation(pb.StartEvaluationRequest(synthetic_dataset="small", dataset="tiny",
                                                         metrics=["ct-fid", "variety", "efficiency"]))
    final, _ = finish(stub, job)
    assert final.state == State.JOB_STATE_SUCCEEDED, final.error.message
    metrics = by_name(stub.GetReport(pb.GetReportRequest(report_id=final.result)))
    assert metrics["ct-fid"].error == ("ct-fid: real items are (1, 16, 16) and synthetic items (1, 8, 8): "
                                       "the shapes differ")
    assert metrics["variety"].error.startswith("variety: real items are (1, 16, 16)")
    assert metrics["efficiency"].error == ("efficiency: a stored synthetic set has no generation cost; "
                                           "evaluate a model")


@pytest.mark.parametrize("fields, code, text", [
    ({"dataset": "tiny"}, "INVALID_ARGUMENT", "synthetic: set either model"),
    ({"dataset": "tiny", "model": pb.ModelSamples(model="nope", count=4)}, "NOT_FOUND", "no model named 'nope'"),
    ({"dataset": "nope", "model": pb.ModelSamples(model="dcgan", count=4)}, "NOT_FOUND", "no dataset named 'nope'"),
    ({"dataset": "tiny", "model": pb.ModelSamples(model="dcgan:7", count=4)}, "NOT_FOUND", "has no version 7"),
    ({"dataset": "tiny", "model": pb.ModelSamples(model="dcgan", count=0)}, "INVALID_ARGUMENT", "model.count"),
    ({"dataset": "tiny", "model": pb.ModelSamples(model="dcgan", count=100000)}, "INVALID_ARGUMENT",
     "model.count: 100000 is outside 1-10000"),
    ({"dataset": "tiny", "model": pb.ModelSamples(model="dcgan", count=4, condition=common_pb2.CONDITION_TUMOR)},
     "INVALID_ARGUMENT", "model.condition: dcgan:1 is unconditional"),
    ({"dataset": "tiny", "model": pb.ModelSamples(model="dcgan", count=4, truncation_psi=2.0)},
     "INVALID_ARGUMENT", "model.truncation_psi"),
    ({"dataset": "tiny", "split": "holdout", "model": pb.ModelSamples(model="dcgan", count=4)},
     "INVALID_ARGUMENT", "split: dataset tiny:1 has no split 'holdout'"),
    ({"dataset": "tiny", "metrics": ["fid", "sharpness"], "model": pb.ModelSamples(model="dcgan", count=4)},
     "INVALID_ARGUMENT", "metrics: unknown metric 'sharpness'"),
    ({"dataset": "tiny", "metrics": ["fid-3d"], "model": pb.ModelSamples(model="dcgan", count=4)},
     "INVALID_ARGUMENT", "metrics: fid-3d does not apply to 2D samples"),
    ({"dataset": "tiny", "metrics": ["fid"], "model": pb.ModelSamples(model="ddpm3d", count=4)},
     "INVALID_ARGUMENT", "metrics: fid does not apply to 3D samples"),
    ({"dataset": "tiny", "repeats": 11, "model": pb.ModelSamples(model="dcgan", count=4)},
     "INVALID_ARGUMENT", "repeats: 11 is outside 1-10"),
    ({"dataset": "tiny", "repeats": 2, "synthetic_dataset": "tiny"}, "INVALID_ARGUMENT",
     "repeats: a stored synthetic set is one draw"),
    ({"dataset": "tiny", "model": pb.ModelSamples(model="ctfeat2d-tiny-1", count=4)}, "INVALID_ARGUMENT",
     "is a feature extractor, not a generative model"),
    ({"dataset": "tiny", "domain_extractor": "nope", "model": pb.ModelSamples(model="dcgan", count=4)},
     "NOT_FOUND", "no model named 'nope'"),
    ({"dataset": "tiny", "inception_weights": "/nonexistent/w.pth", "model": pb.ModelSamples(model="dcgan", count=4)},
     "INVALID_ARGUMENT", "inception_weights: /nonexistent/w.pth is outside the allowed roots"),
])
def test_bad_requests_get_a_precise_status(stub, dcgan_run, fields, code, text):
    with pytest.raises(grpc.RpcError) as refused:
        stub.StartEvaluation(pb.StartEvaluationRequest(**fields))
    assert refused.value.code().name == code and text in refused.value.details()


def test_weights_outside_the_roots_are_refused_without_saying_whether_they_exist(stub, tmp_path, tmp_path_factory):
    answers = {}
    escape = f"file://{tmp_path}/{'../' * len(tmp_path.parts)}etc/hostname"
    for field in ("inception_weights", "med3d_weights"):
        for reference in ("/etc/hostname", "/etc/no-such-weights.pth", escape):
            with pytest.raises(grpc.RpcError) as refused:
                stub.StartEvaluation(pb.StartEvaluationRequest(dataset="tiny", **{field: reference},
                                                               model=pb.ModelSamples(model="dcgan", count=4)))
            answers[reference] = (refused.value.code().name, refused.value.details().replace(reference, "REF"))
        assert len(set(answers.values())) == 1, answers
        code, details = next(iter(answers.values()))
        assert code == "INVALID_ARGUMENT" and details.startswith(f"{field}: REF is outside the allowed roots")
        answers.clear()
    missing = tmp_path_factory.getbasetemp() / "missing.pth"
    with pytest.raises(grpc.RpcError) as refused:
        stub.StartEvaluation(pb.StartEvaluationRequest(dataset="tiny", inception_weights=str(missing),
                                                       model=pb.ModelSamples(model="dcgan", count=4)))
    assert refused.value.code().name == "FAILED_PRECONDITION" and "does not exist" in refused.value.details()
