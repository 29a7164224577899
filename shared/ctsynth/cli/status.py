"""`ctsynth status`: the health of every service at the target."""

from __future__ import annotations

from ctsynth import stack
from ctsynth.cli.connection import open_services, target_of
from ctsynth.client.health import service_health
from ctsynth.service_names import SERVICE_NAMES


def add_parser(commands) -> None:
    parser = commands.add_parser("status", help="show whether each service is serving")
    parser.set_defaults(run=run)


def health_of_all(args) -> dict[str, str]:
    """Every service's health, whether they share one address or not."""
    target = target_of(args)
    if target and "=" in target:
        health = {}
        for name in SERVICE_NAMES:
            with open_services(args, [name]) as channel:
                health.update(service_health(channel, [name]))
        return health
    with open_services(args, SERVICE_NAMES) as channel:
        return service_health(channel)


def run(args) -> int:
    health = health_of_all(args)
    where = target_of(args) or "in-process"
    print(f"{'service':<12} status   ({where}, store {args.store})")
    for name, state in health.items():
        print(f"{name:<12} {state}")
    running = stack.current()
    if not args.target and running is not None and running.dashboard:
        print(f"{'ray':<12} dashboard {running.dashboard}")
    hosted = [state for state in health.values() if state != "NOT_HOSTED"]
    return 0 if hosted and all(state == "SERVING" for state in hosted) else 1
