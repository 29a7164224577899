"""A typed client of SamplingService: samples as numpy arrays or as files.

    client = SamplingClient(channel)
    for sample in client.sample("dcgan", 16, seed=1):
        sample.array            # (C, H, W) float16 in [0, 1]
    client.save("out/", "ddpm3d:2", 4, format="nifti")

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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from tqdm import tqdm

from ctsynth.proto_enums import CONDITION, OUTPUT_FORMAT, SAMPLER_KIND
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
    mask: np.ndarray | None  # (1, *spatial) uint8 where the model makes masks


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
    mask = np.frombuffer(item.mask, dtype=np.uint8).reshape((1, *shape[1:])) if item.mask else None
    return Sample(item.index, item.seed, CONDITION.name(item.condition), model, format, item.data, shape,
                  decode(format, item.data, shape), mask)


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
    if sample.mask is not None:
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
               batch_size: int = 0, progress: bool = True, timeout: float | None = None) -> Iterator[Sample]:
        """Stream `count` samples of `model` ("name", "name:version"); the
        same arguments give the same pixels. Leaving the loop early cancels
        the call on the server."""
        request = self.request(model, count, seed=seed, condition=condition, sampler=sampler, steps=steps, eta=eta,
                               guidance=guidance, psi=psi, format=format, batch_size=batch_size)
        with tqdm(total=count, unit="item", desc=model, disable=not progress, file=sys.stderr,
                  dynamic_ncols=True) as bar:
            for batch in self._stream(request, timeout):
                for item in batch.items:
                    yield _sample(item, batch.model)
                bar.update(len(batch.items))

    def arrays(self, model: str, count: int, **options) -> np.ndarray:
        """(count, C, *spatial) of a raw or PNG format (default float16)."""
        if OUTPUT_FORMAT.canonical(options.get("format", "float16")) not in (*RAW_DTYPES, "png8", "png16"):
            raise ValueError(f"format {options['format']!r} has no array form; use save()")
        return np.stack([sample.array for sample in self.sample(model, count, **options)])

    def save(self, folder: str | Path, model: str, count: int, **options) -> list[Path]:
        """Write every sample into `folder` (one file, or one folder of slices
        for a DICOM volume, per item; masks as <index>_mask.npy) and an
        index, samples.json, of each item's seed and condition."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written, entries, model_version = [], [], model
        format = OUTPUT_FORMAT.canonical(options.get("format", "float16"))
        for sample in self.sample(model, count, **options):
            name = _write(sample, folder)
            written.append(folder / name)
            entries.append({"index": sample.index, "seed": sample.seed, "condition": sample.condition, "file": name})
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
                format: str = "float16", batch_size: int = 0) -> sampling_pb2.SampleRequest:
        """The SampleRequest for these options; an unknown name is a ValueError
        (InvalidArgument) raised before any call."""
        settings = sampling_pb2.SamplerSettings(kind=SAMPLER_KIND.number(sampler), steps=steps, eta=eta,
                                                guidance_scale=guidance)
        return sampling_pb2.SampleRequest(model=model, count=count, seed=seed, condition=CONDITION.number(condition),
                                          sampler=settings, truncation_psi=psi, format=OUTPUT_FORMAT.number(format),
                                          batch_size=batch_size)

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
