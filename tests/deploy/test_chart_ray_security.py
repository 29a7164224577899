"""The RayCluster's ports stay inside the release: Ray runs without
authentication unless ray.auth.enabled, so the chart renders, by default, a
NetworkPolicy that admits to the Ray pods only this cluster's own Ray nodes and
the training service; token authentication is opt-in through a Secret."""

from __future__ import annotations

import pytest

from tests.deploy.conftest import RELEASE, VALUE_SETS, deep_merge, pod_labels
from tests.deploy.test_chart_render import validate_core

FULL = f"{RELEASE}-ctsynth"
CLUSTER = f"{FULL}-ray"
POLICY = f"{FULL}-ray"
DASHBOARD = 8265
AUTH = {"ray": {"auth": {"enabled": True, "existingSecret": "ray-token"}}}
TOKEN_REF = {"secretKeyRef": {"name": "ray-token", "key": "token"}}


def matches(selector: dict, labels: dict) -> bool:
    """Kubernetes label-selector semantics (an empty selector matches everything)."""
    assert set(selector) <= {"matchLabels", "matchExpressions"}, selector
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
        assert operator in ("In", "NotIn", "Exists", "DoesNotExist"), operator
    return True


def ray_policy(rendered) -> dict:
    return rendered.get("NetworkPolicy", POLICY)


def pods(rendered) -> dict[str, dict]:
    """owner -> running pod labels (KubeRay's labels added to the Ray groups)."""
    return {owner: pod_labels(owner, template) for owner, template in rendered.pod_templates()}


def admitted(rule: dict, labels: dict) -> bool:
    return any(matches(peer["podSelector"], labels) for peer in rule["from"])


@pytest.mark.parametrize("name", ["default", "gpu", "kind"])
def test_ray_policy_is_on_by_default_and_selects_exactly_the_raycluster_pods(render, chart, name):
    assert chart.values["ray"]["networkPolicy"]["enabled"] is True
    rendered = render(VALUE_SETS[name])
    policy = ray_policy(rendered)
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    selector = policy["spec"]["podSelector"]
    assert selector["matchLabels"]["ray.io/cluster"] == CLUSTER  # the label KubeRay puts on every pod of it
    selected = {owner for owner, labels in pods(rendered).items() if matches(selector, labels)}
    ray_pods = {owner for owner in pods(rendered) if owner.startswith(f"RayCluster/{CLUSTER}/")}
    expected = {f"RayCluster/{CLUSTER}/head", f"RayCluster/{CLUSTER}/cpu"}
    if name == "gpu":
        expected.add(f"RayCluster/{CLUSTER}/gpu")
    assert selected == ray_pods == expected
    # Not another RayCluster's pods, nor another release's.
    head = pods(rendered)[f"RayCluster/{CLUSTER}/head"]
    assert not matches(selector, {**head, "ray.io/cluster": "other-ray"})
    assert not matches(selector, {**head, "app.kubernetes.io/instance": "other"})


def test_ray_policy_admits_only_in_release_pods(render):
    rendered = render({})
    rules = ray_policy(rendered)["spec"]["ingress"]
    assert rules, "an empty ingress list would refuse everything, Ray included"
    for rule in rules:
        assert rule.get("from"), f"rule without peers admits every source: {rule}"
        for peer in rule["from"]:
            assert set(peer) == {"podSelector"}, f"only same-namespace pod selectors: {peer}"  # no ipBlock/namespaceSelector
            labels = peer["podSelector"].get("matchLabels") or {}
            assert labels.get("app.kubernetes.io/instance") == RELEASE, peer
            assert labels.get("app.kubernetes.io/name") == "ctsynth", peer
    all_pods = pods(rendered)
    ray_pods = {o: l for o, l in all_pods.items() if o.startswith("RayCluster/")}
    training = all_pods[f"Deployment/{FULL}-training"]
    # Ray <-> Ray on every port.
    any_port = [r for r in rules if not r.get("ports")]
    assert len(any_port) == 1
    for owner, labels in ray_pods.items():
        assert admitted(any_port[0], labels), owner
    assert not admitted(any_port[0], training)
    # The training service (the Ray client): only the dashboard / Jobs API port.
    assert any(admitted(r, training) for r in rules)
    for rule in rules:
        if admitted(rule, training):
            assert rule["ports"] == [{"port": DASHBOARD, "protocol": "TCP"}], rule
    # Nothing else of the release reaches the Ray pods.
    for owner, labels in all_pods.items():
        if owner not in ray_pods and owner != f"Deployment/{FULL}-training":
            assert not any(admitted(r, labels) for r in rules), owner


