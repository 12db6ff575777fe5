"""STE baseline: round-and-clip forward, identity gradient inside the range, fixed step."""

from __future__ import annotations

import torch
from conftest import gen

from srqcli.methods.ste import STEQuantizer, round_ste, ste_quantize


def test_forward_is_round_and_clip_and_gradient_is_masked_identity():
    x = (torch.randn(500, generator=gen(0), dtype=torch.float64) * 2).requires_grad_()
    alpha = torch.tensor(0.3, dtype=torch.float64)
    y = ste_quantize(x, alpha, -4, 3)
    u = x.detach() / alpha
    assert torch.equal(y.detach(), torch.clamp(torch.round(u), -4, 3) * alpha)
    y.sum().backward()
    inside = (u >= -4) & (u <= 3)
    assert inside.any() and (~inside).any()
    assert torch.allclose(x.grad, inside.double(), rtol=1e-12, atol=0)


def test_round_ste_rounds_half_to_even_with_identity_gradient():
    x = torch.tensor([0.5, 1.5, -2.5, 0.49], requires_grad=True)
    y = round_ste(x)
    assert y.tolist() == [0.0, 2.0, -2.0, 0.0]
    y.sum().backward()
    assert x.grad.tolist() == [1.0] * 4


def test_step_is_fixed_after_calibration():
    q = STEQuantizer(3, True)
    w = torch.randn(64, generator=gen(1))
    q.init_step(w)
    assert list(q.parameters()) == []  # nothing for the optimizer: the step is a buffer
    assert "log_alpha" in q.state_dict()
    out = q(w)
    grid = q.grid
    assert torch.allclose(out, torch.clamp(torch.round(w / q.alpha), grid.kmin, grid.kmax) * q.alpha)
