"""Fixtures for ingest tests: a recording reporter, a local store, small DICOM trees."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from ctsynth.storage import LocalStore

from .synthetic_dicom import write_series


class Cancelled(Exception):
    """Raised by the reporter when a test cancels the job."""


@dataclass
class RecordingReporter:
    """Keeps every progress event and warning; cancels after `cancel_after` progress events."""

    cancel_after: int | None = None
    events: list[tuple[str, int, int, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)

    def progress(self, stage: str, done: int, total: int, unit: str) -> None:
        self.events.append((stage, done, total, unit))

    def warn(self, subject: str, reason: str) -> None:
        self.warnings.append((subject, reason))

    def check_cancelled(self) -> None:
        if self.cancel_after is not None and len(self.events) >= self.cancel_after:
            raise Cancelled()

    def warned(self, subject_part: str, reason_part: str = "") -> bool:
        return any(subject_part in s and reason_part in r for s, r in self.warnings)


@pytest.fixture
def reporter() -> RecordingReporter:
    return RecordingReporter()


@pytest.fixture
def store(tmp_path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture
def ct_tree(tmp_path):
    """Three patients with one small CT series each, in folders per patient."""
    root = tmp_path / "dicom"
    for patient in ("P1", "P2", "P3"):
        write_series(root / patient / "series", patient=patient, slices=6)
    return root
