"""What a family needs to know about torch.distributed: how many workers
average gradients and how to reach a network inside its DDP wrapper (the
runtime may wrap `family.modules`). GAN and diffusion families both use it.
"""

from __future__ import annotations

import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def world_size() -> int:
    """Workers averaging gradients (1 outside torch.distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def unwrap(module: nn.Module) -> nn.Module:
    """The network inside a DDP wrapper (the runtime may wrap `family.modules`)."""
    return module.module if isinstance(module, DistributedDataParallel) else module
