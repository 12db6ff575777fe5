"""LSQ: Learned Step Size Quantization (Esser et al., ICLR 2020, arXiv 1902.08153).

Forward is round-and-clip, ``v̂ = round(clamp(v/s, −Q_N, Q_P))·s``; the input gradient is the
straight-through estimator masked outside the clip range (``∂v̂/∂v = 1`` iff
``−Q_N ≤ v/s ≤ Q_P``), and the step gradient is the paper's eq. 3,

    ∂v̂/∂s = −v/s + round(v/s)   inside,   −Q_N / Q_P   below / above,

scaled by ``g = 1/sqrt(N·Q_P)`` (``N``: elements of the weight tensor, or features of one
activation sample) so the step's update is balanced against the weights'. Init
``s = 2·mean|v|/sqrt(Q_P)`` (on the float weights, and on calibration activations of the float
network, as the paper's first batch).

One departure, shared with SRQ for a like-for-like comparison: the step is stored as
``log s`` (positive by construction, docs/method.md §1); the gradient the optimizer sees is
``s·g·∂v̂/∂s``.
"""

from __future__ import annotations

import math

from torch import Tensor

from srqcli.core.grid import IntGrid
from srqcli.methods.ste import ste_quantize
from srqcli.nn.quantizer import Quantizer


def grad_scale(x: Tensor, scale: float) -> Tensor:
    """Value ``x``, gradient multiplied by ``scale``."""
    return (x - x * scale).detach() + x * scale


def lsq_quantize(x: Tensor, step: Tensor, kmin: int, kmax: int, g: float) -> Tensor:
    """LSQ fake-quantization with the step's gradient scaled by ``g``."""
    return ste_quantize(x, grad_scale(step, g), kmin, kmax)


def lsq_grad_scale(numel: int, kmax: int) -> float:
    """``g = 1/sqrt(N·Q_P)``."""
    return 1.0 / math.sqrt(numel * kmax)


def lsq_init_step(x: Tensor, grid: IntGrid, channel_axis: int | None = None) -> Tensor:
    """``2·mean|x|/sqrt(Q_P)``, per tensor or per channel (channel shape kept)."""
    x = x.detach().float()
    if channel_axis is None:
        return (2 * x.abs().mean() / math.sqrt(grid.kmax)).clamp_min(1e-8)
    dims = [d for d in range(x.dim()) if d != channel_axis]
    return (2 * x.abs().mean(dim=dims, keepdim=True) / math.sqrt(grid.kmax)).clamp_min(1e-8)


class LSQQuantizer(Quantizer):
    """A learned step with LSQ's gradient scale and initialisation.

    ``activation``: the quantized tensor is a batch of activations, so ``N`` in the gradient
    scale counts one sample's features (the paper's); for weights it is the whole tensor.
    """

    def __init__(self, bits: int, signed: bool | None, *, activation: bool,
                 channels: int | None = None, channel_axis: int = 0, dims: int = 1) -> None:
        super().__init__(bits, signed, channels=channels, channel_axis=channel_axis, dims=dims)
        self.activation = activation

    def initial_step(self, x: Tensor) -> Tensor:
        return lsq_init_step(x, self.grid, self.channel_axis if self.log_alpha.dim() else None)

    def forward(self, x: Tensor) -> Tensor:
        self.check_ready()
        grid = self.grid
        numel = x[0].numel() if self.activation else x.numel()
        g = lsq_grad_scale(numel, grid.kmax)
        return lsq_quantize(x.float(), self.alpha.float(), grid.kmin, grid.kmax, g).to(x.dtype)
