"""Build the ctsynth images: the shared runtime base, then one image per service.

    python deploy/docker/images.py                      # CPU images, tag 0.1.0
    python deploy/docker/images.py --variant gpu --registry ghcr.io/acme --push
    python deploy/docker/images.py --dry-run            # print the commands only

Images: `<registry>/ctsynth-base:<tag>-<variant>` from deploy/docker/Dockerfile
(context: the repository root), then `<registry>/ctsynth-<service>:<tag>` for
CPU and `...:<tag>-gpu` for GPU, each from services/<service>/Dockerfile
(context: that folder) FROM the base. Needs a running Docker engine (BuildKit);
without one it says so and exits 2. `make images` runs this.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("ingest", "training", "sampling", "evaluation")
VARIANTS = ("cpu", "gpu")
DEFAULT_TAG = "0.1.0"


def image_name(repository: str, registry: str = "") -> str:
    return f"{registry.rstrip('/')}/{repository}" if registry else repository


def service_tag(tag: str, variant: str) -> str:
    """CPU images carry the plain tag, GPU images a `-gpu` suffix (as the chart's values expect)."""
    return tag if variant == "cpu" else f"{tag}-{variant}"


def plan(tag: str = DEFAULT_TAG, variants=("cpu",), registry: str = "", services=SERVICES,
         push: bool = False, code_version: str = "") -> list[list[str]]:
    """The docker commands that build (and optionally push) the images, in order;
    `code_version` (the commit) is baked into the base image."""
    commands: list[list[str]] = []
    for variant in variants:
        if variant not in VARIANTS:
            raise ValueError(f"variant {variant!r}: use one of {', '.join(VARIANTS)}")
        base = f"{image_name('ctsynth-base', registry)}:{tag}-{variant}"
        commands.append(["docker", "build", "--file", "deploy/docker/Dockerfile", "--target", "runtime",
                         "--build-arg", f"VARIANT={variant}", "--build-arg", f"CODE_VERSION={code_version}",
                         "--tag", base, "."])
        for service in services:
            if service not in SERVICES:
                raise ValueError(f"service {service!r}: use one of {', '.join(SERVICES)}")
            image = f"{image_name(f'ctsynth-{service}', registry)}:{service_tag(tag, variant)}"
            commands.append(["docker", "build", "--build-arg", f"BASE_IMAGE={base}", "--tag", image,
                             f"services/{service}"])
            if push:
                commands.append(["docker", "push", image])
    return commands


def checkout_commit() -> str:
    """The commit of this checkout, or "" (the image then records the package version)."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def docker_problem() -> str | None:
    """Why images cannot be built here, or None when a Docker engine answers."""
    if shutil.which("docker") is None:
        return "the docker command is not installed"
    try:
        result = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                                text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "the Docker engine did not answer `docker info` within 20 s"
    if result.returncode != 0 or not result.stdout.strip():
        reason = (result.stderr.strip().splitlines() or ["no server version"])[-1]
        return f"no Docker engine is reachable ({reason})"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default=os.environ.get("CTSYNTH_IMAGE_TAG", DEFAULT_TAG))
    parser.add_argument("--variant", action="append", choices=VARIANTS,
                        help="cpu and/or gpu (repeat the flag; default cpu)")
    parser.add_argument("--registry", default=os.environ.get("CTSYNTH_REGISTRY", ""),
                        help="prefix such as ghcr.io/acme (default: local names)")
    parser.add_argument("--service", action="append", choices=SERVICES, help="default: all four")
    parser.add_argument("--push", action="store_true")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)
    commands = plan(args.tag, args.variant or ["cpu"], args.registry, args.service or SERVICES, args.push,
                    checkout_commit())
    if args.dry_run:
        for command in commands:
            print(shlex.join(command))
        return 0
    problem = docker_problem()
    if problem:
        print(f"make images: cannot build container images here: {problem}. "
              "Run it on a machine with a Docker engine (BuildKit), or see the commands with "
              "`python deploy/docker/images.py --dry-run`.", file=sys.stderr)
        return 2
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    for command in commands:
        print(f"+ {shlex.join(command)}", flush=True)
        subprocess.run(command, cwd=ROOT, env=env, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
