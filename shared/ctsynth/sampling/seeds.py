"""What makes every sampled item a function of its own seed alone.

Item i of a request gets `item_seed(seed, i)`: the request seed itself for
i = 0 and a hash of (seed, i) after, so a request for one item with an item's
seed (and its condition) regenerates exactly that item.

Two things would otherwise tie an item's pixels to the other items it was
computed with, and dynamic batching mixes items of unrelated requests:

1. The random draws. A family draws its noise from the one generator it is
   given, for the whole batch; `PerItemRandomness` makes each row of every
   draw come from that row's own generator instead.
2. The floating-point kernels. Convolutions and matrix products give
   slightly different bits for different batch shapes (measured on CPU: up to
   7e-7 apart, enough to flip float16 roundings); at one fixed shape a row's
   result does not depend on its position or neighbours. `sample_rows` always
   runs the network on exactly `rows` rows, padding with filler rows. The
   padding costs compute when few items are waiting (the benchmark measures it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from ctsynth.models.base import Family

FILLER_SEED = 0  # seed of the padding rows; their output is discarded


def item_seed(seed: int, index: int) -> int:
    """The seed of item `index` of a request with `seed` (uint64)."""
    if index == 0:
        return seed
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def either_label(seed: int) -> int:
    """The tumor label (0/1) of an item whose request leaves the condition open."""
    return hashlib.blake2b(f"{seed}:condition".encode(), digest_size=1).digest()[0] & 1


class NotPerItem(RuntimeError):
    """A family drew random numbers whose leading dimension is not the batch."""


def _size(args: tuple, kwargs: dict) -> tuple[tuple[int, ...], int | None]:
    """The requested size of a factory call (randn, rand, randint, normal ...)
    and the position of the size argument in `args` (None: kwarg or varargs)."""
    if "size" in kwargs:
        return tuple(kwargs["size"]), None
    for position, arg in enumerate(args):
        if isinstance(arg, (tuple, list, torch.Size)):
            return tuple(arg), position
    return tuple(args), -1  # torch.randn(2, 3): the ints are the size


class PerItemRandomness(TorchFunctionMode):
    """Inside the block, a random call made with `generators[0]` whose
    result has the batch as its leading dimension is made row by row, row i
    from `generators[i]`, so row i equals what a batch of one would draw.

    Thread-safe: torch function modes are per thread.
    """

    def __init__(self, generators: Sequence[torch.Generator]):
        super().__init__()
        self.generators = list(generators)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if kwargs.get("generator") is not self.generators[0]:
            return func(*args, **kwargs)
        rows = len(self.generators)
        if args and isinstance(args[0], torch.Tensor):  # randn_like(x), x.normal_() ...
            if args[0].shape[:1] != (rows,):
                raise NotPerItem(f"{func.__name__} on a tensor of shape {tuple(args[0].shape)}")
            parts = [func(args[0][i:i + 1], *args[1:], **{**kwargs, "generator": g})
                     for i, g in enumerate(self.generators)]
            return args[0] if func.__name__.endswith("_") else torch.cat(parts)
        size, position = _size(args, kwargs)
        if size[:1] != (rows,):
            raise NotPerItem(f"{func.__name__} of size {size} in a batch of {rows}")
        row = (1, *size[1:])
        parts = []
        for generator in self.generators:
            call_kwargs = {**kwargs, "generator": generator}
            if position is None:
                call_kwargs["size"] = row
                call_args = args
            elif position == -1:
                call_args = row
            else:
                call_args = (*args[:position], row, *args[position + 1:])
            parts.append(func(*call_args, **call_kwargs))
        return torch.cat(parts)


def generators(seeds: Sequence[int], device: torch.device) -> list[torch.Generator]:
    """One generator per seed, on the family's device (the samplers draw there)."""
    return [torch.Generator(device).manual_seed(seed) for seed in seeds]


@torch.no_grad()
def sample_rows(family: Family, seeds: Sequence[int], labels: Sequence[int] | None,
                options: Mapping[str, Any], rows: int, masks: np.ndarray | None = None) -> torch.Tensor:
    """`family.sample` of len(seeds) <= rows items, run on exactly `rows` rows
    with per-item randomness: (len(seeds), C, *spatial), each row a function
    of its seed (and label, and mask) alone. `masks` (len(seeds), 1, *spatial)
    0/1 for mask-conditioned families; padding rows get empty ones. `rows` = 1
    runs the family untouched."""
    count = len(seeds)
    if not 1 <= count <= rows:
        raise ValueError(f"{count} items do not fit {rows} rows")
    padded_seeds = list(seeds) + [FILLER_SEED] * (rows - count)
    padded_labels = None
    if labels is not None:
        padded_labels = torch.tensor(list(labels) + [0] * (rows - count), dtype=torch.long, device=family.device)
    conditions = {"labels": padded_labels}
    if masks is not None:
        padded = np.zeros((rows, *masks.shape[1:]), np.float32)
        padded[:count] = masks
        conditions["masks"] = torch.from_numpy(padded).to(family.device)
    streams = generators(padded_seeds, family.device)
    if rows == 1:
        return family.sample(1, streams[0], sampler=dict(options), **conditions)
    with PerItemRandomness(streams):
        return family.sample(rows, streams[0], sampler=dict(options), **conditions)[:count]
