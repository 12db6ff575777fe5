"""RQ: the Gumbel-softmax sample over the local grid against a full-grid reference."""

from __future__ import annotations

import math

import torch
from conftest import gen

from srqcli.config import QuantConfig
from srqcli.methods.rq import RQQuantizer, local_window, rq_sample


def full_grid_reference(x, alpha, sigma, kmin, kmax, window, lam, gumbel):
    """RQ's relaxed sample written over every grid point (edge bins to ±∞), restricted to the
    codes within ``window`` of the nearest one; ``gumbel[..., j]`` belongs to code m−w+j."""
    k = torch.arange(kmin, kmax + 1, dtype=x.dtype)
    xe = x.unsqueeze(-1)
    upper = torch.where(k == kmax, 1.0, torch.sigmoid((alpha * (k + 0.5) - xe) / sigma))
    lower = torch.where(k == kmin, 0.0, torch.sigmoid((alpha * (k - 0.5) - xe) / sigma))
    m = torch.clamp(torch.round(x.detach() / alpha.detach()), kmin, kmax).unsqueeze(-1)
    local = (k - m).abs() <= window
    idx = (k - m + window).clamp(0, 2 * window).long()
    noise = torch.gather(gumbel, -1, idx)
    pi = torch.where(local, upper - lower, 1.0)  # far codes: no log(0) in the graph
    logits = torch.where(local, (torch.log(pi) + noise) / lam, -math.inf)
    return alpha * (torch.softmax(logits, -1) * k).sum(-1)


def test_sample_and_gradients_match_the_full_grid_reference():
    kmin, kmax, w, lam = -4, 3, 2, 0.7
    x = (torch.randn(300, generator=gen(0), dtype=torch.float64) * 1.2).requires_grad_()
    alpha = torch.tensor(0.35, dtype=torch.float64, requires_grad=True)
    sigma = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    u = torch.rand(300, 2 * w + 1, generator=gen(1), dtype=torch.float64)
    gumbel = -torch.log(-torch.log(u))
    upstream = torch.randn(300, generator=gen(2), dtype=torch.float64)
    ours = rq_sample(x, alpha, sigma, kmin, kmax, w, lam, gumbel)
    grads = torch.autograd.grad((ours * upstream).sum(), (x, alpha, sigma))
    ref = full_grid_reference(x, alpha, sigma, kmin, kmax, w, lam, gumbel)
    ref_grads = torch.autograd.grad((ref * upstream).sum(), (x, alpha, sigma))
    assert torch.allclose(ours, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, ref_grads):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_cold_noiseless_sample_is_the_mode_and_eval_rounds():
    x = torch.randn(200, generator=gen(3)) * 2
    alpha, sigma = torch.tensor(0.5), torch.tensor(0.1)
    mode = torch.clamp(torch.round(x / alpha), -4, 3) * alpha
    cold = rq_sample(x, alpha, sigma, -4, 3, 2, 1e-3, torch.zeros(200, 5))
    assert torch.allclose(cold, mode, atol=1e-5)
    q = RQQuantizer(3, True)
    q.init_step(x)
    q.eval()
    assert torch.equal(q(x), torch.clamp(torch.round(x / q.alpha), -4, 3) * q.alpha)
    q.train()
    assert not torch.equal(q(x), q.eval()(x))  # training draws a relaxed sample


def test_local_window_covers_three_sigma():
    assert local_window(0.25) == 1 and local_window(0.5) == 2 and local_window(0.05) == 1
    assert QuantConfig().sigma_init == 0.25
