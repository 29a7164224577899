"""`ctsynth evaluate`, `ctsynth report` and `ctsynth reports`, services in-process."""

from __future__ import annotations

import pytest

from ctsynth import stack
from ctsynth.cli.main import main
from ctsynth.storage import open_store
from tests.served_models import train
from tests.training.conftest import publish_dataset


@pytest.fixture
def store_uri(tmp_path, monkeypatch):
    monkeypatch.setattr(stack, "current", lambda: None)  # in-process services even when `ctsynth up` runs here
    for name, value in {"CTSYNTH_EVAL_EXTRACTOR_STEPS": "3", "CTSYNTH_EVAL_DEVICE": "cpu",
                        "CTSYNTH_SAMPLING_DEVICE": "cpu", "CTSYNTH_WEIGHTS_CACHE": str(tmp_path / "weights")}.items():
        monkeypatch.setenv(name, value)
    store = open_store((tmp_path / "store").as_uri())
    train(store, publish_dataset(store, "tiny", tmp_path / "tiny"), "dcgan")
    return store.uri


def test_evaluate_prints_the_report_and_report_shows_it_again(store_uri, capsys):
    assert main(["--store", store_uri, "evaluate", "--model", "dcgan", "--dataset", "tiny", "--count", "8",
                 "--metrics", "ct-fid,variety", "--quiet"]) == 0
    out = capsys.readouterr().out
    report_id = out.split()[1].rstrip(":")
    assert out.startswith(f"report {report_id}: dcgan:1 against tiny:1 (test split)")
    assert "ct-fid" in out and "variety" in out and "failed" not in out
    assert f"html: {store_uri}/reports/{report_id}/report.html" in out
    assert main(["--store", store_uri, "report", report_id]) == 0
    assert capsys.readouterr().out == out
    assert main(["--store", store_uri, "reports", "--model", "dcgan"]) == 0
    assert capsys.readouterr().out.startswith(report_id)


def test_bad_input_is_one_line_on_stderr(store_uri, capsys):
    assert main(["--store", store_uri, "evaluate", "--model", "dcgan", "--dataset", "tiny",
                 "--metrics", "ct-fid,sharpness"]) == 1
    assert "INVALID_ARGUMENT: metrics: unknown metric 'sharpness'" in capsys.readouterr().err
    assert main(["--store", store_uri, "report", "evaluation-0000000000000000"]) == 1
    assert "NOT_FOUND: no report 'evaluation-0000000000000000'" in capsys.readouterr().err
