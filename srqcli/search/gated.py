"""The blended, gated weight quantizer of ``search-bits`` (docs/method.md §6).

A layer searched between ``b_min`` and ``b_max`` bits has one hard-concrete gate ``z_j`` per
droppable level ``j ∈ (b_min, b_max]``. Gates are nested: level ``j`` is on only if all lower
levels are, so its effective gate is ``g_j = Π_{j' ≤ j} z_j'``. The output blends the SRQ outputs
``x̂_j`` of the nested grids:

    x̂ = x̂_{b_min} + Σ_j g_j·(x̂_j − x̂_{j−1})  =  Σ_j (g_j − g_{j+1})·x̂_j   (g_{b_min} = 1, g_{b_max+1} = 0)

The second form is what we compute: with gates exactly 0/1 its weights are exactly one-hot, so
the output *equals* (bit for bit) fixed-bit SRQ at the selected width — the telescoped first
form would only equal it up to rounding.

Level structure (``structure``; ``search-bits`` uses ``lsb`` by default, measured in
docs/search-bits.md):

``top`` (DropBits' top-bit variant: range rings): ``x̂_j`` is SRQ with the *same* step
    ``α`` clamped to the ``j``-bit grid. ``x̂_j − x̂_{j−1}`` is non-zero only for the elements in
    the outer ring of the ``j``-bit grid, so a gate gets gradient from exactly the elements that
    need its extra bit; but a low level clips a ``b_max``-calibrated layer hard.
``lsb`` (DropBits' LSB variant: resolution levels): ``x̂_j`` is SRQ on the step ``2^(b_max−j)·α``
    inside the ``b_max``-bit range, so every level keeps the layer's range.

Expected bits: ``E[b] = b_min + Σ_j Π_{j' ≤ j} P(z_j' > 0)`` (independent gates).

Gate values used by ``forward``: a fresh sample per step in ``train()`` (from the quantizer's
``torch.Generator``); the read-out ``1[P(z > 0) > 0.5]`` (nested) in ``eval()``; or fixed values
set with :meth:`GatedSRQQuantizer.force_gates` (tests, and the repaired allocation).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import torch
from torch import Tensor, nn

from srqcli.core import gates as hc
from srqcli.core.grid import IntGrid
from srqcli.core.srq import srq_quantize
from srqcli.nn.layers import is_quant_layer
from srqcli.nn.quantizer import SIGMA_MAX_RATIO, SRQQuantizer

STRUCTURES = ("top", "lsb")
#: Gate logits are kept in ``[−GATE_BOUND, GATE_BOUND]`` so a gate can always come back.
GATE_BOUND = 8.0


class GatedSRQQuantizer(SRQQuantizer):
    """SRQ weight quantizer whose bit-width ``b_min..b_max`` is searched with nested gates.

    The inherited ``bits`` is ``b_max`` (the grid ``α`` was calibrated for); ``gate_logits``
    holds ``log α`` of the ``b_max − b_min`` gates, lowest level first.
    """

    def __init__(self, min_bits: int, max_bits: int, *, structure: str = "top",
                 gate_init: float = 0.9, channels: int | None = None, channel_axis: int = 0,
                 dims: int = 1, pi_mode: str = "detach", window: int | None = None,
                 sigma_init: float = 0.25, sigma_max: float = SIGMA_MAX_RATIO) -> None:
        if not 1 <= min_bits <= max_bits:
            raise ValueError(f"need 1 ≤ min_bits ≤ max_bits, got {min_bits}, {max_bits}")
        if structure not in STRUCTURES:
            raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")
        super().__init__(max_bits, True, channels=channels, channel_axis=channel_axis, dims=dims,
                         pi_mode=pi_mode, window=window, sigma_init=sigma_init,
                         sigma_max=sigma_max)
        self.min_bits, self.max_bits, self.structure = min_bits, max_bits, structure
        self.gate_logits = nn.Parameter(
            torch.full((max_bits - min_bits,), hc.logit_for_prob(gate_init)))
        self.gate_generator: torch.Generator | None = None
        self._forced: Tensor | None = None

    @classmethod
    def from_quantizer(cls, q: SRQQuantizer, min_bits: int, *, structure: str = "top",
                       gate_init: float = 0.9) -> GatedSRQQuantizer:
        """A gated quantizer searching ``min_bits..q.bits`` that starts from ``q``'s state."""
        channels = q.log_alpha.shape[q.channel_axis] if q.log_alpha.dim() else None
        g = cls(min_bits, q.bits, structure=structure, gate_init=gate_init, channels=channels,
                channel_axis=q.channel_axis, dims=max(q.log_alpha.dim(), 1), pi_mode=q.pi_mode,
                window=q.window, sigma_init=q.sigma_init, sigma_max=q.sigma_max)
        g.signed_mode = q.signed_mode
        with torch.no_grad():
            g.log_alpha.copy_(q.log_alpha)
            g.log_sigma.copy_(q.log_sigma)
            g.initialized.copy_(q.initialized)
            g.signed_flag.copy_(q.signed_flag)
        return g.to(q.log_alpha.device)

    # -- gates -------------------------------------------------------------------------
    @property
    def levels(self) -> int:
        return self.max_bits - self.min_bits

    def prob_on(self) -> Tensor:
        """``P(z_j > 0)`` of each gate (differentiable)."""
        return hc.prob_nonzero(self.gate_logits)

    def expected_bits(self) -> Tensor:
        """``E[b] = b_min + Σ_j Π_{j' ≤ j} P(z_j' > 0)`` (differentiable in the logits)."""
        return self.min_bits + torch.cumprod(self.prob_on(), 0).sum()

    def readout_bits(self) -> int:
        """Bits with every gate on iff ``P(z > 0) > 0.5``, nested (first off gate ends it)."""
        on = (self.prob_on() > 0.5).tolist()
        k = 0
        while k < len(on) and on[k]:
            k += 1
        return self.min_bits + k

    def force_gates(self, values: Tensor | None) -> None:
        """Use these gate values in every mode (``None``: back to sampling / read-out)."""
        self._forced = None if values is None else values.detach().to(self.gate_logits.device)

    def force_bits(self, bits: int | None) -> None:
        """Fix the gates to select ``bits`` exactly (``None``: undo)."""
        if bits is None:
            return self.force_gates(None)
        if not self.min_bits <= bits <= self.max_bits:
            raise ValueError(f"bits {bits} outside {self.min_bits}..{self.max_bits}")
        v = (torch.arange(self.levels) < bits - self.min_bits).to(self.gate_logits.dtype)
        self.force_gates(v)

    def current_gates(self) -> Tensor:
        """The gate values ``z`` the next forward uses (before nesting)."""
        if self._forced is not None:
            return self._forced
        if self.training:
            return hc.sample(self.gate_logits, self.gate_generator)
        k = self.readout_bits() - self.min_bits
        return (torch.arange(self.levels, device=self.gate_logits.device) < k).to(
            self.gate_logits.dtype)

    # -- quantization --------------------------------------------------------------------
    def level_grid(self, bits: int) -> tuple[float, int, int]:
        """``(step factor, k_min, k_max)`` of the ``bits``-bit level in units of ``α``."""
        if self.structure == "top":
            g = IntGrid(bits, bool(self.signed_flag))
            return 1.0, g.kmin, g.kmax
        top = self.grid
        f = float(2 ** (self.max_bits - bits))
        return f, math.ceil(top.kmin / f), math.floor(top.kmax / f)

    def quantize_level(self, x: Tensor, bits: int, alpha: Tensor | None = None,
                       sigma: Tensor | None = None) -> Tensor:
        """``x̂_bits``: SRQ on the ``bits``-bit level (same ``α``, ``σ`` as the blend)."""
        alpha = self.alpha.to(x.dtype) if alpha is None else alpha
        sigma = self.sigma.to(x.dtype) if sigma is None else sigma
        f, kmin, kmax = self.level_grid(bits)
        a = alpha * f if f != 1.0 else alpha
        return srq_quantize(x, a, sigma, kmin, kmax, window=self.edge_window(f), pi_mode=self.pi_mode)

    def forward(self, x: Tensor) -> Tensor:
        self.check_ready()
        alpha = self.alpha.to(x.dtype)
        sigma = self.sigma.to(x.dtype)
        z = self.current_gates().to(x.dtype)
        g = torch.cumprod(z, 0)  # nested: level j on only if all lower levels are
        one, zero = g.new_ones(1), g.new_zeros(1)
        full = torch.cat([one, g, zero])
        weights = full[:-1] - full[1:]  # weight of each level b_min..b_max
        if not torch.is_grad_enabled() or not weights.requires_grad:
            # Hard gates without gradient (eval, forced): compute only the selected level.
            hard = ((weights == 0) | (weights == 1)).all()
            if bool(hard):
                k = int(weights.argmax())
                return self.quantize_level(x, self.min_bits + k, alpha, sigma)
        out = None
        for k in range(self.levels + 1):
            term = weights[k] * self.quantize_level(x, self.min_bits + k, alpha, sigma)
            out = term if out is None else out + term
        return out

    @torch.no_grad()
    def project_(self) -> None:
        super().project_()
        self.gate_logits.clamp_(-GATE_BOUND, GATE_BOUND)

    def to_fixed(self, bits: int) -> SRQQuantizer:
        """A plain :class:`SRQQuantizer` at ``bits`` with this quantizer's step and σ.

        With the ``top`` structure it computes exactly what this quantizer computes with the
        gates selecting ``bits``; with ``lsb`` the step becomes ``2^(b_max−bits)·α``.
        """
        q = SRQQuantizer(bits, True, channels=self.log_alpha.shape[self.channel_axis]
                         if self.log_alpha.dim() else None, channel_axis=self.channel_axis,
                         dims=max(self.log_alpha.dim(), 1), pi_mode=self.pi_mode,
                         window=self.window, sigma_init=self.sigma_init, sigma_max=self.sigma_max)
        f, _, _ = self.level_grid(bits)
        with torch.no_grad():
            q.log_alpha.copy_(self.log_alpha + math.log(f))
            q.log_sigma.copy_(self.log_sigma)
            q.initialized.copy_(self.initialized)
            q.signed_flag.copy_(self.signed_flag)
        q.signed_mode = self.signed_mode
        return q.to(self.log_alpha.device)

    def extra_repr(self) -> str:
        return (f"bits={self.min_bits}..{self.max_bits}, structure={self.structure}, "
                f"signed={bool(self.signed_flag)}, pi_mode={self.pi_mode}")


