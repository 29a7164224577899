"""The Dockerfiles follow the house rules, checked by a small parser (no Docker
needed): pinned bases, multi-stage, non-root USER, exec-form ENTRYPOINT per
service, gRPC and metrics ports exposed, a read-only-root-friendly
environment, and a build context that ships what the COPYs need."""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass

import pytest

from tests.deploy.conftest import ROOT

SHARED = ROOT / "deploy" / "docker" / "Dockerfile"
SERVICES = ("ingest", "training", "sampling", "evaluation")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


def parse(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined; comments and parser directives dropped."""
    out, pending, start = [], "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continuation are ignored by Docker
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
        pending = ""
    assert not pending, "dangling line continuation"
    return out


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """Split into stages; instructions before the first FROM (global ARGs) form stage 0."""
    result: list[list[Instruction]] = [[]]
    for instruction in instructions:
        if instruction.keyword == "FROM":
            result.append([])
        result[-1].append(instruction)
    return result


def arg_defaults(instructions: list[Instruction]) -> dict[str, str]:
    defaults = {}
    for instruction in instructions:
        if instruction.keyword == "ARG" and "=" in instruction.args:
            name, _, value = instruction.args.partition("=")
            defaults[name] = value
    return defaults


def env_of(stage: list[Instruction]) -> dict[str, str]:
    env = {}
    for instruction in stage:
        if instruction.keyword == "ENV":
            env.update(dict(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)", instruction.args)))
    return env


def pinned(image: str) -> bool:
    """A registry image with an explicit tag other than latest (or a digest)."""
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag not in ("", "latest")


def problems(text: str, *, entrypoint: list[str] | None) -> list[str]:
    """Rule violations of one Dockerfile; `entrypoint` is the exec form its last stage must end with."""
    instructions = parse(text)
    found = []
    globals_ = arg_defaults(stages(instructions)[0])
    all_args = arg_defaults(instructions)
    names = set()
    for instruction in instructions:
        if instruction.keyword == "FROM":
            parts = instruction.args.split()
            image = parts[0]
            resolved = re.sub(r"\$\{(\w+)\}", lambda m: globals_.get(m.group(1), all_args.get(m.group(1), "")), image)
            if resolved not in names and not pinned(resolved):  # a base image, not an earlier stage
                found.append(f"line {instruction.line}: base {image} ({resolved}) is not pinned")
            if len(parts) == 3 and parts[1].upper() == "AS":
                names.add(parts[2])
    last = stages(instructions)[-1]
    users = [i.args for i in last if i.keyword == "USER"]
    if not users:
        found.append("final stage has no USER")
    elif users[-1].split(":")[0] in ("root", "0"):
        found.append("final stage runs as root")
    ports = {p.split("/")[0] for i in last if i.keyword == "EXPOSE" for p in i.args.split()}
    if not {"50051", "9090"} <= ports:
        found.append(f"final stage exposes {sorted(ports)}, not the gRPC (50051) and metrics (9090) ports")
    entrypoints = [i.args for i in last if i.keyword == "ENTRYPOINT"]
    if entrypoint is not None:
        if not entrypoints:
            found.append("no ENTRYPOINT")
        else:
            try:
                form = json.loads(entrypoints[-1])
            except json.JSONDecodeError:
                form = None
            if form != entrypoint:
                found.append(f"ENTRYPOINT {entrypoints[-1]} is not the exec form {entrypoint}")
    return found


def test_parser_joins_continuations_and_drops_comments():
    instructions = parse("# syntax=docker/dockerfile:1\nFROM a:1 AS b\n# c\nRUN x \\\n  # inside\n  && y\nUSER 1\n")
    assert [(i.keyword, i.args, i.line) for i in instructions] == [
        ("FROM", "a:1 AS b", 2), ("RUN", "x && y", 4), ("USER", "1", 7)]


def test_rules_catch_a_bad_dockerfile():
    bad = 'FROM python:latest\nUSER root\nEXPOSE 8080\nENTRYPOINT python server.py\n'
    found = problems(bad, entrypoint=["python", "/app/services/x/server.py"])
    assert len(found) == 4, found
    assert problems("FROM python\nUSER 10001\nEXPOSE 50051 9090\n", entrypoint=None) == [
        "line 1: base python (python) is not pinned"]


def test_shared_dockerfile_is_multi_stage_pinned_and_non_root():
    text = SHARED.read_text()
    assert problems(text, entrypoint=None) == []
    instructions = parse(text)
    defaults = arg_defaults(instructions)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", defaults["CPU_BASE"])
    assert re.fullmatch(r"nvidia/cuda:1[23]\.\d+\.\d+-cudnn\d*-runtime-ubuntu\d\d\.04", defaults["GPU_BASE"])
    all_stages = stages(instructions)[1:]
    assert len(all_stages) >= 4 and {s[0].args.split()[-1] for s in all_stages} >= {"build", "runtime"}
    gpu = next(s for s in all_stages if s[0].args.endswith("AS python-gpu"))
    assert any("python3.11" in i.args for i in gpu if i.keyword == "RUN")
    runtime = all_stages[-1]
    assert runtime[0].args == "python AS runtime"
    assert not any(i.keyword == "ENTRYPOINT" for i in runtime)  # each service image sets its own
    assert any(i.keyword == "COPY" and i.args.startswith("--from=build /opt/venv") for i in runtime)
    env = env_of(runtime)
    assert env["PYTHONUNBUFFERED"] == "1"
    for variable in ("HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "MPLCONFIGDIR", "RAY_TMPDIR", "TORCH_HOME"):
        assert env[variable].startswith("/tmp/"), variable  # the one writable path on a read-only root
    assert env["CTSYNTH_HOST"] == "0.0.0.0" and env["PATH"].startswith("/opt/venv/bin")
    user = [i.args for i in runtime if i.keyword == "USER"][-1]
    assert user == "${UID}:${UID}" and defaults["UID"] == "10001"
    build = next(s for s in all_stages if s[0].args.endswith("AS build"))
    runs = " ".join(i.args for i in build if i.keyword == "RUN")
    assert "pip install -r /src/requirements.lock" in runs and "--no-deps" in runs


@pytest.mark.parametrize("service", SERVICES)
def test_service_dockerfile_builds_from_the_shared_runtime_with_its_entry_point(service):
    path = ROOT / "services" / service / "Dockerfile"
    text = path.read_text()
    server = f"/app/services/{service}/server.py"
    assert problems(text, entrypoint=["python", server]) == []
    instructions = parse(text)
    assert [i.args for i in instructions if i.keyword == "FROM"] == ["${BASE_IMAGE}"]
    assert arg_defaults(instructions)["BASE_IMAGE"] == "ctsynth-base:0.1.0-cpu"
    assert not any(i.keyword in ("COPY", "ADD", "RUN") for i in instructions)  # all in the shared recipe
    assert (ROOT / "services" / service / "server.py").is_file()
    shared_copies = [i.args for i in parse(SHARED.read_text()) if i.keyword == "COPY"]
    assert "services /app/services" in shared_copies  # where the entry point lives in the image


def test_every_service_folder_has_a_dockerfile():
    folders = {p.name for p in (ROOT / "services").iterdir() if (p / "server.py").is_file()}
    assert folders == set(SERVICES)
    assert all((ROOT / "services" / name / "Dockerfile").is_file() for name in folders)


def ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics for the patterns we use: last match wins, ! re-includes."""
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        candidates = (pattern, pattern.replace("**/", "*/"), pattern.replace("**/", ""))
        if pattern == "**" or path.startswith(pattern + "/") or any(fnmatch.fnmatch(path, c) for c in candidates):
            verdict = not negate
    return verdict


def test_dockerignore_ships_exactly_what_the_copies_need():
    patterns = [line.strip() for line in (SHARED.parent / "Dockerfile.dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    sources = []
    for instruction in parse(SHARED.read_text()):
        if instruction.keyword == "COPY" and not instruction.args.startswith("--from"):
            sources += instruction.args.split()[:-1]
    assert {"requirements.lock", "shared", "services"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not ignored(source, patterns), source
        if (ROOT / source).is_dir():
            assert not ignored(f"{source}/ctsynth/__init__.py" if source == "shared" else f"{source}/x/server.py",
                               patterns)
    for left_out in (".venv/bin/python", "tests/deploy/conftest.py", ".git/HEAD", "charts/ctsynth/Chart.yaml",
                     "shared/ctsynth/__pycache__/x.pyc"):
        assert ignored(left_out, patterns), left_out
