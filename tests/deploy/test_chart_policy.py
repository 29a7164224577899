"""Policies on the rendered manifests: resources, probes and a locked-down
security context on every container; GPUs exactly where enabled; secrets only
through secretKeyRef; the wiring between resources (Ray address, monitors,
PDB/HPA, probes against the health service's names)."""

from __future__ import annotations

import base64
import re

import pytest

from tests.deploy.conftest import RELEASE, VALUE_SETS, pod_labels

FULL = f"{RELEASE}-ctsynth"
SERVICES = {"ingest": "ctsynth.v1.IngestService", "training": "ctsynth.v1.TrainingService",
            "sampling": "ctsynth.v1.SamplingService", "evaluation": "ctsynth.v1.EvaluationService"}
GPU = "nvidia.com/gpu"
CREDENTIAL_ENV = re.compile(r"(ACCESS_KEY|SECRET_KEY|TOKEN|PASSWORD|ROOT_USER|AWS_)")
LONG_RUNNING = ("Deployment", "StatefulSet", "RayCluster")


def test_every_container_has_resources(render, value_set):
    rendered = render(value_set[1])
    for owner, _, container in rendered.containers():
        resources = container.get("resources") or {}
        for part in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(part, {})), f"{owner}/{container['name']} {part}"


def test_long_running_containers_have_all_three_probes(render, value_set):
    rendered = render(value_set[1])
    seen = 0
    for owner, kind, container in rendered.containers(init=False):
        if kind in LONG_RUNNING:
            seen += 1
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert probe in container, f"{owner}/{container['name']} lacks {probe}"
    assert seen >= 6  # four services, the Ray head and at least one worker group (and MinIO)


def test_every_pod_and_container_is_locked_down(render, value_set):
    rendered = render(value_set[1])
    for owner, spec in rendered.pod_specs():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, owner
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", owner
        assert not spec.get("hostNetwork") and not spec.get("hostPID"), owner
    for owner, _, container in rendered.containers():
        sc = container["securityContext"]
        where = f"{owner}/{container['name']}"
        assert sc["runAsNonRoot"] is True, where
        assert sc["readOnlyRootFilesystem"] is True, where
        assert sc["allowPrivilegeEscalation"] is False, where
        assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), where
        assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
        assert not sc.get("privileged"), where


def test_read_only_root_leaves_a_writable_tmp(render, value_set):
    rendered = render(value_set[1])
    for owner, spec in rendered.pod_specs():
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in spec["containers"] + spec.get("initContainers", []):
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{owner}/{container['name']}"
            assert "emptyDir" in volumes[mounts["/tmp"]], owner


def test_services_use_native_grpc_probes_against_their_health_names(render):
    rendered = render({})
    for name, grpc_service in SERVICES.items():
        spec = rendered.get("Deployment", f"{FULL}-{name}")["spec"]["template"]["spec"]
        container, = spec["containers"]
        port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["grpc"] == {"port": port, "service": grpc_service}
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["CTSYNTH_HOST"] == "0.0.0.0" and env["CTSYNTH_PORT"] == str(port)
        assert spec["terminationGracePeriodSeconds"] > float(env["CTSYNTH_GRACE_SECONDS"])


def test_tls_switches_probes_to_the_tls_health_check(render):
    rendered = render(VALUE_SETS["all-features"])
    spec = rendered.get("Deployment", f"{FULL}-sampling")["spec"]["template"]["spec"]
    container, = spec["containers"]
    probe = container["readinessProbe"]
    assert "grpc" not in probe and probe["timeoutSeconds"] >= 10
    command = probe["exec"]["command"]
    assert command[:2] == ["python", "/app/bin/grpc_health_probe.py"]
    assert command[command.index("--service") + 1] == "ctsynth.v1.SamplingService"
    assert command[command.index("--server-name") + 1] == f"{FULL}-sampling"
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounted = {m["mountPath"] for m in container["volumeMounts"]}
    assert env["CTSYNTH_TLS_CERT"].startswith("/etc/ctsynth/tls/") and "/etc/ctsynth/tls" in mounted
    assert env["CTSYNTH_TLS_CLIENT_CA"] == "/etc/ctsynth/tls/ca.crt"
    tls_volume = next(v for v in spec["volumes"] if v["name"] == "tls")
    assert tls_volume["secret"]["secretName"] == "ctsynth-tls"


