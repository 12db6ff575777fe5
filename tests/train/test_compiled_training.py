"""A few training steps of a whole-model ``torch.compile`` (inductor, CPU) against eager.

What is compared: the per-step losses, within a float tolerance, not bit for bit. The forward
codes are bit-identical by construction (the opaque ``srq::round_clip`` op), but the two runs
differ in the rest of the arithmetic: inductor fuses and reorders the float sums (BatchNorm,
the edge sums of the backward), and the compiled backward uses the fixed window of the σ cap
(w = 5) where eager picks a narrower one from the current σ/α; both change gradients in the
last bits (the window by < 1e-3 relative, :func:`srqcli.core.srq.default_window`), and after
a step the weights differ by that much, so the losses drift apart slowly. What must hold
exactly: the compiled run compiles once (one graph, no recompile while σ, the eager windows
and the DropBits sample change) and never falls back to the per-quantizer fused backward.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.testing import CompileCounterWithBackend

from srqcli.config import DropBitsConfig, QuantConfig
from srqcli.core import srq
from srqcli.models import build_model
from srqcli.nn.dropbits_schedule import DropBitsSchedule
from srqcli.nn.quantizer import SRQQuantizer
from srqcli.nn.surgery import project_quantizers_, quantize_model

STEPS = 4
#: Relative tolerance on each step's loss. Measured on LeNet-5: steps 1–2 within 1e-4, steps
#: 3–4 7.3e-4 apart: the gradients' differences (the window above all: < 1e-3 relative)
#: times the large σ learning rate (2.0) this test uses to move σ.
LOSS_RTOL = 2e-3


def train(model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]],
          compiled: CompileCounterWithBackend | None) -> tuple[list[float], list[list[int]]]:
    """Losses of ``STEPS`` SGD steps and the eager edge windows of the SRQ quantizers after
    each (the windows an eager run would use next)."""
    model = copy.deepcopy(model).train()
    schedule = DropBitsSchedule.attach(model, DropBitsConfig(variant="lsb", rate=0.2), seed=0,
                                       draw_ahead=True)
    forward = torch.compile(model, backend=compiled, fullgraph=True) if compiled else model
    quant = [p for n, p in model.named_parameters() if "log_" in n]
    rest = [p for n, p in model.named_parameters() if "log_" not in n]
    opt = torch.optim.SGD([{"params": rest, "lr": 0.05}, {"params": quant, "lr": 2.0}])
    srqs = [m for m in model.modules() if isinstance(m, SRQQuantizer)]
    losses, windows = [], []
    for x, y in batches:
        schedule.hook(0, 10)(0.0)
        loss = F.cross_entropy(forward(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():  # σ up by 15% a step, as a fast-moving σ: eager windows widen
            for q in srqs:
                q.log_sigma.add_(0.14)
        project_quantizers_(model)
        losses.append(float(loss.detach()))
        windows.append([q.edge_window() for q in srqs])
    return losses, windows


@pytest.mark.slow  # inductor compiles the training graph: minutes on 2 CPU cores
@pytest.mark.parametrize("arch", ["lenet5"])  # ResNet-20: > 20 min to compile on 2 loaded cores
def test_compiled_training_matches_eager_and_compiles_once(arch: str) -> None:
    torch.manual_seed(0)
    batches = [(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))) for _ in range(STEPS)]
    # σ starts at 0.2·α, the edge of w = 2: the eager windows widen as σ grows.
    model, _ = quantize_model(build_model(arch, 10, 1),
                              QuantConfig(weight_bits=3, act_bits=3, sigma_init=0.2),
                              [batches[0][0]])
    fused_before = srq._use_fused
    eager_losses, eager_windows = train(model, batches, None)
    counter = CompileCounterWithBackend("inductor")
    torch._dynamo.reset()
    compiled_losses, compiled_windows = train(model, batches, counter)
    assert eager_windows[0] != eager_windows[-1], "the test needs σ to move the eager windows"
    assert all(abs(a - b) <= 1 for ra, rb in zip(compiled_windows, eager_windows)
               for a, b in zip(ra, rb))  # σ moved alike (a boundary may round either way)
    assert counter.frame_count == 1  # one graph, compiled once for all steps
    assert srq._use_fused == fused_before  # nothing fell back
    assert compiled_losses == pytest.approx(eager_losses, rel=LOSS_RTOL)
