"""``--strategy sensitivity``: per-layer sensitivity + exact knapsack (the fast comparison).

Sensitivity of layer ℓ at ``b`` bits is the second-order estimate of the loss increase caused
by quantizing its weights alone,

    s_ℓ(b) = ½ Σ_i F_i·(w_i − Q_b(w_i))²

with ``Q_b`` round-to-nearest on the MSE-optimal ``b``-bit step (the step ``srq quantize``
initialises with) and ``F`` the diagonal empirical Fisher (mean squared gradient of the
cross-entropy over a few training batches) as the Hessian proxy. Compared with "Hessian trace ×
MSE" (HAWQ) this weights each element's error by its own curvature, at the same cost: one
backward pass per batch on the float model. The allocation minimising ``Σ_ℓ s_ℓ(b_ℓ)`` under the
budget is then found exactly by :func:`srqcli.search.readout.allocate`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from srqcli.core.grid import IntGrid
from srqcli.core.srq import srq_forward_codes
from srqcli.errors import SrqError
from srqcli.nn.quantizer import mse_optimal_step


def fisher_diagonal(model: nn.Module, names: Sequence[str],
                    batches: Iterable[tuple[Tensor, Tensor]], device: torch.device
                    ) -> dict[str, Tensor]:
    """Mean squared gradient of the loss w.r.t. each named layer's weight (float model)."""
    modules = dict(model.named_modules())
    weights = {n: modules[n].weight for n in names}
    acc = {n: torch.zeros_like(w) for n, w in weights.items()}
    was_training = model.training
    model.eval()  # BatchNorm statistics stay put
    seen = 0
    try:
        for images, labels in batches:
            model.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(images.to(device)), labels.to(device))
            loss.backward()
            for n, w in weights.items():
                if w.grad is not None:
                    acc[n] += w.grad.detach() ** 2
            seen += 1
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    if seen == 0:
        raise SrqError("no batches to estimate layer sensitivities: the training data is empty")
    return {n: a / seen for n, a in acc.items()}


@torch.no_grad()
def quantization_error(weight: Tensor, bits: int, per_channel: bool) -> Tensor:
    """``w − Q_b(w)`` with the MSE-optimal ``b``-bit step (per channel if asked)."""
    grid = IntGrid(bits, True)
    step = mse_optimal_step(weight, grid, 0 if per_channel else None).to(weight.device)
    return weight - srq_forward_codes(weight, step, grid.kmin, grid.kmax) * step


@torch.no_grad()
def layer_sensitivity(model: nn.Module, fisher: dict[str, Tensor], bits: Sequence[int], *,
                      per_channel: bool = False) -> dict[str, dict[int, float]]:
    """``s_ℓ(b)`` for every layer in ``fisher`` and every ``b`` in ``bits``."""
    modules = dict(model.named_modules())
    out: dict[str, dict[int, float]] = {}
    for name, f in fisher.items():
        w = modules[name].weight.detach()
        out[name] = {b: 0.5 * float((f * quantization_error(w, b, per_channel) ** 2).sum())
                     for b in bits}
    return out
