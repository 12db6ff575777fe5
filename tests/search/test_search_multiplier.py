"""On a toy problem the adaptive multiplier drives the expected cost to the budget; the
read-out + repair then meets it exactly."""

from __future__ import annotations

import pytest
import torch

from srqcli.search.budget import FILL, BudgetSpec, CostModel, LayerCost
from srqcli.search.gated import GatedSRQQuantizer
from srqcli.search.readout import readout, repair
from srqcli.search.regularizer import (
    LagrangeMultiplier,
    expected_cost,
    start_on_budget_,
)

torch.set_num_threads(1)


pytestmark = pytest.mark.usefixtures("eager_srq")


def _toy(budget: float):
    """Four weight tensors whose quantization error (the task loss) always wants more bits."""
    gen = torch.Generator().manual_seed(1)
    sizes = [50, 200, 100, 400]
    ws = {f"l{i}": torch.randn(n, generator=gen) * (0.5 + i) for i, n in enumerate(sizes)}
    qs = {}
    for name, w in ws.items():
        q = GatedSRQQuantizer(2, 5)
        q.init_step(w)
        q.gate_generator = gen
        q.train()
        qs[name] = q
    layers = tuple(LayerCost(n, w.numel(), 0, 4, (2, 3, 4, 5)) for n, w in ws.items())
    cost = CostModel(BudgetSpec("avg_weight_bits", budget), layers, 0, float(sum(sizes)))
    return ws, qs, cost


@pytest.mark.parametrize("budget", [2.75, 3.5])
def test_multiplier_drives_expected_cost_to_budget(budget):
    ws, qs, cost = _toy(budget)
    mult = LagrangeMultiplier(lr=0.1, penalty=50.0)
    opt = torch.optim.Adam([q.gate_logits for q in qs.values()], lr=0.05)
    trace = []
    for _ in range(250):
        task = sum(((q(ws[n]) - ws[n]) ** 2).mean() / ws[n].var() for n, q in qs.items())
        loss = task + mult.term(expected_cost(cost, qs), budget)
        opt.zero_grad()
        loss.backward()
        opt.step()
        for q in qs.values():
            q.project_()
        with torch.no_grad():
            e = float(expected_cost(cost, qs))
        mult.update(e, budget)
        trace.append(e)
    start = trace[0]
    assert abs(start - budget) / budget > 0.1  # it really had to move
    tail = torch.tensor(trace[-30:])
    assert abs(float(tail.mean()) - budget) / budget < 0.02, trace[-5:]
    assert float((tail - budget).abs().max()) / budget < 0.03
    # Read-out + repair: exact budget.
    alloc = repair(cost, readout(qs), qs)
    assert FILL * budget <= alloc.achieved <= budget


def test_multiplier_state_roundtrip():
    m = LagrangeMultiplier(lr=0.2, penalty=3.0)
    m.update(1.5, 1.0)
    n = LagrangeMultiplier()
    n.load_state_dict(m.state_dict())
    assert (n.value, n.lr, n.penalty) == (m.value, 0.2, 3.0)
    assert m.value == pytest.approx(0.1)


@pytest.mark.parametrize("budget", [2.2, 2.75, 3.5, 4.6])
def test_start_on_budget_puts_expected_cost_on_the_budget(budget):
    _ws, qs, cost = _toy(budget)
    p = start_on_budget_(cost, qs)
    # Closed form on the toy (every layer 2..5 bits, cost = average bits): 2 + p + p² + p³.
    assert 2 + p + p**2 + p**3 == pytest.approx(budget, rel=1e-6)
    assert float(expected_cost(cost, qs).detach()) == pytest.approx(budget, rel=1e-6)
    for q in qs.values():
        torch.testing.assert_close(q.prob_on(), torch.full((3,), p), rtol=0, atol=1e-6)


def test_start_on_budget_clamps_to_movable_gates():
    _ws, qs, cost = _toy(5.0)  # every bit: the gates must still be able to close
    assert start_on_budget_(cost, qs) == pytest.approx(0.98, abs=1e-6)
