"""DropBits: dropout for bits (docs/method.md §5).

During training each weight element may lose bits, so it is rounded on a reduced grid and
the multi-class STE runs over the surviving grid points only. Three variants:

``top``  (top-bit drop): the element's grid is clamped to the ``(b−d)``-bit range, same step.
``lsb``  (LSB drop): the element is rounded with step ``2^d·α`` inside the same range.
``mask`` (grid-point masking): every grid point is masked independently per element with a
         probability that decays exponentially from the finest level (odd codes: ``p``) to
         coarser ones (codes ≡ 2 mod 4: ``p²``, …); the element goes to the nearest surviving
         point, so it mostly gets ±1 step of noise, like a sample of π.

The number of dropped bits ``d`` (``top``/``lsb``) is nested and geometric:
``P(d ≥ j) = p^j``; so ``p`` is exactly the probability that an element loses at least one
bit. Never below 2 bits: ``d ≤ b − 2`` and, for ``mask``, the points of the 2-bit sub-grid
(multiples of ``2^(b−2)``, zero included) are never masked. All sampling uses an explicit
``torch.Generator`` so a run is reproducible. DropBits is a training-time regulariser: the
quantizer calls it only in ``train()`` mode, never in eval or export.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from srqcli.core.grid import IntGrid
from srqcli.core.names import VARIANTS  # noqa: F401  (callers read dropbits.VARIANTS)
from srqcli.core.srq import default_window


@dataclass(frozen=True)
class DropBitsSample:
    """What one DropBits draw does to a tensor, as inputs to the SRQ function.

    ``top``/``lsb`` give per-element grid bounds ``kmin``/``kmax`` and a step multiplier
    ``factor`` (``2^d`` for ``lsb``), so the uniform-grid SRQ function handles them. ``mask``
    gives ``survivors``: a boolean tensor ``x.shape + (2R+1,)`` over the codes
    ``m0 − R … m0 + R`` around the round-to-nearest code ``m0`` (``R`` from :func:`mask_reach`).
    """

    dropped: Tensor  # bits dropped per element (0 = untouched); for mask: 1 where moved
    kmin: Tensor | None = None
    kmax: Tensor | None = None
    factor: Tensor | None = None
    survivors: Tensor | None = None


def _uniform(shape: torch.Size | tuple[int, ...], generator: torch.Generator | None,
             device: torch.device) -> Tensor:
    """U(0, 1) draws on ``device`` from ``generator`` wherever that generator lives.

    The run's generator is a CPU one (seeded from the recipe), so the drops are the same
    stream on every device; the draws (weight-sized) are moved to the GPU.
    """
    where = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=where).to(device)


def sample_dropped_bits(shape: torch.Size, bits: int, p: float,
                        generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Per-element number of dropped bits ``d`` with ``P(d ≥ j) = p^j``, ``d ≤ bits − 2``."""
    max_drop = bits - 2
    if max_drop <= 0 or p <= 0.0:
        return torch.zeros(shape, device=device)
    u = _uniform(shape, generator, device)
    # d = #{j ≥ 1 : u < p^j} = floor(log u / log p)
    d = torch.floor(torch.log(u.clamp_min(1e-30)) / math.log(p)) if p < 1.0 else \
        torch.full(shape, float(max_drop), device=device)
    return d.clamp(0, max_drop)


def sample_top(shape: torch.Size, grid: IntGrid, p: float,
               generator: torch.Generator | None, device: torch.device) -> DropBitsSample:
    """Top-bit drop: per-element ``(b−d)``-bit bounds, same step."""
    d = sample_dropped_bits(shape, grid.bits, p, generator, device)
    reduced = 2.0 ** (grid.bits - d)
    if grid.signed:
        kmin, kmax = -reduced / 2, reduced / 2 - 1
    else:
        kmin, kmax = torch.zeros_like(reduced), reduced - 1
    return DropBitsSample(dropped=d, kmin=kmin, kmax=kmax)


def sample_lsb(shape: torch.Size, grid: IntGrid, p: float,
               generator: torch.Generator | None, device: torch.device) -> DropBitsSample:
    """LSB drop: step ``2^d·α``; bounds are the original range in units of the new step."""
    d = sample_dropped_bits(shape, grid.bits, p, generator, device)
    factor = 2.0**d
    return DropBitsSample(dropped=d, kmin=torch.ceil(grid.kmin / factor),
                          kmax=torch.floor(grid.kmax / factor), factor=factor)


def mask_probability(codes: Tensor, bits: int, p: float) -> Tensor:
    """Masking probability of each integer code: ``p^(ℓ+1)`` with ``ℓ`` = trailing zero bits.

    Codes on the 2-bit sub-grid (multiples of ``2^(b−2)``, including 0) are never masked.
    """
    c = codes.abs().to(torch.int64)
    level = torch.zeros_like(c)
    for bit in range(1, bits):  # ℓ = number of trailing zeros (capped at bits−1)
        level = level + ((c % (2**bit)) == 0).to(torch.int64)
    prob = torch.pow(torch.tensor(p, dtype=torch.float64), (level + 1).double()).to(codes.dtype)
    return torch.where(level >= bits - 2, torch.zeros_like(prob), prob)


