"""kind integration test: the chart on a real (local) Kubernetes cluster, end to end.

    KUBERAY_CHART=/path/to/kuberay-operator python deploy/kind/integration.py run
    python deploy/kind/integration.py plan            # print the commands only

`run` creates a kind cluster (deploy/kind/kind-config.yaml), builds the CPU
images and loads them into it, installs the KubeRay operator from the chart
at $KUBERAY_CHART (a directory or .tgz you fetched, e.g. with `helm pull
kuberay/kuberay-operator`), installs charts/ctsynth with values-dev.yaml,
waits for every pod (services, MinIO, Ray head and worker), then through
`kubectl port-forward` runs the pipeline with the ctsynth CLI (--target):
phantom LIDC-IDRI series (written inside the ingest pod) -> ingest -> train
a tiny DCGAN on the RayCluster -> sample -> evaluate, checks the sampling
service's /metrics, and deletes the cluster (also after a failure; --keep
leaves it). It needs a Docker engine, kind, kubectl and helm; without them
it exits 3 with the reason (`make kind-test` runs it).

`plan()` returns the exact commands, so the sequence is unit-tested without a
cluster (tests/deploy/test_kind_plan.py).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("ingest", "training", "sampling", "evaluation")
EXIT_SKIPPED = 3


@dataclass(frozen=True)
class Config:
    kuberay_chart: str
    cluster: str = "ctsynth"
    namespace: str = "ctsynth"
    release: str = "ctsynth"
    tag: str = "kind"
    python: str = sys.executable
    local_port_base: int = 50060  # ingest 50061, training 50062, sampling 50063, evaluation 50064
    metrics_port: int = 59093  # the sampling service's /metrics, forwarded
    workdir: str = ""  # where samples are written (run: a fresh temporary folder)
    keep: bool = False

    def local_port(self, service: str) -> int:
        return self.local_port_base + 1 + SERVICES.index(service)


@dataclass(frozen=True)
class Step:
    """One command. `env` values may name captured outputs as {name};
    `capture` keeps the stripped stdout under that name; background steps
    (port-forwards) run until teardown; `when` is "ok" (only while nothing
    failed), "failure" (diagnostics) or "always" (teardown)."""

    name: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    capture: str | None = None
    background: bool = False
    when: str = "ok"


def _fullname(config: Config) -> str:
    """The chart's resource prefix for this release (see "ctsynth.fullname")."""
    return config.release if "ctsynth" in config.release else f"{config.release}-ctsynth"


