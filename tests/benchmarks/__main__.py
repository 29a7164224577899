"""`make bench`: run every benchmark module and write its results as JSON.

Each `bench_*.py` here has `run() -> dict`; results go to
bench-results/<name>.json. Select some with `python -m tests.benchmarks NAME ...`.
"""

from __future__ import annotations

import importlib
import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
OUT = HERE.parents[1] / "bench-results"


def main(selected: list[str]) -> int:
    names = sorted(p.stem[len("bench_"):] for p in HERE.glob("bench_*.py"))
    names = [n for n in names if not selected or n in selected]
    OUT.mkdir(exist_ok=True)
    for name in names:
        started = time.time()
        result = importlib.import_module(f"tests.benchmarks.bench_{name}").run()
        result = {"benchmark": name, "machine": platform.machine(), "python": platform.python_version(),
                  "seconds": round(time.time() - started, 1), **result}
        path = OUT / f"{name}.json"
        path.write_text(json.dumps(result, indent=2))
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
