"""A typed client of SamplingService: samples as numpy arrays or as files.

    client = SamplingClient(channel)
    for sample in client.sample("dcgan", 16, seed=1):
        sample.array            # (C, H, W) float16 in [0, 1]
    client.save("out/", "ddpm3d:2", 4, format="nifti")
    client.save("out/", "ddpm3d-mask", 4, nodules=[{"centre": [60, 70, 40], "diameter_mm": 12}])

A volume the server streams in z-slabs (SampleItem.depth > 0) is joined
back here, checked slab by slab, so callers only ever see whole items.

The initial call is retried with exponential backoff while the service (or
its object store) is UNAVAILABLE; once items flow, an error is raised as is,
since retrying would repeat items already delivered.
"""

from __future__ import annotations

import io
import json
import sys
import time
import zipfile
import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from tqdm import tqdm

from ctsynth.conditioning.mask_input import decode_mask
from ctsynth.errors import DataLoss, InvalidArgument
from ctsynth.proto_enums import CONDITION, NODULE_UNITS, OUTPUT_FORMAT, SAMPLER_KIND
from ctsynth.v1 import common_pb2, sampling_pb2, sampling_pb2_grpc

RAW_DTYPES = {"float16": "<f2", "hu_int16": "<i2"}


@dataclass(frozen=True)
class Sample:
    """One item as received; `array` is decoded for the raw and PNG formats
    (None for DICOM and NIfTI, which `save` writes as files)."""

    index: int
    seed: int  # a request for one item with this seed (and condition) regenerates it
    condition: str | None  # "tumor", "no-tumor", or None (unconditional model)
    model: str  # "name:version"
    format: str
    data: bytes
    shape: tuple[int, ...]  # (C, *spatial)
    array: np.ndarray | None
    mask: np.ndarray | None  # (1, *spatial) uint8 where the model makes masks or was conditioned on one
    nodules: list[dict] = dataclasses.field(default_factory=list)  # mask-conditioned models: the nodules asked for
    mask_data: bytes = b""  # the mask as encoded in the item's format (for DICOM, a Segmentation object)


def decode(format: str, data: bytes, shape: tuple[int, ...]) -> np.ndarray | None:
    """The (C, *spatial) array of a raw or PNG item; None for file formats."""
    if format in RAW_DTYPES:
        return np.frombuffer(data, dtype=RAW_DTYPES[format]).reshape(shape)
    if format in ("png8", "png16"):
        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(data))).reshape(shape)
    return None


def _sample(item: sampling_pb2.SampleItem, model: str) -> Sample:
    shape = tuple(item.shape)
    format = OUTPUT_FORMAT.name(item.format)
    return Sample(item.index, item.seed, CONDITION.name(item.condition), model, format, item.data, shape,
                  decode(format, item.data, shape), decode_item_mask(format, item.mask, shape),
                  [nodule_json(nodule) for nodule in item.nodules], item.mask)


def decode_item_mask(format: str, data: bytes, shape: tuple[int, ...]) -> np.ndarray | None:
    """An item's mask as (1, *spatial) uint8 0/1: raw bytes, or the PNG or NIfTI
    label the server encoded it as; None without a mask and for DICOM (a SEG file)."""
    if not data or format == "dicom":
        return None
    if format in RAW_DTYPES:
        return np.frombuffer(data, dtype=np.uint8).reshape((1, *shape[1:]))
    return decode_mask(data).reshape((1, *shape[1:]))


def nodule_json(nodule: sampling_pb2.Nodule) -> dict:
    return {"centre": list(nodule.centre), "units": NODULE_UNITS.name(nodule.units),
            "diameter_mm": nodule.diameter_mm, "characteristics": dict(nodule.characteristics)}


def nodule_message(nodule: Mapping[str, Any]) -> sampling_pb2.Nodule:
    """A nodule given as {"centre": [...], "diameter_mm": d[, "units": "voxel" | "mm"][, "characteristics": {...}]}."""
    unknown = set(nodule) - {"centre", "diameter_mm", "units", "characteristics"}
    if unknown or "centre" not in nodule or "diameter_mm" not in nodule:
        raise InvalidArgument("nodules", f"{dict(nodule)!r}: a nodule has centre, diameter_mm and optionally units "
                                         "and characteristics")
    return sampling_pb2.Nodule(centre=nodule["centre"], diameter_mm=nodule["diameter_mm"],
                               units=NODULE_UNITS.number(nodule.get("units")),
                               characteristics=nodule.get("characteristics", {}))


def mask_input(mask: bytes | str | Path | np.ndarray | None, uri: str | None) -> sampling_pb2.MaskInput | None:
    """A mask as the request carries it: bytes as they are, a local file's
    bytes, an array as .npy, or an object of the server's store."""
    if mask is not None and uri is not None:
        raise InvalidArgument("mask", "give the mask or its URI, not both")
    if uri is not None:
        return sampling_pb2.MaskInput(uri=uri)
    if mask is None:
        return None
    if isinstance(mask, np.ndarray):
        buffer = io.BytesIO()
        np.save(buffer, mask)
        return sampling_pb2.MaskInput(data=buffer.getvalue())
    return sampling_pb2.MaskInput(data=mask if isinstance(mask, bytes) else Path(mask).read_bytes())


