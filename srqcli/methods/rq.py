"""RQ: Relaxed Quantization (Louizos, Reisser, Blankevoort, Gavves & Welling, ICLR 2019,
arXiv 1810.01875), the method SRQ builds on (docs/method.md §2).

Training forward: with logistic noise of scale ``σ`` the probability of rounding ``x`` to grid
point ``α·k`` is ``π_k = sigmoid((α(k+½)−x)/σ) − sigmoid((α(k−½)−x)/σ)`` (edge bins extended to
±∞). RQ restricts it to the *local grid* around ``x`` (the paper's ``δ = 3σ``: here the codes
``m−w … m+w`` around the nearest code ``m``, ``w = ⌈3·max σ/α⌉``), draws a relaxed one-hot
sample with the Gumbel-softmax ``z = softmax((log π + G)/λ)``, ``G ~ Gumbel(0, 1)``, and outputs
``x̂ = α·Σ_k z_k·k``. Gradients reach ``x``, ``α`` and ``σ`` through ``π`` and the grid points
by plain autograd (memory ``N·(2w+1)``, the cost SRQ's edge form avoids).

Test time (eval, export): round-to-nearest and clip, the mode, as in the paper. BatchNorm
running statistics are re-estimated with the mode after training
(:func:`srqcli.methods.registry.finish_training`): the ones gathered on samples describe another
network (ResNet-20 W2A2: 21% top-1 with them, 85% re-estimated).

The temperature ``λ`` is annealed by :class:`srqcli.methods.schedule.TemperatureSchedule`
from 2.0 to 0.5 by default **[ours: the paper fixes a small λ per experiment]**.
``α`` and ``σ`` use SRQ's parametrisation and initialisation (``σ ∈ [0.05α, 0.5α]``, init
``α/4``), so the two methods differ only in the forward sample and its gradient.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from srqcli.core.srq import srq_forward_codes
from srqcli.nn.quantizer import SRQQuantizer

#: Default temperature schedule (start, end).
TEMPERATURE = (2.0, 0.5)


def local_window(sigma_over_alpha: float) -> int:
    """Half-width of RQ's local grid: codes within ``3σ`` of ``x``, at least one each side."""
    return max(1, math.ceil(3.0 * sigma_over_alpha))


def rq_logits(x: Tensor, alpha: Tensor, sigma: Tensor, kmin: int, kmax: int,
              window: int) -> tuple[Tensor, Tensor]:
    """``log π`` over the local grid and its codes, both ``x.shape + (2w+1,)``.

    Codes outside the grid get ``log π = −inf`` (zero probability).
    """
    m = srq_forward_codes(x.detach(), alpha.detach(), kmin, kmax)
    k = m.unsqueeze(-1) + torch.arange(-window, window + 1, device=x.device, dtype=x.dtype)
    xe = x.unsqueeze(-1)
    ae = alpha.unsqueeze(-1) if alpha.dim() else alpha
    se = sigma.unsqueeze(-1) if sigma.dim() else sigma
    upper = torch.where(k >= kmax, 1.0, torch.sigmoid((ae * (k + 0.5) - xe) / se))
    lower = torch.where(k <= kmin, 0.0, torch.sigmoid((ae * (k - 0.5) - xe) / se))
    inside = (k >= kmin) & (k <= kmax)
    logp = torch.where(inside, torch.log((upper - lower).clamp_min(1e-12)), -math.inf)
    return logp, k


def rq_sample(x: Tensor, alpha: Tensor, sigma: Tensor, kmin: int, kmax: int, window: int,
              temperature: float, gumbel: Tensor) -> Tensor:
    """``α·Σ_k z_k·k`` with ``z = softmax((log π + gumbel)/λ)`` over the local grid.

    ``gumbel`` is standard Gumbel noise of shape ``x.shape + (2w+1,)`` (drawn by the caller,
    so the math is deterministic and testable).
    """
    logp, k = rq_logits(x, alpha, sigma, kmin, kmax, window)
    z = torch.softmax((logp + gumbel) / temperature, dim=-1)
    ae = alpha.unsqueeze(-1) if alpha.dim() else alpha
    return (z * k * ae).sum(-1)


def gumbel_noise(shape: torch.Size, device: torch.device) -> Tensor:
    """Standard Gumbel samples ``−log(−log u)`` from the global (seeded, resumable) RNG."""
    u = torch.rand(shape, device=device).clamp(1e-10, 1.0 - 1e-7)
    return -torch.log(-torch.log(u))


class RQQuantizer(SRQQuantizer):
    """SRQ's parameters (``log α``, ``log σ``) with RQ's Gumbel-softmax training forward."""

    trains_other_forward = True  # Gumbel-softmax samples in training, the mode deployed

    def __init__(self, bits: int, signed: bool | None, **kwargs) -> None:
        super().__init__(bits, signed, **kwargs)
        self.temperature = TEMPERATURE[0]  # set per step by the temperature schedule

    def forward(self, x: Tensor) -> Tensor:
        self.check_ready()
        grid = self.grid
        dtype, x = x.dtype, x.float()
        alpha = self.alpha.float()
        if not self.training:
            return (srq_forward_codes(x, alpha, grid.kmin, grid.kmax) * alpha).to(dtype)
        sigma = self.sigma.float()
        w = self.window or local_window(self.sigma_ratio_max())
        noise = gumbel_noise(x.shape + (2 * w + 1,), x.device)
        return rq_sample(x, alpha, sigma, grid.kmin, grid.kmax, w, self.temperature,
                         noise).to(dtype)
