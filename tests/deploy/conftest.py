"""Rendering the Helm chart offline with the real Helm engine (helm-python-sdk)
and walking the rendered manifests."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "ctsynth"
RELEASE, NAMESPACE = "demo", "ml"
KUBE_VERSION = "1.30.0"

# Every template path switched on at once: TLS with client auth, NetworkPolicies,
# the Ray dashboard Ingress, both Prometheus Operator monitors, a private S3 CA,
# existing Secrets, the queue-based HPA and a PDB floor, and GPUs.
ALL_FEATURES = {
    "gpu": {"enabled": True, "nodeSelector": {"nvidia.com/gpu.present": "true"}},
    "tls": {"enabled": True, "secretName": "ctsynth-tls", "clientAuth": True},
    "auth": {"existingSecret": "my-token"},
    "objectStore": {"existingSecret": "my-s3", "caBundle": {"secretName": "s3-ca", "key": "bundle.pem"},
                    "prefix": "/team/a/"},
    "networkPolicy": {"enabled": True, "rayDashboard": [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "ingress-nginx"}}}]},
    "ray": {"autoscaling": True, "dashboard": {"ingress": {"enabled": True, "className": "nginx",
                                                            "host": "ray.test", "tls": [{"hosts": ["ray.test"],
                                                                                         "secretName": "ray-tls"}]},
                                               "prometheusHost": "http://prometheus:9090"}},
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
                "podMonitor": {"enabled": True}},
    "services": {"sampling": {"autoscaling": {"metric": "queue"}, "pdb": {"minAvailable": 1}}},
    "image": {"registry": "registry.test/ml/", "pullSecrets": ["regcred"]},
}


def values_file(name: str) -> dict:
    return yaml.safe_load((CHART / name).read_text()) or {}


VALUE_SETS = {
    "default": {},
    "gpu": values_file("values-gpu.yaml"),
    "external-s3": values_file("values-external-s3.yaml"),
    "kind": values_file("values-dev.yaml"),
    "all-features": ALL_FEATURES,
}


class Rendered:
    """The manifests of one render: documents by kind and name, plus NOTES.txt."""

    def __init__(self, files: dict[str, str]):
        self.files = files
        self.notes = next((text for path, text in files.items() if path.endswith("NOTES.txt")), "")
        self.docs: list[dict] = []
        for path, text in sorted(files.items()):
            if path.endswith(".txt"):
                continue
            self.docs += [doc for doc in yaml.safe_load_all(text) if doc]

    def of_kind(self, kind: str) -> list[dict]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def get(self, kind: str, name: str) -> dict:
        matches = [doc for doc in self.of_kind(kind) if doc["metadata"]["name"] == name]
        assert len(matches) == 1, f"{kind}/{name}: {len(matches)} rendered"
        return matches[0]

    def pod_templates(self) -> Iterator[tuple[str, dict]]:
        """(owner description, pod template) of every workload, RayCluster groups included."""
        for doc in self.docs:
            kind, name = doc["kind"], doc["metadata"]["name"]
            if kind in ("Deployment", "StatefulSet", "Job"):
                yield f"{kind}/{name}", doc["spec"]["template"]
            elif kind == "RayCluster":
                yield f"{kind}/{name}/head", doc["spec"]["headGroupSpec"]["template"]
                for group in doc["spec"].get("workerGroupSpecs") or []:
                    yield f"{kind}/{name}/{group['groupName']}", group["template"]

    def pod_specs(self) -> Iterator[tuple[str, dict]]:
        for owner, template in self.pod_templates():
            yield owner, template["spec"]

    def containers(self, *, init: bool = True) -> Iterator[tuple[str, str, dict]]:
        """(owner, kind of owner, container) of every container."""
        for owner, spec in self.pod_specs():
            for container in spec["containers"] + (spec.get("initContainers") or [] if init else []):
                yield owner, owner.split("/")[0], container


def pod_labels(owner: str, template: dict) -> dict:
    """The labels a pod of this template carries once running: for RayCluster
    groups, KubeRay adds ray.io/cluster, ray.io/node-type, ray.io/group (and its
    own app.kubernetes.io/name only where the template has none)."""
    labels = dict(template["metadata"].get("labels") or {})
    parts = owner.split("/")
    if parts[0] == "RayCluster":
        cluster, group = parts[1], parts[2]
        labels.update({"ray.io/cluster": cluster, "ray.io/node-type": "head" if group == "head" else "worker",
                       "ray.io/group": "headgroup" if group == "head" else group, "ray.io/is-ray-node": "yes",
                       "app.kubernetes.io/created-by": "kuberay-operator"})
        labels.setdefault("app.kubernetes.io/name", "kuberay")
    return labels


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.fixture(scope="session")
def chart():
    from helm_python.chart import Chart

    loaded = Chart.load(str(CHART))
    yield loaded
    loaded.close()


@pytest.fixture(scope="session")
def render(chart):
    """render(values) -> Rendered, cached per values set."""
    cache: dict[str, Rendered] = {}

    def _render(values: dict) -> Rendered:
        key = yaml.safe_dump(values, sort_keys=True)
        if key not in cache:
            cache[key] = Rendered(chart.render(values=values, name=RELEASE, namespace=NAMESPACE))
        return cache[key]

    return _render


@pytest.fixture(params=sorted(VALUE_SETS))
def value_set(request) -> tuple[str, dict]:
    return request.param, VALUE_SETS[request.param]
