"""Budgets, pins, exact costs, the knapsack, read-out and repair."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from srqcli.config import QuantConfig
from srqcli.errors import SrqError
from srqcli.models import build_model
from srqcli.nn.surgery import (
    attach_quantizers,
    plan_bits,
    quant_layers,
    quantizable_layers,
)
from srqcli.report import build_report
from srqcli.search.budget import (
    FILL,
    BudgetSpec,
    CostModel,
    check_pins,
    parse_budget,
    parse_pins,
)
from srqcli.search.knapsack import solve_mckp
from srqcli.search.readout import allocate, level_log_probs

torch.set_num_threads(1)


def _structure(arch: str, act_bits: int = 4, pins=None):
    torch.manual_seed(0)
    model = build_model(arch, 10, 1)
    q = QuantConfig(weight_bits=4, act_bits=act_bits,
                    layers={n: {"weight_bits": b} for n, b in (pins or {}).items()})
    names = [n for n, _ in quantizable_layers(model)]
    attach_quantizers(model, plan_bits(names, q), q)
    return model


@pytest.mark.parametrize("text, kind, value", [
    ("avg-bits=3.0", "avg_weight_bits", 3.0), ("avg_weight_bits=2.5", "avg_weight_bits", 2.5),
    ("size=1.5MB", "size_mb", 1.5), ("size=1.5", "size_mb", 1.5), ("size=512KB", "size_mb", 0.512),
    ("size=1MiB", "size_mb", 1.048576), ("bops=1.2G", "bops", 1.2e9), ("bops=5e6", "bops", 5e6),
    ("BOPS=3M", "bops", 3e6),
])
def test_parse_budget(text, kind, value):
    b = parse_budget(text)
    assert b.kind == kind and b.value == pytest.approx(value)


@pytest.mark.parametrize("text, says", [
    ("3.0", "KIND=VALUE"), ("avg=3", "unknown kind"), ("size=big", "not a positive number"),
    ("size=1.5XB", "unknown unit"), ("bops=-1G", "not a positive number"), ("avg-bits=0", "positive"),
    ("avg-bits=", "not a positive number"), ("avg-bits=40", "at most"),
])
def test_malformed_budget_is_one_line_error(text, says):
    with pytest.raises(SrqError, match=says) as e:
        parse_budget(text)
    assert "\n" not in str(e.value)


def test_pins():
    assert parse_pins("conv1=8, fc3=8") == {"conv1": 8, "fc3": 8}
    assert parse_pins(["conv1=8", "fc*=6"]) == {"conv1": 8, "fc*": 6}
    for bad, says in (("conv1", "LAYER=BITS"), ("conv1=x", "whole number"), ("conv1=9", "between")):
        with pytest.raises(SrqError, match=says):
            parse_pins(bad)
    names = ["conv1", "conv2", "fc1", "fc2", "fc3"]
    assert check_pins({"fc*": 8}, names) == {"fc1": 8, "fc2": 8, "fc3": 8}
    with pytest.raises(SrqError, match="no quantized layer is called 'nope'"):
        check_pins({"nope": 8}, names)


def test_impossible_budget_accounts_for_pins():
    model = _structure("lenet5", pins={"fc1": 8})
    pins = {"fc1": 8}
    cost = CostModel.build(model, BudgetSpec("avg_weight_bits", 3.0), (1, 28, 28), 2, 4, pins)
    with pytest.raises(SrqError, match="impossible.*--min-bits 2 and pins fc1=8"):
        cost.check_feasible(2, 4, pins)  # fc1 is 78% of the weights: ≥ 6.7 bits on average
    cost = CostModel.build(_structure("lenet5"), BudgetSpec("avg_weight_bits", 1.5), (1, 28, 28), 2, 4)
    with pytest.raises(SrqError, match="impossible"):
        cost.check_feasible(2, 4, {})
    cost = CostModel.build(_structure("lenet5"), BudgetSpec("avg_weight_bits", 6.0), (1, 28, 28), 2, 4)
    with pytest.raises(SrqError, match="nothing to search"):
        cost.check_feasible(2, 4, {})


def test_knapsack_matches_brute_force():
    rng = random.Random(0)
    for trial in range(30):
        n = rng.randint(1, 5)
        costs = [[rng.randint(0, 50) for _ in range(3)] for _ in range(n)]
        values = [[rng.random() for _ in range(3)] for _ in range(n)]
        hi = rng.randint(0, 150)
        lo = hi * 0.9
        best = None
        for combo in itertools.product(range(3), repeat=n):
            c = sum(costs[i][k] for i, k in enumerate(combo))
            v = sum(values[i][k] for i, k in enumerate(combo))
            if lo <= c <= hi and (best is None or v < best - 1e-12):
                best = v
        sol = solve_mckp(costs, values, lo, hi)
        if min(sum(min(c) for c in costs), 10**9) > hi:
            assert sol is None
            continue
        assert sol is not None
        assert sol.cost <= hi
        if best is None:
            assert not sol.in_window
        else:
            assert sol.in_window and sol.value == pytest.approx(best), trial
    # Discretised (range > cells): still never over, still in the window.
    costs = [[1000 * b + rng.randint(0, 999) for b in (2, 3, 4)] for _ in range(12)]
    values = [[rng.random() for _ in range(3)] for _ in range(12)]
    sol = solve_mckp(costs, values, 0.98 * 36000, 36000, cells=50)
    assert sol.in_window and 0.98 * 36000 <= sol.cost <= 36000


@pytest.mark.parametrize("kind", ["avg_weight_bits", "size_mb", "bops"])
def test_allocation_meets_every_budget_within_two_percent(kind):
    model = _structure("resnet20")
    shape = (1, 28, 28)
    probe = CostModel.build(model, BudgetSpec(kind, 1.0), shape, 2, 4, {"conv1": 8})
    low = probe.achieved(probe.extreme(min))
    high = probe.achieved(probe.extreme(max))
    rng = random.Random(1)
    names = [l.name for l in probe.layers if not l.pinned]
    for frac in (0.05, 0.3, 0.5, 0.8, 0.97):
        budget = BudgetSpec(kind, low + frac * (high - low) + 1e-9)
        cost = CostModel.build(model, budget, shape, 2, 4, {"conv1": 8})
        values = {n: {b: rng.random() / b for b in (2, 3, 4)} for n in names}
        alloc = allocate(cost, values, "knapsack")
        assert alloc.in_window, (kind, frac, alloc.fill)
        assert FILL * budget.value <= alloc.achieved <= budget.value
        assert alloc.bits["conv1"] == 8
    # The report counts the same total and marks the budget met.
    for name, layer in quant_layers(model):
        layer.weight_quant.set_bits(alloc.bits[name])
    report = build_report(model, budget=(kind, budget.value), input_shape=shape)
    assert report.budget.met is True
    assert report.budget.achieved == pytest.approx(alloc.achieved, rel=1e-12)


def test_level_log_probs_sum_to_one():
    lp = level_log_probs([0.9, 0.4, 0.7], 2)
    assert sorted(lp) == [2, 3, 4, 5]
    assert sum(torch.tensor(list(lp.values())).exp()) == pytest.approx(1.0)
