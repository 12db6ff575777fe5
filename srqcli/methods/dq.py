"""DQ: differentiable quantization with learnable levels (Hoang et al. 2020), as specified in
docs/method.md §8: the quantization *levels* are parameters updated directly by gradient
descent, and the activation step is the one that minimises the quantization error over the
majority of channels.

Weights: a sorted vector of ``2^b`` levels per tensor (init ``α·k`` on srq's grid, ``α``
MSE-optimal). Forward: each weight takes its nearest level. Backward: the straight-through
estimator for the weight (``∂ŵ/∂w = 1`` within the level range, 0 outside) and, for level
``l_j``, the sum of the upstream gradients of the weights assigned to it (``∂ŵ/∂l_j = 1`` for
those). After each optimizer step the levels are re-sorted. Levels are non-uniform, so a DQ
model evaluates and reports but does not export (export needs integer codes on a uniform grid).

Activations: a uniform grid with a fixed step (straight-through rounding, as
:mod:`srqcli.methods.ste`), chosen at calibration by :func:`majority_step`: among the
per-channel MSE-optimal steps, the one whose *median* per-channel relative error is smallest,
i.e. the smallest error that at least half of the channels meet **[ours: our reading of
"minimise the error over the majority of channels"]**.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from srqcli.core.grid import IntGrid
from srqcli.core.srq import srq_forward_codes
from srqcli.methods.ste import STEQuantizer
from srqcli.nn.quantizer import Quantizer, mse_optimal_step


def dq_quantize(x: Tensor, levels: Tensor) -> Tensor:
    """Nearest of the sorted ``levels``; straight-through for ``x``, direct for the levels."""
    lv = levels.detach()
    idx = torch.bucketize(x.detach(), (lv[1:] + lv[:-1]) / 2)
    xc = x.clamp(lv[0], lv[-1])
    return levels[idx] + (xc - xc.detach())


def majority_step(samples: Tensor, grid: IntGrid) -> Tensor:
    """Per-tensor step for activations ``samples`` of shape ``(channels, n)``.

    Candidates are each channel's MSE-optimal step; each candidate is scored by the median
    over channels of the relative error ``‖x_c − Q(x_c)‖²/‖x_c‖²``; the best score wins.
    """
    x = samples.detach().float()
    candidates = mse_optimal_step(x, grid, channel_axis=0).flatten().unique()
    power = (x**2).sum(1).clamp_min(1e-12)
    scores = torch.stack([
        ((srq_forward_codes(x, c, grid.kmin, grid.kmax) * c - x) ** 2).sum(1).div(power).median()
        for c in candidates])
    return candidates[scores.argmin()]


class DQWeightQuantizer(Quantizer):
    """Learnable, directly updated levels; ``α`` (a buffer) tracks their mean spacing, the
    nominal step reports show."""

    uniform = False

    def __init__(self, bits: int) -> None:
        super().__init__(bits, True, learn_step=False)
        self.levels = nn.Parameter(torch.zeros(2**bits))

    @torch.no_grad()
    def init_step(self, x: Tensor, signed: bool | None = None) -> Tensor:
        step = super().init_step(x, signed)
        grid = self.grid
        self.levels.copy_(step * torch.arange(grid.kmin, grid.kmax + 1, dtype=torch.float32))
        return step

    @torch.no_grad()
    def project_(self) -> None:
        """Keep the levels sorted (nearest-level assignment needs it); refresh ``α``."""
        self.levels.copy_(self.levels.sort().values)
        spacing = (self.levels[-1] - self.levels[0]) / (self.levels.numel() - 1)
        self.log_alpha.copy_(spacing.clamp_min(1e-12).log())

    def forward(self, x: Tensor) -> Tensor:
        self.check_ready()
        return dq_quantize(x.float(), self.levels.float()).to(x.dtype)


class DQActQuantizer(STEQuantizer):
    """Uniform activation grid with the step :func:`majority_step` picks (fixed)."""

    #: Calibration passes activation samples as ``(channels, n)``.
    calibrates_per_channel = True

    def initial_step(self, x: Tensor) -> Tensor:
        return majority_step(x, self.grid)
