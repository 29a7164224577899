"""Small published datasets for training tests, built directly in the
dataset format (the ingestion tests cover how real ones are made)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from ctsynth.data.dataset_h5 import SLICE_META, VOLUME_META, slice_writer, volume_writer
from ctsynth.storage import open_store

SPLITS = ("train", "validation", "test")
PIXEL_MM = 0.7  # pixel size of every stored slice
VOXEL_MM = (10.4, 11.0, 11.4, 11.9)  # voxel sizes of each split's four cubes (a chest in a few voxels)


def _blobs(rng: np.random.Generator, count: int, size: int, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """Images of a dark disc (lung) with a bright spot (nodule) on odd items."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, size)] * dims, indexing="ij"))
    radius = np.sqrt((grid ** 2).sum(0))
    images = np.where(radius < 0.8, 0.2, 0.6) + rng.normal(0, 0.02, (count,) + (size,) * dims)
    masks = np.zeros((count,) + (size,) * dims, dtype=np.uint8)
    for i in range(1, count, 2):
        centre = rng.uniform(-0.4, 0.4, dims).reshape((dims,) + (1,) * dims)
        spot = np.sqrt(((grid - centre) ** 2).sum(0)) < 0.15
        images[i][spot] = 0.9
        masks[i][spot] = 1
    return np.clip(images, 0, 1).astype(np.float16), masks


def publish_dataset(store, name: str, tmp: Path, *, size: int = 16, per_split: int = 8, volume_size: int = 8,
                    seed: int = 0, with_nodules: bool = True) -> str:
    """Publish `datasets/<name>/1` with `per_split` slices and 4 volumes per split,
    PIXEL_MM and VOXEL_MM their recorded geometry."""
    rng = np.random.default_rng(seed)
    tmp.mkdir(parents=True, exist_ok=True)
    slices, volumes = tmp / "slices.h5", tmp / "volumes.h5"
    splits = {}
    with slice_writer(slices, size, {"test": True}) as writer:
        for split in SPLITS:
            images, masks = _blobs(rng, per_split, size, 2)
            if not with_nodules:
                masks[:] = 0
            meta = np.zeros(per_split, dtype=SLICE_META)
            meta["patient"] = [f"{split}-{i // 2}" for i in range(per_split)]
            meta["series_uid"], meta["view"], meta["split"] = "1.2.3", "axial", split
            meta["index"], meta["pixel_mm"] = np.arange(per_split), PIXEL_MM
            meta["has_nodule"] = masks.reshape(per_split, -1).any(1)
            meta["nodule_pixels"] = masks.reshape(per_split, -1).sum(1)
            meta["mean_intensity"] = images.reshape(per_split, -1).astype(np.float32).mean(1)
            writer.append(meta, images=images, masks=masks)
            splits[split] = {"patients": per_split // 2, "slices": per_split,
                             "tumor_slices": int(meta["has_nodule"].sum()), "volumes": 4}
    with volume_writer(volumes, volume_size, {"test": True}) as writer:
        for split in SPLITS:
            cubes, masks = _blobs(rng, 4, volume_size, 3)
            meta = np.zeros(4, dtype=VOLUME_META)
            meta["patient"] = [f"{split}-{i}" for i in range(4)]
            meta["series_uid"], meta["split"] = "1.2.3", split
            meta["spacing_mm"] = np.repeat(np.array(VOXEL_MM)[:, None], 3, axis=1)
            writer.append(meta, volumes=cubes, masks=masks)
    manifest = {
        "name": name, "version": "1", "source": "synthetic test data", "source_kind": "test",
        "counts": {"patients": 3 * per_split // 2, "series": 1, "slices": 3 * per_split,
                   "tumor_slices": sum(s["tumor_slices"] for s in splits.values()), "volumes": 12},
        "splits": splits, "slice_shape": [size, size], "volume_shape": [volume_size] * 3, "parameters": {},
    }
    store.publish(f"datasets/{name}/1", {"slices.h5": slices, "volumes.h5": volumes}, manifest)
    return f"{name}:1"


@contextmanager
def hosted_training_service(root: Path) -> Iterator[tuple]:
    """A TrainingService behind a real gRPC server in this process, with a file
    store under `root` holding the `tiny` dataset; yields (stub, store)."""
    from ctsynth.client import open_channel
    from ctsynth.config import ServerSettings
    from ctsynth.servicers import host_services
    from ctsynth.v1 import training_pb2_grpc

    settings = ServerSettings(store_uri=(root / "store").as_uri(), port=0, grace_seconds=1.0)
    host = host_services(["training"], settings)
    try:
        store = host.servicers["training"]._store
        publish_dataset(store, "tiny", root / "tiny")
        channel = open_channel(host.address)
        try:
            yield training_pb2_grpc.TrainingServiceStub(channel), store
        finally:
            channel.close()
    finally:
        host.stop(0)


def request(family="dcgan", dataset="tiny", steps=4, **fields):
    """A SubmitTrainingRequest: a few steps on the tiny dataset, batch size 2."""
    from google.protobuf import struct_pb2

    from ctsynth.v1 import training_pb2

    hyper = struct_pb2.Struct()
    hyper.update(fields.pop("hyperparameters", {}))
    fields.setdefault("batch_size", 2)
    return training_pb2.SubmitTrainingRequest(
        family=family, dataset=dataset, budget=training_pb2.Budget(steps=steps), hyperparameters=hyper, **fields)


def run_to_end(stub, job, timeout: float = 300):
    """Watch a job to its end; returns (the final Job, every event)."""
    from ctsynth.v1 import common_pb2

    events = list(stub.WatchJob(common_pb2.WatchJobRequest(job_id=job.id), timeout=timeout))
    return stub.GetJob(common_pb2.GetJobRequest(job_id=job.id)), events


def fit_in_this_process(spec) -> None:
    """Stands in for `ray_driver.fit`: the run's worker function called here,
    its spec passed through JSON as Ray passes it, without the Ray Train
    worker group (about 15 s of actor start-up per run on 2 cores). For tests
    of what the service does around a run, not of Ray Train."""
    import json

    from ctsynth.training.loop import WorkerContext, train_worker
    from ctsynth.training.spec import TrainSpec

    train_worker(TrainSpec.from_json(json.loads(json.dumps(spec.to_json()))), WorkerContext())


def progress_step(store, prefix: str) -> int:
    """The last step the workers recorded in `<prefix>/progress.json`, else 0."""
    key = f"{prefix}/progress.json"
    return store.get_json(key)["step"] if store.exists(key) else 0


@pytest.fixture
def store(tmp_path):
    return open_store((tmp_path / "store").as_uri())


@pytest.fixture
def tiny_dataset(store, tmp_path):
    return publish_dataset(store, "tiny", tmp_path / "tiny")
