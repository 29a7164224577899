"""The Grafana dashboard and the local Prometheus config: every panel the issue
asks for, only metrics that exist (ours from ctsynth.observability.prometheus,
DCGM's and Ray's), valid PromQL (promtool, where installed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import ctsynth.observability.prometheus
import pytest
import yaml

from tests.deploy.conftest import CHART, ROOT

DASHBOARD = CHART / "dashboards" / "ctsynth-dashboard.json"
PROMTOOL = shutil.which("promtool")
# Exported by the training service once it publishes its job progress as a
# gauge; until then the panel stays empty (see deploy/grafana/README.md).
PENDING_METRICS = {"ctsynth_training_images_per_second"}
EXTERNAL_METRICS = {"DCGM_FI_DEV_GPU_UTIL", "ray_node_gpus_utilization"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def expressions() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def our_metric_names() -> set[str]:
    """Every series name the library's metrics export (counters with _total,
    histograms with _bucket/_sum/_count)."""
    from prometheus_client.metrics import MetricWrapperBase

    names = set()
    for metric in vars(ctsynth.observability.prometheus).values():
        if isinstance(metric, MetricWrapperBase):
            family = metric.describe()[0]
            suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
            names |= {family.name + suffix for suffix in suffixes}
    return names


def test_dashboard_has_every_panel_the_issue_asks_for():
    panels = {p["title"]: p for p in dashboard()["panels"] if p["type"] != "row"}
    text = {title: " ".join(t["expr"] for t in p["targets"]) for title, p in panels.items()}
    wanted = {
        "request rate": r"rate\(ctsynth_grpc_requests_total",
        "latency": r"histogram_quantile\(0\.95, .*ctsynth_grpc_request_duration_seconds_bucket",
        "queue depth": r"ctsynth_sampling_queue_items",
        "samples/s": r"rate\(ctsynth_sampling_items_total",
        "training images/s": r"ctsynth_training_images_per_second",
        "GPU utilization (DCGM)": r"DCGM_FI_DEV_GPU_UTIL",
        "GPU utilization (NVML fallback)":
            r"ctsynth_device_utilization_ratio.*unless on\(\) count\(DCGM_FI_DEV_GPU_UTIL",
    }
    for topic, pattern in wanted.items():
        assert any(re.search(pattern, expr) for expr in text.values()), topic
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels.values())


def test_dashboard_queries_only_metrics_that_exist():
    known = our_metric_names()
    assert {"ctsynth_grpc_requests_total", "ctsynth_sampling_queue_items"} <= known  # the lookup works
    used = set()
    for expr in expressions():
        used |= set(re.findall(r"\b(ctsynth_[a-z_]+|DCGM_[A-Z_]+|ray_[a-z_]+)", expr))
    assert used - known - PENDING_METRICS - EXTERNAL_METRICS == set()
    assert "ctsynth_sampling_first_item_seconds_bucket" in used and "ctsynth_jobs_active" in used


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian package prometheus)")
def test_dashboard_queries_are_valid_promql(tmp_path):
    rules = [{"record": f"ctsynth:panel_{i}", "expr": expr.replace("$__rate_interval", "1m")
              .replace('"$namespace"', '".*"')} for i, expr in enumerate(expressions())]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules)} rules found" in result.stdout
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [{"record": "x:y", "expr": "sum by (a"}]}]}))
    assert subprocess.run([PROMTOOL, "check", "rules", str(bad)], capture_output=True, timeout=60).returncode != 0


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian package prometheus)")
def test_local_prometheus_config_is_valid():
    result = subprocess.run([PROMTOOL, "check", "config", str(ROOT / "deploy/prometheus/prometheus.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_local_prometheus_config_scrapes_the_readme_ports():
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "ctsynth")
    targets = {c["labels"]["component"]: c["targets"][0] for c in job["static_configs"]}
    assert targets == {"ingest": "localhost:9091", "training": "localhost:9092", "sampling": "localhost:9093",
                       "evaluation": "localhost:9094"}
    assert "--metrics-port 9093" in (ROOT / "README.md").read_text()  # the port the README starts sampling with


def test_grafana_readme_points_at_the_one_dashboard_file():
    readme = (ROOT / "deploy/grafana/README.md").read_text()
    assert "charts/ctsynth/dashboards/ctsynth-dashboard.json" in readme
    assert not list((ROOT / "deploy/grafana").glob("*.json"))  # one copy only