def gpu_holders(rendered) -> set[str]:
    holders = set()
    for owner, _, container in rendered.containers():
        resources = container.get("resources", {})
        if GPU in resources.get("limits", {}) or GPU in resources.get("requests", {}):
            holders.add(f"{owner}/{container['name']}")
    return holders


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_gpus_are_requested_exactly_where_enabled(render, name):
    rendered = render(VALUE_SETS[name])
    holders = gpu_holders(rendered)
    if name in ("gpu", "all-features"):
        assert holders == {f"Deployment/{FULL}-sampling/sampling", f"Deployment/{FULL}-evaluation/evaluation",
                           f"RayCluster/{FULL}-ray/gpu/ray-worker"}
    else:
        assert holders == set()
    for owner, spec in rendered.pod_specs():
        has_gpu = any(h.startswith(owner + "/") for h in holders)
        tolerates = any(t.get("key") == GPU for t in spec.get("tolerations", []))
        assert tolerates is has_gpu, owner  # GPU pods tolerate the GPU taint, no other pod does
        for container in spec["containers"]:
            if has_gpu:
                assert container["image"].endswith("-gpu"), owner
                assert container["resources"]["limits"][GPU] == container["resources"]["requests"][GPU] == "1"


def test_gpu_mode_sets_the_devices_and_node_selector(render):
    for name, device in (("gpu", "cuda"), ("default", "cpu")):
        spec = render(VALUE_SETS[name]).get("Deployment", f"{FULL}-sampling")["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
        assert env["CTSYNTH_SAMPLING_DEVICE"] == device
        evaluation = render(VALUE_SETS[name]).get("Deployment", f"{FULL}-evaluation")["spec"]["template"]["spec"]
        assert {"name": "CTSYNTH_EVAL_DEVICE", "value": device} in evaluation["containers"][0]["env"]
        assert (spec.get("nodeSelector") == {"nvidia.com/gpu.present": "true"}) is (name == "gpu")


def test_credentials_reach_containers_only_through_secret_refs(render, value_set):
    rendered = render(value_set[1])
    for owner, _, container in rendered.containers():
        for env in container.get("env", []):
            if CREDENTIAL_ENV.search(env["name"]):
                assert "value" not in env, f"{owner}: {env['name']} is a plain value"
                assert "secretKeyRef" in env["valueFrom"], f"{owner}: {env['name']}"


def test_given_secret_values_appear_only_in_secrets(render):
    values = {"objectStore": {"accessKey": "AK-visible-nowhere", "secretKey": "SK-visible-nowhere-1234"},
              "auth": {"token": "tok-visible-nowhere-5678"}}
    rendered = render(values)
    secrets = {d["metadata"]["name"]: d for d in rendered.of_kind("Secret")}
    decoded = {k: base64.b64decode(v).decode() for k, v in secrets[f"{FULL}-s3"]["data"].items()}
    assert decoded == {"accessKey": "AK-visible-nowhere", "secretKey": "SK-visible-nowhere-1234"}
    assert base64.b64decode(secrets[f"{FULL}-auth"]["data"]["token"]).decode() == "tok-visible-nowhere-5678"
    assert_nowhere_but_secrets(rendered, ["AK-visible-nowhere", "SK-visible-nowhere-1234", "tok-visible-nowhere-5678"])


def test_generated_secrets_are_random_and_appear_only_in_secrets(render, chart):
    rendered = render({})
    secrets = {d["metadata"]["name"]: d["data"] for d in rendered.of_kind("Secret")}
    access = base64.b64decode(secrets[f"{FULL}-s3"]["accessKey"]).decode()
    secret = base64.b64decode(secrets[f"{FULL}-s3"]["secretKey"]).decode()
    token = base64.b64decode(secrets[f"{FULL}-auth"]["token"]).decode()
    assert (len(access), len(secret), len(token)) == (20, 40, 48)
    assert_nowhere_but_secrets(rendered, [access, secret, token])
    again = chart.render(values={}, name=RELEASE, namespace="ml")  # no cluster to look up: a new value
    assert token not in again["ctsynth/templates/secrets.yaml"]


def assert_nowhere_but_secrets(rendered, needles: list[str]) -> None:
    """Neither the values nor their base64 forms appear outside Secrets (NOTES.txt included)."""
    forms = needles + [base64.b64encode(n.encode()).decode() for n in needles]
    for doc in rendered.docs:
        if doc["kind"] == "Secret":
            continue
        text = repr(doc)
        for form in forms:
            assert form not in text, f"{doc['kind']}/{doc['metadata']['name']} contains a secret"
    for form in forms:
        assert form not in rendered.notes


def test_no_config_map_holds_credentials(render, value_set):
    for config_map in render(value_set[1]).of_kind("ConfigMap"):
        text = "\n".join(config_map.get("data", {}).values()).lower()
        assert not re.search(r"(secret_?key|password|bearer [a-z0-9]{8})", text), config_map["metadata"]["name"]


def test_short_minio_secret_key_is_refused(chart):
    from helm_python.errors import HelmError

    with pytest.raises(HelmError, match="at least 8 characters"):
        chart.render(values={"objectStore": {"secretKey": "short"}}, name=RELEASE, namespace="ml")


def test_store_settings_point_at_minio_or_the_external_endpoint(render):
    for name, endpoint, store, create in (
            ("default", f"http://{FULL}-minio:9000", "s3://ctsynth", "true"),
            ("external-s3", "https://s3.eu-west-1.amazonaws.com", "s3://acme-ctsynth/prod", "false")):
        rendered = render(VALUE_SETS[name])
        for service in SERVICES:
            container = rendered.get("Deployment", f"{FULL}-{service}")["spec"]["template"]["spec"]["containers"][0]
            env = {e["name"]: e for e in container["env"]}
            assert env["CTSYNTH_STORE"]["value"] == store
            assert env["CTSYNTH_S3_ENDPOINT"]["value"] == endpoint
            assert env["CTSYNTH_S3_CREATE_BUCKET"]["value"] == create
            secret = "ctsynth-s3-credentials" if name == "external-s3" else f"{FULL}-s3"
            assert env["CTSYNTH_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": "secretKey"}
    minio = render({}).get("StatefulSet", f"{FULL}-minio")
    assert minio["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "100Gi"
    env = {e["name"]: e for e in minio["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MINIO_ROOT_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": f"{FULL}-s3", "key": "secretKey"}


def test_bucket_job_is_a_post_install_hook_with_mc(render):
    job = render({}).get("Job", f"{FULL}-bucket")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"post-install", "post-upgrade"}
    container, = job["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("quay.io/minio/mc:RELEASE.")
    script = container["args"][0]
    assert 'mc mb --ignore-existing' in script and "store/$BUCKET" in script
    env = {e["name"]: e for e in container["env"]}
    assert env["BUCKET"]["value"] == "ctsynth" and env["MC_CONFIG_DIR"]["value"].startswith("/tmp/")


def test_training_submits_to_the_ray_head_dashboard_service(render):
    rendered = render(VALUE_SETS["gpu"])
    training = rendered.get("Deployment", f"{FULL}-training")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in training["env"]}
    assert env["CTSYNTH_RAY_ADDRESS"] == f"http://{FULL}-ray-dashboard:8265"
    service = rendered.get("Service", f"{FULL}-ray-dashboard")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]}["dashboard"] == 8265
    ray = rendered.get("RayCluster", f"{FULL}-ray")["spec"]
    head = ray["headGroupSpec"]["template"]
    labels = head["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in service["spec"]["selector"].items())  # selects the head pod
    assert any(p["containerPort"] == 8265 and p["name"] == "dashboard" for p in head["spec"]["containers"][0]["ports"])
    assert ray["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    groups = {g["groupName"]: g for g in ray["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    gpu_pod = groups["gpu"]["template"]["spec"]
    assert gpu_pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in gpu_pod["tolerations"]
    worker_labels = groups["cpu"]["template"]["metadata"]["labels"]
    # The workers are not behind the dashboard Service.
    assert not all(worker_labels.get(k) == v for k, v in service["spec"]["selector"].items())
    # Ray needs its shared memory and a writable /tmp on a read-only root.
    mounts = {m["mountPath"] for m in gpu_pod["containers"][0]["volumeMounts"]}
    assert {"/tmp", "/dev/shm"} <= mounts


def test_without_ray_the_training_service_runs_ray_itself(render):
    rendered = render({"ray": {"enabled": False}})
    assert not rendered.of_kind("RayCluster")
    training = rendered.get("Deployment", f"{FULL}-training")["spec"]["template"]["spec"]["containers"][0]
    assert "CTSYNTH_RAY_ADDRESS" not in {e["name"] for e in training["env"]}
    external = render({"ray": {"enabled": False, "externalAddress": "http://ray.other:8265"}})
    training = external.get("Deployment", f"{FULL}-training")["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"]: e.get("value") for e in training["env"]}["CTSYNTH_RAY_ADDRESS"] == "http://ray.other:8265"


def selects(selector: dict, labels: dict) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        value = labels.get(expression["key"])
        if expression["operator"] == "In" and value not in expression["values"]:
            return False
    return True


def test_monitors_select_the_metrics_endpoints(render):
    rendered = render(VALUE_SETS["gpu"])
    monitor = rendered.get("ServiceMonitor", FULL)
    selected = {s["metadata"]["name"] for s in rendered.of_kind("Service")
                if selects(monitor["spec"]["selector"], s["metadata"]["labels"])}
    assert selected == {f"{FULL}-{name}" for name in SERVICES}
    for name in selected:
        ports = {p["name"] for p in rendered.get("Service", name)["spec"]["ports"]}
        assert monitor["spec"]["endpoints"][0]["port"] in ports
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    pod_monitor = rendered.get("PodMonitor", f"{FULL}-ray")
    ray = rendered.get("RayCluster", f"{FULL}-ray")["spec"]
    templates = [ray["headGroupSpec"]["template"]] + [g["template"] for g in ray["workerGroupSpecs"]]
    for template in templates:
        assert selects(pod_monitor["spec"]["selector"], template["metadata"]["labels"])
        ports = {p["name"] for p in template["spec"]["containers"][0]["ports"]}
        assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] in ports
    for service in SERVICES:  # plain-Prometheus annotations agree with the metrics port
        pod = rendered.get("Deployment", f"{FULL}-{service}")["spec"]["template"]
        port = next(p["containerPort"] for p in pod["spec"]["containers"][0]["ports"] if p["name"] == "metrics")
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port)
        assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"


