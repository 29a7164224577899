"""Ingest a source into a published dataset: discover, process in parallel, write, publish.

Flow (memory stays bounded by a few series, whatever the number of scans):

1. The source is a local folder (read in place) or an object-store URI
   (everything under the prefix is downloaded to a temporary folder first,
   which needs local disk for the whole source but keeps the processing code
   one path). Either must lie under the allowed roots (`ctsynth.roots`); a
   source that is not there is refused and nothing is created for it.
2. Discovery reads DICOM headers only and groups files into series (or image
   files into folders), then resolves the source kind.
3. A process pool processes one series per task (`series.process_task`);
   results come back in task order, at most 2 x workers in flight, so the
   output is identical for any number of workers.
4. Workers compress every slice into its final HDF5 chunk; the parent only
   appends those bytes to a temporary candidates file (slices) and to
   volumes.h5. Balancing needs every slice label, so it happens after:
   patients are split, each (split, view) group is balanced, and the chosen
   rows' chunks are copied as stored bytes into the final slices.h5, grouped
   by split. The candidates file costs temporary disk for every candidate
   slice (about 90 KiB each at 256²).
5. `store.publish` uploads and verifies the files and writes the manifest last.

Temporary files live in a folder under `work_dir` (the service's own scratch
space, which `remove_leftovers` clears when the service starts), and pool
workers exit when the process that started them dies, so a service killed
with SIGKILL leaves neither data nor processes behind once restarted.
"""

from __future__ import annotations

import multiprocessing
import os
import select
import shutil
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

import h5py
import numpy as np

import ctsynth
from ctsynth.data import preprocess as pp
from ctsynth.data.dataset_h5 import NODULE_META, read_chunk, read_table, slice_writer, volume_writer
from ctsynth.data.dicom_series import SeriesProblem, SeriesRef, find_series
from ctsynth.data.slice_images import ImageGroup, group_slice_images, is_slice_image
from ctsynth.errors import FailedPrecondition, InvalidArgument
from ctsynth.processes import pid_alive
from ctsynth.roots import AllowedRoots
from ctsynth.storage import ObjectStore, StorageError, open_store

from .options import IngestOptions
from .series import SeriesOutput, Settings, process_task

# pylidc's heavy imports, safe to load before forking (pylidc itself opens its database on import).
PYLIDC_DEPENDENCIES = ("matplotlib.pyplot", "sqlalchemy.orm", "scipy.stats", "scipy.spatial.distance")
COPY_BATCH = 256  # rows copied from the candidates file at once
SUMMARY_REASONS = 5  # kinds of problem quoted when nothing usable was found
TEMP_PREFIX = "ctsynth-ingest-"  # one temporary folder per running ingest


class Reporter(Protocol):
    def progress(self, stage: str, done: int, total: int, unit: str) -> None: ...

    def warn(self, subject: str, reason: str) -> None: ...

    def check_cancelled(self) -> None:
        """Raise if the job was cancelled."""


@dataclass
class _Tally:
    """What the parent learns while results stream in."""

    reporter: Reporter
    warnings: list[dict] = field(default_factory=list)
    filtered: int = 0
    series: int = 0
    nodules: list[np.ndarray] = field(default_factory=list)
    nifti: dict[str, Path] = field(default_factory=dict)

    def warn(self, problem: SeriesProblem) -> None:
        self.warnings.append({"subject": problem.subject, "reason": problem.reason})
        self.reporter.warn(problem.subject, problem.reason)


