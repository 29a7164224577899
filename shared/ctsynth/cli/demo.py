"""`ctsynth demo`: the main job end to end on the embedded default.

Starts the local stack (unless `ctsynth up` already did, or --target points
elsewhere), runs the demo plan through the services' APIs, stops what it
started, and prints where the comparison report is.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ctsynth import stack
from ctsynth.cli.connection import target_of
from ctsynth.demo_pipeline import Demo, big_plan, small_plan
from ctsynth.storage import open_store


def add_parser(commands) -> None:
    parser = commands.add_parser("demo", help="run the whole pipeline on this machine")
    parser.add_argument("--big", action="store_true", help="the bigger configuration, for a GPU machine")
    parser.add_argument("--out", type=Path, default=Path("demo-output"),
                        help="where phantoms, samples and the report go (default ./demo-output)")
    parser.set_defaults(run=run)


def run(args) -> int:
    plan = big_plan() if args.big else small_plan()
    target = target_of(args)
    started = None
    if target is None:
        print("starting the local stack (four service processes, local object store, local Ray)...", file=sys.stderr)
        started = stack.up(args.store)
        target = started.target
    try:
        demo = Demo(plan, target, open_store(args.store), args.out.resolve())
        try:
            report = demo.run()
        finally:
            demo.close()
    finally:
        if started is not None:
            stack.down()
    print(f"demo finished: open {report}")
    return 0