def test_sampling_has_a_pdb_and_an_hpa_on_its_deployment(render):
    rendered = render({})
    deployment = rendered.get("Deployment", f"{FULL}-sampling")
    assert "replicas" not in deployment["spec"]  # the HPA owns the count
    pdb = rendered.get("PodDisruptionBudget", f"{FULL}-sampling")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert selects(pdb["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"])
    assert not selects(pdb["spec"]["selector"],
                       rendered.get("Deployment", f"{FULL}-ingest")["spec"]["template"]["metadata"]["labels"])
    hpa = rendered.get("HorizontalPodAutoscaler", f"{FULL}-sampling")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{FULL}-sampling"}
    assert hpa["metrics"][0]["resource"]["name"] == "cpu" and 1 <= hpa["minReplicas"] < hpa["maxReplicas"]
    floor = render(VALUE_SETS["all-features"]).get("PodDisruptionBudget", f"{FULL}-sampling")["spec"]
    assert floor == {"minAvailable": 1, "selector": pdb["spec"]["selector"]}
    kind = render(VALUE_SETS["kind"]).get("Deployment", f"{FULL}-sampling")
    assert kind["spec"]["replicas"] == 1


def test_network_policies_cover_every_pod_and_allow_the_needed_paths(render):
    rendered = render(VALUE_SETS["all-features"])
    policies = rendered.of_kind("NetworkPolicy")
    covered = 0
    for owner, template in rendered.pod_templates():
        if owner.startswith("Job/"):
            continue  # the bucket Job only makes outbound calls
        covered += 1
        assert any(selects(p["spec"]["podSelector"], pod_labels(owner, template)) for p in policies), owner
    assert covered == 8  # four services, MinIO, the Ray head, CPU and GPU workers
    minio = next(p for p in policies if p["metadata"]["name"] == f"{FULL}-minio")
    allowed = minio["spec"]["ingress"][0]["from"][0]["podSelector"]
    for component in ("sampling", "ray-worker", "bucket-job"):
        assert selects(allowed, {"app.kubernetes.io/name": "ctsynth", "app.kubernetes.io/instance": RELEASE,
                                 "app.kubernetes.io/component": component})
    assert not selects(allowed, {"app.kubernetes.io/name": "ctsynth", "app.kubernetes.io/instance": "other",
                                 "app.kubernetes.io/component": "sampling"})
    ray = next(p for p in policies if p["metadata"]["name"] == f"{FULL}-ray")
    dashboard_rule = next(r for r in ray["spec"]["ingress"] if r.get("ports", [{}])[0].get("port") == 8265)
    assert any(selects(peer.get("podSelector", {"matchLabels": {"x": "y"}}),
                       {"app.kubernetes.io/name": "ctsynth", "app.kubernetes.io/instance": RELEASE,
                        "app.kubernetes.io/component": "training"}) for peer in dashboard_rule["from"])


