"""LSQ: forward, masked STE input gradient, and the step gradient of the paper's eq. 3 × g."""

from __future__ import annotations

import math

import torch
from conftest import gen

from srqcli.core.grid import IntGrid
from srqcli.methods.lsq import LSQQuantizer, lsq_grad_scale, lsq_init_step, lsq_quantize


def test_gradients_match_the_paper():
    grid = IntGrid(3, True)
    x = (torch.randn(400, generator=gen(0), dtype=torch.float64) * 1.5).requires_grad_()
    s = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    g = lsq_grad_scale(x.numel(), grid.kmax)
    upstream = torch.randn(400, generator=gen(1), dtype=torch.float64)
    y = lsq_quantize(x, s, grid.kmin, grid.kmax, g)
    (y * upstream).sum().backward()
    u = x.detach() / s.detach()
    assert torch.equal(y.detach(), torch.clamp(torch.round(u), grid.kmin, grid.kmax) * s.detach())
    below, above = u < grid.kmin, u > grid.kmax
    inside = ~below & ~above
    assert below.any() and above.any()
    # ∂v̂/∂v: 1 inside the clip range, 0 outside.
    assert torch.allclose(x.grad, upstream * inside, rtol=1e-12, atol=0)
    # ∂v̂/∂s (eq. 3) times the gradient scale g = 1/sqrt(N·Q_P).
    ds = torch.where(inside, -u + torch.round(u), torch.where(below, float(grid.kmin), float(grid.kmax)))
    assert torch.allclose(s.grad, g * (upstream * ds).sum(), rtol=1e-12)
    assert g == 1 / math.sqrt(400 * 3)


def test_init_and_activation_gradient_scale_count_one_sample():
    grid = IntGrid(4, False)
    x = torch.rand(8, 3, 5, 5, generator=gen(2))
    assert torch.allclose(lsq_init_step(x, grid), 2 * x.abs().mean() / math.sqrt(15))
    q = LSQQuantizer(4, None, activation=True)
    q.init_step(x)
    assert not q.grid.signed
    q(x).sum().backward()
    # Per-sample features N = 75: the log-step gradient is α·g·Σ ∂v̂/∂s.
    alpha = q.alpha.detach()
    u = x / alpha
    ds = torch.where(u > 15, 15.0, -u + torch.round(u))
    expected = alpha * lsq_grad_scale(75, 15) * ds.sum()
    assert torch.allclose(q.log_alpha.grad, expected, rtol=1e-4)


def test_per_channel_init_keeps_the_channel_axis():
    w = torch.randn(6, 2, 3, 3, generator=gen(3))
    q = LSQQuantizer(3, True, activation=False, channels=6, dims=4)
    q.init_step(w)
    assert q.log_alpha.shape == (6, 1, 1, 1)
    expected = 2 * w.abs().mean(dim=(1, 2, 3), keepdim=True) / math.sqrt(3)
    assert torch.allclose(q.alpha, expected, rtol=1e-6)
