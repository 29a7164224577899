"""The dataset format: `slices.h5` and `volumes.h5`, written streaming, read by torch.

slices.h5
    images  (N, H, W) float16 in [0, 1], one slice per chunk, compressed
    masks   (N, H, W) uint8 0/1, one slice per chunk, compressed
    meta    (N,) compound, SLICE_META: where each slice comes from and its labels
    nodules (K,) compound, NODULE_META: per-nodule metadata (LIDC only)
volumes.h5
    volumes (M, D, H, W) float16 in [0, 1], one volume per chunk
    masks   (M, D, H, W) uint8 0/1
    meta    (M,) compound, VOLUME_META
Both files carry the attributes `parameters` (JSON of every preprocessing
parameter) and `ctsynth_version`. One slice per chunk makes a random read cost
one chunk, which is what a shuffling DataLoader does.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import platformdirs
import torch
from torch.utils.data import Dataset

import ctsynth
from ctsynth.storage import IntegrityError, ObjectNotFound, ObjectStore

from .preprocess import SPLITS, VIEWS

STRING = h5py.string_dtype()
SLICE_META = np.dtype([
    ("patient", STRING), ("series_uid", STRING), ("view", STRING), ("index", np.int32),
    ("z_mm", np.float32),  # ImagePositionPatient z of an axial slice; NaN for other views and images
    ("pixel_mm", np.float32),  # pixel size of the stored (square-pixel) slice; NaN where the source has none
    ("has_nodule", np.bool_), ("nodule_pixels", np.int32),
    ("max_malignancy", np.uint8),  # highest malignancy of a nodule on the slice, 0 = none
    ("mean_intensity", np.float32), ("split", STRING),
])
VOLUME_META = np.dtype([
    ("patient", STRING), ("series_uid", STRING),
    ("spacing_mm", np.float32, (3,)),  # voxel size of the stored cube (z, y, x)
    ("source_spacing_mm", np.float32, (3,)),  # voxel size of the series it came from
    ("split", STRING),
])
NODULE_META = np.dtype([
    ("patient", STRING), ("series_uid", STRING), ("nodule", np.int32), ("readers", np.int32),
    ("malignancy_median", np.float32), ("malignancy_max", np.uint8), ("texture_median", np.float32),
    ("diameter_mm", np.float32), ("centroid_z_mm", np.float32),
])
META_CHUNK = 4096
DEFLATE_LEVEL = 1  # most of gzip's size gain at a fraction of level 4's cost
VERSION_RE = re.compile(r"[0-9]+")


def encode_chunk(item: np.ndarray) -> bytes:
    """One item as its stored HDF5 chunk: HDF5's shuffle filter, then deflate.

    Workers call this so compression runs in parallel, and the process that
    owns the file only writes bytes (`StackWriter.append_encoded`). It must
    match the filters StackWriter declares (shuffle=True, gzip DEFLATE_LEVEL).
    """
    item = np.ascontiguousarray(item)
    return zlib.compress(item.view(np.uint8).reshape(-1, item.itemsize).T.tobytes(), DEFLATE_LEVEL)


def encode_rows(items: np.ndarray) -> list[bytes]:
    return [encode_chunk(item) for item in items]


def read_chunk(dataset: h5py.Dataset, row: int) -> bytes:
    """Row `row` of a one-item-per-chunk dataset as stored (compressed) bytes."""
    return dataset.id.read_direct_chunk((row,) + (0,) * (dataset.ndim - 1))[1]


class StackWriter:
    """Appends batches of same-shaped arrays and their meta rows to an HDF5 file.

    Datasets are resizable and chunked one item per chunk, so a writer holds
    one batch at a time however large the file grows. Items are written as
    ready-made compressed chunks, so copying rows between files written this
    way (`read_chunk` -> `append_encoded`) never recompresses.
    """

    def __init__(self, path: str | os.PathLike, arrays: Mapping[str, tuple[tuple[int, ...], np.dtype]],
                 meta_dtype: np.dtype, attrs: Mapping[str, str]):
        self._file = h5py.File(path, "w")
        self._arrays = {
            name: self._file.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), chunks=(1, *shape),
                                            dtype=dtype, compression="gzip", compression_opts=DEFLATE_LEVEL,
                                            shuffle=True)
            for name, (shape, dtype) in arrays.items()
        }
        self._meta = self._file.create_dataset("meta", shape=(0,), maxshape=(None,), chunks=(META_CHUNK,),
                                               dtype=meta_dtype, compression="gzip")
        self._file.attrs.update(attrs)

    @property
    def rows(self) -> int:
        return self._meta.shape[0]

    def append(self, meta: np.ndarray, **arrays: np.ndarray) -> None:
        """Append arrays of items (n, *item_shape), compressing them here."""
        self._check_names(arrays)
        for name, values in arrays.items():
            if values.shape[1:] != self._arrays[name].shape[1:]:
                raise ValueError(f"{name} items are {values.shape[1:]}, the file holds {self._arrays[name].shape[1:]}")
        self.append_encoded(meta, **{name: encode_rows(values.astype(self._arrays[name].dtype, copy=False))
                                     for name, values in arrays.items()})

    def append_encoded(self, meta: np.ndarray, **chunks: Sequence[bytes]) -> None:
        """Append items already encoded with `encode_chunk` (or read with `read_chunk`)."""
        self._check_names(chunks)
        if any(len(c) != len(meta) for c in chunks.values()):
            raise ValueError("every array needs one item per meta row")
        start, stop = self.rows, self.rows + len(meta)
        for name, items in chunks.items():
            dataset = self._arrays[name]
            dataset.resize(stop, axis=0)
            origin = (0,) * (dataset.ndim - 1)
            for row, chunk in enumerate(items, start):
                dataset.id.write_direct_chunk((row, *origin), chunk)
        self._meta.resize((stop,))
        self._meta[start:stop] = meta.astype(self._meta.dtype)  # restores text fields lost in pickling

    def _check_names(self, given) -> None:
        if set(given) != set(self._arrays):
            raise ValueError(f"append needs exactly {sorted(self._arrays)}, got {sorted(given)}")

    def write_table(self, name: str, rows: np.ndarray) -> None:
        """A small whole table beside the stacks (e.g. nodules)."""
        self._file.create_dataset(name, data=rows, compression="gzip")

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> StackWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def file_attrs(parameters: Mapping) -> dict[str, str]:
    return {"parameters": json.dumps(parameters, sort_keys=True), "ctsynth_version": ctsynth.__version__}


def slice_writer(path: str | os.PathLike, size: int, parameters: Mapping) -> StackWriter:
    return StackWriter(path, {"images": ((size, size), np.float16), "masks": ((size, size), np.uint8)},
                       SLICE_META, file_attrs(parameters))


def volume_writer(path: str | os.PathLike, size: int, parameters: Mapping) -> StackWriter:
    shape = (size, size, size)
    return StackWriter(path, {"volumes": (shape, np.float16), "masks": (shape, np.uint8)},
                       VOLUME_META, file_attrs(parameters))


def read_table(path: str | os.PathLike, name: str = "meta") -> np.ndarray:
    """A compound table with its text fields as numpy str (so `meta["split"] == "train"` works)."""
    with h5py.File(path, "r") as f:
        return decode_strings(f[name][()])


def decode_strings(table: np.ndarray) -> np.ndarray:
    """Copy of a structured array with HDF5 variable-length text fields as fixed-width str."""
    columns = {
        name: _text(table[name]) if table.dtype.fields[name][0] == object else table[name]
        for name in table.dtype.names
    }
    out = np.empty(len(table), dtype=[(name, c.dtype, c.shape[1:]) for name, c in columns.items()])
    for name, column in columns.items():
        out[name] = column
    return out


def _text(values: np.ndarray) -> np.ndarray:
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values], dtype=str)


# --- reading -------------------------------------------------------------------


class _H5Rows(Dataset):
    """Rows of one HDF5 file selected through its meta table.

    The file is opened on first access in each process and never pickled, so
    DataLoader workers (fork or spawn) each get their own handle.
    """

    def __init__(self, path: str | os.PathLike, keep: np.ndarray, meta: np.ndarray):
        self.path = Path(path)
        self.rows = np.flatnonzero(keep)
        self.meta = meta[self.rows]
        self._file: h5py.File | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def _h5(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def _spacing_mm(self, name: str, field: str, shape: Sequence[int]) -> tuple[float, ...] | None:
        """Median voxel size (mm, per spatial axis) of the selected items once
        resized from their stored grid to `shape`, as training resizes them;
        None where the file records none (image folders, older datasets)."""
        if field not in self.meta.dtype.names or not len(self.meta):
            return None
        values = self.meta[field].reshape(len(self.meta), -1).astype(np.float64)
        known = values[np.isfinite(values).all(axis=1) & (values > 0).all(axis=1)]
        if not len(known):
            return None
        stored = self._h5()[name].shape[1:]
        median = np.broadcast_to(np.median(known, axis=0), (len(stored),))
        return tuple(float(s * n / m) for s, n, m in zip(median, stored, shape, strict=True))

    def _read(self, name: str, i: int) -> torch.Tensor:
        """Item `i` of dataset `name` as a float32 tensor with a channel axis."""
        return torch.from_numpy(self._h5()[name][self.rows[i]].astype(np.float32))[None]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None, "_pid": None}


def _selected(meta: np.ndarray, field: str, value: str | None, allowed: tuple[str, ...]) -> np.ndarray:
    if value is None:
        return np.ones(len(meta), dtype=bool)
    if value not in allowed:
        raise ValueError(f"unknown {field} {value!r}; use one of {allowed}")
    return meta[field] == value


@dataclass(frozen=True)
class Layout:
    """Where the items of one dimensionality live in a dataset version: its
    file, the HDF5 array of its images, its manifest keys and the meta field
    with its voxel size. Callers look names up here instead of branching on
    the number of dimensions."""

    spatial_dims: int
    file: str  # the dataset file in the version's manifest
    images: str  # HDF5 array of the images (its masks are always "masks")
    count: str  # per-split count key in the manifest
    shape: str  # manifest key of the stored item shape
    spacing: str  # meta field with the stored voxel size

    def item_shape(self, manifest: Mapping) -> list[int] | None:
        """The stored (spatial) shape of an item, as the manifest records it."""
        return manifest.get(self.shape)

    def items(self, manifest: Mapping, split: str | None = None) -> int:
        """Items of one split (None: every split) as the manifest counts them."""
        splits = manifest.get("splits", {})
        if split is None:
            return sum(s.get(self.count, 0) for s in splits.values())
        return splits.get(split, {}).get(self.count, 0)


LAYOUTS = {
    2: Layout(2, "slices.h5", "images", "slices", "slice_shape", "pixel_mm"),
    3: Layout(3, "volumes.h5", "volumes", "volumes", "volume_shape", "spacing_mm"),
}


def layout(spatial_dims: int) -> Layout:
    if spatial_dims not in LAYOUTS:
        raise ValueError(f"spatial_dims {spatial_dims}; datasets hold 2 (slices) or 3 (volumes)")
    return LAYOUTS[spatial_dims]


class StackDataset(_H5Rows):
    """The items of a slices.h5 (2D) or volumes.h5 (3D), optionally one split
    (and, for slices, one view), through one interface for every family.

    Items are dicts: "image" (1, *spatial) float32 in [0, 1]; "mask" likewise,
    0/1, when `with_mask`; "label" int64 (1 = a nodule is present: a slice's
    flag, any mask voxel of a volume) when `condition`.
    """

    def __init__(self, path: str | os.PathLike, spatial_dims: int, split: str | None = None,
                 view: str | None = None, with_mask: bool = False, condition: bool = False):
        self.layout = layout(spatial_dims)
        meta = read_table(path)
        keep = _selected(meta, "split", split, SPLITS)
        if view is not None:
            if spatial_dims != 2:
                raise ValueError("views are planes of 2D slices; volumes have none")
            keep &= _selected(meta, "view", view, VIEWS)
        super().__init__(path, keep, meta)
        self.with_mask = with_mask
        self.condition = condition

    @property
    def spatial_dims(self) -> int:
        return self.layout.spatial_dims

    def spacing_mm(self, shape: Sequence[int]) -> tuple[float, ...] | None:
        """Voxel size in mm per spatial axis ([z,] row, col) of these items resized to `shape`."""
        return self._spacing_mm(self.layout.images, self.layout.spacing, shape)

    def _label(self, i: int, mask: torch.Tensor | None) -> torch.Tensor:
        if "has_nodule" in self.meta.dtype.names:
            present = bool(self.meta["has_nodule"][i])
        else:
            present = bool((mask if mask is not None else self._read("masks", i)).any())
        return torch.tensor(int(present), dtype=torch.int64)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {"image": self._read(self.layout.images, i)}
        if self.with_mask:
            item["mask"] = self._read("masks", i)
        if self.condition:
            item["label"] = self._label(i, item.get("mask"))
        return item


def open_stack(store: ObjectStore, dataset: str, spatial_dims: int, split: str | None = None, *,
               with_mask: bool = False, condition: bool = False) -> tuple[StackDataset, dict]:
    """The `spatial_dims` items of dataset "name:version" (a verified local
    copy, see `open_dataset`) and its manifest."""
    name, version = dataset.split(":")
    path, manifest = open_dataset(store, name, version, file=layout(spatial_dims).file)
    return StackDataset(path, spatial_dims, split=split, with_mask=with_mask, condition=condition), manifest


# --- published datasets -----------------------------------------------------------


def latest_version(store: ObjectStore, name: str) -> str:
    """Highest integer version of dataset `name` that has a manifest."""
    prefix = f"datasets/{name}/"
    versions = [
        int(parts[0]) for parts in (info.key[len(prefix):].split("/") for info in store.list(prefix))
        if len(parts) == 2 and parts[1] == "manifest.json" and VERSION_RE.fullmatch(parts[0])
    ]
    if not versions:
        raise ObjectNotFound(prefix, f"no published version of dataset {name!r} in {store.uri}")
    return str(max(versions))


def open_dataset(store: ObjectStore, name: str, version: str | None = None, *, file: str = "slices.h5",
                 cache_dir: str | os.PathLike | None = None) -> tuple[Path, dict]:
    """A local, verified copy of `file` from datasets/<name>/<version>, and the manifest.

    Copies are cached under their sha256 (default: the user cache dir), so a
    dataset is downloaded once per machine however often training opens it;
    a copy enters the cache only after its hash matched the manifest.
    """
    version = latest_version(store, name) if version is None else str(version)
    prefix = f"datasets/{name}/{version}"
    manifest = store.read_manifest(prefix)
    entry = manifest["files"].get(file)
    if entry is None:
        raise ObjectNotFound(f"{prefix}/{file}", f"{file} is not part of dataset {name} version {version}")
    cache = Path(cache_dir) if cache_dir else Path(platformdirs.user_cache_dir("ctsynth")) / "datasets"
    local = cache / f"{entry['sha256']}{Path(file).suffix}"
    if not local.exists():
        partial = store.get_file(f"{prefix}/{file}", cache / f".{entry['sha256']}.download")
        actual = _sha256(partial)
        if actual != entry["sha256"]:
            partial.unlink()
            raise IntegrityError(f"{prefix}/{file}", entry["sha256"], actual)
        os.replace(partial, local)
    return local, manifest


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
