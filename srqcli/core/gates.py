"""Hard-concrete gates (Louizos, Welling, Kingma: "Learning Sparse Neural Networks through L0
Regularization", ICLR 2018), the relaxation ``search-bits`` puts on DropBits levels (docs/method.md §6).

A gate with logit ``log α`` is sampled as

    u ~ U(0, 1),  s = sigmoid((log u − log(1−u) + log α)/β),  z = clamp(s·(ζ−γ) + γ, 0, 1)

with temperature ``β = 2/3`` and stretch ``(γ, ζ) = (−0.1, 1.1)``. The stretch puts finite mass
on exactly 0 and exactly 1, so a sampled gate really switches a level off or on, while the
probabilities stay differentiable in ``log α``. Closed forms (``L`` standard logistic):

    P(z > t) = sigmoid(log α − β·logit((t − γ)/(ζ − γ)))        for 0 ≤ t < 1
    P(z > 0) = sigmoid(log α − β·log(−γ/ζ))
    P(z = 1) = sigmoid(log α − β·log((1 − γ)/(ζ − 1)))
    E[z]     = ∫₀¹ P(z > t) dt

Pure torch; every sample draws from an explicit ``torch.Generator`` so a search is reproducible.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

BETA = 2.0 / 3.0
GAMMA = -0.1
ZETA = 1.1
_EPS = 1e-6


def sample(log_alpha: Tensor, generator: torch.Generator | None = None, *,
           beta: float = BETA, gamma: float = GAMMA, zeta: float = ZETA) -> Tensor:
    """One hard-concrete sample per element of ``log_alpha`` (differentiable in it)."""
    u = torch.rand(log_alpha.shape, generator=generator, dtype=log_alpha.dtype,
                   device=generator.device if generator is not None else log_alpha.device)
    u = u.to(log_alpha.device).clamp(_EPS, 1.0 - _EPS)
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / beta)
    return torch.clamp(s * (zeta - gamma) + gamma, 0.0, 1.0)


def deterministic(log_alpha: Tensor, *, gamma: float = GAMMA, zeta: float = ZETA) -> Tensor:
    """The test-time value of Louizos et al.: ``clamp(sigmoid(log α)·(ζ−γ) + γ, 0, 1)``."""
    return torch.clamp(torch.sigmoid(log_alpha) * (zeta - gamma) + gamma, 0.0, 1.0)


def prob_greater(log_alpha: Tensor, t: float, *, beta: float = BETA, gamma: float = GAMMA,
                 zeta: float = ZETA) -> Tensor:
    """``P(z > t)`` for ``0 ≤ t < 1``."""
    if not 0.0 <= t < 1.0:
        raise ValueError(f"t must be in [0, 1), got {t}")
    q = (t - gamma) / (zeta - gamma)
    return torch.sigmoid(log_alpha - beta * math.log(q / (1.0 - q)))


def prob_nonzero(log_alpha: Tensor, *, beta: float = BETA, gamma: float = GAMMA,
                 zeta: float = ZETA) -> Tensor:
    """``P(z > 0) = sigmoid(log α − β·log(−γ/ζ))``: the L0 "gate open" probability."""
    return torch.sigmoid(log_alpha - beta * math.log(-gamma / zeta))


def prob_zero(log_alpha: Tensor, **kw: float) -> Tensor:
    """``P(z = 0) = 1 − P(z > 0)``."""
    return 1.0 - prob_nonzero(log_alpha, **kw)


def prob_one(log_alpha: Tensor, *, beta: float = BETA, gamma: float = GAMMA,
             zeta: float = ZETA) -> Tensor:
    """``P(z = 1) = sigmoid(log α − β·log((1−γ)/(ζ−1)))``."""
    return torch.sigmoid(log_alpha - beta * math.log((1.0 - gamma) / (zeta - 1.0)))


def mean(log_alpha: Tensor, *, points: int = 2001, beta: float = BETA, gamma: float = GAMMA,
         zeta: float = ZETA) -> Tensor:
    """``E[z] = ∫₀¹ P(z > t) dt`` by the trapezoid rule (a reference for tests and reports)."""
    t = torch.linspace(0.0, 1.0, points, dtype=torch.float64)[:-1]  # P(z > 1) = 0
    q = (t - gamma) / (zeta - gamma)
    la = log_alpha.double().unsqueeze(-1)
    surv = torch.sigmoid(la - beta * torch.log(q / (1.0 - q)))
    surv = torch.cat([surv, torch.zeros_like(surv[..., :1])], dim=-1)
    return torch.trapezoid(surv, dx=1.0 / (points - 1), dim=-1).to(log_alpha.dtype)


def logit_for_prob(p: float, *, beta: float = BETA, gamma: float = GAMMA,
                   zeta: float = ZETA) -> float:
    """The ``log α`` whose ``P(z > 0)`` is ``p`` (used to initialise gates)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    return math.log(p / (1.0 - p)) + beta * math.log(-gamma / zeta)
