"""LIDC-IDRI through pylidc: the one module that imports pylidc.

pylidc 0.2.3 predates numpy 2 and setuptools 82. It uses `np.int`/`np.float`
(removed from numpy) and `pkg_resources`, and it finds the DICOM files through
`~/.pylidcrc`, which it writes as a template when missing. `import_pylidc`
restores the two aliases, silences the import-time deprecation noise, and
replaces the config-file lookup with the root set here: pylidc then never reads
or writes anything in the home directory.

Thread safety: the DICOM root is process-wide (pylidc looks it up through a
module-level function), and pylidc's SQLAlchemy session is one global,
unsynchronised session. Set the root once before starting threads and query
pylidc from one thread at a time; `dicom_root` swaps the process-wide root, so
two threads using it with different roots see each other's root.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import numpy as np

_dicom_root: Path | None = None


def import_pylidc() -> ModuleType:
    """pylidc, importable under numpy 2 and reading DICOMs from `set_dicom_root`'s root."""
    _restore_numpy_aliases()
    with warnings.catch_warnings():
        # pkg_resources, SQLAlchemy 2.0 and scipy deprecations raised by pylidc's own imports.
        warnings.filterwarnings("ignore", module=r"pylidc(\.|$)")
        import pylidc
    # `pylidc.Scan` is the class; the module of the same name holds the lookup.
    scan_module = importlib.import_module("pylidc.Scan")
    scan_module._get_dicom_file_path_from_config_file = _configured_dicom_root
    return pylidc


def _restore_numpy_aliases() -> None:
    """The two aliases pylidc uses; `np.bool` exists again in numpy 2 and stays untouched."""
    for name, alias in (("int", int), ("float", float)):
        if not hasattr(np, name):
            setattr(np, name, alias)


def _configured_dicom_root() -> str:
    """Stands in for pylidc's `~/.pylidcrc` reader (which also writes that file)."""
    if _dicom_root is None:
        raise RuntimeError("no LIDC-IDRI DICOM root: call ctsynth.data.lidc.set_dicom_root(path) first")
    if not _dicom_root.is_dir():
        raise FileNotFoundError(f"LIDC-IDRI DICOM root {_dicom_root} is not a directory")
    return str(_dicom_root)


def set_dicom_root(path: str | Path) -> None:
    """Make pylidc read DICOMs from `path/<patient_id>/<study_uid>/<series_uid>/*.dcm` (process-wide)."""
    import_pylidc()
    _swap_dicom_root(Path(path))


@contextmanager
def dicom_root(path: str | Path) -> Iterator[Path]:
    """`set_dicom_root` for a block, then the previous root again (not for concurrent threads)."""
    import_pylidc()
    previous = _swap_dicom_root(Path(path))
    try:
        yield Path(path)
    finally:
        _swap_dicom_root(previous)


def _swap_dicom_root(root: Path | None) -> Path | None:
    global _dicom_root
    previous, _dicom_root = _dicom_root, root
    return previous


def annotated_scans(count: int) -> list:
    """The first `count` scans by pylidc id with at least one nodule annotation."""
    pl = import_pylidc()
    annotated = pl.query(pl.Scan).filter(pl.Scan.annotations.any())
    available = annotated.count()
    if not 1 <= count <= available:
        raise ValueError(f"count must be between 1 and {available} (LIDC-IDRI scans with annotations), got {count}")
    return annotated.order_by(pl.Scan.id).limit(count).all()


def scans_for_patients(patient_ids: Iterable[str]) -> list:
    """Every scan of these patients, in the order given, then by pylidc id (some have two)."""
    pl = import_pylidc()
    patient_ids = list(dict.fromkeys(patient_ids))
    scans = pl.query(pl.Scan).filter(pl.Scan.patient_id.in_(patient_ids)).order_by(pl.Scan.id).all()
    found = {scan.patient_id for scan in scans}
    unknown = [pid for pid in patient_ids if pid not in found]
    if unknown:
        raise ValueError(f"unknown LIDC-IDRI patient id(s): {', '.join(unknown)}")
    order = {pid: i for i, pid in enumerate(patient_ids)}
    return sorted(scans, key=lambda scan: order[scan.patient_id])
