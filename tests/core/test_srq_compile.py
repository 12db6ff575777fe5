"""SRQ inside ``torch.compile`` (srqcli/core/srq.py): the ops dynamo records, exact codes in a
compiled forward, the compiled backward against the full-grid reference, and the fused
backward's compile failure said out loud.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from srqcli.core import srq
from srqcli.core.grid import IntGrid
from srqcli.core.srq import (
    FusionFallbackWarning,
    full_grid_surrogate,
    quantize_op,
    round_clip_op,
    srq_quantize,
)

F64 = torch.float64


def tie_inputs(grid: IntGrid, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel steps and an input of random values, exact half steps and far values."""
    gen = torch.Generator().manual_seed(grid.bits)
    alpha = torch.tensor([0.1, 0.25, 0.037, 1.7], dtype=dtype).reshape(4, 1, 1)
    span = grid.kmax - grid.kmin
    w = (torch.rand(4, 40, 3, generator=gen, dtype=dtype) * (span + 6) + grid.kmin - 3) * alpha
    ks = torch.arange(grid.kmin - 3, grid.kmax + 4, dtype=dtype)
    ties = (ks + 0.5).reshape(1, -1, 1).expand(4, -1, 3) * alpha
    far = torch.tensor([1e6, -1e6, 0.0, -0.0], dtype=dtype).reshape(1, -1, 1).expand(4, -1, 3) * alpha
    return torch.cat([w, ties, far], dim=1), alpha


@pytest.mark.usefixtures("eager_srq")
@pytest.mark.parametrize("bounds", ["int", "tensor"])
def test_ops_pass_opcheck(bounds: str) -> None:
    """Schema, fake (meta) implementation, autograd registration and AOT dispatch agree."""
    x, alpha = tie_inputs(IntGrid(3, True), F64)
    sigma = alpha * 0.3
    if bounds == "int":
        kmin_t = kmax_t = None
    else:
        kmin_t = torch.full_like(x, -4.0)
        kmax_t = torch.full_like(x, 1.0)
    torch.library.opcheck(round_clip_op, (x, alpha, kmin_t, kmax_t, -4, 3))
    args = (x.clone().requires_grad_(), alpha.clone().requires_grad_(),
            sigma.clone().requires_grad_(), kmin_t, kmax_t, -4, 3, 5, "detach")
    torch.library.opcheck(quantize_op, args)


@pytest.mark.slow
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("signed", [True, False])
def test_compiled_forward_is_round_and_clip_exactly(bits: int, signed: bool) -> None:
    """Inductor's forward equals eager round-and-clip bit for bit, exact half steps included
    (round half to even), with grid bounds as ints and as per-element tensors."""
    grid = IntGrid(bits, signed)
    x, alpha = tie_inputs(grid)
    sigma = alpha * 0.25
    lo, hi = torch.full_like(x, grid.kmin), torch.full_like(x, grid.kmax)
    expected = alpha * torch.clamp(torch.round(x / alpha), grid.kmin, grid.kmax)
    torch._dynamo.reset()
    scalar = torch.compile(lambda t: srq_quantize(t, alpha, sigma, grid.kmin, grid.kmax),
                           fullgraph=True)
    per_element = torch.compile(lambda t: srq_quantize(t, alpha, sigma, lo, hi), fullgraph=True)
    assert torch.equal(scalar(x), expected)
    assert torch.equal(per_element(x), expected)


@pytest.mark.slow
@pytest.mark.parametrize("pi_mode", srq.PI_MODES)
@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_compiled_backward_matches_the_full_grid_reference(pi_mode: str, ratio: float) -> None:
    """The compiled backward (inductor, the fixed window of the σ cap) is within the
    default window's tolerance (1e-3 of the largest gradient) of the full-grid reference."""
    grid = IntGrid(4, True)
    x, alpha = tie_inputs(grid, F64)
    alpha = alpha.expand_as(x).clone()
    sigma = alpha * ratio
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=F64)

    def grads(fn):
        xx, aa, ss = (t.detach().clone().requires_grad_() for t in (x, alpha, sigma))
        out = fn(xx, aa, ss)
        (out * upstream).sum().backward()
        return out.detach(), xx.grad, aa.grad, ss.grad

    torch._dynamo.reset()
    compiled = grads(torch.compile(
        lambda a, b, c: srq_quantize(a, b, c, grid.kmin, grid.kmax, pi_mode=pi_mode), fullgraph=True))
    ref = grads(lambda a, b, c: full_grid_surrogate(a, b, c, grid.kmin, grid.kmax, pi_mode))
    torch.testing.assert_close(compiled[0], ref[0], rtol=1e-12, atol=1e-12)
    for got, want in zip(compiled[1:], ref[1:]):
        assert float((got - want).abs().max() / want.abs().max()) < 1e-3


def failing_compile(fn, **_kwargs):
    """A ``torch.compile`` stand-in whose compiled function fails as a missing compiler does."""
    def compiled(*_args):
        raise RuntimeError("no C++ compiler found\nmore detail")
    return compiled


def test_a_fused_backward_that_fails_to_compile_fails_the_tests(monkeypatch) -> None:
    """pyproject.toml turns :class:`FusionFallbackWarning` into an error: fusion stays on and the
    failure surfaces, with its reason."""
    monkeypatch.setattr(srq, "_use_fused", True)
    monkeypatch.setattr(srq, "_compiled", {})
    monkeypatch.setattr(torch, "compile", failing_compile)
    with pytest.raises(FusionFallbackWarning, match=r"\(RuntimeError: no C\+\+ compiler found\)"):
        srq._run(lambda t: t + 1, torch.zeros(2))
    assert srq._use_fused


def test_a_run_warns_with_the_reason_and_continues_eagerly(monkeypatch) -> None:
    monkeypatch.setattr(srq, "_use_fused", True)
    monkeypatch.setattr(srq, "_compiled", {})
    monkeypatch.setattr(torch, "compile", failing_compile)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FusionFallbackWarning)
        out = srq._run(lambda t: t + 1, torch.zeros(2))
    assert torch.equal(out, torch.ones(2))
    assert [str(w.message).split(";")[0] for w in caught] == [
        "torch.compile of the SRQ backward failed (RuntimeError: no C++ compiler found)"]
    assert not srq._use_fused
