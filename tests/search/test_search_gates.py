"""Hard-concrete gates: sample statistics match the closed forms (fixed seed)."""

from __future__ import annotations

import math

import pytest
import torch

from srqcli.core import gates as hc

torch.set_num_threads(1)

LOGITS = torch.tensor([-3.0, -1.0, 0.0, 0.7, 2.0, 4.0])
N = 200_000


@pytest.fixture(scope="module")
def samples():
    g = torch.Generator().manual_seed(1234)
    return hc.sample(LOGITS.expand(N, -1).contiguous(), g)


def test_sample_range_and_mass_at_ends(samples):
    assert samples.min() >= 0.0 and samples.max() <= 1.0
    assert ((samples == 0) | (samples == 1)).float().mean() > 0.3  # the stretch puts mass on 0/1


def test_p_nonzero_zero_one_and_mean_match_closed_form(samples):
    tol = 4 * math.sqrt(0.25 / N) + 1e-3  # ~4 standard errors
    torch.testing.assert_close((samples > 0).float().mean(0), hc.prob_nonzero(LOGITS), atol=tol, rtol=0)
    torch.testing.assert_close((samples == 0).float().mean(0), hc.prob_zero(LOGITS), atol=tol, rtol=0)
    torch.testing.assert_close((samples == 1).float().mean(0), hc.prob_one(LOGITS), atol=tol, rtol=0)
    torch.testing.assert_close(samples.mean(0), hc.mean(LOGITS), atol=tol, rtol=0)
    for t in (0.25, 0.5, 0.9):
        torch.testing.assert_close((samples > t).float().mean(0), hc.prob_greater(LOGITS, t),
                                   atol=tol, rtol=0)


def test_closed_form_formula_and_inverse():
    beta, gamma, zeta = 2 / 3, -0.1, 1.1
    expect = torch.sigmoid(LOGITS - beta * math.log(-gamma / zeta))
    torch.testing.assert_close(hc.prob_nonzero(LOGITS), expect)
    for p in (0.1, 0.5, 0.9):
        assert float(hc.prob_nonzero(torch.tensor(hc.logit_for_prob(p)))) == pytest.approx(p, abs=1e-6)


def test_sampling_is_seeded_and_differentiable():
    la = LOGITS.clone().requires_grad_()
    a = hc.sample(la, torch.Generator().manual_seed(7))
    b = hc.sample(la, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    a.sum().backward()
    assert la.grad is not None and torch.isfinite(la.grad).all()


def test_deterministic_value():
    d = hc.deterministic(torch.tensor([-10.0, 0.0, 10.0]))
    assert d.tolist() == pytest.approx([0.0, 0.5, 1.0])
