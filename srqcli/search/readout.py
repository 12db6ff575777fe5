"""Read-out of the learned gates and the repair step that makes the budget exact.

Read-out (docs/method.md §6): a gate is on iff ``P(z > 0) > 0.5``; nested, so a layer's bits are
``b_min`` plus the number of leading on gates. The read-out ignores the budget, so it can land
over it (or well under it). **Repair**: if the read-out already costs between 98% and 100% of
the budget it is kept; otherwise we pick the *most probable allocation under the learned gates*
that does, by an exact multiple-choice knapsack (:mod:`srqcli.search.knapsack`). The probability
of layer ℓ having ``b_min + k`` bits under independent nested gates is

    P(b = b_min + k) = Π_{j ≤ k} p_j · (1 − p_{k+1})        (p_{L+1} = 0)

so the objective is ``Σ_ℓ −log P(b_ℓ)``. Unlike a greedy pass this cannot get stuck short of the
98% floor when a combination reaching it exists, and it is exact for every budget kind because
the knapsack checks exact costs (:class:`~srqcli.search.budget.CostModel`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from srqcli.errors import SrqError
from srqcli.search.budget import FILL, CostModel
from srqcli.search.gated import GatedSRQQuantizer
from srqcli.search.knapsack import solve_mckp

_P_FLOOR = 1e-6


@dataclass
class Allocation:
    """Weight bits per layer and how they meet the budget."""

    bits: dict[str, int]
    achieved: float  # in the budget's unit
    budget: float
    kind: str
    method: str  # "readout" | "repaired" | "knapsack"
    in_window: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def fill(self) -> float:
        return self.achieved / self.budget


def readout(quantizers: Mapping[str, GatedSRQQuantizer]) -> dict[str, int]:
    """Bits of every searched layer with each gate on iff ``P(z > 0) > 0.5`` (nested)."""
    return {n: q.readout_bits() for n, q in quantizers.items()}


def level_log_probs(p_on: list[float], min_bits: int) -> dict[int, float]:
    """``log P(b)`` for ``b = min_bits … min_bits + len(p_on)`` under nested gates."""
    p = [min(max(x, _P_FLOOR), 1 - _P_FLOOR) for x in p_on] + [0.0]
    out, acc = {}, 0.0
    for k in range(len(p_on) + 1):
        out[min_bits + k] = acc + math.log(max(1.0 - p[k], _P_FLOOR))
        acc += math.log(p[k]) if k < len(p_on) else 0.0
    return out


def allocate(cost: CostModel, values: Mapping[str, Mapping[int, float]], method: str, *,
             cells: int = 20000) -> Allocation:
    """Minimise ``Σ values[ℓ][b_ℓ]`` subject to ``98%·budget ≤ cost ≤ budget`` (exact costs).

    Layers missing from ``values`` (pinned ones) contribute 0 for their only option.
    """
    names = [l.name for l in cost.layers]
    options = [l.options for l in cost.layers]
    costs = [[cost.unit_cost(l, b) for b in l.options] for l in cost.layers]
    vals = [[float(values.get(l.name, {}).get(b, 0.0)) for b in l.options] for l in cost.layers]
    hi = cost.budget_units - cost.const
    lo = FILL * cost.budget_units - cost.const
    sol = solve_mckp(costs, vals, lo, hi, cells=cells)
    if sol is None:
        raise SrqError(f"budget {cost.budget.describe()} cannot be met even at the smallest bits")
    bits = {n: opts[k] for n, opts, k in zip(names, options, sol.choice)}
    alloc = Allocation(bits, cost.achieved(bits), cost.budget.value, cost.budget.kind, method,
                       in_window=sol.in_window)
    if not sol.in_window:
        alloc.notes.append(f"no allocation reaches {FILL:.0%} of the budget with these layer "
                           f"sizes; using the largest that fits ({alloc.fill:.1%})")
    return alloc


def repair(cost: CostModel, alloc: Mapping[str, int],
           quantizers: Mapping[str, GatedSRQQuantizer], *, cells: int = 20000) -> Allocation:
    """Keep the read-out if it costs 98–100% of the budget, else the most probable allocation
    under the gates that does (pinned layers keep their bits)."""
    full = {l.name: (l.options[0] if l.pinned else alloc[l.name]) for l in cost.layers}
    if cost.fits(full):
        return Allocation(full, cost.achieved(full), cost.budget.value, cost.budget.kind, "readout")
    values: dict[str, dict[int, float]] = {}
    for name, q in quantizers.items():
        with torch.no_grad():
            p = q.prob_on().tolist()
        values[name] = {b: -lp for b, lp in level_log_probs(p, q.min_bits).items()}
    out = allocate(cost, values, "repaired", cells=cells)
    before = cost.achieved(full)
    out.notes.insert(0, f"read-out cost {cost.budget.describe(before)} "
                        f"({before / cost.budget.value:.1%} of the budget): repaired")
    return out