def mask_reach(sigma_over_alpha: float) -> int:
    """Codes on each side of ``m0`` the mask variant considers: one more than the SRQ window
    (``2R`` edges around ``m0`` cover the same ``2w+2`` edges as :func:`srq_quantize`)."""
    return default_window(sigma_over_alpha) + 1


def sample_mask(x_over_alpha: Tensor, grid: IntGrid, p: float,
                generator: torch.Generator | None, reach: int) -> DropBitsSample:
    """Grid-point masking around each element's round-to-nearest code ``m0``."""
    m0 = torch.clamp(torch.round(x_over_alpha), grid.kmin, grid.kmax)
    offsets = torch.arange(-reach, reach + 1, device=m0.device, dtype=m0.dtype)
    codes = m0.unsqueeze(-1) + offsets
    in_grid = (codes >= grid.kmin) & (codes <= grid.kmax)
    u = _uniform(codes.shape, generator, m0.device)
    survivors = in_grid & (u >= mask_probability(codes, grid.bits, p))
    # If nothing survives within reach (only possible at ≥ 5 bits, probability ≤ p^(2R+1)),
    # keep m0.
    lonely = ~survivors.any(-1)
    survivors[..., reach] |= lonely
    moved = ~survivors[..., reach]
    return DropBitsSample(dropped=moved.to(m0.dtype), survivors=survivors)


def masked_grid_quantize(x: Tensor, alpha: Tensor, sigma: Tensor, grid: IntGrid,
                         survivors: Tensor, pi_mode: str = "detach") -> Tensor:
    """SRQ over a per-element grid with holes (the ``mask`` variant), eager autograd.

    ``survivors`` (``x.shape + (2R+1,)``) marks which of the codes ``m0 − R … m0 + R`` around
    the round-to-nearest code ``m0`` survive. Forward: the nearest surviving code, exact ties
    to the even code (as ``torch.round``). Backward: the multi-class STE over the surviving
    points in the edge form of :mod:`srqcli.core.srq`: the edge between consecutive survivors
    ``k_a < k_b`` sits at ``α(k_a+k_b)/2`` and weighs ``k_b − k_a`` in
    ``S = Σ_i k_i π_i = k_top − Σ_edges (k_b−k_a)·F``. Survivors are only known within reach:
    edges beyond count as ``F = 1`` above and ``F = 0`` below, as in the regular window.
    Runs on weights only, which are small, so the dense ``N × (2R+1)`` tensors cost little.
    """
    n = survivors.shape[-1]
    reach = n // 2
    u = x / alpha
    m0 = torch.clamp(torch.round(u), grid.kmin, grid.kmax).detach()
    codes = m0.unsqueeze(-1) + torch.arange(-reach, reach + 1, device=x.device, dtype=x.dtype)
    dist = torch.where(survivors, (codes - u.detach().unsqueeze(-1)).abs(),
                       torch.full_like(codes, float("inf")))
    nearest = dist == dist.amin(-1, keepdim=True)
    even = torch.remainder(codes, 2) == 0
    choice = (nearest.to(torch.int8) * 2 + (nearest & even).to(torch.int8)).argmax(-1, keepdim=True)
    m = torch.gather(codes, -1, choice).squeeze(-1)
    # Next surviving index above each position (n = none), by a scan from the top.
    nxt = torch.full_like(m0, float(n), dtype=torch.long)
    nexts = [None] * n
    for i in range(n - 1, -1, -1):
        nexts[i] = nxt
        nxt = torch.where(survivors[..., i], torch.full_like(nxt, i), nxt)
    s_val = torch.zeros_like(u)
    f_up = torch.ones_like(u)
    f_lo = torch.zeros_like(u)
    for i in range(n - 1):
        j = nexts[i]
        pair = survivors[..., i] & (j < n)
        kb = torch.gather(codes, -1, j.clamp(max=n - 1).unsqueeze(-1)).squeeze(-1)
        ka = codes[..., i]
        f = torch.sigmoid((alpha * (ka + kb) / 2 - x) / sigma)
        s_val = s_val + torch.where(pair, (kb - ka) * f, 0.0)
        f_up = torch.where(pair & (ka == m), f, f_up)
        f_lo = torch.where(pair & (kb == m), f, f_lo)
    # Edges above the highest survivor in reach have F ≈ 1 (weight 1 each, up to k_max), those
    # below the lowest F ≈ 0, so S = k_max − (k_max − top) − Σ = top − Σ.
    top = torch.where(survivors, codes, torch.full_like(codes, -float("inf"))).amax(-1)
    s_total = top - s_val
    pi_m = torch.clamp(f_up - f_lo, min=1e-6)
    if pi_mode == "detach":
        surrogate = alpha * s_total / pi_m.detach()
    elif pi_mode == "diff":
        surrogate = alpha * s_total / pi_m
    else:
        surrogate = alpha * m + alpha * (s_total - m) / pi_m
    # Value exactly α·m; gradient exactly the surrogate's.
    return (alpha * m).detach() + (surrogate - surrogate.detach())
