"""Method name → the quantizers model surgery attaches, and what a method does after training.

The one place that knows which quantizer class each ``--method`` uses for weights and for
input activations (docs/method.md §8; each class documents its method and paper).
"""

from __future__ import annotations

import torch
from torch import nn

from srqcli.config import QuantConfig
from srqcli.methods.dq import DQActQuantizer, DQWeightQuantizer
from srqcli.methods.lsq import LSQQuantizer
from srqcli.methods.rq import RQQuantizer
from srqcli.methods.slb import SLBWeightQuantizer
from srqcli.methods.ste import STEQuantizer
from srqcli.nn.layers import is_quant_layer
from srqcli.nn.quantizer import Quantizer, SRQQuantizer


def make_quantizer(cfg: QuantConfig, bits: int, *, activation: bool, channels: int | None,
                   shape: torch.Size) -> Quantizer:
    """The quantizer of ``cfg.method`` for a weight of ``shape`` or (``activation``) an input.

    Weights use a signed grid; activation signedness is decided at calibration.
    ``channels`` (weights only) asks for per-output-channel steps.
    """
    signed = None if activation else True
    dims = 1 if activation else len(shape)
    method = cfg.method
    if method in ("srq", "rq"):
        cls = SRQQuantizer if method == "srq" else RQQuantizer
        return cls(bits, signed, channels=channels, dims=dims, pi_mode=cfg.pi_mode,
                   window=cfg.window, sigma_init=cfg.sigma_init, sigma_max=cfg.sigma_max)
    if method == "lsq" or (method == "slb" and activation):
        return LSQQuantizer(bits, signed, activation=activation, channels=channels, dims=dims)
    if method == "ste":
        return STEQuantizer(bits, signed, channels=channels, dims=dims)
    if method == "slb":
        return SLBWeightQuantizer(bits, shape=shape, channels=channels)
    if method == "dq":
        return DQActQuantizer(bits, signed) if activation else DQWeightQuantizer(bits)
    raise ValueError(f"unknown quantization method {method!r}")


@torch.no_grad()
def finish_training(model: nn.Module) -> bool:
    """Turn the trained quantizers into the deployed network; ``True`` if BatchNorm
    statistics must then be re-estimated, because the network trained differs from the one
    deployed:

    * SLB's weights become their argmax values (the paper recalibrates BatchNorm).
    * RQ trains on Gumbel-softmax samples and deploys round-to-nearest, so its running
      statistics describe the sampled network. Measured: Fashion-MNIST ResNet-20 W2A2 after 3
      epochs, 21.34% top-1 with the trained statistics, 85.10% re-estimated on 50 batches.

    A quantizer says so with :attr:`~srqcli.nn.quantizer.Quantizer.trains_other_forward`; the
    others train the forward they deploy (SRQ's DropBits is handled by its schedule).
    """
    for m in model.modules():
        if is_quant_layer(m) and isinstance(m.weight_quant, SLBWeightQuantizer):
            m.weight_quant.harden_(m.weight)
    return any(isinstance(q, Quantizer) and q.trains_other_forward for q in model.modules())