def run_ingest(options: IngestOptions, store: ObjectStore, prefix: str, reporter: Reporter, *,
               roots: AllowedRoots, work_dir: Path | None = None, workers: int | None = None) -> dict:
    """Ingest the source and publish the dataset under `prefix` (e.g. datasets/lidc/3); returns the manifest.

    `roots`: where the source may lie. `work_dir`: where temporary files go
    (default: the system temp dir). `workers`: processes for the series
    (default: one per CPU, at most one per series); 1 processes everything
    in this process.
    """
    version = prefix.rstrip("/").rpartition("/")[2]
    if not version:
        raise InvalidArgument("prefix", f"{prefix!r} names no version")
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=TEMP_PREFIX, dir=work_dir) as tmp_name:
        tmp = Path(tmp_name)
        tally = _Tally(reporter)
        with _local_source(options.source, roots, tmp / "source", reporter) as root:
            kind, tasks = _discover(root, options, tally)
            settings = Settings(options, kind, str(tmp / "nifti") if options.export_nifti else None)
            if settings.nifti_dir:
                os.makedirs(settings.nifti_dir)
            parameters = {**options.to_json(), "source_kind": kind}
            volumes_path = tmp / "volumes.h5" if options.volumes and kind != "slices" else None
            _process(tasks, settings, parameters, tally, tmp / "candidates.h5", volumes_path, workers)
        candidates = read_table(tmp / "candidates.h5")
        volume_meta = read_table(volumes_path) if volumes_path else None
        if not len(candidates) and (volume_meta is None or not len(volume_meta)):
            raise FailedPrecondition(_nothing_usable(options.source, tally.warnings))

        patients = list(candidates["patient"]) + ([] if volume_meta is None else list(volume_meta["patient"]))
        split_of = pp.split_patients(patients, options.split, options.seed)
        rows = _select_rows(candidates, split_of, options)
        _write_slices(tmp / "candidates.h5", tmp / "slices.h5", rows, parameters, options.slice_size, tally)
        files = {"slices.h5": tmp / "slices.h5"}
        if volume_meta is not None and len(volume_meta):
            _assign_volume_splits(volumes_path, split_of)
            files["volumes.h5"] = volumes_path
        files.update({f"nifti/{name}": path for name, path in sorted(tally.nifti.items())})
        manifest = _manifest(options, kind, version, tmp / "slices.h5", files.get("volumes.h5"), tally)
        store.publish(prefix, files, manifest)
        return store.read_manifest(prefix)


# --- source and discovery ----------------------------------------------------------


def remove_leftovers(work_dir: Path) -> None:
    """Remove the temporary folders of ingests a killed process left in `work_dir`.

    Call it when the service starts, before any job runs: only then is none in use.
    """
    for path in work_dir.glob(f"{TEMP_PREFIX}*"):
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def _local_source(source: str, roots: AllowedRoots, scratch: Path, reporter: Reporter) -> Iterator[Path]:
    """The source as a local folder: a plain path in place, a URI downloaded."""
    location = roots.resolve(source, "source")
    if "://" not in source:
        if not location.is_dir():
            raise InvalidArgument("source", f"{source} is not a folder")
        yield location
        return
    try:
        remote = open_store(location.as_uri() if isinstance(location, Path) else location, create=False)
    except (ValueError, StorageError) as exc:
        raise InvalidArgument("source", f"{source} is not a readable store prefix ({exc})") from None
    keys = [info.key for info in remote.list()]
    for done, key in enumerate(keys, 1):
        reporter.check_cancelled()
        remote.get_file(key, scratch / key)
        reporter.progress("download", done, len(keys), "files")
    scratch.mkdir(parents=True, exist_ok=True)
    yield scratch


def _walk(root: Path, tally: _Tally) -> list[Path]:
    """Every file under root, in a stable order; empty folders are reported."""
    files = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        if not dirs and not names:
            tally.warn(SeriesProblem(os.path.relpath(folder, root), "empty folder"))
        files += [Path(folder) / name for name in sorted(names)]
    return files


def _discover(root: Path, options: IngestOptions, tally: _Tally) -> tuple[str, list]:
    """The resolved source kind and its tasks (series or image groups)."""
    files = _walk(root, tally)
    kind = options.source_kind
    tasks: list[SeriesRef | ImageGroup] = []
    if kind != "slices":
        refs, problems = find_series([f for f in files if not is_slice_image(f)], root)
        for problem in problems:
            tally.warn(problem)
        if kind == "auto":
            kind = "lidc" if refs and _known_to_pylidc(refs) else "dicom" if refs else "slices"
        tasks = refs
    if kind == "slices":
        tasks, problems = group_slice_images(root, files)
        for problem in problems:
            tally.warn(problem)
        if set(options.views) != {"axial"}:
            tally.warn(SeriesProblem(options.source, "slice images have no volume to cut other views from; "
                                                     "they are stored as axial"))
    if options.max_series:
        tasks = tasks[: options.max_series]
    return kind, tasks


