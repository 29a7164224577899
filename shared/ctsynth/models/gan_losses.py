"""Adversarial losses and gradient penalties, apart from the networks.

Discriminator outputs are logits (or critic scores) of any shape (N, ...);
every loss returns a scalar mean, every penalty a per-sample (N,) tensor
the caller weights. Losses are computed in fp32 under autocast.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, real_target: float = 1.0) -> torch.Tensor:
    """Seed 004 eq. 2, L_D = -(E log D(x) + E log(1 - D(G(z)))), with D = sigmoid(logit).

    `real_target` < 1 is one-sided label smoothing (Salimans et al. 2016 §3.4;
    0.9 in seed 000 §4.1.2): only the real targets are softened.
    """
    real = F.binary_cross_entropy_with_logits(real_logits.float(), torch.full_like(real_logits.float(), real_target))
    fake = F.binary_cross_entropy_with_logits(fake_logits.float(), torch.zeros_like(fake_logits.float()))
    return real + fake


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Seed 004 eq. 3, L_G = -E log D(G(z)) = E softplus(-logit) (the StyleGAN2 G loss too)."""
    return F.softplus(-fake_logits.float()).mean()


def critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """WGAN critic (Arjovsky et al. 2017, seed 004 eq. 5 / seed 000 §4.1.3): minimise E f(G(z)) - E f(x)."""
    return fake_scores.float().mean() - real_scores.float().mean()


def critic_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """WGAN generator: minimise -E f(G(z))."""
    return -fake_scores.float().mean()


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
                     alpha: torch.Tensor) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017 eq. 3; seed 000 §4.1.3): (||grad f(x_hat)||_2 - 1)^2
    at x_hat = alpha * real + (1 - alpha) * fake, per sample (N,).

    real, fake (N, C, H, W); alpha (N, 1, 1, 1) uniform in [0, 1], drawn by the caller.
    """
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    scores = critic(mixed)
    (grad,) = torch.autograd.grad(scores.float().sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1).square()


def r1_penalty(real_logits: torch.Tensor, real_inputs: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018 eq. 9): ||grad_x D(x)||^2 on reals, per sample (N,).

    `real_inputs` must require grad and be what produced `real_logits`; the
    caller multiplies by gamma / 2. A patch discriminator's logits are summed.
    """
    (grad,) = torch.autograd.grad(real_logits.float().sum(), real_inputs, create_graph=True)
    return grad.float().square().flatten(1).sum(1)
