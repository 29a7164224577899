"""The code version checkpoints record: the image's baked-in value, else the
checkout's commit, else the installed package's version."""

from __future__ import annotations

import subprocess
from importlib import metadata

from ctsynth import code_version as module
from ctsynth.code_version import code_version


def test_a_baked_in_value_wins_over_git(monkeypatch):
    monkeypatch.setenv("CTSYNTH_CODE_VERSION", "built-from-abc123")
    assert code_version() == "built-from-abc123"


def test_a_checkout_without_a_baked_in_value_records_its_commit(monkeypatch):
    monkeypatch.delenv("CTSYNTH_CODE_VERSION", raising=False)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=module.__file__.rsplit("/", 1)[0],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert code_version() == head


def test_no_git_and_no_baked_in_value_gives_the_package_version(monkeypatch):
    monkeypatch.setenv("CTSYNTH_CODE_VERSION", "")  # the image's default when the build passed none
    monkeypatch.setenv("PATH", "/nonexistent")  # no git command, as in the images
    assert code_version() == f"ctsynth {metadata.version('ctsynth')}"