def whole_items(batches: Iterable[sampling_pb2.SampleBatch]) -> Iterator[tuple[sampling_pb2.SampleItem, str]]:
    """Each item of a stream whole, with its batch's model: a volume's slabs
    joined in z order. Slabs out of order, missing, overlapping or disagreeing
    about their volume are DataLoss, never a wrong volume."""
    slabs: list[sampling_pb2.SampleItem] = []
    for batch in batches:
        for item in batch.items:
            if slabs and item.index != slabs[0].index:
                raise DataLoss(f"item {slabs[0].index}: the stream moved on to item {item.index} after slices "
                               f"0-{_end(slabs) - 1} of {slabs[0].depth}")
            if not item.depth and not slabs:
                yield item, batch.model
                continue
            _check_slab(slabs, item)
            slabs.append(item)
            if _end(slabs) == item.depth:
                yield _joined(slabs), batch.model
                slabs = []
    if slabs:
        raise DataLoss(f"item {slabs[0].index}: the stream ended after slices 0-{_end(slabs) - 1} of {slabs[0].depth}")


def _end(slabs: list[sampling_pb2.SampleItem]) -> int:
    return slabs[-1].z0 + slabs[-1].shape[1] if slabs else 0


def _check_slab(slabs: list[sampling_pb2.SampleItem], item: sampling_pb2.SampleItem) -> None:
    first, end = (slabs or [item])[0], _end(slabs)
    if item.depth != first.depth:
        raise DataLoss(f"item {item.index}: a slab says the volume has {item.depth} slices, an earlier one "
                       f"{first.depth}")
    if item.z0 != end:
        raise DataLoss(f"item {item.index}: a slab starts at slice {item.z0}, the next expected is {end} "
                       "(slabs out of order or missing)")
    if len(item.shape) != 4 or item.shape[1] < 1 or end + item.shape[1] > item.depth:
        raise DataLoss(f"item {item.index}: a slab of shape {list(item.shape)} at slice {item.z0} does not fit a "
                       f"volume of {item.depth} slices")
    if (item.seed, item.format, item.dtype, item.shape[0], item.shape[2:]) != \
            (first.seed, first.format, first.dtype, first.shape[0], first.shape[2:]):
        raise DataLoss(f"item {item.index}: its slabs disagree on seed, format, dtype or slice shape")


def _joined(slabs: list[sampling_pb2.SampleItem]) -> sampling_pb2.SampleItem:
    """The whole item of its slabs: raw arrays joined on z, the DICOM slice
    files in one ZIP, the NIfTI file's bytes in order (as the proto says)."""
    first = slabs[0]
    format = OUTPUT_FORMAT.name(first.format)
    if format in RAW_DTYPES:
        data = np.concatenate([decode(format, slab.data, tuple(slab.shape)) for slab in slabs], axis=1).tobytes()
    elif format == "dicom":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as joined:
            for slab in slabs:
                with zipfile.ZipFile(io.BytesIO(slab.data)) as part:
                    for name in part.namelist():
                        joined.writestr(name, part.read(name))
        data = buffer.getvalue()
    else:
        data = b"".join(slab.data for slab in slabs)
    return sampling_pb2.SampleItem(
        index=first.index, seed=first.seed, condition=first.condition, format=first.format, data=data,
        shape=[first.shape[0], first.depth, *first.shape[2:]], dtype=first.dtype,
        mask=b"".join(slab.mask for slab in slabs))  # one channel: its bytes join on z


def _write(sample: Sample, folder: Path) -> str:
    """Write one sample under `folder`; returns the file (or folder) name."""
    stem = f"{sample.index:06d}"
    if sample.array is not None and sample.format in RAW_DTYPES:
        name = f"{stem}.npy"
        np.save(folder / name, sample.array)
    elif sample.format == "dicom" and len(sample.shape) == 4:
        name = stem  # a volume: one .dcm per slice
        with zipfile.ZipFile(io.BytesIO(sample.data)) as archive:
            archive.extractall(folder / name)
    else:
        name = stem + {"png8": ".png", "png16": ".png", "dicom": ".dcm", "nifti": ".nii"}[sample.format]
        (folder / name).write_bytes(sample.data)
    if sample.mask_data:
        suffix = {"png8": "_mask.png", "png16": "_mask.png", "nifti": "_mask.nii", "dicom": "_seg.dcm"}
        if sample.format in suffix:
            (folder / f"{stem}{suffix[sample.format]}").write_bytes(sample.mask_data)
        else:
            np.save(folder / f"{stem}_mask.npy", sample.mask)
    return name


