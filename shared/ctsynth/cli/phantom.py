"""`ctsynth phantom`: synthetic LIDC-IDRI series with nodules at the real annotations, for tests and demos."""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm


def add_parser(commands) -> None:
    parser = commands.add_parser("phantom", help="write phantom LIDC-IDRI DICOM series that pylidc can load")
    parser.add_argument("--out", type=Path, required=True, help="root folder: OUT/<patient>/<study>/<series>/*.dcm")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--scans", type=int, help="the first N annotated scans (by pylidc id)")
    which.add_argument("--patients", help="comma-separated patient ids, e.g. LIDC-IDRI-0001,LIDC-IDRI-0002")
    parser.add_argument("--seed", type=int, default=0, help="anatomy and noise seed (default 0)")
    parser.set_defaults(run=run)


def run(args) -> int:
    from ctsynth.data.phantom import write_phantoms

    scans = _selected_scans(args)
    root = args.out.resolve()
    # delay: input refused at the first scan leaves a one-line error, not a bar stuck at 0.
    with tqdm(total=len(scans), unit="scan", desc="phantoms", file=sys.stderr, delay=0.5) as bar:
        written = write_phantoms(scans, root, args.seed, progress=lambda _: bar.update())
    files = sum(1 for series in written for _ in series.glob("*.dcm"))
    print(f"wrote {len(written)} series ({files} DICOM files) under {root}")
    return 0


def _selected_scans(args) -> list:
    from ctsynth.data.lidc import annotated_scans, scans_for_patients

    if args.patients is not None:
        patient_ids = [pid.strip() for pid in args.patients.split(",") if pid.strip()]
        if not patient_ids:
            raise ValueError("--patients: give at least one patient id, e.g. LIDC-IDRI-0001")
        return scans_for_patients(patient_ids)
    try:
        return annotated_scans(args.scans)
    except ValueError as exc:
        raise ValueError(f"--scans: {exc}") from None