def _known_to_pylidc(refs: list[SeriesRef]) -> bool:
    from ctsynth.data.masks import known_series

    return bool(known_series(r.series_uid for r in refs))


# --- processing --------------------------------------------------------------------


def _process(tasks: list, settings: Settings, parameters: dict, tally: _Tally, candidates_path: Path,
             volumes_path: Path | None, workers: int | None) -> None:
    """Run every task and append its results; the writers hold one result at a time."""
    options = settings.options
    with slice_writer(candidates_path, options.slice_size, parameters) as slices, \
            (volume_writer(volumes_path, options.volume_size, parameters) if volumes_path
             else nullcontext()) as volumes:
        for done, output in enumerate(_outputs(tasks, settings, tally.reporter, workers), 1):
            for problem in output.problems:
                tally.warn(problem)
            slices.append_encoded(output.meta, images=output.images, masks=output.masks)
            tally.filtered += output.filtered
            tally.nodules.append(output.nodules)
            if volumes is not None and output.volume is not None:
                volumes.append_encoded(output.volume_meta, volumes=[output.volume], masks=[output.volume_mask])
            if output.nifti:
                tally.nifti[Path(output.nifti).name] = Path(output.nifti)
            if len(output.meta) or output.volume is not None:
                tally.series += 1
            tally.reporter.progress("series", done, len(tasks), "series")
        # Pickling drops h5py's string metadata from the workers' dtypes: restore it.
        nodules = np.concatenate([np.zeros(0, NODULE_META), *tally.nodules]).astype(NODULE_META)
        slices.write_table("nodules", nodules)


def _outputs(tasks: list, settings: Settings, reporter: Reporter, workers: int | None) -> Iterator[SeriesOutput]:
    """Results in task order; at most 2 x workers tasks in flight."""
    workers = min(workers or os.cpu_count() or 1, len(tasks))
    if workers <= 1:
        for task in tasks:
            reporter.check_cancelled()
            yield process_task(task, settings)
        return
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=_worker_context(), initializer=_init_worker,
                               initargs=(os.getpid(),))
    try:
        queued = iter(tasks)
        pending = deque(pool.submit(process_task, t, settings) for t in _take(queued, 2 * workers))
        while pending:
            reporter.check_cancelled()
            output = pending.popleft().result()
            pending.extend(pool.submit(process_task, t, settings) for t in _take(queued, 1))
            yield output
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _take(iterator: Iterator, n: int) -> list:
    return [item for _, item in zip(range(n), iterator)]


