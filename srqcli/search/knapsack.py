"""Exact multiple-choice knapsack: one option per layer, total cost in a window ``[lo, hi]``.

Used twice: by the repair step (objective: −log-probability of the allocation under the learned
gates) and by ``--strategy sensitivity`` (objective: Σ layer sensitivities).

Dynamic programming over the *extra* cost above every layer's cheapest option. When that range
is larger than ``cells``, costs are discretised with granularity ``g`` and each option's extra
cost is rounded **up** to whole cells, so every DP solution with ``≤ C`` cells really costs
``≤ hi`` (the sum of rounded-up costs bounds the exact one). Every DP end state is then
reconstructed (vectorised) and its *exact* cost checked against ``[lo, hi]``; the cheapest
objective among those wins. Without discretisation (range ≤ ``cells``) this is exact; with it,
the rounding loses at most ``L·g`` of the window (``L`` layers), i.e. ≤ ``L/cells`` of the range.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Solution:
    choice: list[int]  # option index per layer
    cost: int  # exact Σ costs
    value: float  # Σ values
    in_window: bool  # lo ≤ cost ≤ hi (else: the feasible solution with the largest cost)


def solve_mckp(costs: Sequence[Sequence[int]], values: Sequence[Sequence[float]], lo: float,
               hi: float, *, cells: int = 20000) -> Solution | None:
    """Minimise ``Σ values[ℓ][k_ℓ]`` subject to ``lo ≤ Σ costs[ℓ][k_ℓ] ≤ hi``.

    ``costs`` are non-negative integers. Returns ``None`` when even the cheapest choice
    exceeds ``hi``. When no choice reaches ``lo`` the solution with the largest feasible cost
    comes back with ``in_window=False``.
    """
    n = len(costs)
    if n == 0:
        return Solution([], 0, 0.0, 0 >= lo)
    c = [np.asarray(cs, dtype=np.int64) for cs in costs]
    v = [np.asarray(vs, dtype=np.float64) for vs in values]
    base = int(sum(int(x.min()) for x in c))
    room = hi - base
    if room < 0:
        return None
    g = max(1.0, room / cells)
    cap = math.floor(room / g + 1e-9)
    extra = [np.ceil((x - x.min()) / g - 1e-9).astype(np.int64) for x in c]
    inf = np.inf
    best = np.full(cap + 1, inf)
    best[0] = 0.0
    pick = np.zeros((n, cap + 1), dtype=np.int16)
    for layer in range(n):
        new = np.full(cap + 1, inf)
        arg = np.zeros(cap + 1, dtype=np.int16)
        for k, (e, val) in enumerate(zip(extra[layer], v[layer])):
            if e > cap:
                continue
            cand = np.full(cap + 1, inf)
            cand[e:] = best[: cap + 1 - e] + val
            better = cand < new
            new = np.where(better, cand, new)
            arg = np.where(better, k, arg)
        best, pick[layer] = new, arg
    ends = np.nonzero(np.isfinite(best))[0]
    # Reconstruct every end state at once; exact costs decide.
    cur = ends.copy()
    exact = np.zeros(len(ends), dtype=np.int64)
    choice = np.zeros((n, len(ends)), dtype=np.int64)
    for layer in range(n - 1, -1, -1):
        k = pick[layer, cur].astype(np.int64)
        choice[layer] = k
        exact += c[layer][k]
        cur = cur - extra[layer][k]
    vals = best[ends]
    ok = exact <= hi
    inside = ok & (exact >= lo)
    if inside.any():
        idx = np.nonzero(inside)[0]
        # Lowest objective; ties → larger cost (use the budget).
        j = idx[np.lexsort((-exact[idx], vals[idx]))[0]]
        return Solution([int(x) for x in choice[:, j]], int(exact[j]), float(vals[j]), True)
    idx = np.nonzero(ok)[0]
    j = idx[np.lexsort((vals[idx], -exact[idx]))[0]]
    return Solution([int(x) for x in choice[:, j]], int(exact[j]), float(vals[j]), False)
