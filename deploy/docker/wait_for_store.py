"""Wait until the object store in CTSYNTH_STORE answers, then exit 0.

The init container of every ctsynth pod runs this, so a service starts once
MinIO (or the external S3 endpoint) is reachable and its bucket exists (or may
be created: CTSYNTH_S3_CREATE_BUCKET), instead of crash-looping while the
store comes up. It opens the store exactly as the service will, with the same
CTSYNTH_S3_* variables, and prints one line per failed attempt.

    python /app/bin/wait_for_store.py --timeout 300
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def wait(uri: str, timeout: float, interval: float, env=None) -> bool:
    """True once open_store(uri) succeeds; False when `timeout` seconds pass."""
    from ctsynth.storage import open_store

    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        attempt += 1
        try:
            open_store(uri, env=env)
            print(f"store {uri} is ready (attempt {attempt})", flush=True)
            return True
        except ValueError as exc:  # misconfiguration: waiting cannot fix it
            print(f"store {uri}: {exc}", file=sys.stderr, flush=True)
            return False
        except Exception as exc:  # noqa: BLE001 - every other failure is retried until the deadline
            remaining = deadline - time.monotonic()
            print(f"store {uri} not ready (attempt {attempt}): {exc}", file=sys.stderr, flush=True)
            if remaining <= 0:
                return False
            time.sleep(min(interval, max(remaining, 0.0)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=os.environ.get("CTSYNTH_STORE", ""), help="default: CTSYNTH_STORE")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds before giving up (exit 1)")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between attempts")
    args = parser.parse_args(argv)
    if not args.store:
        print("wait_for_store: set CTSYNTH_STORE or --store", file=sys.stderr)
        return 2
    return 0 if wait(args.store, args.timeout, args.interval) else 1


if __name__ == "__main__":
    sys.exit(main())