def _worker_context():
    """Fresh worker processes that start fast.

    Workers never fork this process (its pylidc SQLite connection and torch
    threads must not be shared). Where available a fork server, started once
    per process with the heavy modules imported, forks them instead of each
    importing torch and pylidc again.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["ctsynth.ingest.series", "ctsynth.data.masks", *PYLIDC_DEPENDENCIES])
    return context


def _init_worker(parent: int) -> None:
    """One thread per worker process (the pool is the parallelism), and exit when `parent` does."""
    import torch

    torch.set_num_threads(1)
    threading.Thread(target=_exit_with, args=(parent,), name="exit-with-parent", daemon=True).start()


def _exit_with(pid: int) -> None:
    """Wait until process `pid` ends, then end this one.

    A killed parent runs no clean-up, and a worker would wait on its task
    queue forever; while it lives, so do the fork server and the resource
    tracker, which wait for their last client. The worker's own parent is the
    fork server, so a parent-death signal would not fire: the worker watches
    the pool's owner through a pidfd, which becomes readable when it ends
    (polled where there are no pidfds, outside Linux).
    """
    if hasattr(os, "pidfd_open"):
        try:
            select.select([os.pidfd_open(pid)], [], [])
        except ProcessLookupError:
            pass  # already gone
    else:
        while pid_alive(pid):
            time.sleep(1.0)
    os._exit(1)


# --- selection and writing ----------------------------------------------------------


def _select_rows(candidates: np.ndarray, split_of: dict[str, str], options: IngestOptions) -> dict[str, np.ndarray]:
    """Candidate rows kept per split, in candidate order, balanced per (split, view) if asked."""
    splits = np.array([split_of[p] for p in candidates["patient"]], dtype=str)
    selected = {}
    for s, split in enumerate(pp.SPLITS):
        groups = []
        for v, view in enumerate(pp.VIEWS):
            rows = np.flatnonzero((splits == split) & (candidates["view"] == view))
            if options.balance:
                rows = rows[pp.balance(candidates["has_nodule"][rows], np.random.default_rng([options.seed, s, v]))]
            groups.append(rows)
        selected[split] = np.sort(np.concatenate(groups))
    return selected


def _write_slices(candidates_path: Path, path: Path, rows: dict[str, np.ndarray], parameters: dict,
                  size: int, tally: _Tally) -> None:
    """Copy the selected candidate rows into the final file, grouped by split."""
    total = sum(len(r) for r in rows.values())
    done = 0
    with h5py.File(candidates_path, "r") as source, slice_writer(path, size, parameters) as out:
        for split in pp.SPLITS:
            for start in range(0, len(rows[split]), COPY_BATCH):
                tally.reporter.check_cancelled()
                batch = rows[split][start : start + COPY_BATCH]
                meta = _read_rows(source["meta"], batch)
                meta["split"] = split
                out.append_encoded(meta, **{name: [read_chunk(source[name], row) for row in batch]
                                            for name in ("images", "masks")})
                done += len(batch)
                tally.reporter.progress("writing", done, total, "slices")
        out.write_table("nodules", source["nodules"][()])


def _read_rows(dataset: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    """dataset[rows] for sorted rows, read as contiguous runs (h5py's point selection is slow)."""
    runs = np.split(rows, np.flatnonzero(np.diff(rows) != 1) + 1)
    return np.concatenate([dataset[run[0] : run[-1] + 1] for run in runs if len(run)])


def _assign_volume_splits(path: Path, split_of: dict[str, str]) -> None:
    with h5py.File(path, "r+") as f:
        meta = f["meta"][()]
        meta["split"] = [split_of[p.decode() if isinstance(p, bytes) else p] for p in meta["patient"]]
        f["meta"][...] = meta


# --- manifest ------------------------------------------------------------------------


def _manifest(options: IngestOptions, kind: str, version: str, slices_path: Path, volumes_path: Path | None,
              tally: _Tally) -> dict:
    slices = read_table(slices_path)
    volumes = read_table(volumes_path) if volumes_path else np.zeros(0, [("patient", "U1"), ("split", "U1")])
    patients = {split: sorted({*slices["patient"][slices["split"] == split],
                               *volumes["patient"][volumes["split"] == split]}) for split in pp.SPLITS}
    splits = {
        split: {
            "patients": len(patients[split]),
            "slices": int(np.sum(slices["split"] == split)),
            "tumor_slices": int(np.sum((slices["split"] == split) & slices["has_nodule"])),
            "volumes": int(np.sum(volumes["split"] == split)),
        }
        for split in pp.SPLITS
    }
    return {
        "name": options.dataset,
        "version": version,
        "created": datetime.now(timezone.utc).isoformat(),
        "source": options.source,
        "source_kind": kind,
        "ctsynth_version": ctsynth.__version__,
        "parameters": options.to_json(),
        "counts": {
            "patients": sum(len(p) for p in patients.values()),
            "series": tally.series,
            "slices": len(slices),
            "tumor_slices": int(slices["has_nodule"].sum()),
            "volumes": len(volumes),
            "filtered_low_intensity": tally.filtered,
        },
        "splits": splits,
        "patients": patients,
        "slice_shape": [options.slice_size, options.slice_size],
        "volume_shape": [options.volume_size] * 3 if volumes_path else None,
        "warnings": tally.warnings,
    }


def _nothing_usable(source: str, warnings: list[dict]) -> str:
    """The most common reasons with their counts; files and folders are named in the job's warnings
    only, so the error never reads as a listing of the source."""
    if not warnings:
        return f"nothing usable in {source}: no DICOM series or slice images found"
    reasons = Counter(w["reason"] for w in warnings).most_common()
    quoted = "; ".join(f"{reason} ({count}x)" for reason, count in reasons[:SUMMARY_REASONS])
    more = f"; and {len(reasons) - SUMMARY_REASONS} other kinds of problem" if len(reasons) > SUMMARY_REASONS else ""
    return f"nothing usable in {source}: {quoted}{more} (the job's warnings name each file)"
