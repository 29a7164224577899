"""The `ctsynth` command: serve, status, demo, and its error paths."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ctsynth.cli.main import main

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ctsynth.cli.main", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}, cwd=REPO,
    )


def test_status_without_target_starts_services_in_process(tmp_path, capsys):
    assert main(["--store", (tmp_path / "s").as_uri(), "status"]) == 0
    out = capsys.readouterr().out
    for name in ("ingest", "training", "sampling", "evaluation"):
        assert f"{name:<12} SERVING" in out


def test_serve_then_status_against_target_then_sigterm(tmp_path):
    store = (tmp_path / "s").as_uri()
    server = subprocess.Popen(
        [sys.executable, "-m", "ctsynth.cli.main", "--store", store, "serve", "all", "--port", "0", "--metrics-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        line = server.stdout.readline()
        assert line.startswith("ctsynth serving ingest,training,sampling,evaluation on 127.0.0.1:"), line
        address = line.split(" on ")[1].split()[0]
        status = run_cli("--target", address, "status")
        assert status.returncode == 0, status.stderr
        assert "sampling     SERVING" in status.stdout
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
        logs = server.stderr.read()
        assert '"msg": "serving"' in logs and '"msg": "stopped"' in logs
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_serve_one_service_reports_the_others_not_hosted(tmp_path):
    server = subprocess.Popen(
        [sys.executable, "-m", "ctsynth.cli.main", "--store", (tmp_path / "s").as_uri(), "serve", "ingest", "--port", "0"],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        address = server.stdout.readline().split(" on ")[1].split()[0]
        status = run_cli("--target", address, "status")
        assert status.returncode == 0, status.stderr
        assert "ingest       SERVING" in status.stdout
        assert "training     NOT_HOSTED" in status.stdout
    finally:
        server.kill()
        server.wait()


def test_unreachable_target_exits_nonzero_with_one_line(tmp_path):
    result = run_cli("--target", "127.0.0.1:1", "status")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("ctsynth: error: UNAVAILABLE")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["serve", "nonsense"], {}, "invalid choice: 'nonsense'"),
        (["serve", "ingest", "--port", "http"], {}, "invalid int value"),
        (["--store", "ftp://x/y", "status"], {}, "ftp"),
        (["serve", "ingest", "--port", "0"], {"CTSYNTH_MAX_MESSAGE_BYTES": "12"}, "CTSYNTH_MAX_MESSAGE_BYTES=12"),
        (["--store", "s3://bucket/p", "status"], {"CTSYNTH_S3_ENDPOINT": ""}, "CTSYNTH_S3_ENDPOINT"),
    ],
)
def test_bad_input_exits_nonzero_with_reason(args, env, needle):
    result = run_cli(*args, env=env)
    assert result.returncode != 0
    assert needle in result.stderr


def test_demo_against_an_unreachable_target_fails_with_one_line(tmp_path):
    result = run_cli("--store", (tmp_path / "s").as_uri(), "--target", "127.0.0.1:1", "demo",
                     "--out", str(tmp_path / "out"))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("ctsynth: error:")


def test_up_then_commands_use_the_stack_then_down(tmp_path):
    store = (tmp_path / "s").as_uri()
    up = run_cli("--store", store, "up", env={"CTSYNTH_RAY_DASHBOARD": "1"})
    assert up.returncode == 0, up.stderr
    try:
        assert "CTSYNTH_TARGET=ingest=127.0.0.1:" in up.stdout
        dashboard = re.search(r"ray +dashboard (http://127\.0\.0\.1:\d+) ", up.stdout)
        assert dashboard, up.stdout
        status = run_cli("status")
        assert status.returncode == 0 and "ingest=127.0.0.1:" in status.stdout, status.stdout
        assert status.stdout.count("SERVING") == 4
        assert f"ray          dashboard {dashboard[1]}" in status.stdout, status.stdout
    finally:
        down = run_cli("down")
    assert down.returncode == 0 and "stopped" in down.stdout
    assert "no local stack" in run_cli("down").stdout
