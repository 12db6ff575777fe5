"""SRQQuantizer (srqcli/nn/quantizer.py): parametrisation, init, encoding, DropBits in train/eval."""

from __future__ import annotations

import functools
import itertools
import math

import pytest
import torch
from conftest import gen

from srqcli.core import dropbits as db
from srqcli.core.encoding import Encoding
from srqcli.core.grid import IntGrid
from srqcli.nn.quantizer import (
    SIGMA_MAX_RATIO,
    SIGMA_MIN_RATIO,
    SRQQuantizer,
    mse_optimal_step,
)

pytestmark = pytest.mark.usefixtures("eager_srq")


def make_quantizer(bits=4, signed=True, x=None, channels=None, dims=1, seed=0, **kw):
    q = SRQQuantizer(bits, signed, channels=channels, dims=dims, **kw)
    if x is None:
        x = torch.randn(4000, generator=gen(seed))
    q.init_step(x)
    return q


def round_clip(x, alpha, kmin, kmax):
    return alpha * torch.clamp(torch.round(x / alpha), kmin, kmax)


# ---------------------------------------------------------------- α, σ constraints (6)

def check_constraints(q: SRQQuantizer) -> None:
    alpha, sigma = q.alpha.detach(), q.sigma.detach()
    assert torch.isfinite(q.log_alpha).all() and torch.isfinite(q.log_sigma).all()
    assert torch.isfinite(alpha).all() and torch.isfinite(sigma).all()
    assert (alpha > 0).all()
    assert (sigma <= alpha * SIGMA_MAX_RATIO * (1 + 1e-6)).all()
    assert (sigma >= alpha * SIGMA_MIN_RATIO * (1 - 1e-6)).all()
    # project_ keeps the stored log σ itself inside the band
    raw = q.log_sigma.detach().exp()
    assert (raw <= alpha * SIGMA_MAX_RATIO * (1 + 1e-5)).all()
    assert (raw >= alpha * SIGMA_MIN_RATIO * (1 - 1e-5)).all()


