"""Ray Train: the one module that talks to Ray.

`fit(spec)` runs `train_worker` on every worker of a `TorchTrainer` (DDP,
gloo on CPU, nccl on GPU) with a `FailureConfig` that restarts a lost worker
group, which then resumes from the last checkpoint in the object store.
Local runs join a Ray head this process starts beside it (`ray_head`,
dashboard on 127.0.0.1);
with CTSYNTH_RAY_ADDRESS the run is submitted through the Ray Jobs API to a
cluster (KubeRay) as `python -m ctsynth.training.ray_driver SPEC_JSON`.

A deterministic failure inside a worker (NaN loss, a dataset without masks)
must not be retried, so workers record it as `error.json` beside the model
and return normally; the caller raises it from there.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time

from ctsynth.errors import ServiceError
from ctsynth.training.loop import WorkerContext, train_worker
from ctsynth.training.ray_head import SINGLE_MACHINE
from ctsynth.training.spec import TrainSpec

log = logging.getLogger("ctsynth.ray")
ERROR = "error.json"
_head_lock = threading.Lock()
_head: subprocess.Popen | None = None
# Ray Train settings for the local head, which the driver hands on to each
# run's controller: one machine cannot be preempted, so no watcher actor
# (one process less per run), and the controller notices a worker group that
# started or finished within 0.2 s instead of 2 s (measured: an empty 1-worker
# run 17.6 s -> 14.5 s on 2 cores). A cluster keeps Ray's defaults.
LOCAL_TRAIN_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ensure_local_ray(timeout: float = 120.0) -> None:
    """Join (starting it once per process) a local Ray head sized to this
    machine; see ctsynth.training.ray_head for why it is its own process."""
    import ray

    global _head
    with _head_lock:
        if ray.is_initialized():
            return
        for name, value in LOCAL_TRAIN_ENV.items():  # before the head starts: its workers inherit them
            os.environ.setdefault(name, value)
        port = _free_port()
        dashboard = os.environ.get("CTSYNTH_RAY_DASHBOARD", "1") != "0"
        # `ctsynth up` chooses the port, so that it can print the URL before Ray starts.
        dashboard_port = (int(os.environ.get("CTSYNTH_RAY_DASHBOARD_PORT") or 0) or _free_port()) if dashboard else 0
        _head = subprocess.Popen(
            [sys.executable, "-m", "ctsynth.training.ray_head", f"--parent-pid={os.getpid()}", f"--port={port}",
             f"--client-server-port={_free_port()}", f"--num-cpus={max(os.cpu_count() or 1, 2)}",
             f"--dashboard-port={dashboard_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        atexit.register(_stop_head)
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        _single_machine()
        deadline = time.monotonic() + timeout
        while True:
            try:
                ray.init(address=f"127.0.0.1:{port}", log_to_driver=False, configure_logging=False)
                break
            except (ConnectionError, RuntimeError) as exc:
                if _head.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the local Ray head did not start: {exc}") from None
                time.sleep(1.0)
        if dashboard:
            log.info("ray dashboard", extra={"url": f"http://127.0.0.1:{dashboard_port}"})


def _single_machine() -> None:
    """Join the loopback head as a loopback node (see ray_head): in cluster
    mode Ray would give this driver the machine's external address."""
    from ray._private import ray_constants

    os.environ.update(SINGLE_MACHINE)
    # Ray reads the switch once, when first imported; this process may have imported it already.
    ray_constants.ENABLE_RAY_CLUSTER = False


def _stop_head() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
    if _head is not None and _head.poll() is None:
        _head.terminate()
        try:
            _head.wait(30)
        except subprocess.TimeoutExpired:
            _head.kill()


def _worker_entry(config: dict) -> None:
    import ray.train
    import torch

    spec = TrainSpec.from_json(config)
    context = ray.train.get_context()
    if spec.gpus_per_worker == 0:
        torch.set_num_threads(max(1, int(spec.cpus_per_worker)))
    worker = WorkerContext(context.get_world_rank(), context.get_world_size(), ray.train.report)
    try:
        train_worker(spec, worker)
    except ServiceError as exc:
        if worker.rank == 0:
            from ctsynth.storage import open_store

            open_store(spec.store_uri).put_json(f"{spec.prefix}/{ERROR}", {
                "code": exc.status, "message": str(exc), "field": exc.field})


def fit(spec: TrainSpec) -> None:
    """Run the spec on the local Ray instance (or the one this process joined)."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ensure_local_ray()
    gpus = spec.gpus_per_worker
    resources = {"CPU": spec.cpus_per_worker, **({"GPU": gpus} if gpus else {})}
    trainer = TorchTrainer(
        _worker_entry,
        train_loop_config=spec.to_json(),
        scaling_config=ScalingConfig(num_workers=spec.workers, use_gpu=gpus > 0, resources_per_worker=resources),
        run_config=RunConfig(
            name=spec.job_id,
            storage_path=os.environ.get("CTSYNTH_RAY_STORAGE") or os.path.join(tempfile.gettempdir(), "ctsynth-ray"),
            failure_config=FailureConfig(max_failures=spec.max_failures),
        ),
    )
    trainer.fit()


def submit_to_cluster(spec: TrainSpec, address: str) -> str:
    """Submit the run through the Ray Jobs API; returns the Ray job id."""
    from ray.job_submission import JobSubmissionClient

    # Credentials are not forwarded: the runtime env shows in the Ray
    # dashboard; cluster pods get them from the chart's Secret.
    client = JobSubmissionClient(address)
    return client.submit_job(
        entrypoint=f"python -m ctsynth.training.ray_driver {shlex.quote(json.dumps(spec.to_json()))}",
        submission_id=f"{spec.job_id}-{spec.version}",
        metadata={"ctsynth_job": spec.job_id, "model": f"{spec.model_name}:{spec.version}"},
    )


def cluster_job_status(address: str, ray_job_id: str) -> str:
    """PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED."""
    from ray.job_submission import JobSubmissionClient

    return str(JobSubmissionClient(address).get_job_status(ray_job_id).value)


if __name__ == "__main__":
    # Entry point of a Ray job on a cluster: join it and fit.
    import ray

    ray.init(address="auto")
    fit(TrainSpec.from_json(json.loads(sys.argv[1])))
