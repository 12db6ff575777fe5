"""Turning DropBits on for the weight quantizers of a model and annealing its rate.

The rate is constant, then decays linearly to 0 over the last ``anneal_epochs`` epochs
(docs/method.md §5: a small rate annealed to 0, then BatchNorm re-estimation, made DropBits harmless
where a constant p = 0.2 cost up to 57 points at W2A2). One ``torch.Generator`` drives all
sampling so a run is reproducible and resumable (its state goes into the resume checkpoint).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from srqcli.config import DropBitsConfig
from srqcli.nn.layers import is_quant_layer
from srqcli.nn.quantizer import SRQQuantizer


class DropBitsSchedule:
    """Owns the DropBits generator and sets the current rate on every weight quantizer."""

    def __init__(self, quantizers: list[SRQQuantizer], cfg: DropBitsConfig, seed: int) -> None:
        self.quantizers = quantizers
        self.cfg = cfg
        self.generator = torch.Generator(device="cpu").manual_seed(seed + 7919)
        self.rate = cfg.rate
        for q in quantizers:
            q.configure_dropbits(cfg.variant, cfg.rate, self.generator)

    @classmethod
    def attach(cls, model: nn.Module, cfg: DropBitsConfig, seed: int) -> DropBitsSchedule | None:
        """Enable DropBits on the model's weight quantizers; ``None`` when the variant is off."""
        if cfg.variant == "none" or cfg.rate <= 0:
            return None
        quantizers = [m.weight_quant for m in model.modules() if is_quant_layer(m)]
        return cls(quantizers, cfg, seed)

    def set_rate(self, rate: float) -> None:
        self.rate = rate
        for q in self.quantizers:
            q.drop_rate = rate

    def rate_at(self, epoch: int, fraction: float, epochs: int) -> float:
        """Rate at ``epoch`` (0-based) after ``fraction`` of it: linear decay at the end."""
        anneal = min(self.cfg.anneal_epochs, epochs)
        start = epochs - anneal
        if anneal <= 0 or epoch < start:
            return self.cfg.rate
        done = (epoch - start + fraction) / anneal
        return self.cfg.rate * max(0.0, 1.0 - done)

    def hook(self, epoch: int, epochs: int) -> Callable[[float], None]:
        """A per-step callback for the training loop that updates the rate."""
        return lambda fraction: self.set_rate(self.rate_at(epoch, fraction, epochs))

    def disable(self) -> None:
        self.set_rate(0.0)
