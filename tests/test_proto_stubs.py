"""The committed stubs must be exactly what `make proto` generates now."""

from __future__ import annotations

from pathlib import Path

from ctsynth.rpc.protogen import generate, proto_files

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "shared" / "ctsynth" / "v1"


def test_generated_stubs_are_up_to_date(tmp_path):
    fresh = {p.name: p.read_bytes() for p in generate(REPO / "proto", tmp_path)}
    committed = {p.name: p.read_bytes() for p in COMMITTED.glob("*.py*")}
    assert sorted(fresh) == sorted(committed), "stub files differ: run `make proto`"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated code {stale}: run `make proto`"


def test_every_service_has_a_proto_and_pyi(tmp_path):
    names = {p.stem for p in proto_files(REPO / "proto")}
    assert names == {"common", "ingest", "training", "sampling", "evaluation"}
    for name in names:
        assert (COMMITTED / f"{name}_pb2.pyi").is_file()
