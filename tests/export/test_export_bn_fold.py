"""BatchNorm folding: the one helper every exporter folds through."""

from __future__ import annotations

import torch
from torch import nn

from srqcli.export.bn_fold import bn_affine, fold_batchnorm


def _bn(channels: int = 4) -> nn.BatchNorm2d:
    gen = torch.Generator().manual_seed(0)
    bn = nn.BatchNorm2d(channels).eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(channels, generator=gen))
        bn.running_var.copy_(torch.rand(channels, generator=gen) + 0.5)
        bn.weight.copy_(torch.randn(channels, generator=gen))
        bn.bias.copy_(torch.randn(channels, generator=gen))
    return bn.double()


def test_folded_conv_equals_conv_then_batchnorm():
    gen = torch.Generator().manual_seed(1)
    conv = nn.Conv2d(3, 4, 3, padding=1).double()
    bn = _bn()
    x = torch.randn(2, 3, 5, 5, generator=gen, dtype=torch.float64)
    w, b = fold_batchnorm(conv.weight, conv.bias, bn)
    with torch.no_grad():
        assert torch.allclose(nn.functional.conv2d(x, w, b, padding=1), bn(conv(x)), atol=1e-12)


def test_folding_a_scale_without_bias_gives_the_bn_shift():
    bn = _bn()
    g, h = bn_affine(bn)
    scale, bias = fold_batchnorm(torch.full((4,), 0.5), None, bn)
    assert torch.equal(scale, 0.5 * g) and torch.equal(bias, h)
