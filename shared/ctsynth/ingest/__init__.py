"""Ingest: turn a DICOM tree, LIDC-IDRI or a slice-image folder into a published dataset."""

from .options import IngestOptions
from .pipeline import Reporter, run_ingest

__all__ = ["IngestOptions", "Reporter", "run_ingest"]
