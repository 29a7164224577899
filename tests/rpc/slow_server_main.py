"""A service process for the SIGTERM test: the scripted servicer behind the
real bootstrap and signal handling. Prints its port, then serves."""

import sys

from ctsynth.config import ServerSettings
from ctsynth.rpc.server import build_server, serve_until_signalled
from tests.rpc.servicers import SCRIPTED

if __name__ == "__main__":
    settings = ServerSettings(store_uri=sys.argv[1], port=0, grace_seconds=10.0)
    host = build_server([SCRIPTED], settings)
    print(f"port {host.port}", flush=True)
    serve_until_signalled(host)
