"""Turning DropBits on for the weight quantizers of a model and annealing its rate.

The rate is constant, then decays linearly to 0 over the last ``anneal_epochs`` epochs
(docs/method.md §5: a small rate annealed to 0, then BatchNorm re-estimation, made DropBits harmless
where a constant p = 0.2 cost up to 57 points at W2A2). One ``torch.Generator`` drives all
sampling so a run is reproducible and resumable (its state goes into the resume checkpoint).

Drawing ahead (``draw_ahead``, for a compiled model): the schedule draws every weight
quantizer's sample before each step, in the layers' registration order, instead of each
forward drawing its own in execution order. For srq's model zoo the two orders agree, so the
drops are the same for a seed (tests/nn/test_dropbits_schedule.py); eager runs keep drawing in
the forward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from srqcli.config import DropBitsConfig
from srqcli.nn.layers import QuantLayer, is_quant_layer
from srqcli.nn.quantizer import SRQQuantizer


class DropBitsSchedule:
    """Owns the DropBits generator and sets the current rate on every weight quantizer."""

    def __init__(self, layers: list[QuantLayer], cfg: DropBitsConfig, seed: int, *,
                 draw_ahead: bool = False) -> None:
        self.layers = layers
        self.quantizers: list[SRQQuantizer] = [layer.weight_quant for layer in layers]
        self.cfg = cfg
        self.draw_ahead = draw_ahead
        self.generator = torch.Generator(device="cpu").manual_seed(seed + 7919)
        self.rate = cfg.rate
        for q in self.quantizers:
            q.configure_dropbits(cfg.variant, cfg.rate, self.generator)

    @classmethod
    def attach(cls, model: nn.Module, cfg: DropBitsConfig, seed: int, *,
               draw_ahead: bool = False) -> DropBitsSchedule | None:
        """Enable DropBits on the model's weight quantizers; ``None`` when the variant is off."""
        if cfg.variant == "none" or cfg.rate <= 0:
            return None
        layers = [m for m in model.modules() if is_quant_layer(m)]
        return cls(layers, cfg, seed, draw_ahead=draw_ahead)

    def set_rate(self, rate: float) -> None:
        """Set the rate; a sample drawn ahead at the old rate is dropped."""
        self.rate = rate
        for q in self.quantizers:
            q.drop_rate = rate
            q.drawn = None

    def draw_(self) -> None:
        """Draw every quantizer's sample for the next step (see the module docstring)."""
        for layer, q in zip(self.layers, self.quantizers):
            q.draw_dropbits_(layer.weight)

    def rate_at(self, epoch: int, fraction: float, epochs: int) -> float:
        """Rate at ``epoch`` (0-based) after ``fraction`` of it: linear decay at the end."""
        anneal = min(self.cfg.anneal_epochs, epochs)
        start = epochs - anneal
        if anneal <= 0 or epoch < start:
            return self.cfg.rate
        done = (epoch - start + fraction) / anneal
        return self.cfg.rate * max(0.0, 1.0 - done)

    def hook(self, epoch: int, epochs: int) -> Callable[[float], None]:
        """A per-step callback for the training loop: updates the rate, draws ahead if asked."""
        def before_step(fraction: float) -> None:
            self.set_rate(self.rate_at(epoch, fraction, epochs))
            if self.draw_ahead:
                self.draw_()
        return before_step

    def disable(self) -> None:
        self.set_rate(0.0)
