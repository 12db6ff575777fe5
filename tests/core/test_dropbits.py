"""DropBits (srqcli/core/dropbits.py): rates, bounds, masking, and the masked-grid SRQ."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from conftest import gen

from srqcli.core import dropbits as db
from srqcli.core import srq
from srqcli.core.grid import IntGrid
from srqcli.core.srq import full_grid_surrogate, srq_quantize

R = db.mask_reach(0.25)  # reach used by the quantizer at the initial σ = α/4

F64 = torch.float64
RATES = (0.02, 0.05, 0.1, 0.3)
N = 200_000
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("eager_srq")


def within(frac: float, p: float, n: int = N, k: float = 4.0) -> bool:
    return abs(frac - p) <= k * math.sqrt(p * (1 - p) / n)


# ----------------------------------------------------------------- top / lsb sampling

@pytest.mark.parametrize("sampler", [db.sample_top, db.sample_lsb], ids=["top", "lsb"])
@pytest.mark.parametrize("p", RATES)
@pytest.mark.parametrize("bits,signed", [(3, True), (4, False), (5, True), (8, True)])
def test_drop_rate_matches_p(sampler, p, bits, signed):
    sample = sampler(torch.Size([N]), IntGrid(bits, signed), p, gen(bits), CPU)
    d = sample.dropped
    assert torch.equal(d, d.round()) and d.min() >= 0
    assert d.max() <= bits - 2  # never below 2 bits
    assert within(float((d >= 1).float().mean()), p), float((d >= 1).float().mean())
    if bits >= 4:
        assert within(float((d >= 2).float().mean()), p * p)
    if bits >= 5:
        assert within(float((d >= 3).float().mean()), p**3)


@pytest.mark.parametrize("sampler", [db.sample_top, db.sample_lsb], ids=["top", "lsb"])
@pytest.mark.parametrize("signed", [True, False])
def test_two_bits_drops_nothing(sampler, signed):
    grid = IntGrid(2, signed)
    sample = sampler(torch.Size([10_000]), grid, 0.5, gen(), CPU)
    assert sample.dropped.abs().sum() == 0
    assert (sample.kmin == grid.kmin).all() and (sample.kmax == grid.kmax).all()
    assert db.sample_dropped_bits(torch.Size([100]), 2, 0.9, gen(), CPU).abs().sum() == 0


def test_high_rate_never_below_two_bits():
    d = db.sample_dropped_bits(torch.Size([N]), 4, 0.9, gen(), CPU)
    assert d.max() == 2 and d.min() == 0


@pytest.mark.parametrize("bits,signed", [(3, True), (4, True), (4, False), (8, True), (8, False)])
def test_top_bounds_are_the_reduced_grid(bits, signed):
    grid = IntGrid(bits, signed)
    sample = db.sample_top(torch.Size([50_000]), grid, 0.3, gen(1), CPU)
    assert sample.factor is None
    for d in range(bits - 1):
        sel = sample.dropped == d
        if d <= 2:
            assert sel.any()
        small = grid.narrowed(d)
        assert (sample.kmin[sel] == small.kmin).all() and (sample.kmax[sel] == small.kmax).all()


@pytest.mark.parametrize("bits,signed", [(3, True), (4, True), (4, False), (8, True), (8, False)])
def test_lsb_bounds_are_the_coarse_grid_in_the_same_range(bits, signed):
    grid = IntGrid(bits, signed)
    sample = db.sample_lsb(torch.Size([50_000]), grid, 0.3, gen(2), CPU)
    assert torch.equal(sample.factor, 2.0**sample.dropped)
    lo, hi = sample.kmin * sample.factor, sample.kmax * sample.factor
    assert (lo >= grid.kmin).all() and (hi <= grid.kmax).all()
    # … and they are the extreme multiples of 2^d inside the range
    assert (lo - sample.factor < grid.kmin).all() and (hi + sample.factor > grid.kmax).all()
    assert torch.equal(sample.kmin, sample.kmin.round()) and torch.equal(sample.kmax, sample.kmax.round())


@pytest.mark.parametrize("sampler", [db.sample_top, db.sample_lsb], ids=["top", "lsb"])
def test_samplers_reproducible(sampler):
    grid = IntGrid(4, True)
    a = sampler(torch.Size([5000]), grid, 0.1, gen(7), CPU)
    b = sampler(torch.Size([5000]), grid, 0.1, gen(7), CPU)
    c = sampler(torch.Size([5000]), grid, 0.1, gen(8), CPU)
    assert torch.equal(a.dropped, b.dropped) and torch.equal(a.kmin, b.kmin)
    assert not torch.equal(a.dropped, c.dropped)


# ---------------------------------------------------------------------- grid masking

def trailing_zeros(k: int) -> int:
    k = abs(k)
    if k == 0:
        return 99
    t = 0
    while k % 2 == 0:
        k //= 2
        t += 1
    return t


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("p", [0.05, 0.3])
def test_mask_probability(bits, signed, p):
    grid = IntGrid(bits, signed)
    codes = torch.arange(grid.kmin, grid.kmax + 1, dtype=F64)
    prob = db.mask_probability(codes, bits, p)
    sub = 2 ** (bits - 2)
    for k, q in zip(codes.tolist(), prob.tolist()):
        k = int(k)
        if k % sub == 0:  # the 2-bit sub-grid (zero included) is never masked
            assert q == 0.0, k
        elif k % 2:
            assert q == pytest.approx(p), k
        else:  # decays exponentially with the level of the code
            assert q == pytest.approx(p ** (trailing_zeros(k) + 1)), k
    if bits == 2:
        assert (prob == 0).all()
    sub_grid = (codes % sub == 0)
    assert int(sub_grid.sum()) == 4


def mask_inputs(grid: IntGrid, n: int, seed: int, alpha: float = 0.1, dtype=F64):
    g = gen(seed)
    u = torch.rand(n, generator=g, dtype=dtype)
    x = ((grid.kmin - 2) + u * (grid.kmax - grid.kmin + 4)) * alpha
    return x, torch.tensor(alpha, dtype=dtype)


@pytest.mark.parametrize("bits,signed", [(2, True), (3, True), (4, False), (5, True), (8, True)])
@pytest.mark.parametrize("p", [0.1, 0.3])
def test_mask_goes_to_nearest_survivor(bits, signed, p):
    grid = IntGrid(bits, signed)
    x, alpha = mask_inputs(grid, 10_000, bits)
    u = x / alpha
    sample = db.sample_mask(u, grid, p, gen(bits + 100), R)
    surv = sample.survivors
    m0 = torch.clamp(torch.round(u), grid.kmin, grid.kmax)
    codes = m0.unsqueeze(-1) + torch.arange(-R, R + 1, dtype=F64)
    in_grid = (codes >= grid.kmin) & (codes <= grid.kmax)
    assert not (surv & ~in_grid).any()
    protected = in_grid & (db.mask_probability(codes, bits, p) == 0)
    assert surv[protected].all()  # the 2-bit sub-grid always survives
    # masking rate of odd in-grid codes ≈ p
    odd = in_grid & (codes.remainder(2) == 1)
    if bits > 2:
        frac = float((~surv[odd]).float().mean())
        assert within(frac, p, int(odd.sum()), k=5.0), frac
    else:
        assert surv[in_grid].all()

    xx = x.clone().requires_grad_()
    out = db.masked_grid_quantize(xx, alpha, alpha / 4, grid, surv)
    k = torch.round(out.detach() / alpha)
    # outputs are α·k for k on the full grid (exact up to float rounding, see test below)
    torch.testing.assert_close(out.detach(), alpha * k, rtol=1e-12, atol=1e-14)
    assert ((k >= grid.kmin) & (k <= grid.kmax)).all()
    idx = (k - m0 + R).long()
    assert ((idx >= 0) & (idx <= 2 * R)).all()
    assert surv.gather(-1, idx.unsqueeze(-1)).all()  # never a masked point
    dist = torch.where(surv, (codes - u.unsqueeze(-1)).abs(), torch.full_like(codes, math.inf))
    assert ((k - u).abs() <= dist.min(-1).values + 1e-12).all()  # the nearest survivor
    moved = k != m0
    assert torch.equal(sample.dropped.bool(), moved)
    if bits > 2:
        assert moved.any()
    # the multi-class STE over the surviving points keeps the x-gradient's sign (π_m detached)
    upstream = torch.randn(x.shape, generator=gen(5), dtype=F64)
    (out * upstream).sum().backward()
    assert torch.isfinite(xx.grad).all()
    assert (xx.grad * upstream >= 0).all()


def test_mask_reproducible():
    grid = IntGrid(4, True)
    x, alpha = mask_inputs(grid, 5000, 0)
    a = db.sample_mask(x / alpha, grid, 0.2, gen(3), R).survivors
    b = db.sample_mask(x / alpha, grid, 0.2, gen(3), R).survivors
    c = db.sample_mask(x / alpha, grid, 0.2, gen(4), R).survivors
    assert torch.equal(a, b) and not torch.equal(a, c)


# ------------------------------------------- masked grid with all points surviving (5)

def all_survivors(x: torch.Tensor, alpha: torch.Tensor, grid: IntGrid, reach: int = R) -> torch.Tensor:
    m0 = torch.clamp(torch.round(x / alpha), grid.kmin, grid.kmax)
    codes = m0.unsqueeze(-1) + torch.arange(-reach, reach + 1, dtype=x.dtype)
    return (codes >= grid.kmin) & (codes <= grid.kmax)


def masked_vs_srq(bits, signed, ratio, window, pi_mode="detach", n=4000, dtype=F64, reach=R):
    """Outputs and max elementwise relative errors (x, α, σ) of the masked grid vs srq."""
    grid = IntGrid(bits, signed)
    x, a = mask_inputs(grid, n, bits + 17, dtype=dtype)
    upstream = torch.randn(n, generator=gen(9), dtype=dtype)
    surv = all_survivors(x, a, grid, reach)
    results = []
    fns = [lambda xx, aa, ss: db.masked_grid_quantize(xx, aa, ss, grid, surv, pi_mode)]
    if window == "full":
        fns.append(lambda xx, aa, ss: full_grid_surrogate(xx, aa, ss, grid.kmin, grid.kmax, pi_mode))
    else:
        fns.append(lambda xx, aa, ss: srq_quantize(xx, aa, ss, grid.kmin, grid.kmax,
                                                   window=window, pi_mode=pi_mode))
    for fn in fns:
        xx = x.clone().requires_grad_()
        aa = torch.full_like(x, float(a)).requires_grad_()
        ss = torch.full_like(x, float(a) * ratio).requires_grad_()
        out = fn(xx, aa, ss)
        (out * upstream).sum().backward()
        results.append((out.detach(), xx.grad, aa.grad, ss.grad))
    (o1, *g1), (o2, *g2) = results
    errs = [float((p - q).abs().max() / q.abs().max()) for p, q in zip(g1, g2)]
    return o1, o2, errs


CONFIGS = list(itertools.product([2, 3, 4, 8], [True, False]))


def test_masked_all_survivors_forward_matches_srq_up_to_rounding():
    for (bits, signed), dtype in itertools.product(CONFIGS, [torch.float32, F64]):
        o1, o2, _ = masked_vs_srq(bits, signed, 0.25, 3, dtype=dtype)
        torch.testing.assert_close(o1, o2, rtol=1e-6 if dtype == torch.float32 else 1e-13,
                                   atol=1e-12)


def test_masked_all_survivors_forward_exact():
    for (bits, signed), dtype in itertools.product(CONFIGS, [torch.float32, F64]):
        for ratio in (0.1, 0.25, 0.5):
            o1, o2, _ = masked_vs_srq(bits, signed, ratio, 3, dtype=dtype)
            assert torch.equal(o1, o2), (bits, signed, dtype, ratio)


def test_masked_all_survivors_ties_round_half_to_even():
    grid = IntGrid(4, True)
    alpha = torch.tensor(0.25, dtype=F64)
    x = (torch.arange(grid.kmin, grid.kmax, dtype=F64) + 0.5) * alpha
    out = db.masked_grid_quantize(x, alpha, alpha / 4, grid, all_survivors(x, alpha, grid))
    ref = srq_quantize(x, alpha, alpha / 4, grid.kmin, grid.kmax)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("pi_mode", srq.PI_MODES)
def test_masked_all_survivors_backward_equals_srq_window(pi_mode):
    """Reach R covers the 2R edges m±½ … m±(R−½): srq's window w = R−1 exactly."""
    for (bits, signed), ratio, reach in itertools.product(CONFIGS, (0.05, 0.1, 0.25, 0.5), (3, 4)):
        _, _, errs = masked_vs_srq(bits, signed, ratio, reach - 1, pi_mode, reach=reach)
        assert max(errs) <= 1e-10, (bits, signed, ratio, reach, errs)


def test_mask_reach_follows_the_srq_window():
    for ratio in (0.05, 0.25, 0.3, 0.4, 0.5):
        assert db.mask_reach(ratio) == srq.default_window(ratio) + 1


def test_masked_all_survivors_truncation_at_sigma_cap():
    for bits, signed in CONFIGS:
        for ratio in (0.25, 0.5):
            _, _, errs = masked_vs_srq(bits, signed, ratio, "full", n=2000,
                                       reach=db.mask_reach(ratio))
            assert max(errs) < 1e-3, (bits, signed, ratio, errs)


def test_masked_all_survivors_truncation_up_to_quarter_step():
    for bits, signed in CONFIGS:
        for ratio in (0.1, 0.25):
            _, _, errs = masked_vs_srq(bits, signed, ratio, "full", n=2000,
                                       reach=db.mask_reach(ratio))
            assert max(errs) < 1e-3, (bits, signed, ratio, errs)