def plan(config: Config) -> list[Step]:
    """Every command of a run, in order."""
    ns, full = config.namespace, _fullname(config)
    kubectl = ("kubectl", "--context", f"kind-{config.cluster}", "--namespace", ns)
    helm_ctx = ("--kube-context", f"kind-{config.cluster}")
    images = [f"ctsynth-{service}:{config.tag}" for service in SERVICES]
    ctsynth = (config.python, "-m", "ctsynth.cli.main")
    token_env = {"CTSYNTH_AUTH_TOKEN": "{token}"}
    target = {service: f"localhost:{config.local_port(service)}" for service in SERVICES}
    release_label = f"app.kubernetes.io/instance={config.release}"
    samples = str(Path(config.workdir or Path(tempfile.gettempdir()) / f"ctsynth-kind-{config.cluster}") / "samples")
    steps = [
        Step("create cluster", ("kind", "create", "cluster", "--name", config.cluster,
                                "--config", str(ROOT / "deploy/kind/kind-config.yaml"), "--wait", "180s")),
        Step("build images", (config.python, str(ROOT / "deploy/docker/images.py"), "--tag", config.tag)),
        Step("load images", ("kind", "load", "docker-image", "--name", config.cluster, *images)),
        Step("install KubeRay operator", ("helm", "upgrade", "--install", "kuberay-operator", config.kuberay_chart,
                                          *helm_ctx, "--namespace", "kuberay-system", "--create-namespace",
                                          "--wait", "--timeout", "10m")),
        Step("install ctsynth", ("helm", "upgrade", "--install", config.release, str(ROOT / "charts/ctsynth"),
                                 *helm_ctx, "--namespace", ns, "--create-namespace",
                                 "--values", str(ROOT / "charts/ctsynth/values-dev.yaml"),
                                 "--set", f"image.tag={config.tag}", "--wait", "--timeout", "20m")),
        Step("wait for services", (*kubectl, "wait", "--for=condition=Available", "--timeout=10m",
                                   *[f"deployment/{full}-{service}" for service in SERVICES])),
        Step("wait for MinIO", (*kubectl, "rollout", "status", f"statefulset/{full}-minio", "--timeout=10m")),
        Step("wait for the Ray head", (*kubectl, "wait", "--for=condition=Ready", "pod", "--timeout=10m",
                                       "--selector", f"{release_label},app.kubernetes.io/component=ray-head")),
        Step("wait for the Ray workers", (*kubectl, "wait", "--for=condition=Ready", "pod", "--timeout=10m",
                                          "--selector", f"{release_label},app.kubernetes.io/component=ray-worker")),
        Step("read the bearer token", (*kubectl, "get", "secret", f"{full}-auth", "--output",
                                       "go-template={{.data.token | base64decode}}"), capture="token"),
    ]
    for service in SERVICES:
        steps.append(Step(f"port-forward {service}", (*kubectl, "port-forward", f"service/{full}-{service}",
                                                      f"{config.local_port(service)}:50051"), background=True))
    steps += [
        Step("port-forward sampling metrics", (*kubectl, "port-forward", f"service/{full}-sampling",
                                               f"{config.metrics_port}:9090"), background=True),
        Step("wait for the port-forwards", (config.python, __file__, "wait-ports",
                                            *[str(config.local_port(s)) for s in SERVICES], str(config.metrics_port))),
        Step("health of every service", (config.python, __file__, "health",
                                         *[target[service] for service in SERVICES])),
        Step("write phantom studies in the ingest pod", (*kubectl, "exec", f"deployment/{full}-ingest",
                                                         "--container", "ingest", "--", "ctsynth", "phantom",
                                                         "--scans", "3", "--out", "/tmp/import/phantom")),
        Step("ingest", (*ctsynth, "--target", target["ingest"], "ingest", "--source", "/tmp/import/phantom",
                        "--dataset", "phantom", "--size", "64", "--volume-size", "32"), env=token_env),
        Step("train a tiny DCGAN on the RayCluster", (*ctsynth, "--target", target["training"], "train",
                                                       "--family", "dcgan", "--dataset", "phantom", "--size", "64",
                                                       "--steps", "20", "--batch-size", "4", "--workers", "1",
                                                       "--cpus", "1"), env=token_env),
        Step("sample", (*ctsynth, "--target", target["sampling"], "sample", "--model", "dcgan", "--count", "4",
                        "--format", "png", "--out", samples, "--quiet"), env=token_env),
        Step("check the samples", (config.python, __file__, "check-files", samples, "4")),
        Step("evaluate", (*ctsynth, "--target", target["evaluation"], "evaluate", "--model", "dcgan",
                          "--dataset", "phantom", "--count", "16", "--metrics", "ms-ssim,efficiency", "--quiet"),
             env=token_env),
        Step("check the sampling metrics", (config.python, __file__, "check-metrics",
                                            f"http://localhost:{config.metrics_port}/metrics",
                                            "ctsynth_sampling_items_total", "ctsynth_grpc_requests_total")),
        Step("diagnostics: pods", ("kubectl", "--context", f"kind-{config.cluster}", "get", "pods",
                                   "--all-namespaces", "--output", "wide"), when="failure"),
        Step("diagnostics: events", (*kubectl, "get", "events", "--sort-by=.lastTimestamp"), when="failure"),
        Step("diagnostics: logs", (*kubectl, "logs", "--selector", release_label,
                                   "--all-containers", "--prefix", "--tail=50"), when="failure"),
    ]
    if not config.keep:
        steps.append(Step("delete cluster", ("kind", "delete", "cluster", "--name", config.cluster), when="always"))
    return steps


# --- preflight --------------------------------------------------------------------


def missing_prerequisites(kuberay_chart: str | None) -> str | None:
    """Why the kind test cannot run here, or None."""
    tools = [tool for tool in ("docker", "kind", "kubectl", "helm") if shutil.which(tool) is None]
    if tools:
        return f"missing command(s): {', '.join(tools)}"
    try:
        info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                              text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "the Docker engine did not answer `docker info` within 20 s"
    if info.returncode != 0 or not info.stdout.strip():
        return "no Docker engine is reachable (`docker info` failed)"
    if not kuberay_chart:
        return ("KUBERAY_CHART is not set (a path to the kuberay-operator chart, "
                "e.g. from `helm pull kuberay/kuberay-operator`)")
    if not Path(kuberay_chart).exists():
        return f"KUBERAY_CHART={kuberay_chart}: no such file or directory"
    return None


