"""The chart lints strictly, renders with the real Helm engine for every values
file, and every rendered resource validates: core kinds strictly against the
Kubernetes 1.30 schemas (kubernetes-validate), custom resources against the
fields their CRDs define (crd_schemas.py)."""

from __future__ import annotations

import copy
import json

import jsonschema
import kubernetes_validate
import pytest

from tests.deploy.conftest import ALL_FEATURES, CHART, KUBE_VERSION, RELEASE, VALUE_SETS, deep_merge
from tests.deploy.crd_schemas import CRD_SCHEMAS

FULL = f"{RELEASE}-ctsynth"


def validate_core(doc: dict) -> None:
    kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def validate_crd(doc: dict) -> None:
    schema = CRD_SCHEMAS[(doc["apiVersion"], doc["kind"])]
    jsonschema.Draft202012Validator(schema).validate(doc)
    if doc["kind"] == "RayCluster":
        spec = doc["spec"]
        templates = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec.get("workerGroupSpecs") or []]
        for template in templates:  # each group's pod template is a core PodTemplateSpec
            validate_core({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template})
        for group in spec.get("workerGroupSpecs") or []:
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_lint_strict_is_clean(name):
    from helm_python.chart import lint

    report = lint(str(CHART), VALUE_SETS[name], strict=True, kube_version=f"v{KUBE_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # 2 warning, 3 error; 1 is info
    assert report["total_charts_linted"] == 1
    assert not problems and not report["errors"], (problems, report["errors"])


def test_every_rendered_resource_validates(render, value_set):
    name, values = value_set
    rendered = render(values)
    assert len(rendered.docs) >= 15, f"{name}: only {len(rendered.docs)} resources"
    for doc in rendered.docs:
        if (doc["apiVersion"], doc["kind"]) in CRD_SCHEMAS:
            validate_crd(doc)
        else:
            validate_core(doc)
        assert doc["metadata"]["name"].startswith(FULL), doc["metadata"]["name"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


def test_strict_validation_would_catch_a_mistake(render):
    """The validators are not vacuous: an unknown field or a wrong type fails."""
    rendered = render({})
    deployment = copy.deepcopy(rendered.get("Deployment", f"{FULL}-sampling"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_core(deployment)
    deployment = copy.deepcopy(rendered.get("Deployment", f"{FULL}-sampling"))
    deployment["spec"]["template"]["spec"]["containers"][0]["startupProbe"]["grpc"]["port"] = "grpc"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_core(deployment)
    ray = copy.deepcopy(rendered.get("RayCluster", f"{FULL}-ray"))
    ray["spec"]["workerGroupSpecs"][0]["rayStartParams"]["num-cpus"] = 2
    with pytest.raises(jsonschema.ValidationError):
        validate_crd(ray)
    ray = copy.deepcopy(rendered.get("RayCluster", f"{FULL}-ray"))
    ray["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_crd(ray)


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_expected_resources_per_values_file(render, name):
    rendered = render(VALUE_SETS[name])
    kinds = {(d["kind"], d["metadata"]["name"]) for d in rendered.docs}
    for service in ("ingest", "training", "sampling", "evaluation"):
        assert ("Deployment", f"{FULL}-{service}") in kinds and ("Service", f"{FULL}-{service}") in kinds
    assert ("RayCluster", f"{FULL}-ray") in kinds and ("Service", f"{FULL}-ray-dashboard") in kinds
    assert ("ConfigMap", f"{FULL}-grafana-dashboard") in kinds
    in_cluster_minio = name != "external-s3"
    assert (("StatefulSet", f"{FULL}-minio") in kinds) is in_cluster_minio
    assert (("Job", f"{FULL}-bucket") in kinds) is in_cluster_minio
    assert (("Secret", f"{FULL}-s3") in kinds) is (name not in ("external-s3", "all-features"))
    monitors = name in ("gpu", "all-features")
    assert (("ServiceMonitor", FULL) in kinds) is monitors
    assert (("PodMonitor", f"{FULL}-ray") in kinds) is monitors
    assert (("HorizontalPodAutoscaler", f"{FULL}-sampling") in kinds) is (name != "kind")
    assert (("PodDisruptionBudget", f"{FULL}-sampling") in kinds) is (name != "kind")
    assert any(k == "NetworkPolicy" and n != f"{FULL}-ray" for k, n in kinds) is (name == "all-features")
    assert ("NetworkPolicy", f"{FULL}-ray") in kinds  # the Ray ports stay inside the release by default
    assert (("Ingress", f"{FULL}-ray-dashboard") in kinds) is (name == "all-features")


def test_disabled_services_are_not_rendered(render):
    rendered = render({"services": {"evaluation": {"enabled": False}, "ingest": {"enabled": False}}})
    names = {d["metadata"]["name"] for d in rendered.of_kind("Deployment")}
    assert names == {f"{FULL}-training", f"{FULL}-sampling"}
    assert f"{FULL}-evaluation" not in rendered.notes and f"{FULL}-sampling" in rendered.notes


def test_external_s3_requires_an_endpoint(chart):
    from helm_python.errors import HelmError

    with pytest.raises(HelmError, match="objectStore.endpoint is required"):
        chart.render(values={"minio": {"enabled": False}}, name=RELEASE, namespace="ml")


def test_tls_requires_a_secret_name(chart):
    from helm_python.errors import HelmError

    with pytest.raises(HelmError, match="tls.secretName is required"):
        chart.render(values={"tls": {"enabled": True}}, name=RELEASE, namespace="ml")


def test_unknown_hpa_metric_is_refused(chart):
    from helm_python.errors import HelmError

    with pytest.raises(HelmError, match="use cpu or queue"):
        chart.render(values={"services": {"sampling": {"autoscaling": {"metric": "gpu"}}}}, name=RELEASE,
                     namespace="ml")


def test_dashboard_configmap_embeds_the_one_dashboard_file(render):
    config_map = render({}).get("ConfigMap", f"{FULL}-grafana-dashboard")
    embedded = config_map["data"]["ctsynth-dashboard.json"]
    on_disk = (CHART / "dashboards" / "ctsynth-dashboard.json").read_text()
    assert json.loads(embedded) == json.loads(on_disk)
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_values_files_only_use_keys_the_chart_defines(chart):
    """A typo in an example values file would be silently ignored by Helm."""
    defaults = chart.values

    def unknown(values, base, path=""):
        for key, value in values.items():
            where = f"{path}.{key}".lstrip(".")
            if key not in base:
                yield where
            elif isinstance(value, dict) and isinstance(base[key], dict) and base[key]:
                yield from unknown(value, base[key], where)

    for name, values in {**VALUE_SETS, "all-features": deep_merge({}, ALL_FEATURES)}.items():
        assert list(unknown(values, defaults)) == [], name


def undocumented_keys(text: str) -> list[str]:
    """Keys of a values file with no comment line right above them, unless an
    ancestor's comment documents the whole value (helm-docs style "# --")."""
    lines = text.splitlines()
    stack: list[tuple[int, bool]] = []  # (indent, documents its whole value)
    missing = []
    for number, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("-") or ":" not in stripped:
            continue
        indent = len(line) - len(line.lstrip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        previous = next((lines[i].strip() for i in range(number - 1, -1, -1) if lines[i].strip()), "")
        covered = any(whole for _, whole in stack)
        if not previous.startswith("#") and not covered:
            missing.append(f"line {number + 1}: {stripped}")
        stack.append((indent, covered or previous.startswith("# --")))
    return missing


def test_every_values_key_is_documented():
    assert undocumented_keys((CHART / "values.yaml").read_text()) == []


def test_the_documentation_check_finds_an_undocumented_key():
    assert undocumented_keys("# -- a\na: 1\nb: 2\nc:\n  # -- d\n  d: {x: 1}\n  e: 3\n") == ["line 3: b: 2",
                                                                                      "line 4: c:", "line 7: e: 3"]