def test_notes_say_how_to_reach_sampling_without_printing_secrets(render):
    notes = render({}).notes
    assert f"port-forward svc/{FULL}-sampling 50051:50051" in notes
    assert "grpcurl -plaintext" in notes and "list" in notes and "ctsynth.v1.SamplingService/ListModels" in notes
    assert "from ctsynth.client import SamplingClient" in notes
    assert f"port-forward svc/{FULL}-ray-dashboard 8265:8265" in notes
    assert f"secret {FULL}-auth -o jsonpath" in notes  # how to read the token, never the token itself
    tls_notes = render(VALUE_SETS["all-features"]).notes
    assert "-cacert" in tls_notes and "-plaintext" not in tls_notes


def test_notes_command_line_parses_with_the_ctsynth_cli(render):
    import shlex

    from ctsynth.cli.main import build_parser

    for values in ({}, VALUE_SETS["all-features"]):
        line = next(l.strip() for l in render(values).notes.splitlines() if l.strip().startswith("ctsynth --target"))
        args = build_parser().parse_args(shlex.split(line)[1:])
        assert args.command == "sample" and args.target == "localhost:50051"


def test_notes_python_snippet_matches_the_client_api():
    import inspect

    from ctsynth.client import SamplingClient, open_channel

    assert "token" in inspect.signature(open_channel).parameters
    assert "tls_ca" in inspect.signature(open_channel).parameters
    parameters = inspect.signature(SamplingClient.sample).parameters
    assert "seed" in parameters
