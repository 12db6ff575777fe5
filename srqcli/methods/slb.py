"""SLB: Searching for Low-Bit weights (Yang, Wang, Han, Xu, Xu & Tao, NeurIPS 2020,
arXiv 1909.09934).

Each weight is not a float but a categorical choice among the grid's discrete values
``v_k = α·k``: it owns logits ``θ ∈ R^{2^b}`` and training uses the continuous relaxation

    w = Σ_k softmax(θ/τ)_k · v_k

with a temperature ``τ`` annealed towards 0 (:class:`srqcli.methods.schedule.TemperatureSchedule`,
default 1.0 → 0.05), so the relaxation approaches the hard choice. At the end the weight is
the argmax value (eval uses it throughout), and because the argmax network's BatchNorm
statistics differ from the relaxed one's they are re-estimated (the paper's state BN
recalibration). Activations are quantized with LSQ, as in the paper.

**[ours]**: the value set is srq's uniform integer grid with a fixed per-tensor (or per-channel)
step ``α`` (MSE-optimal on the float weight), so the final weights are codes on a uniform grid
and export as any srq model; the logits start at ``θ_k = −|w/α − k|`` (argmax = the nearest
grid point of the float weight).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from srqcli.nn.quantizer import Quantizer

#: Default temperature schedule (start, end).
TEMPERATURE = (1.0, 0.05)


def grid_codes(kmin: int, kmax: int, like: Tensor) -> Tensor:
    return torch.arange(kmin, kmax + 1, dtype=like.dtype, device=like.device)


def slb_relaxed(logits: Tensor, alpha: Tensor, codes: Tensor, temperature: float) -> Tensor:
    """``α·Σ_k softmax(θ/τ)_k·k`` over the last axis of ``logits``."""
    return alpha * (torch.softmax(logits / temperature, dim=-1) * codes).sum(-1)


def slb_hard(logits: Tensor, alpha: Tensor, codes: Tensor) -> Tensor:
    """``α·k[argmax θ]``: the discrete weight."""
    return alpha * codes[logits.argmax(-1)]


class SLBWeightQuantizer(Quantizer):
    """Weights as softmax-relaxed choices over the grid; the layer's float weight only seeds
    the logits (``shape``: the weight's shape)."""

    trains_other_forward = True  # softmax mixtures in training, the argmax deployed

    def __init__(self, bits: int, *, shape: torch.Size, channels: int | None = None,
                 channel_axis: int = 0) -> None:
        super().__init__(bits, True, channels=channels, channel_axis=channel_axis,
                         dims=len(shape), learn_step=False)
        self.logits = nn.Parameter(torch.zeros(*shape, 2**bits))
        self.temperature = TEMPERATURE[0]  # set per step by the temperature schedule

    @torch.no_grad()
    def init_step(self, x: Tensor, signed: bool | None = None) -> Tensor:
        step = super().init_step(x, signed)
        codes = grid_codes(self.grid.kmin, self.grid.kmax, self.logits)
        u = (x.detach().float() / self.alpha).unsqueeze(-1)
        self.logits.copy_(-(u - codes).abs())
        return step

    def forward(self, x: Tensor) -> Tensor:
        self.check_ready()
        codes = grid_codes(self.grid.kmin, self.grid.kmax, self.logits)
        if self.training:
            w = slb_relaxed(self.logits, self.alpha, codes, self.temperature)
        else:
            w = slb_hard(self.logits, self.alpha, codes)
        return w.to(x.dtype)

    @torch.no_grad()
    def harden_(self, weight: Tensor) -> None:
        """Write the argmax values into the layer's ``weight``, so every consumer of the
        weight (export, reports) sees the final discrete network."""
        codes = grid_codes(self.grid.kmin, self.grid.kmax, self.logits)
        weight.copy_(slb_hard(self.logits, self.alpha, codes))
