"""A training step never reads a value back from the device inside the model.

On a GPU every read of a tensor's value (``bool(t)``, ``float(t)``, ``.item()``) makes the host
wait for all queued kernels, so the CPU cannot run ahead and small networks become launch bound.
The quantizers used to read up to three values per call (``initialized``, the grid's
signedness and ``max σ/α``); now the forward and backward read none, and the optimizer step's
projection reads ``max σ/α`` of all SRQ (and RQ) quantizers at once. Counted here on the CPU, where the same reads dispatch to
``aten._local_scalar_dense``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from srqcli.config import QuantConfig
from srqcli.models import build_model
from srqcli.nn.quantizer import SRQQuantizer
from srqcli.nn.surgery import project_quantizers_, quantize_model

pytestmark = pytest.mark.usefixtures("eager_srq")


class HostReads(TorchDispatchMode):
    """Counts the reads of a tensor's value into Python."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("method,dropbits", [("srq", None), ("srq", "lsb"), ("srq", "top"),
                                             ("srq", "mask"), ("rq", None), ("lsq", None)])
def test_training_step_reads_back_once_per_projection(method: str, dropbits: str | None) -> None:
    torch.manual_seed(0)
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    model, _ = quantize_model(build_model("lenet5", 10, 1),
                              QuantConfig(method=method, weight_bits=3, act_bits=3), [x])
    srq = [m for m in model.modules() if isinstance(m, SRQQuantizer)]
    gen = torch.Generator().manual_seed(0)
    for q in srq:
        if dropbits:
            q.configure_dropbits(dropbits, 0.1, gen)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)

    def forward_backward() -> None:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()

    forward_backward()  # the first calls read `initialized` and max σ/α once each
    opt.step()
    project_quantizers_(model)
    with HostReads() as reads:
        forward_backward()
    assert reads.count == 0
    opt.step()
    with HostReads() as reads:
        project_quantizers_(model)
    # All SRQ quantizers' max σ/α in one read (a `.tolist()`, which on the CPU does not even
    # dispatch; one read per quantizer would count 10 here).
    assert reads.count <= 1
    fresh = [float((q.sigma / q.alpha).detach().max()) for q in srq]
    assert [q.sigma_ratio_max() for q in srq] == pytest.approx(fresh, rel=1e-6)


def test_a_step_without_projection_is_noticed() -> None:
    """A parameter changed outside the projection (a manual optimizer step, a loaded state)
    invalidates the cached max σ/α: the next forward reads it again, per quantizer."""
    torch.manual_seed(0)
    x = torch.randn(4, 1, 28, 28)
    model, _ = quantize_model(build_model("lenet5", 10, 1),
                              QuantConfig(method="srq", weight_bits=3, act_bits=3), [x])
    srq = [m for m in model.modules() if isinstance(m, SRQQuantizer)]
    model(x)
    with torch.no_grad():
        for q in srq:
            q.log_sigma.add_(0.3)  # σ/α up (then clamped at the cap)
    with HostReads() as reads:
        model(x)
    assert reads.count == len(srq)
    assert [q.sigma_ratio_max() for q in srq] == pytest.approx(
        [float((q.sigma / q.alpha).detach().max()) for q in srq], rel=1e-6)


def test_loading_an_uncalibrated_state_re_arms_the_check() -> None:
    x = torch.randn(4, 1, 28, 28)
    model, _ = quantize_model(build_model("lenet5", 10, 1),
                              QuantConfig(method="srq", weight_bits=3, act_bits=3), [x])
    model(x)  # passes the check once
    state = model.state_dict()
    state = {k: (torch.zeros_like(v) if k.endswith("initialized") else v) for k, v in state.items()}
    model.load_state_dict(state)
    with pytest.raises(RuntimeError, match="before calibration"):
        model(x)
