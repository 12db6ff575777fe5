"""STE: round-and-clip with a fixed range, the plain baseline (docs/method.md §8).

Straight-through estimator (Bengio, Léonard & Courville 2013, "Estimating or propagating
gradients through stochastic neurons"), in the fixed-range form DoReFa-Net (Zhou et al. 2016)
and most QAT baselines use:

    x̂ = α·round(clamp(x/α, k_min, k_max))

``round`` passes the gradient straight through, so ``∂x̂/∂x = 1`` inside the clip range and
``0`` outside. The step ``α`` is *not* learned: it is fixed at calibration (MSE-optimal on the
float weights and activations, as SRQ's initial step), which is what isolates the value of a
learned step (LSQ) and of SRQ's backward in the comparison.
"""

from __future__ import annotations

from torch import Tensor

from srqcli.nn.quantizer import Quantizer


def round_ste(x: Tensor) -> Tensor:
    """``round(x)`` forward (half to even, as export), identity backward."""
    return x + (x.round() - x).detach()


def ste_quantize(x: Tensor, alpha: Tensor, kmin: int, kmax: int) -> Tensor:
    """``α·round(clamp(x/α, k_min, k_max))`` with the straight-through gradient.

    Gradients flow to ``alpha`` too when it requires them (LSQ builds on this); for STE the
    caller passes a fixed step.
    """
    return round_ste((x / alpha).clamp(kmin, kmax)) * alpha


class STEQuantizer(Quantizer):
    """Round-and-clip with a step fixed at calibration (a buffer, not a parameter)."""

    def __init__(self, bits: int, signed: bool | None, *, channels: int | None = None,
                 channel_axis: int = 0, dims: int = 1) -> None:
        super().__init__(bits, signed, channels=channels, channel_axis=channel_axis, dims=dims,
                         learn_step=False)

    def forward(self, x: Tensor) -> Tensor:
        self.check_ready()
        grid = self.grid
        return ste_quantize(x.float(), self.alpha.float(), grid.kmin, grid.kmax).to(x.dtype)
