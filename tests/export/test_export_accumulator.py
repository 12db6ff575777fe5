"""Code scaling for fused integer kernels: same values, finer int32 bias grid, safe containers."""

from __future__ import annotations

import numpy as np
import pytest

from srqcli.export.accumulator import (
    PAIR_PRODUCT_MAX,
    bias_rounding_error,
    plan_code_scaling,
)


def layer(bits: int, seed: int = 0, channels: int = 16):
    rng = np.random.default_rng(seed)
    codes = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), (channels, 8, 3, 3))
    scale = rng.uniform(0.005, 0.05, channels).astype(np.float32)
    bias = rng.normal(0, 1, channels).astype(np.float32)
    return codes, scale, bias


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("act_bits,signed", [(2, False), (3, False), (4, False), (8, False), (4, True), (8, True)])
def test_scaled_codes_fit_their_containers_and_never_saturate(bits, act_bits, signed):
    codes, scale, bias = layer(bits)
    hi, zp = ((1 << (act_bits - 1)) - 1, 128) if signed else ((1 << act_bits) - 1, 0)
    plan = plan_code_scaling(codes, scale, bias, 0.1, hi, zp)
    scaled = codes * plan.weight_mult[:, None, None, None]
    x_max = (hi << plan.act_shift) + zp
    assert plan.weight_mult.min() >= 1 and scaled.min() >= -128 and scaled.max() <= 127
    assert x_max <= 255 and (plan.act_shift == 0 or zp == 0)
    mag = np.abs(codes).reshape(len(codes), -1).max(1)
    saturating = x_max * np.abs(scaled).reshape(len(codes), -1).max(1) > PAIR_PRODUCT_MAX
    # a product may only exceed the VPMADDUBSW bound where it already did unscaled (8 bits)
    assert not (saturating & ((plan.weight_mult > 1) | (x_max * mag <= PAIR_PRODUCT_MAX))).any()


@pytest.mark.parametrize("bits,act_bits", [(2, 2), (3, 3), (4, 4)])
def test_low_bit_bias_error_shrinks_by_two_orders(bits, act_bits):
    codes, scale, bias = layer(bits, seed=bits)
    step = np.float32(0.1)
    plan = plan_code_scaling(codes, scale, bias, float(step), (1 << act_bits) - 1, 0)
    before = bias_rounding_error(bias, step, scale)
    after = bias_rounding_error(bias, step / np.float32(plan.act_factor),
                                scale / plan.weight_mult.astype(np.float32))
    assert after.mean() < before.mean() / 100


def test_full_8_bit_containers_are_left_alone():
    codes, scale, bias = layer(8)
    codes[:, 0, 0, 0] = -128
    plan = plan_code_scaling(codes, scale, bias, 0.1, 255, 0)
    assert plan.act_shift == 0 and (plan.weight_mult == 1).all()
