"""A local Ray head in its own process tree, tied to the life of the service.

Ray's `ray.init()` forks its daemons from the calling process; forking a
process full of gRPC threads can abort the child before it execs, which
hangs the caller. So the service starts this module as a fresh process
(`python -m ctsynth.training.ray_head`), which runs `ray start --head
--block` and takes the whole Ray process group down when the service
process that started it goes away, however it went.

Every Ray port binds to loopback: `--node-ip-address=127.0.0.1` alone is not
enough, because on Linux Ray replaces a loopback node address with the
machine's external one and its daemons then listen on every interface.
Ray's single-machine mode (`loopback_env`) keeps the address loopback; the
driver joining the head runs in the same mode (`ray_driver`). Authentication
stays off: nothing outside this machine can reach the ports.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from ctsynth.processes import pid_alive

# Ray's switch between single-machine mode ("0") and a cluster a node may join.
SINGLE_MACHINE = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
# Given SIGTERM, the raylet drains for about 10 s and the GCS server then
# waits for a SIGKILL (measured: 16 s in all). Nothing of ours lives in Ray
# (checkpoints are in the object store), so the group gets a short grace.
STOP_GRACE_S = 2.0


def loopback_env() -> dict[str, str]:
    """The environment of a Ray head (and its workers) that listens on loopback only."""
    # Gloo (DDP on CPU) would otherwise open its pairs on the host name's address.
    return {**os.environ, **SINGLE_MACHINE, "RAY_AUTH_MODE": "disabled", "GLOO_SOCKET_IFNAME": "lo"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client-server-port", type=int, required=True)
    parser.add_argument("--num-cpus", type=int, required=True)
    parser.add_argument("--dashboard-port", type=int, default=0, help="0: no dashboard")
    args = parser.parse_args(argv)
    command = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", f"--port={args.port}",
               f"--num-cpus={args.num_cpus}", "--disable-usage-stats", "--node-ip-address=127.0.0.1",
               # Ray always starts its client server (default port 10001, one per machine).
               f"--ray-client-server-port={args.client_server_port}"]
    if args.dashboard_port:
        command += ["--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={args.dashboard_port}"]
    else:
        command += ["--include-dashboard=false"]
    head = subprocess.Popen(command, start_new_session=True, env=loopback_env())
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    while not stop and head.poll() is None and pid_alive(args.parent_pid):
        time.sleep(0.5)
    if head.poll() is None:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
