"""DQ: nearest learnable level, direct level gradients, majority-of-channels activation step."""

from __future__ import annotations

import torch
from conftest import gen

from srqcli.core.grid import IntGrid
from srqcli.methods.dq import DQWeightQuantizer, dq_quantize, majority_step
from srqcli.nn.quantizer import mse_optimal_step


def test_nearest_level_forward_and_backward():
    levels = torch.tensor([-1.0, -0.3, 0.1, 0.9], dtype=torch.float64, requires_grad=True)
    x = (torch.randn(500, generator=gen(0), dtype=torch.float64) * 0.8).requires_grad_()
    upstream = torch.randn(500, generator=gen(1), dtype=torch.float64)
    y = dq_quantize(x, levels)
    (y * upstream).sum().backward()
    lv = levels.detach()
    idx = (x.detach().unsqueeze(-1) - lv).abs().argmin(-1)
    assert torch.equal(y.detach(), lv[idx])
    # Each level's gradient is the sum of the upstream gradients of its elements.
    expected = torch.zeros(4, dtype=torch.float64).index_add_(0, idx, upstream)
    assert torch.allclose(levels.grad, expected, rtol=1e-12)
    inside = (x.detach() >= lv[0]) & (x.detach() <= lv[-1])
    assert (~inside).any()
    assert torch.equal(x.grad, upstream * inside)


def test_levels_stay_sorted_and_alpha_tracks_their_spacing():
    q = DQWeightQuantizer(2)
    q.init_step(torch.randn(100, generator=gen(2)))
    with torch.no_grad():
        q.levels.copy_(torch.tensor([0.5, -1.0, 0.0, 1.0]))
    q.project_()
    assert q.levels.tolist() == [-1.0, 0.0, 0.5, 1.0]
    assert torch.allclose(q.alpha, torch.tensor(2.0 / 3))
    assert not q.uniform


def test_majority_step_ignores_outlier_channels():
    grid = IntGrid(3, False)
    typical = torch.rand(7, 4000, generator=gen(3))
    outlier = torch.rand(1, 4000, generator=gen(4)) * 50
    samples = torch.cat([typical, outlier])
    step = majority_step(samples, grid)
    best_typical = mse_optimal_step(typical, grid)
    assert abs(float(step) / float(best_typical) - 1) < 0.05
    assert float(mse_optimal_step(samples, grid)) > 3 * float(step)  # one tensor-wide MSE would not
