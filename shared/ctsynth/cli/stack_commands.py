"""`ctsynth up` and `ctsynth down`: the local stack of service processes."""

from __future__ import annotations

from ctsynth import stack


def add_parser(commands) -> None:
    up = commands.add_parser("up", help="start the four services as local processes")
    up.set_defaults(run=run_up)
    down = commands.add_parser("down", help="stop the local stack")
    down.set_defaults(run=run_down)


def run_up(args) -> int:
    running = stack.up(args.store)
    print(f"ctsynth stack up (store {running.store}); logs in {running.logs}")
    for name, address in running.targets.items():
        print(f"  {name:<11} {address}   metrics http://127.0.0.1:{running.metrics[name]}/metrics")
    if running.dashboard:
        print(f"  {'ray':<11} dashboard {running.dashboard} (live while a training job runs Ray)")
    print("commands now use it; elsewhere: export CTSYNTH_TARGET=" + running.target)
    return 0


def run_down(args) -> int:
    print("ctsynth stack stopped" if stack.down() else "no local stack is running")
    return 0
