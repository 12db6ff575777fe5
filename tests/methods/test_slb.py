"""SLB: softmax-relaxed weights over the grid values, argmax at eval and when hardened."""

from __future__ import annotations

import torch
from conftest import gen

from srqcli.methods.slb import SLBWeightQuantizer, grid_codes, slb_relaxed


def test_relaxed_weight_and_its_logit_gradient_match_the_softmax_formula():
    logits = torch.randn(20, 8, generator=gen(0), dtype=torch.float64, requires_grad=True)
    codes = grid_codes(-4, 3, logits)
    alpha, tau = torch.tensor(0.2, dtype=torch.float64), 0.5
    w = slb_relaxed(logits, alpha, codes, tau)
    p = torch.softmax(logits.detach() / tau, -1)
    mean = (p * codes).sum(-1, keepdim=True)
    assert torch.allclose(w, alpha * mean.squeeze(-1), rtol=1e-12)
    w.sum().backward()
    # ∂w/∂θ_j = α/τ · p_j · (k_j − Σ_i p_i k_i)
    assert torch.allclose(logits.grad, alpha / tau * p * (codes - mean), rtol=1e-10)


def test_init_picks_the_nearest_grid_point_and_hardening_writes_it():
    weight = torch.randn(4, 3, 3, 3, generator=gen(1))
    q = SLBWeightQuantizer(3, shape=weight.shape)
    q.init_step(weight)
    grid = q.grid
    nearest = torch.clamp(torch.round(weight / q.alpha), grid.kmin, grid.kmax) * q.alpha
    q.eval()
    assert torch.equal(q(weight), nearest)
    q.train()
    q.temperature = 1e-4
    assert torch.allclose(q(weight), nearest, atol=1e-5)  # cold relaxation → the argmax
    q.temperature = 1.0
    assert not torch.allclose(q(weight), nearest, atol=1e-3)
    q.harden_(weight)
    assert torch.equal(weight, nearest)
    assert [n for n, _ in q.named_parameters()] == ["logits"]  # α is fixed
