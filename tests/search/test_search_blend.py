"""The blended gated quantizer: exact reduction to fixed-bit SRQ, nesting, expected bits."""

from __future__ import annotations

import itertools

import pytest
import torch

from srqcli.core import srq as srq_core
from srqcli.core.grid import IntGrid
from srqcli.search.gated import GatedSRQQuantizer

torch.set_num_threads(1)


pytestmark = pytest.mark.usefixtures("eager_srq")


def _quantizer(structure="top", lo=2, hi=5, channels=None):
    w = torch.randn(16, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    q = GatedSRQQuantizer(lo, hi, structure=structure, channels=channels, dims=4)
    q.init_step(w)
    return q, w


@pytest.mark.parametrize("structure", ["top", "lsb"])
@pytest.mark.parametrize("channels", [None, 16])
def test_gates_at_0_1_equal_fixed_bit_srq_exactly(structure, channels):
    q, w = _quantizer(structure, channels=channels)
    q.train()
    for bits in range(2, 6):
        k = bits - 2
        q.force_gates(torch.tensor([1.0] * k + [0.0] * (3 - k)))
        got = q(w)
        if structure == "top":
            g = IntGrid(bits, True)
            ref = srq_core.srq_quantize(w, q.alpha, q.sigma, g.kmin, g.kmax)
        else:
            ref = q.to_fixed(bits)(w) if bits == 5 else q.quantize_level(w, bits)
        assert torch.equal(got, ref), bits
        if structure == "top":  # the read-out quantizer computes the same thing
            assert torch.equal(q.to_fixed(bits)(w), ref)


def test_blend_with_gradient_path_is_exact_too():
    """Even when gates carry gradients (logits), 0/1 gate values give the fixed-bit output."""
    q, w = _quantizer()
    q.train()
    z = torch.tensor([1.0, 1.0, 0.0], requires_grad=True)
    q.current_gates = lambda: z  # type: ignore[method-assign]
    out = q(w)
    g = IntGrid(4, True)
    assert torch.equal(out, srq_core.srq_quantize(w, q.alpha, q.sigma, g.kmin, g.kmax))
    out.sum().backward()
    assert z.grad is not None and z.grad[2] != 0  # the closed level still gets a signal


def test_nesting_never_turns_a_higher_level_on_below_an_off_one():
    q, _ = _quantizer()
    for z in itertools.product([0.0, 0.3, 1.0], repeat=3):
        zt = torch.tensor(z)
        g = torch.cumprod(zt, 0)
        for j in range(1, 3):  # effective gate of level j ≤ that of every lower level
            assert g[j] <= g[j - 1]
            if zt[:j].min() == 0:
                assert g[j] == 0
    # Read-out: a closed low gate closes everything above, whatever the higher logits say.
    with torch.no_grad():
        q.gate_logits.copy_(torch.tensor([5.0, -5.0, 5.0]))
    assert q.readout_bits() == 3
    with torch.no_grad():
        q.gate_logits.copy_(torch.tensor([-5.0, 5.0, 5.0]))
    assert q.readout_bits() == 2
    # Sampled gates: the effective level weights are a valid distribution over bit-widths.
    gen = torch.Generator().manual_seed(3)
    q.gate_generator = gen
    for _ in range(50):
        g = torch.cumprod(q.current_gates(), 0)
        assert (g[1:] <= g[:-1]).all()


def test_expected_bits_and_eval_readout():
    q, w = _quantizer()
    with torch.no_grad():
        q.gate_logits.copy_(torch.tensor([3.0, 0.0, -3.0]))
    with torch.no_grad():
        p = q.prob_on().tolist()
        assert float(q.expected_bits()) == pytest.approx(2 + p[0] + p[0] * p[1] + p[0] * p[1] * p[2])
    q.eval()
    bits = q.readout_bits()
    g = IntGrid(bits, True)
    assert torch.equal(q(w), srq_core.srq_quantize(w, q.alpha, q.sigma, g.kmin, g.kmax))


def test_gate_gradient_comes_from_outer_ring_only():
    q, w = _quantizer(lo=2, hi=3)
    q.train()
    z = torch.tensor([0.5], requires_grad=True)
    q.current_gates = lambda: z  # type: ignore[method-assign]
    inner = (torch.round(w / q.alpha).abs() <= 1).detach()  # codes inside the 2-bit grid
    wi = torch.where(inner, w, torch.zeros_like(w))
    q(wi).sum().backward()
    assert float(z.grad) == 0.0  # only inner elements: the 3-bit ring adds nothing
    z.grad = None
    q(w).sum().backward()
    assert float(z.grad) != 0.0  # outer-ring elements give the gate its signal