def test_ray_policy_validates(render):
    for values in ({}, VALUE_SETS["all-features"],
                   {"ray": {"networkPolicy": {
                       "monitoring": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mon"}}}],
                       "extraIngress": [{"ports": [{"port": 10001, "protocol": "TCP"}],
                                         "from": [{"podSelector": {"matchLabels": {"role": "notebook"}}}]}]}}}):
        validate_core(ray_policy(render(values)))


def test_monitoring_and_extra_ingress_are_added_for_operators(render):
    monitoring = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mon"}},
                   "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]
    extra = {"ports": [{"port": 10001, "protocol": "TCP"}],
             "from": [{"podSelector": {"matchLabels": {"role": "notebook"}}}]}
    rules = ray_policy(render({"ray": {"networkPolicy": {"monitoring": monitoring,
                                                          "extraIngress": [extra]}}}))["spec"]["ingress"]
    assert {"ports": [{"port": 8080, "protocol": "TCP"}], "from": monitoring} in rules
    assert rules[-1] == extra
    default_ports = [p["port"] for r in ray_policy(render({}))["spec"]["ingress"] for p in r.get("ports", [])]
    assert default_ports == [DASHBOARD]  # by default the metrics port is not opened to anyone outside
    # The dashboard Ingress's controller, listed in networkPolicy.rayDashboard, reaches the dashboard port.
    rules = ray_policy(render(VALUE_SETS["all-features"]))["spec"]["ingress"]
    dashboard = next(r for r in rules if r.get("ports") == [{"port": DASHBOARD, "protocol": "TCP"}])
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}} in dashboard["from"]


def test_disabling_the_ray_policy_renders_none(render):
    rendered = render({"ray": {"networkPolicy": {"enabled": False}}})
    assert rendered.of_kind("NetworkPolicy") == []
    assert "ray.networkPolicy.enabled is false" in rendered.notes
    assert render({"ray": {"enabled": False}}).of_kind("NetworkPolicy") == []


def ray_auth_env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", []) if e["name"].startswith("RAY_AUTH_")}


def test_ray_auth_is_off_by_default_and_changes_nothing(render, chart):
    assert chart.values["ray"]["auth"] == {"enabled": False, "existingSecret": ""}
    rendered = render(VALUE_SETS["gpu"])
    for owner, _, container in rendered.containers():
        assert ray_auth_env(container) == {}, owner
    assert "autoscalerOptions" not in rendered.get("RayCluster", CLUSTER)["spec"]
    assert "ray.auth.enabled=true" in render({}).notes


def test_ray_auth_puts_the_token_on_head_workers_and_training(render):
    rendered = render(deep_merge(VALUE_SETS["gpu"], deep_merge(AUTH, {"ray": {"autoscaling": True}})))
    expected = {"RAY_AUTH_MODE": {"name": "RAY_AUTH_MODE", "value": "token"},
                "RAY_AUTH_TOKEN": {"name": "RAY_AUTH_TOKEN", "valueFrom": TOKEN_REF}}
    with_token = set()
    for owner, _, container in rendered.containers(init=False):
        if ray_auth_env(container):
            assert ray_auth_env(container) == expected, owner
            with_token.add(owner)
    assert with_token == {f"RayCluster/{CLUSTER}/head", f"RayCluster/{CLUSTER}/cpu", f"RayCluster/{CLUSTER}/gpu",
                          f"Deployment/{FULL}-training"}
    autoscaler_env = rendered.get("RayCluster", CLUSTER)["spec"]["autoscalerOptions"]["env"]
    assert {e["name"]: e for e in autoscaler_env} == expected
    assert "Secret ray-token" in rendered.notes


def test_ray_auth_without_a_secret_fails_with_a_clear_message(chart):
    from helm_python.errors import HelmError

    with pytest.raises(HelmError, match="ray.auth.enabled needs ray.auth.existingSecret"):
        chart.render(values={"ray": {"auth": {"enabled": True}}}, name=RELEASE, namespace="ml")
