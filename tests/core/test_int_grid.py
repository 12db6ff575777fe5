"""Integer grids and the x86 pair bound (srqcli/core/grid.py)."""

from __future__ import annotations

import pytest

from srqcli.core.grid import MAX_BITS, MIN_BITS, PAIR_PRODUCT_MAX, portable_weight_bits


@pytest.mark.parametrize("act_bits", range(MIN_BITS, MAX_BITS + 1))
@pytest.mark.parametrize("weight_bits", range(MIN_BITS, MAX_BITS + 1))
def test_portable_weight_bits_is_the_widest_grid_within_the_pair_bound(weight_bits, act_bits):
    """Slow reference: every stored input code 0…2^a−1 times every weight code of the chosen
    grid, in pairs as VPMADDUBSW adds them, fits int16; one bit more (if allowed) does not."""
    def fits(bits: int) -> bool:
        x_max, w_abs = 2**act_bits - 1, 2 ** (bits - 1)  # |k_min| is the largest weight code
        return max(abs(x * w) for x in (0, x_max) for w in (-w_abs, w_abs - 1)) * 2 <= 32767

    got = portable_weight_bits(weight_bits, act_bits)
    assert got <= weight_bits and fits(got)
    assert got == weight_bits or not fits(got + 1)
    assert 2 * PAIR_PRODUCT_MAX + 1 == 32767
