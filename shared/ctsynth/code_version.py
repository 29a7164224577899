"""The code version recorded with every model: images have no `.git`, so the
image build bakes the commit in (CTSYNTH_CODE_VERSION, from the Dockerfile's
CODE_VERSION argument); a checkout asks git; anything else gives the
installed package's version."""

from __future__ import annotations

import os
import subprocess
from importlib import metadata
from pathlib import Path

ENV = "CTSYNTH_CODE_VERSION"


def _git_head() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def code_version() -> str:
    """The baked-in build value, else the checkout's commit, else `ctsynth <package version>`."""
    return os.environ.get(ENV) or _git_head() or f"ctsynth {metadata.version('ctsynth')}"
