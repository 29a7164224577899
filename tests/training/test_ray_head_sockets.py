"""The local Ray stack listens on loopback only (issue 12, item 1).

A child process joins a Ray head the way the training service does, runs a
task, and lists every listening socket of itself and all its descendants
(the head, Ray's daemons, its workers), found by PID.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("psutil")

_PROBE = r"""
import json, os, sys
import psutil
from ctsynth.training.ray_driver import ensure_local_ray
import ray

# The probe imports Ray first, as a service that imported it early would.
ensure_local_ray()

@ray.remote
def worker_pid():
    return os.getpid()

task_pid = ray.get(worker_pid.remote())
me = psutil.Process()
rows = []
for process in [me] + me.children(recursive=True):
    try:
        for connection in process.net_connections(kind="inet"):
            if connection.status == psutil.CONN_LISTEN:
                rows.append({"pid": process.pid, "name": process.name(), "ip": connection.laddr.ip,
                             "port": connection.laddr.port})
    except psutil.NoSuchProcess:
        pass
json.dump({"task_pid": task_pid, "listening": rows}, sys.stdout)
"""


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback


def test_every_ray_port_of_the_local_stack_is_on_loopback():
    env = {**os.environ, "CTSYNTH_RAY_DASHBOARD": "1"}
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    result = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    listening = report["listening"]
    names = {row["name"] for row in listening}
    # The probe saw the stack: the GCS, the raylet, the dashboard and the task's worker all listen.
    assert {"gcs_server", "raylet"} <= names, listening
    assert report["task_pid"] in {row["pid"] for row in listening}, listening
    exposed = [row for row in listening if not _loopback(row["ip"])]
    assert not exposed, f"Ray listens beyond loopback: {exposed}"


@pytest.mark.parametrize("ip, expected", [("127.0.0.1", True), ("::ffff:127.0.0.1", True), ("::1", True),
                                          ("0.0.0.0", False), ("::", False), ("192.0.2.2", False),
                                          ("::ffff:192.0.2.2", False)])
def test_the_loopback_check_tells_wildcards_and_external_addresses_apart(ip, expected):
    assert _loopback(ip) is expected
