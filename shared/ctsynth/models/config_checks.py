"""Checks a family config's `validate` runs on its fields; each failure is an
`InvalidArgument` naming the field, so a client sees which hyperparameter to fix.
"""

from __future__ import annotations

from collections.abc import Sequence

from ctsynth.errors import InvalidArgument
from ctsynth.models.base import FamilyConfig


def check_positive(config: FamilyConfig, *names: str) -> None:
    for name in names:
        if not getattr(config, name) > 0:
            raise InvalidArgument(name, f"{getattr(config, name)} must be > 0")


def check_at_least(config: FamilyConfig, name: str, minimum: float) -> None:
    if getattr(config, name) < minimum:
        raise InvalidArgument(name, f"{getattr(config, name)} must be >= {minimum}")


def check_widths(name: str, widths: Sequence[int], minimum_length: int = 1) -> None:
    if len(widths) < minimum_length or any(width < 1 for width in widths):
        raise InvalidArgument(name, f"{list(widths)} needs at least {minimum_length} positive width(s)")


def check_betas(betas: Sequence[float]) -> None:
    if len(betas) != 2 or not all(0 <= beta < 1 for beta in betas):
        raise InvalidArgument("betas", f"{list(betas)} must be two numbers in [0, 1)")


def check_divides(config: FamilyConfig, name: str, factor: int) -> None:
    """`image_size` must be a multiple of `factor`, which `name` implies."""
    if config.image_size % factor:
        raise InvalidArgument(name, f"needs image_size to be a multiple of {factor}, got {config.image_size}")


def check_power_of_two(name: str, value: int) -> None:
    if value < 1 or value & (value - 1):
        raise InvalidArgument(name, f"{value} must be a power of two")
