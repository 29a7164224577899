"""The report page and the headline figures, without a job."""

from __future__ import annotations

from html.parser import HTMLParser

from ctsynth.evaluation.job import headline
from ctsynth.evaluation.report import report_html
from ctsynth.training.grid import png_bytes
from ctsynth.v1 import evaluation_pb2


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.text, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def summary(**overrides) -> dict:
    values = {"id": "evaluation-1", "model": "dcgan:1", "synthetic_dataset": "", "dataset": "tiny:1",
              "split": "test", "spatial_dims": 2, "domain_extractor": "ctfeat2d-tiny-1:1", "created": "now",
              "plan": {"model": {"count": 16}, "repeats": 3, "seed": "0"}, "memorization_pairs": [],
              "metrics": [{"name": "fid", "failed": True, "error": "fid: <b>no</b> weights",
                           "feature_space": "inception"},
                          {"name": "ct-fid", "value": 1.5, "std": 0.25, "repeats": 3, "details": {"recall": 0.5}}]}
    return {**values, **overrides}


def test_the_page_escapes_what_it_shows_and_inlines_its_images():
    grid = png_bytes([[0.0, 1.0], [0.5, 0.25]])
    page = Page()
    page.feed(report_html(summary(), {"samples_synthetic.png": grid}))
    text = "".join(page.text)
    assert "failed: fid: <b>no</b> weights" in text and "b" not in page.tags  # shown, not interpreted
    assert "1.5 ± 0.25" in text and "recall=0.5" in text and "ctfeat2d-tiny-1:1" in text
    assert page.tags.count("img") == 1 and page.tags.count("table") == 2


def test_the_headline_keeps_values_and_chosen_details_of_what_succeeded():
    results = [evaluation_pb2.MetricResult(name="ct-fid", value=2.0, details={"recall": 0.4, "kid": 0.1}),
               evaluation_pb2.MetricResult(name="fid-2.5d", value=3.0),
               evaluation_pb2.MetricResult(name="fid", failed=True, error="fid: no weights")]
    assert headline(results) == {"ct_fid": 2.0, "ct_fid_recall": 0.4, "fid_2_5d": 3.0}
