"""SamplingService throughput and latency, against baselines in the same run.

- images/s and p50/p99 request latency for 1, 8 and 32 concurrent clients
  (one-image requests), with dynamic batching on and off;
- one streamed request of many images against generating the same images
  in-process with the same code (per-item seeds, fixed-size passes, float16
  encoding): the ratio is what gRPC streaming costs (goal >= 0.9);
- time to the first item for N = 1 and N = 1000;
- the price of fixed-size passes (see `ctsynth.sampling.seeds`): one item
  padded to a full pass against one item in a pass of its own.

A tiny DCGAN is trained for one step here and sampled on the default
device with the default pass size. Server and clients share this process
(and its GIL); clients use one channel each.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np

from ctsynth.config import ServerSettings
from ctsynth.models.checkpoint import load_model
from ctsynth.rpc.server import ServiceHost, ServiceSpec, build_server
from ctsynth.sampling.seeds import item_seed, sample_rows
from ctsynth.sampling.settings import SamplingSettings
from ctsynth.servicers import SERVICES
from ctsynth.servicers.sampling import SamplingServicer
from ctsynth.storage import open_store
from ctsynth.training.loop import WorkerContext, train_worker
from ctsynth.training.spec import TrainSpec
from ctsynth.v1 import sampling_pb2, sampling_pb2_grpc
from tests.training.conftest import publish_dataset

SIZE = 32
CONFIG = {"image_size": SIZE, "latent_dim": 64, "generator_widths": [64, 64, 32], "discriminator_widths": [8, 16]}
SETTINGS = SamplingSettings()
DEVICE, ROWS = SETTINGS.torch_device(), SETTINGS.batch_rows()
CLIENTS = (1, 8, 32)
STREAM_COUNT = 2000


def train_model(root: Path) -> str:
    store = open_store((root / "store").as_uri())
    dataset = publish_dataset(store, "bench", root / "data", size=SIZE)
    train_worker(TrainSpec(job_id="bench", family="dcgan", config=CONFIG, dataset=dataset, model_name="bench",
                           version="1", store_uri=store.uri, steps=1, batch_size=2), WorkerContext())
    return store.uri


def start(store_uri: str, batching: bool) -> ServiceHost:
    settings = dataclasses.replace(ServerSettings.from_env(store_uri=store_uri), host="127.0.0.1", port=0,
                                   metrics_port=None, max_workers=48, auth_token=None)
    sampling = dataclasses.replace(SETTINGS, batching=batching)
    base = SERVICES["sampling"]
    spec = ServiceSpec(base.name, base.full_name, lambda store, s: SamplingServicer(store, s, sampling), base.register)
    return build_server([spec], settings)


def one_request(stub, seed: int) -> float:
    started = time.perf_counter()
    for _ in stub.Sample(sampling_pb2.SampleRequest(model="bench", count=1, seed=seed)):
        pass
    return time.perf_counter() - started


def concurrent_load(address: str, clients: int) -> dict:
    """Every client sends one-image requests back to back."""
    per_client = max(8, 256 // clients)
    channels = [grpc.insecure_channel(address) for _ in range(clients)]
    stubs = [sampling_pb2_grpc.SamplingServiceStub(channel) for channel in channels]
    for stub in stubs:
        one_request(stub, 0)  # connect and warm up

    def client(number: int) -> list[float]:
        return [one_request(stubs[number], number * 1000 + i) for i in range(per_client)]

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = [t for times in pool.map(client, range(clients)) for t in times]
    elapsed = time.perf_counter() - started
    for channel in channels:
        channel.close()
    return {"images_per_s": round(len(latencies) / elapsed, 1),
            "p50_ms": round(1000 * float(np.percentile(latencies, 50)), 2),
            "p99_ms": round(1000 * float(np.percentile(latencies, 99)), 2), "requests": len(latencies)}


def streamed_images_per_s(stub) -> float:
    started = time.perf_counter()
    received = sum(len(batch.items) for batch in stub.Sample(
        sampling_pb2.SampleRequest(model="bench", count=STREAM_COUNT, seed=7)))
    assert received == STREAM_COUNT
    return STREAM_COUNT / (time.perf_counter() - started)


def in_process_images_per_s(store_uri: str) -> float:
    """The same images, the same passes and encoding, without gRPC or threads."""
    family = load_model(open_store(store_uri), "bench:1", DEVICE).family
    started = time.perf_counter()
    for start in range(0, STREAM_COUNT, ROWS):
        seeds = [item_seed(7, i) for i in range(start, min(start + ROWS, STREAM_COUNT))]
        for image in sample_rows(family, seeds, None, {}, ROWS).float().cpu().numpy():
            image.astype("<f2").tobytes()
    return STREAM_COUNT / (time.perf_counter() - started)


def first_item_ms(stub, count: int, repeats: int = 5) -> float:
    times = []
    for seed in range(repeats):
        started = time.perf_counter()
        call = stub.Sample(sampling_pb2.SampleRequest(model="bench", count=count, seed=seed))
        next(call)
        times.append(time.perf_counter() - started)
        call.cancel()
    return round(1000 * statistics.median(times), 2)


def padding_cost(store_uri: str, repeats: int = 20) -> dict:
    family = load_model(open_store(store_uri), "bench:1", DEVICE).family

    def median_ms(rows: int) -> float:
        sample_rows(family, [1], None, {}, rows)
        times = []
        for seed in range(repeats):
            started = time.perf_counter()
            sample_rows(family, [seed], None, {}, rows)
            times.append(time.perf_counter() - started)
        return 1000 * statistics.median(times)

    alone, padded = median_ms(1), median_ms(ROWS)
    return {"one_item_alone_ms": round(alone, 2), f"one_item_padded_to_{ROWS}_ms": round(padded, 2),
            "ratio": round(padded / alone, 2)}


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        store_uri = train_model(Path(tmp))
        result: dict = {"model": f"dcgan {SIZE}x{SIZE}", "device": str(DEVICE), "pass_rows": ROWS}
        for batching in (True, False):
            host = start(store_uri, batching)
            try:
                result[f"batching_{'on' if batching else 'off'}"] = {
                    f"clients_{n}": concurrent_load(host.address, n) for n in CLIENTS}
                if batching:
                    with grpc.insecure_channel(host.address) as channel:
                        stub = sampling_pb2_grpc.SamplingServiceStub(channel)
                        streamed = streamed_images_per_s(stub)
                        result["first_item_ms"] = {"n_1": first_item_ms(stub, 1), "n_1000": first_item_ms(stub, 1000)}
            finally:
                host.stop(0)
        local = in_process_images_per_s(store_uri)
        result["streaming"] = {"count": STREAM_COUNT, "grpc_images_per_s": round(streamed, 1),
                               "in_process_images_per_s": round(local, 1), "ratio": round(streamed / local, 3)}
        result["padding"] = padding_cost(store_uri)
        for clients in CLIENTS:
            on = result["batching_on"][f"clients_{clients}"]["images_per_s"]
            off = result["batching_off"][f"clients_{clients}"]["images_per_s"]
            result.setdefault("batching_speedup", {})[f"clients_{clients}"] = round(on / off, 2)
        return result