def train_steps(q, x, lr, loss_fn, steps=50):
    opt = torch.optim.SGD(q.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(q(x)).backward()
        opt.step()
        q.project_()


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_alpha_sigma_stay_valid_under_huge_gradients(bits):
    x = torch.randn(1000, generator=gen(bits))
    for sign, scale, per_channel in itertools.product((1.0, -1.0), (1e3, 1e6), (False, True)):
        if per_channel:
            w = torch.randn(8, 3, 3, 3, generator=gen(1))
            q = make_quantizer(bits, True, w, channels=8, dims=4)
            inp = w
        else:
            q = make_quantizer(bits, True, x)
            inp = x
        train_steps(q, inp, 10.0, lambda y, k=scale * sign: (y * k).sum())
        check_constraints(q)


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("per_channel", [False, True])
def test_sigma_band_under_moderate_training(bits, per_channel):
    """σ is pushed against both ends of its band; the constraints hold after every step."""
    w = torch.randn(8, 3, 3, 3, generator=gen(bits))
    if per_channel:
        q = make_quantizer(bits, True, w, channels=8, dims=4)
    else:
        q = make_quantizer(bits, True, w)
    target = torch.randn(w.shape, generator=gen(99))
    for loss_fn in (lambda y: ((y - target) ** 2).sum(), lambda y: -(y * target).sum()):
        opt = torch.optim.SGD(q.parameters(), lr=0.05)
        for step in range(30):
            opt.zero_grad()
            loss_fn(q(w)).backward()
            # make σ's own gradient large in both directions (10 steps down, 10 up, …)
            q.log_sigma.grad = q.log_sigma.grad + (100.0 if (step // 10) % 2 else -100.0)
            opt.step()
            q.project_()
            check_constraints(q)


def test_alpha_positive_by_construction():
    q = SRQQuantizer(4, True)
    with torch.no_grad():
        q.log_alpha.fill_(-5.0)
        q.log_sigma.fill_(10.0)  # far above the cap
    alpha = float(q.alpha.detach())
    assert alpha > 0 and float(q.sigma.detach()) == pytest.approx(alpha * 0.5)
    q.project_()
    assert float(q.log_sigma.detach()) == pytest.approx(math.log(0.5 * alpha), rel=1e-6)
    with torch.no_grad():
        q.log_sigma.fill_(-50.0)
    assert float(q.sigma.detach()) == pytest.approx(alpha * 0.05)
    q.project_()
    assert float(q.log_sigma.detach()) == pytest.approx(math.log(0.05 * alpha), rel=1e-6)


# ------------------------------------------------------------------------ init_step (6)

def mse(x, alpha, grid):
    x = x.double()
    return float(((round_clip(x, float(alpha), grid.kmin, grid.kmax) - x) ** 2).sum())


def brute_force_best(x, grid, count=1000):
    """Smallest MSE over ``count`` steps evenly spaced in (0, 2·amax/max(|kmin|, kmax)]."""
    span = max(-grid.kmin, grid.kmax)
    hi = float(x.abs().max()) / span * 2.0
    x = x.double().flatten()
    best = math.inf
    for cands in torch.linspace(hi / count, hi, count, dtype=torch.float64).split(100):
        a = cands[:, None]
        err = ((round_clip(x[None, :], a, grid.kmin, grid.kmax) - x[None, :]) ** 2).sum(1)
        best = min(best, float(err.min()))
    return best


def data(kind: str, n: int, seed: int) -> torch.Tensor:
    g = gen(seed)
    if kind == "gauss":
        return torch.randn(n, generator=g)
    if kind == "laplace":
        u = torch.rand(n, generator=g) - 0.5
        return -torch.sign(u) * torch.log1p(-2 * u.abs())
    if kind == "student3":
        return torch.randn(n, generator=g) / torch.sqrt(
            torch.randn(n, 3, generator=g).pow(2).mean(1))
    if kind == "relu":
        return torch.relu(torch.randn(n, generator=g))
    if kind == "uniform":
        return torch.rand(n, generator=g) * 2 - 1
    raise ValueError(kind)


KINDS = ["gauss", "laplace", "student3", "relu"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_init_step_is_mse_optimal_per_tensor(kind, bits):
    x = data(kind, 5_000, bits)
    q = SRQQuantizer(bits, None)
    q.init_step(x)
    assert bool(q.signed_flag) == (kind != "relu")
    grid = q.grid
    assert mse(x, q.alpha.detach(), grid) <= 1.02 * brute_force_best(x, grid)
    assert float(q.sigma.detach()) == pytest.approx(0.25 * float(q.alpha.detach()), rel=1e-5)


def ratio_to_best(x: torch.Tensor, bits: int, signed: bool) -> float:
    grid = IntGrid(bits, signed)
    return mse(x, mse_optimal_step(x, grid), grid) / brute_force_best(x, grid)


@functools.cache
def ratio_8bit(kind: str) -> float:
    return ratio_to_best(data(kind, 5_000, 8), 8, kind != "relu")


def test_init_step_is_mse_optimal_8bit():
    for kind in KINDS:
        assert ratio_8bit(kind) <= 1.02, kind


@pytest.mark.parametrize("bits", [3, 4])
def test_init_step_is_mse_optimal_uniform_signed(bits):
    x = data("uniform", 5_000, bits)
    assert ratio_to_best(x, bits, True) <= 1.02


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_init_step_is_mse_optimal_per_channel(bits):
    g = gen(bits)
    scales = torch.tensor([0.01, 0.1, 1.0, 3.0, 0.5, 0.03]).reshape(6, 1, 1, 1)
    w = torch.randn(6, 8, 5, 5, generator=g) * scales
    w[1] = data("laplace", 200, 1).reshape(8, 5, 5) * 0.1
    q = SRQQuantizer(bits, True, channels=6, dims=4)
    q.init_step(w)
    assert q.alpha.shape == (6, 1, 1, 1) and q.sigma.shape == (6, 1, 1, 1)
    grid = q.grid
    alpha = q.alpha.detach()
    for c in range(6):
        xc = w[c].flatten()
        assert mse(xc, alpha[c], grid) <= 1.02 * brute_force_best(xc, grid), c
    assert alpha.flatten().std() > 0  # one step per channel


@pytest.mark.parametrize("channel_axis", [0, 1])
def test_mse_optimal_step_channel_axis_shape(channel_axis):
    x = torch.randn(5, 7, 3, generator=gen())
    step = mse_optimal_step(x, IntGrid(4, True), channel_axis)
    expected = [1, 1, 1]
    expected[channel_axis] = x.shape[channel_axis]
    assert list(step.shape) == expected and (step > 0).all()


def test_signedness_auto_detected():
    q = SRQQuantizer(4, None)
    q.init_step(torch.rand(1000, generator=gen()))  # non-negative → unsigned
    assert not bool(q.signed_flag) and q.grid.kmin == 0 and q.grid.kmax == 15
    q2 = SRQQuantizer(4, None)
    q2.init_step(torch.rand(1000, generator=gen()) - 0.1)  # some negatives → signed
    assert bool(q2.signed_flag) and q2.grid.kmin == -8 and q2.grid.kmax == 7
    q3 = SRQQuantizer(4, True)
    q3.init_step(torch.rand(1000, generator=gen()))  # explicit signedness wins
    assert bool(q3.signed_flag)
    q4 = SRQQuantizer(4, False)
    q4.init_step(torch.randn(1000, generator=gen()))
    assert not bool(q4.signed_flag)


def test_uncalibrated_quantizer_refuses_to_run():
    with pytest.raises(RuntimeError):
        SRQQuantizer(4, True)(torch.randn(3))


@pytest.mark.parametrize("per_channel", [False, True])
def test_encoding(per_channel):
    if per_channel:
        w = torch.randn(6, 3, 3, 3, generator=gen())
        q = make_quantizer(3, True, w, channels=6, dims=4)
    else:
        q = make_quantizer(3, None, torch.rand(100, generator=gen()))
    enc = q.encoding()
    assert isinstance(enc, Encoding)
    assert enc.bits == 3 and enc.signed == bool(q.signed_flag) == per_channel
    assert torch.equal(enc.broadcast_step(4 if per_channel else 0), q.alpha.detach())
    assert not enc.step.requires_grad
    assert enc.per_channel == per_channel
    assert enc.step.shape == ((6,) if per_channel else ())
    assert enc.axis == (0 if per_channel else None)
    assert enc.grid == IntGrid(3, per_channel)
    with torch.no_grad():  # frozen: later training does not change the encoding
        q.log_alpha.add_(1.0)
    assert not torch.equal(enc.broadcast_step(4 if per_channel else 0), q.alpha.detach())


def test_forward_is_round_and_clip_in_train_and_eval():
    x = torch.randn(2000, generator=gen()) * 2
    q = make_quantizer(3, True, x)
    expected = round_clip(x, q.alpha.detach(), -4, 3)
    assert torch.equal(q(x).detach(), expected)
    assert torch.equal(q.eval()(x).detach(), expected)


# --------------------------------------------------------------- DropBits in the module (4)

def quantizer_with_drop(variant, bits, signed, p, seed, x):
    q = make_quantizer(bits, signed, x)
    q.configure_dropbits(variant, p, gen(seed))
    return q.train()


@pytest.mark.parametrize("bits,signed", [(3, True), (4, True), (4, False), (8, True)])
def test_top_bit_drop_outputs_on_reduced_range(bits, signed):
    grid = IntGrid(bits, signed)
    x0 = torch.randn(10_000, generator=gen(bits)) if signed else torch.rand(10_000, generator=gen(bits))
    q = quantizer_with_drop("top", bits, signed, 0.3, 11, x0)
    alpha = q.alpha.detach()
    # cover the whole grid and beyond
    x = ((grid.kmin - 2) + torch.rand(10_000, generator=gen(5)) * (grid.kmax - grid.kmin + 4)) * alpha
    out = q(x).detach()
    d = db.sample_top(x.shape, grid, 0.3, gen(11), x.device).dropped  # same draw
    assert (d >= 1).any()
    codes = torch.round(out / alpha)
    assert torch.equal(out, alpha * codes)  # multiples of α
    reduced = 2.0 ** (bits - d)
    lo = -reduced / 2 if signed else torch.zeros_like(reduced)
    hi = reduced / 2 - 1 if signed else reduced - 1
    assert ((codes >= lo) & (codes <= hi)).all()  # within the (b−d)-bit range
    assert torch.equal(codes, torch.clamp(torch.round(x / alpha), lo, hi))  # nearest in range
    assert (codes[d >= 1] != torch.clamp(torch.round(x / alpha), grid.kmin, grid.kmax)[d >= 1]).any()


@pytest.mark.parametrize("bits,signed", [(3, True), (4, True), (4, False), (8, False)])
def test_lsb_drop_outputs_on_coarse_grid(bits, signed):
    grid = IntGrid(bits, signed)
    x0 = torch.randn(10_000, generator=gen(bits)) if signed else torch.rand(10_000, generator=gen(bits))
    q = quantizer_with_drop("lsb", bits, signed, 0.3, 12, x0)
    alpha = q.alpha.detach()
    x = ((grid.kmin - 2) + torch.rand(10_000, generator=gen(6)) * (grid.kmax - grid.kmin + 4)) * alpha
    out = q(x).detach()
    d = db.sample_lsb(x.shape, grid, 0.3, gen(12), x.device).dropped
    assert (d >= 1).any()
    step = alpha * 2.0**d
    coarse = torch.round(out / step)
    torch.testing.assert_close(out, step * coarse, rtol=0, atol=0)  # multiples of 2^d·α
    codes = coarse * 2.0**d
    assert ((codes >= grid.kmin) & (codes <= grid.kmax)).all()  # within the original range
    # nearest multiple of 2^d inside the range
    lo, hi = torch.ceil(grid.kmin / 2.0**d), torch.floor(grid.kmax / 2.0**d)
    assert torch.equal(coarse, torch.clamp(torch.round(x / step), lo, hi))


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_mask_drop_outputs_on_full_grid(bits):
    grid = IntGrid(bits, True)
    x0 = torch.randn(20_000, generator=gen(bits))
    q = quantizer_with_drop("mask", bits, True, 0.3, 13, x0)
    alpha = q.alpha.detach()
    x = ((grid.kmin - 2) + torch.rand(20_000, generator=gen(7)) * (grid.kmax - grid.kmin + 4)) * alpha
    out = q(x).detach()
    codes = torch.round(out / alpha)
    torch.testing.assert_close(out, alpha * codes, rtol=1e-6, atol=0)
    assert ((codes >= grid.kmin) & (codes <= grid.kmax)).all()
    reach = db.mask_reach(float(q.sigma.detach() / alpha))
    survivors = db.sample_mask(x / alpha, grid, 0.3, gen(13), reach).survivors  # same draw
    m0 = torch.clamp(torch.round(x / alpha), grid.kmin, grid.kmax)
    idx = (codes - m0 + reach).long()
    assert survivors.gather(-1, idx.unsqueeze(-1)).all()
    assert (codes != m0).any()


@pytest.mark.parametrize("variant", db.VARIANTS)
@pytest.mark.parametrize("signed", [True, False])
def test_two_bit_quantizer_drops_nothing(variant, signed):
    x = torch.randn(5000, generator=gen()) if signed else torch.rand(5000, generator=gen())
    q = quantizer_with_drop(variant, 2, signed, 0.9, 0, x)
    grid = q.grid
    assert torch.equal(q(x).detach(), round_clip(x, q.alpha.detach(), grid.kmin, grid.kmax))


@pytest.mark.parametrize("variant", db.VARIANTS)
@pytest.mark.parametrize("bits", [3, 4, 8])
def test_eval_drops_nothing(variant, bits):
    x = torch.randn(20_000, generator=gen(bits)) * 2
    q = quantizer_with_drop(variant, bits, True, 0.5, 3, x)
    grid = q.grid
    plain = round_clip(x, q.alpha.detach(), grid.kmin, grid.kmax)
    assert not torch.equal(q(x).detach(), plain)  # train: something is dropped
    q.eval()
    with torch.no_grad():
        assert torch.equal(q(x), plain)
    assert torch.equal(q(x.clone().requires_grad_()).detach(), plain)


@pytest.mark.parametrize("variant", db.VARIANTS)
def test_dropbits_reproducible_and_differentiable(variant):
    x = torch.randn(5000, generator=gen())
    outs = []
    for seed in (21, 21, 22):
        q = quantizer_with_drop(variant, 4, True, 0.2, seed, x)
        xx = x.clone().requires_grad_()
        out = q(xx)
        out.sum().backward()
        assert torch.isfinite(xx.grad).all()
        assert all(torch.isfinite(p.grad).all() for p in q.parameters())
        assert (xx.grad >= 0).all()  # π_m detached: ∂s/∂x ≥ 0 on the reduced grids too
        outs.append(out.detach())
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], outs[2])


def test_configure_dropbits_rejects_unknown_variant():
    with pytest.raises(ValueError):
        SRQQuantizer(4, True).configure_dropbits("bogus", 0.1, None)


def test_sigma_cap_is_configurable():
    """``quant.sigma_max`` (the σ-cap ablation) bounds σ/α and the projected log σ."""
    q = make_quantizer(sigma_init=0.2, sigma_max=0.3)
    with torch.no_grad():
        q.log_sigma.add_(5.0)  # far above any cap
    assert torch.allclose(q.sigma, 0.3 * q.alpha)
    q.project_()
    assert torch.allclose(q.log_sigma.exp(), 0.3 * q.alpha.detach())
