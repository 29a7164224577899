"""`make images` and the kind integration test, without Docker or a cluster:
the commands they would run, checked against the chart and the CLI they
drive; the runner's control flow on harmless commands; and the real thing,
skipped with the reason where Docker, kind, kubectl or helm is missing."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import yaml

from tests.deploy.conftest import CHART, ROOT, values_file


def load(name: str, path: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


images = load("ctsynth_deploy_images", "deploy/docker/images.py")
kind = load("ctsynth_deploy_kind", "deploy/kind/integration.py")
SERVICES = ("ingest", "training", "sampling", "evaluation")


# --- images -------------------------------------------------------------------------


def test_images_plan_builds_the_base_then_one_image_per_service():
    commands = images.plan("1.2.3", ["cpu", "gpu"], registry="ghcr.io/acme/", push=True, code_version="abc123")
    for variant, suffix in (("cpu", ""), ("gpu", "-gpu")):
        base = f"ghcr.io/acme/ctsynth-base:1.2.3-{variant}"
        build_base = ["docker", "build", "--file", "deploy/docker/Dockerfile", "--target", "runtime",
                      "--build-arg", f"VARIANT={variant}", "--build-arg", "CODE_VERSION=abc123", "--tag", base, "."]
        start = commands.index(build_base)
        for service in SERVICES:
            image = f"ghcr.io/acme/ctsynth-{service}:1.2.3{suffix}"
            build = ["docker", "build", "--build-arg", f"BASE_IMAGE={base}", "--tag", image, f"services/{service}"]
            assert commands.index(build) > start  # after its base
            assert commands.index(["docker", "push", image]) > commands.index(build)
    assert len(commands) == 2 * (1 + 2 * len(SERVICES))
    with pytest.raises(ValueError, match="variant 'tpu'"):
        images.plan(variants=["tpu"])


def test_image_names_and_tags_match_what_the_chart_deploys(chart):
    values = chart.values
    assert images.DEFAULT_TAG == chart.metadata["appVersion"]  # the chart's default image tag
    assert values["gpu"]["imageSuffix"] == images.service_tag("", "gpu")
    for service in SERVICES:
        assert values["services"][service]["image"]["repository"] == f"ctsynth-{service}"
    for command in images.plan("x", ["cpu"]):
        context = command[-1]
        assert (ROOT / context).is_dir()
        if "--file" in command:
            assert (ROOT / command[command.index("--file") + 1]).is_file()
        else:
            assert (ROOT / context / "Dockerfile").is_file()


def test_make_images_says_plainly_that_it_cannot_build_without_docker():
    if images.docker_problem() is None:
        pytest.skip("a Docker engine is reachable here: `make images` would really build")
    result = subprocess.run(["make", "--no-print-directory", "images"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0
    assert "make images: cannot build container images here:" in result.stderr
    dry = subprocess.run([sys.executable, "deploy/docker/images.py", "--dry-run", "--variant", "gpu"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0 and "ctsynth-sampling:0.1.0-gpu" in dry.stdout


# --- kind ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def config():
    return kind.Config(kuberay_chart="/charts/kuberay-operator", python="/venv/bin/python", tag="t1",
                       workdir="/work/run")


@pytest.fixture(scope="module")
def steps(config):
    return kind.plan(config)


def index(steps, name: str) -> int:
    return next(i for i, step in enumerate(steps) if step.name == name)


def test_plan_creates_builds_installs_waits_runs_and_tears_down_in_order(steps, config):
    names = [step.name for step in steps]
    order = ["create cluster", "build images", "load images", "install KubeRay operator", "install ctsynth",
             "wait for services", "wait for the Ray head", "read the bearer token", "port-forward sampling",
             "wait for the port-forwards", "health of every service", "write phantom studies in the ingest pod",
             "ingest", "train a tiny DCGAN on the RayCluster", "sample", "check the samples", "evaluate",
             "check the sampling metrics", "delete cluster"]
    assert [names.index(name) for name in order] == sorted(names.index(name) for name in order)
    assert steps[0].argv[:3] == ("kind", "create", "cluster")
    assert steps[-1].argv == ("kind", "delete", "cluster", "--name", "ctsynth") and steps[-1].when == "always"
    assert {s.name for s in steps if s.when == "failure"} == {"diagnostics: pods", "diagnostics: events",
                                                              "diagnostics: logs"}
    assert all(s.when == "ok" for s in steps[:index(steps, "check the sampling metrics") + 1])
    kept = kind.plan(kind.Config(kuberay_chart="c", keep=True))
    assert not any(step.argv[:2] == ("kind", "delete") for step in kept)


def test_plan_loads_the_images_it_builds_and_installs_them_with_the_dev_values(steps, config):
    build = steps[index(steps, "build images")].argv
    assert build[1].endswith("deploy/docker/images.py") and build[-2:] == ("--tag", "t1")
    load_ = steps[index(steps, "load images")].argv
    assert load_[-4:] == tuple(f"ctsynth-{s}:t1" for s in SERVICES)
    assert values_file("values-dev.yaml")["image"]["pullPolicy"] == "Never"  # only the loaded images are used
    operator = steps[index(steps, "install KubeRay operator")].argv
    assert operator[:5] == ("helm", "upgrade", "--install", "kuberay-operator", "/charts/kuberay-operator")
    install = steps[index(steps, "install ctsynth")].argv
    assert install[4] == str(CHART) and "--wait" in install
    assert install[install.index("--values") + 1] == str(CHART / "values-dev.yaml")
    assert install[install.index("--set") + 1] == "image.tag=t1"
    assert install[install.index("--kube-context") + 1] == "kind-ctsynth"


def test_plan_addresses_the_resources_the_chart_renders(steps, chart):
    """Names in kubectl commands exist in the chart rendered as the plan installs it."""
    from tests.deploy.conftest import Rendered

    rendered = Rendered(chart.render(values=values_file("values-dev.yaml"), name="ctsynth", namespace="ctsynth"))
    named = {(d["kind"], d["metadata"]["name"]) for d in rendered.docs}
    for step in steps:
        for arg in step.argv:
            for prefix, kind_name in (("deployment/", "Deployment"), ("service/", "Service"),
                                      ("statefulset/", "StatefulSet")):
                if arg.startswith(prefix):
                    assert (kind_name, arg[len(prefix):]) in named, (step.name, arg)
    assert ("Secret", "ctsynth-auth") in named
    for service in SERVICES:
        forward = steps[index(steps, f"port-forward {service}")]
        assert forward.background and forward.argv[-1].endswith(":50051")
        ports = {p["port"] for p in rendered.get("Service", f"ctsynth-{service}")["spec"]["ports"]}
        assert ports == {50051, 9090}
    selector = steps[index(steps, "wait for the Ray workers")].argv[-1]
    ray = rendered.get("RayCluster", "ctsynth-ray")["spec"]
    labels = ray["workerGroupSpecs"][0]["template"]["metadata"]["labels"]
    assert all(labels[k] == v for k, v in (pair.split("=") for pair in selector.split(",")))


def test_pipeline_commands_parse_with_the_ctsynth_cli(steps, config):
    """Every ctsynth invocation is accepted by the real argument parser, and the stages chain."""
    from ctsynth.cli.main import build_parser

    parser = build_parser()
    parsed = {}
    for name in ("ingest", "train a tiny DCGAN on the RayCluster", "sample", "evaluate"):
        step = steps[index(steps, name)]
        assert step.argv[:3] == (config.python, "-m", "ctsynth.cli.main")
        assert step.env == {"CTSYNTH_AUTH_TOKEN": "{token}"}
        parsed[name] = parser.parse_args(list(step.argv[3:]))
    ingest, train, sample, evaluate = parsed.values()
    assert [a.target for a in parsed.values()] == [f"localhost:{50061 + i}" for i in range(4)]
    assert train.dataset == ingest.dataset == evaluate.dataset
    assert sample.model == evaluate.model == train.family == "dcgan"
    from ctsynth.evaluation.plan import METRIC_DIMS

    for metric in evaluate.metrics.split(","):  # pixel-space metrics: no weights to fetch, nothing to train
        assert 2 in METRIC_DIMS[metric] and metric in ("ms-ssim", "efficiency")
    assert train.steps <= 50 and train.workers == 1 and train.gpus == 0  # tiny, on the CPU worker
    exec_ = steps[index(steps, "write phantom studies in the ingest pod")].argv
    phantom = parser.parse_args(list(exec_[exec_.index("--") + 2:]))
    assert phantom.out.as_posix() == ingest.source  # written in the pod the ingest service reads from
    assert sample.out == "/work/run/samples"
    assert steps[index(steps, "check the samples")].argv[-2:] == (sample.out, str(sample.count))
    token = steps[index(steps, "read the bearer token")]
    assert token.capture == "token" and "base64decode" in token.argv[-1]


def test_helper_subcommands_work_locally(tmp_path):
    script = str(ROOT / "deploy/kind/integration.py")
    (tmp_path / "a.png").write_bytes(b"x")
    ok = subprocess.run([sys.executable, script, "check-files", str(tmp_path), "1"], capture_output=True, text=True)
    short = subprocess.run([sys.executable, script, "check-files", str(tmp_path), "2"], capture_output=True)
    assert (ok.returncode, short.returncode) == (0, 1)
    plan = subprocess.run([sys.executable, script, "plan"], capture_output=True, text=True, env={
        **os.environ, "KUBERAY_CHART": "/x/kuberay"})
    assert plan.returncode == 0 and "helm upgrade --install kuberay-operator /x/kuberay" in plan.stdout


def test_execute_captures_substitutes_skips_after_failure_and_always_tears_down(tmp_path):
    py = sys.executable
    marker = tmp_path / "log"
    write = "import os,sys; open(sys.argv[1],'a').write(sys.argv[2] + os.environ.get('T', '') + '\\n')"
    steps = [
        kind.Step("capture", (py, "-c", "print('abc')"), capture="token"),
        kind.Step("background", (py, "-c", "import time; time.sleep(60)"), background=True),
        kind.Step("use", (py, "-c", write, str(marker), "use:"), env={"T": "{token}"}),
        kind.Step("fail", (py, "-c", "raise SystemExit(4)")),
        kind.Step("skipped", (py, "-c", write, str(marker), "skipped")),
        kind.Step("diagnose", (py, "-c", write, str(marker), "diagnose"), when="failure"),
        kind.Step("teardown", (py, "-c", write, str(marker), "teardown"), when="always"),
    ]
    assert kind.execute(steps, echo=lambda line: None) is False
    assert marker.read_text().splitlines() == ["use:abc", "diagnose", "teardown"]
    passing = [kind.Step("ok", (py, "-c", "pass")), steps[5], steps[6]]
    marker.unlink()
    assert kind.execute(passing, echo=lambda line: None) is True
    assert marker.read_text().splitlines() == ["teardown"]  # no diagnostics when nothing failed


def test_kind_cluster_end_to_end():
    """The real run: opt-in (CTSYNTH_KIND_TEST=1, ~20 minutes) on a machine with Docker, kind, kubectl, helm."""
    problem = kind.missing_prerequisites(os.environ.get("KUBERAY_CHART"))
    if problem:
        pytest.skip(f"kind integration test cannot run here: {problem}")
    if os.environ.get("CTSYNTH_KIND_TEST") != "1":
        pytest.skip("set CTSYNTH_KIND_TEST=1 (or run `make kind-test`) to create a kind cluster")
    result = subprocess.run([sys.executable, str(ROOT / "deploy/kind/integration.py"), "run"], cwd=ROOT,
                            timeout=3600)
    assert result.returncode == 0


def test_make_kind_test_skips_with_the_reason_here():
    problem = kind.missing_prerequisites(os.environ.get("KUBERAY_CHART"))
    if problem is None:
        pytest.skip("kind prerequisites are present: `make kind-test` would create a cluster")
    result = subprocess.run([sys.executable, str(ROOT / "deploy/kind/integration.py"), "run"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == kind.EXIT_SKIPPED
    assert result.stderr.strip() == f"kind-test skipped: {problem}"
    makefile = (ROOT / "Makefile").read_text()
    assert "kind-test: venv\n\t$(BIN)/python deploy/kind/integration.py run" in makefile
    assert yaml.safe_load((ROOT / "deploy/kind/kind-config.yaml").read_text())["nodes"][0]["image"].startswith(
        "kindest/node:v1.30.")
