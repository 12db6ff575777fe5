"""Which trained networks need BatchNorm re-estimated before they are deployed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from srqcli.config import QuantConfig
from srqcli.methods.registry import finish_training
from srqcli.nn.surgery import attach_quantizers, plan_bits, quantizable_layers

torch.set_num_threads(1)


def _quantized(method: str) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, 3))
    cfg = QuantConfig(weight_bits=3, act_bits=3, method=method)
    attach_quantizers(model, plan_bits([n for n, _ in quantizable_layers(model)], cfg), cfg)
    return model


@pytest.mark.parametrize("method,expected", [
    ("srq", False), ("lsq", False), ("ste", False), ("dq", False),
    ("rq", True),   # trained on Gumbel-softmax samples, deployed at the mode
    ("slb", True),  # trained on softmax mixtures, deployed at the argmax
])
def test_finish_training_asks_for_batchnorm_re_estimation_when_training_differs(method, expected):
    assert finish_training(_quantized(method)) is expected