def install_gates(model: nn.Module, min_bits: int, *, pinned: set[str] | frozenset[str] = frozenset(),
                  structure: str = "top", gate_init: float = 0.9,
                  generator: torch.Generator | None = None) -> dict[str, GatedSRQQuantizer]:
    """Replace the weight quantizer of every quantized layer not in ``pinned`` by a gated one
    searching ``min_bits..`` its current bits (calibrated state kept)."""
    out: dict[str, GatedSRQQuantizer] = {}
    for name, m in model.named_modules():
        if not is_quant_layer(m) or name in pinned:
            continue
        g = GatedSRQQuantizer.from_quantizer(m.weight_quant, min_bits, structure=structure,
                                             gate_init=gate_init)
        g.gate_generator = generator
        m.weight_quant = g
        out[name] = g
    return out


def gated_quantizers(model: nn.Module) -> Iterator[tuple[str, GatedSRQQuantizer]]:
    """``(layer name, gated weight quantizer)`` of a model with gates installed."""
    for name, m in model.named_modules():
        if is_quant_layer(m) and isinstance(m.weight_quant, GatedSRQQuantizer):
            yield name, m.weight_quant


def fix_allocation(model: nn.Module, alloc: Mapping[str, int]) -> None:
    """Swap every gated quantizer for a plain SRQ quantizer at its allocated bits."""
    for name, m in model.named_modules():
        if is_quant_layer(m) and isinstance(m.weight_quant, GatedSRQQuantizer):
            m.weight_quant = m.weight_quant.to_fixed(alloc[name])


def gate_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [g.gate_logits for _, g in gated_quantizers(model)]
