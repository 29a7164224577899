"""`ctsynth ingest` with in-process services reads the user's own folder
(a served instance keeps its configured roots: tests/ingest/test_service.py)."""

from __future__ import annotations

from ctsynth.cli.main import main
from tests.ingest.synthetic_dicom import write_series


def _ingest(store, source, *extra) -> int:
    return main(["--store", store.as_uri(), *extra, "ingest", "--source", str(source), "--dataset", "mine",
                 "--size", "32", "--volume-size", "16", "--split", "1,0,0"])


def test_in_process_ingest_reads_the_commands_own_folder_outside_the_roots(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CTSYNTH_STATE_DIR", str(tmp_path / "state"))  # no running stack to talk to
    monkeypatch.setenv("CTSYNTH_IMPORT_DIR", str(tmp_path / "import"))
    for patient in ("P1", "P2"):
        write_series(tmp_path / "elsewhere" / patient / "s1", patient=patient)
    assert _ingest(tmp_path / "store", tmp_path / "elsewhere") == 0
    assert capsys.readouterr().out.strip().endswith("mine:1")
