"""The local stack: the four services as separate processes on loopback,
sharing one object store — what `ctsynth up` starts and `ctsynth down`
stops, and what `make demo` runs on.

Its state (pids, addresses, logs) is a JSON file in the user's data dir, so
any later command finds the running stack.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ctsynth.config import state_dir
from ctsynth.processes import pid_alive
from ctsynth.service_names import SERVICE_NAMES



def default_state_file() -> Path:
    """Where the running stack is recorded: CTSYNTH_STATE_DIR (tests set it)
    or the user's data dir."""
    return state_dir() / "stack.json"


@dataclass(frozen=True)
class Stack:
    store: str
    pids: dict[str, int]
    targets: dict[str, str]  # service -> host:port
    metrics: dict[str, int]  # service -> Prometheus port
    logs: str
    dashboard: str = ""  # the local Ray dashboard's URL ("" when it is off)

    @property
    def target(self) -> str:
        """The `--target` form: `ingest=127.0.0.1:p,training=...`."""
        return ",".join(f"{name}={address}" for name, address in self.targets.items())


def _alive(pid: int) -> bool:
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False  # our own child, now reaped
    except ChildProcessError:
        pass  # not our child: ask the kernel
    return pid_alive(pid)


def current(state_file: Path | None = None) -> Stack | None:
    """The running stack, or None (a stale state file is removed)."""
    state_file = state_file or default_state_file()
    if not state_file.exists():
        return None
    try:
        stack = Stack(**json.loads(state_file.read_text()))
    except (ValueError, TypeError):
        state_file.unlink(missing_ok=True)
        return None
    if all(_alive(pid) for pid in stack.pids.values()):
        return stack
    state_file.unlink(missing_ok=True)
    return None


def _wait_serving(address: str, service: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the {service} service exited with code {process.returncode} while starting")
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise TimeoutError(f"the {service} service at {address} was not serving after {timeout:.0f} s")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def up(store: str, *, state_file: Path | None = None, timeout: float = 120.0, env: dict | None = None) -> Stack:
    """Start every service as its own process (or return the running stack)."""
    state_file = state_file or default_state_file()
    running = current(state_file)
    if running is not None:
        return running
    logs = state_file.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    processes: dict[str, subprocess.Popen] = {}
    targets: dict[str, str] = {}
    metrics: dict[str, int] = {}
    env = {**os.environ, **(env or {})}
    # The training service starts Ray with its first job; the port is fixed
    # now so that `up` and `status` can tell where the dashboard will be.
    dashboard_port = _free_port() if env.get("CTSYNTH_RAY_DASHBOARD", "1") != "0" else 0
    try:
        for name in SERVICE_NAMES:
            log = open(logs / f"{name}.log", "ab")
            processes[name] = subprocess.Popen(
                [sys.executable, "-m", "ctsynth.cli.main", "--store", store, "serve", name,
                 "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"],
                stdout=subprocess.PIPE, stderr=log, text=True,
                env={**env, **({"CTSYNTH_RAY_DASHBOARD_PORT": str(dashboard_port)} if dashboard_port else {})},
                start_new_session=True)
            line = processes[name].stdout.readline()  # "ctsynth serving NAME on HOST:PORT metrics=M"
            if " on " not in line:
                raise RuntimeError(f"the {name} service did not start; see {logs / f'{name}.log'}")
            targets[name] = line.split(" on ")[1].split()[0]
            metrics[name] = int(line.rsplit("metrics=", 1)[1])
        for name, process in processes.items():
            _wait_serving(targets[name], name, process, timeout)
    except BaseException:
        for process in processes.values():
            process.kill()
        raise
    stack = Stack(store=store, pids={n: p.pid for n, p in processes.items()}, targets=targets, metrics=metrics,
                  logs=str(logs), dashboard=f"http://127.0.0.1:{dashboard_port}" if dashboard_port else "")
    state_file.write_text(json.dumps(asdict(stack), indent=2))
    return stack


def down(state_file: Path | None = None, grace: float = 30.0) -> bool:
    """SIGTERM every service of the stack (SIGKILL after `grace`); False if none ran."""
    state_file = state_file or default_state_file()
    stack = current(state_file)
    if stack is None:
        return False
    for pid in stack.pids.values():
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(_alive(pid) for pid in stack.pids.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in stack.pids.values():
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
    state_file.unlink(missing_ok=True)
    return True