# --- running ----------------------------------------------------------------------


def _render(step: Step, captured: dict[str, str]) -> dict[str, str]:
    return {key: value.format(**captured) for key, value in step.env.items()}


def execute(steps: list[Step], *, echo=print) -> bool:
    """Run the plan; True when every "ok" step succeeded."""
    captured: dict[str, str] = {}
    background: list[subprocess.Popen] = []
    failed = False
    try:
        for step in steps:
            if (step.when == "ok" and failed) or (step.when == "failure" and not failed):
                continue
            if step.when == "always":
                for process in background:
                    process.terminate()
            echo(f"==> {step.name}: {shlex.join(step.argv)}")
            env = {**os.environ, **_render(step, captured)}
            if step.background:
                background.append(subprocess.Popen(step.argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL))
                continue
            result = subprocess.run(step.argv, env=env, cwd=ROOT, text=True,
                                    stdout=subprocess.PIPE if step.capture else None)
            if result.returncode != 0:
                echo(f"!!! {step.name} failed (exit {result.returncode})")
                failed = failed or step.when == "ok"
            elif step.capture:
                captured[step.capture] = result.stdout.strip()
    finally:
        for process in background:
            process.terminate()
    return not failed


# --- helper subcommands the plan calls ---------------------------------------------


def _wait_ports(ports: list[int], timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    print(f"port {port} is not forwarded after {timeout:.0f} s", file=sys.stderr)
                    return 1
                time.sleep(0.5)
    return 0


def _health(targets: list[str]) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    bad = 0
    for target in targets:
        with grpc.insecure_channel(target) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
        print(f"{target}: {name}")
        bad += name != "SERVING"
    return 1 if bad else 0


def _check_files(folder: str, count: int) -> int:
    files = [p for p in Path(folder).rglob("*") if p.is_file() and p.stat().st_size > 0]
    print(f"{len(files)} non-empty file(s) in {folder}")
    return 0 if len(files) >= count else 1


def _check_metrics(url: str, names: list[str]) -> int:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    missing = [name for name in names if not any(line.startswith(name) for line in text.splitlines())]
    if missing:
        print(f"{url} lacks {', '.join(missing)}", file=sys.stderr)
        return 1
    print(f"{url} exports {', '.join(names)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "plan"):
        sub = commands.add_parser(name)
        sub.add_argument("--cluster", default="ctsynth")
        sub.add_argument("--tag", default="kind")
        sub.add_argument("--keep", action="store_true", help="leave the cluster running")
    commands.add_parser("wait-ports").add_argument("ports", nargs="+", type=int)
    commands.add_parser("health").add_argument("targets", nargs="+")
    files = commands.add_parser("check-files")
    files.add_argument("folder")
    files.add_argument("count", type=int)
    metrics = commands.add_parser("check-metrics")
    metrics.add_argument("url")
    metrics.add_argument("names", nargs="+")
    args = parser.parse_args(argv)

    if args.command == "wait-ports":
        return _wait_ports(args.ports)
    if args.command == "health":
        return _health(args.targets)
    if args.command == "check-files":
        return _check_files(args.folder, args.count)
    if args.command == "check-metrics":
        return _check_metrics(args.url, args.names)

    chart = os.environ.get("KUBERAY_CHART", "")
    config = Config(kuberay_chart=chart or "$KUBERAY_CHART", cluster=args.cluster, tag=args.tag, keep=args.keep,
                    workdir="" if args.command == "plan" else tempfile.mkdtemp(prefix="ctsynth-kind-"))
    if args.command == "plan":
        for step in plan(config):
            suffix = " &" if step.background else ""
            print(f"# {step.name}{'' if step.when == 'ok' else f' ({step.when})'}\n{shlex.join(step.argv)}{suffix}")
        return 0
    problem = missing_prerequisites(chart)
    if problem:
        print(f"kind-test skipped: {problem}", file=sys.stderr)
        return EXIT_SKIPPED
    return 0 if execute(plan(config)) else 1


if __name__ == "__main__":
    sys.exit(main())
