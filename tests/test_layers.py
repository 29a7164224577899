"""No arrow points up: plumbing does not import its users, the library does
not import the CLI, models do not import training, a client starts no server."""

from __future__ import annotations


import pytest

from tests.imports import PACKAGE, imports_of, modules_loaded_by

# (modules, what they must not import): each a folder or a module of the package.
RULES = [
    ("rpc", ("ctsynth.servicers", "ctsynth.cli", "ctsynth.client")),
    ("client", ("ctsynth.rpc", "ctsynth.servicers", "ctsynth.cli")),
    ("models", ("ctsynth.training", "ctsynth.sampling", "ctsynth.evaluation", "ctsynth.servicers", "ctsynth.cli")),
    ("demo_pipeline.py", ("ctsynth.cli", "ctsynth.servicers", "ctsynth.rpc")),
    ("stack.py", ("ctsynth.cli", "ctsynth.servicers", "ctsynth.rpc")),
]
LIBRARY = ("data", "models", "diffusion", "metrics", "training", "evaluation", "sampling", "storage", "ingest", "jobs",
           "observability", "rpc", "servicers", "client")


def _files(where: str):
    path = PACKAGE / where
    return [path] if path.suffix == ".py" else sorted(path.rglob("*.py"))


@pytest.mark.parametrize(("where", "forbidden"), RULES, ids=[rule[0] for rule in RULES])
def test_no_upward_import(where, forbidden):
    files = _files(where)
    assert files
    assert [hit for path in files for hit in imports_of(path, forbidden)] == []


@pytest.mark.parametrize("where", LIBRARY)
def test_only_the_cli_imports_the_cli(where):
    assert [hit for path in _files(where) for hit in imports_of(path, ("ctsynth.cli",))] == []


def test_the_rules_see_a_planted_import(tmp_path):
    fake = tmp_path / "ctsynth" / "client"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("def serve():\n    from ..rpc.server import build_server\n")
    hits = imports_of(fake / "bad.py", dict(RULES)["client"], tmp_path / "ctsynth")
    assert [hit.split(": ", 1)[1] for hit in hits] == ["ctsynth.rpc.server", "ctsynth.rpc.server.build_server"]


def test_a_client_and_the_demo_load_no_server():
    loaded = modules_loaded_by("ctsynth.client", "ctsynth.demo_pipeline")
    assert "ctsynth.demo_pipeline" in loaded
    assert [name for name in loaded if name.split(".")[:2] in (["ctsynth", "rpc"], ["ctsynth", "servicers"],
                                                                ["ctsynth", "cli"])] == []