class SamplingClient:
    def __init__(self, channel: grpc.Channel, *, retries: int = 5, backoff_s: float = 0.2, max_backoff_s: float = 5.0):
        self._stub = sampling_pb2_grpc.SamplingServiceStub(channel)
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s

    def sample(self, model: str, count: int, *, seed: int = 0, condition: str | None = None,
               sampler: str | None = None, steps: int = 0, eta: float | None = None,
               guidance: float | None = None, psi: float | None = None, format: str = "float16",
               batch_size: int = 0, slab_slices: int | None = None, mask=None, mask_uri: str | None = None,
               nodules: Sequence[Mapping[str, Any]] = (), nodule_count: int = 0, progress: bool = True,
               timeout: float | None = None) -> Iterator[Sample]:
        """Stream `count` samples of `model` ("name", "name:version"); the
        same arguments give the same pixels. Leaving the loop early cancels
        the call on the server. Mask-conditioned models take one of `mask`
        (bytes, a file, an array), `mask_uri`, `nodules` or `nodule_count`."""
        request = self.request(model, count, seed=seed, condition=condition, sampler=sampler, steps=steps, eta=eta,
                               guidance=guidance, psi=psi, format=format, batch_size=batch_size,
                               slab_slices=slab_slices, mask=mask, mask_uri=mask_uri, nodules=nodules,
                               nodule_count=nodule_count)
        with tqdm(total=count, unit="item", desc=model, disable=not progress, file=sys.stderr,
                  dynamic_ncols=True) as bar:
            for item, model_version in whole_items(self._stream(request, timeout)):
                yield _sample(item, model_version)
                bar.update(1)

    def arrays(self, model: str, count: int, **options) -> np.ndarray:
        """(count, C, *spatial) of a raw or PNG format (default float16)."""
        if OUTPUT_FORMAT.canonical(options.get("format", "float16")) not in (*RAW_DTYPES, "png8", "png16"):
            raise ValueError(f"format {options['format']!r} has no array form; use save()")
        return np.stack([sample.array for sample in self.sample(model, count, **options)])

    def save(self, folder: str | Path, model: str, count: int, **options) -> list[Path]:
        """Write every sample into `folder` (one file, or one folder of slices
        for a DICOM volume, per item; masks beside them in the same format:
        <index>_mask.npy, _mask.png, _mask.nii, or _seg.dcm, a DICOM SEG) and an
        index, samples.json, of each item's seed and condition."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written, entries, model_version = [], [], model
        format = OUTPUT_FORMAT.canonical(options.get("format", "float16"))
        for sample in self.sample(model, count, **options):
            name = _write(sample, folder)
            written.append(folder / name)
            entry = {"index": sample.index, "seed": sample.seed, "condition": sample.condition, "file": name}
            if sample.nodules:
                entry["nodules"] = sample.nodules
            entries.append(entry)
            model_version = sample.model
        (folder / "samples.json").write_text(json.dumps(
            {"model": model_version, "format": format, "items": entries}, indent=1))
        return written

    def list_models(self, family: str = "", name: str = "") -> list[common_pb2.Model]:
        return list(self._stub.ListModels(common_pb2.ListModelsRequest(family=family, name=name)).models)

    def get_model(self, model: str) -> common_pb2.Model:
        return self._stub.GetModel(common_pb2.GetModelRequest(model=model))

    @staticmethod
    def request(model: str, count: int, *, seed: int = 0, condition: str | None = None, sampler: str | None = None,
                steps: int = 0, eta: float | None = None, guidance: float | None = None, psi: float | None = None,
                format: str = "float16", batch_size: int = 0, slab_slices: int | None = None, mask=None,
                mask_uri: str | None = None, nodules: Sequence[Mapping[str, Any]] = (),
                nodule_count: int = 0) -> sampling_pb2.SampleRequest:
        """The SampleRequest for these options; an unknown name is a ValueError
        (InvalidArgument) raised before any call."""
        settings = sampling_pb2.SamplerSettings(kind=SAMPLER_KIND.number(sampler), steps=steps, eta=eta,
                                                guidance_scale=guidance)
        return sampling_pb2.SampleRequest(model=model, count=count, seed=seed, condition=CONDITION.number(condition),
                                          sampler=settings, truncation_psi=psi, format=OUTPUT_FORMAT.number(format),
                                          batch_size=batch_size, slab_slices=slab_slices,
                                          mask=mask_input(mask, mask_uri),
                                          nodules=[nodule_message(nodule) for nodule in nodules],
                                          nodule_count=nodule_count)

    def _stream(self, request: sampling_pb2.SampleRequest, timeout: float | None) -> Iterator[sampling_pb2.SampleBatch]:
        for attempt in range(self.retries + 1):
            call = self._stub.Sample(request, timeout=timeout)
            try:
                first = next(call)
            except StopIteration:
                return
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == self.retries:
                    raise
                time.sleep(min(self.max_backoff_s, self.backoff_s * 2 ** attempt))
                continue
            try:
                yield first
                yield from call
            finally:
                call.cancel()  # a no-op once the stream has ended
            return
