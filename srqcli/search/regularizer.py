"""The cost regulariser ``λ·Σ_ℓ c_ℓ·E[b_ℓ]`` and its adaptive Lagrange multiplier (docs/method.md §6).

The constraint is stated relative to the budget, ``h = E[cost]/budget − 1`` (so one multiplier
learning rate serves every budget kind and model size), and treated as an *equality*: the
search should spend the budget, not merely stay under it (the read-out and the repair step then
make it exact). The loss gets the augmented-Lagrangian term

    λ·h + (ρ/2)·h²

and after every optimizer step ``λ`` takes a dual-ascent step ``λ ← λ + η·h`` (clamped to
``±lambda_max``). While the expected cost is above the budget ``λ`` grows and pushes the gates
closed; below it, it shrinks (and may go negative, opening gates the task loss does not need).
The quadratic term (``ρ``) damps the oscillation plain dual ascent shows.
"""

from __future__ import annotations

import torch
from torch import Tensor

from srqcli.core.gates import logit_for_prob
from srqcli.search.budget import CostModel
from srqcli.search.gated import GatedSRQQuantizer


def expected_cost(cost: CostModel, quantizers: dict[str, GatedSRQQuantizer]) -> Tensor:
    """``E[cost]`` in budget units (differentiable in the gate logits).

    Searched layers contribute ``c_ℓ·E[b_ℓ]``; pinned ones (not in ``quantizers``) their exact
    cost; plus the bit-independent constant.
    """
    total: Tensor | float = float(cost.const)
    for layer in cost.layers:
        q = quantizers.get(layer.name)
        if q is None:
            total = total + cost.unit_cost(layer, layer.options[0] if layer.pinned else max(layer.options))
        else:
            total = total + cost.per_bit(layer) * q.expected_bits()
    if not isinstance(total, Tensor):
        total = torch.tensor(total)
    return total / cost.scale


def start_on_budget_(cost: CostModel, quantizers: dict[str, GatedSRQQuantizer],
                     lowest: float = 0.02, highest: float = 0.98) -> float:
    """Give every gate the one ``P(z > 0) = p`` at which ``E[cost]`` equals the budget; returns p.

    ``E[cost]`` grows with ``p`` (``E[b] = b_min + p + p² + …`` in every layer), so bisection
    finds it; ``p`` stays in ``[lowest, highest]`` so that every gate can still move either way.
    Why: a search started far above the budget (``p = 0.9`` is 3.7 bits on a 2..4 search) spends
    its first few hundred steps pulling the cost down, and on a short search the weights end up
    trained at near ``b_max`` and are then cut to the allocation.
    """
    target = cost.budget.value

    def set_gates(p: float) -> float:
        value = logit_for_prob(p)
        with torch.no_grad():
            for q in quantizers.values():
                q.gate_logits.fill_(value)
            return float(expected_cost(cost, quantizers))

    lo, hi = lowest, highest
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if set_gates(mid) > target:
            hi = mid
        else:
            lo = mid
    p = 0.5 * (lo + hi)
    set_gates(p)
    return p


class LagrangeMultiplier:
    """Dual ascent on ``h = E[cost]/budget − 1`` with an augmented-Lagrangian penalty."""

    def __init__(self, lr: float = 0.1, penalty: float = 50.0, init: float = 0.0,
                 lambda_max: float = 100.0) -> None:
        self.lr, self.penalty, self.value, self.lambda_max = lr, penalty, init, lambda_max

    def violation(self, expected: Tensor, budget: float) -> Tensor:
        return expected / budget - 1.0

    def term(self, expected: Tensor, budget: float) -> Tensor:
        """The loss term ``λ·h + (ρ/2)·h²`` (λ is a constant here)."""
        h = self.violation(expected, budget)
        return self.value * h + 0.5 * self.penalty * h * h

    def update(self, expected: Tensor | float, budget: float) -> float:
        """One dual-ascent step from the current (detached) expected cost; returns ``λ``."""
        h = float(expected) / budget - 1.0
        self.value = max(-self.lambda_max, min(self.lambda_max, self.value + self.lr * h))
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value, "lr": self.lr, "penalty": self.penalty,
                "lambda_max": self.lambda_max}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])
        self.lr, self.penalty = float(state["lr"]), float(state["penalty"])
        self.lambda_max = float(state["lambda_max"])


def expected_bits(quantizers: dict[str, GatedSRQQuantizer]) -> dict[str, float]:
    """Current ``E[b_ℓ]`` of each searched layer (for progress and history)."""
    with torch.no_grad():
        return {n: float(q.expected_bits()) for n, q in quantizers.items()}
