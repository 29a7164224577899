"""FID through the EvaluationService against torch-fidelity's own
`calculate_metrics` on the same images, and the second evaluation against
a real set whose features are cached.

- ratio: seconds for FID on N synthetic vs N real 256² images through our
  service (a stored synthetic dataset, one `StartEvaluation` with
  metrics=["fid"], from the call to the finished job, reading both
  datasets included) over seconds of `calculate_metrics(fid=True)` on the
  same uint8 images already in memory (goal <= 1.0);
- cached_speedup: that first evaluation over a second one against the same
  real split (another request seed, so another job): the real features
  come from the object store (goal >= 2).

The spec's N is 10k; on two CPU cores InceptionV3 featurizes about 6
images/s, so N defaults to 200 (about 3 minutes in all) and
CTSYNTH_BENCH_EVAL_N overrides it. The InceptionV3 weights are random
(the real file cannot be downloaded here); the network, and so the time,
is the same.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
from torch_fidelity import calculate_metrics

from ctsynth.config import ServerSettings
from ctsynth.evaluation.sets import read_split
from ctsynth.evaluation.settings import EvaluationSettings
from ctsynth.metrics.inception import WEIGHTS_FILE, to_uint8_rgb
from ctsynth.rpc.server import ServiceHost, ServiceSpec, build_server
from ctsynth.servicers import SERVICES
from ctsynth.servicers.evaluation import EvaluationServicer
from ctsynth.storage import open_store
from ctsynth.v1 import common_pb2, evaluation_pb2, evaluation_pb2_grpc
from tests.metrics.conftest import random_inception_weights
from tests.metrics.test_inception import Tensors
from tests.training.conftest import publish_dataset

SIZE = 256
COUNT = int(os.environ.get("CTSYNTH_BENCH_EVAL_N", "200"))


def start(store_uri: str, settings: EvaluationSettings) -> ServiceHost:
    server = dataclasses.replace(ServerSettings.from_env(store_uri=store_uri), host="127.0.0.1", port=0,
                                 metrics_port=None, auth_token=None)
    base = SERVICES["evaluation"]
    spec = ServiceSpec(base.name, base.full_name, lambda store, s: EvaluationServicer(store, s, settings),
                       base.register)
    return build_server([spec], server)


def evaluate(stub, seed: int) -> tuple[float, float]:
    """(seconds, FID) of one evaluation, from the call to the finished job."""
    started = time.perf_counter()
    job = stub.StartEvaluation(evaluation_pb2.StartEvaluationRequest(
        synthetic_dataset="synthetic", dataset="real", split="test", metrics=["fid"], seed=seed))
    for _ in stub.WatchJob(common_pb2.WatchJobRequest(job_id=job.id)):
        pass
    seconds = time.perf_counter() - started
    final = stub.GetJob(common_pb2.GetJobRequest(job_id=job.id))
    if final.state != common_pb2.JOB_STATE_SUCCEEDED:
        raise RuntimeError(f"evaluation failed: {final.error.message}")
    fid = stub.GetReport(evaluation_pb2.GetReportRequest(report_id=final.result)).metrics[0]
    if fid.failed:
        raise RuntimeError(fid.error)
    return seconds, fid.value


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = open_store((root / "store").as_uri())
        publish_dataset(store, "real", root / "real", size=SIZE, per_split=COUNT, seed=1)
        publish_dataset(store, "synthetic", root / "synthetic", size=SIZE, per_split=COUNT, seed=2)
        weights = random_inception_weights(root / WEIGHTS_FILE)
        # The synthetic set is read whole (all splits), capped at COUNT items like a real split.
        settings = EvaluationSettings(inception_weights=str(weights), max_real_items=COUNT,
                                      weights_cache=str(root / "weights"))
        real = read_split(store, "real:1", "test", 2, COUNT).images
        synthetic = read_split(store, "synthetic:1", None, 2, COUNT).images

        started = time.perf_counter()
        direct = calculate_metrics(input1=Tensors(to_uint8_rgb(synthetic)), input2=Tensors(to_uint8_rgb(real)),
                                   fid=True, feature_extractor="inception-v3-compat",
                                   feature_extractor_weights_path=str(weights), cuda=False, cache=False,
                                   verbose=False)["frechet_inception_distance"]
        baseline = time.perf_counter() - started

        host = start(store.uri, settings)
        try:
            with grpc.insecure_channel(host.address) as channel:
                stub = evaluation_pb2_grpc.EvaluationServiceStub(channel)
                first, fid = evaluate(stub, seed=0)
                second, fid_again = evaluate(stub, seed=1)
        finally:
            host.stop(0)
        return {
            "images": COUNT, "size": SIZE, "device": "cpu", "threads": os.cpu_count(),
            "torch_fidelity_s": round(baseline, 2), "service_first_s": round(first, 2),
            "service_cached_s": round(second, 2),
            "ratio": round(first / baseline, 3), "ratio_goal": "<= 1.0",
            "cached_speedup": round(first / second, 2), "cached_speedup_goal": ">= 2",
            "fid_service": round(fid, 6), "fid_torch_fidelity": round(direct, 6),
            "fid_relative_difference": float(abs(fid - direct) / abs(direct)),
            "fid_same_on_cached_run": bool(np.isclose(fid, fid_again)),
        }
