"""Annealing the temperature of the relaxed baselines (RQ's Gumbel-softmax, SLB's softmax).

The temperature decays exponentially from ``start`` to ``end`` over all fine-tuning steps,
``τ(t) = start·(end/start)^t`` with ``t`` the fraction of training done, set before every
step through the training loop's per-step hook (the same hook DropBits' rate uses). It is a
function of the position in training only, so a resumed run continues the same schedule.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from srqcli.config import QuantConfig
from srqcli.methods import rq, slb

#: Default (start, end) per annealed method, documented in each method's module.
DEFAULTS = {"rq": rq.TEMPERATURE, "slb": slb.TEMPERATURE}
_ANNEALED = (rq.RQQuantizer, slb.SLBWeightQuantizer)


class TemperatureSchedule:
    """Sets the current temperature on every annealed quantizer of a model."""

    def __init__(self, quantizers: list[nn.Module], start: float, end: float) -> None:
        self.quantizers, self.start, self.end = quantizers, start, end
        self.set_temperature(start)

    @classmethod
    def attach(cls, model: nn.Module, cfg: QuantConfig) -> TemperatureSchedule | None:
        """The schedule for the model's quantizers; ``None`` when the method anneals nothing."""
        if cfg.method not in DEFAULTS:
            return None
        start, end = DEFAULTS[cfg.method]
        quantizers = [m for m in model.modules() if isinstance(m, _ANNEALED)]
        return cls(quantizers, cfg.temperature_start or start, cfg.temperature_end or end)

    def temperature_at(self, epoch: int, fraction: float, epochs: int) -> float:
        t = min(1.0, (epoch + fraction) / max(epochs, 1))
        return self.start * (self.end / self.start) ** t

    def set_temperature(self, value: float) -> None:
        for q in self.quantizers:
            q.temperature = value

    def hook(self, epoch: int, epochs: int) -> Callable[[float], None]:
        """A per-step callback for the training loop."""
        return lambda fraction: self.set_temperature(self.temperature_at(epoch, fraction, epochs))
