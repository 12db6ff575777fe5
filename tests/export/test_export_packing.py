"""Bit packing at any width 1–8, and its agreement with ONNX's INT4/INT2 raw layout."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from srqcli.export.packing import pack_bits, packed_nbytes, unpack_bits


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("count", [0, 1, 7, 8, 9, 1001])
def test_round_trip(bits, count):
    values = np.random.default_rng(bits * 1000 + count).integers(0, 1 << bits, count)
    raw = pack_bits(values, bits)
    assert len(raw) == packed_nbytes(count, bits) == (count * bits + 7) // 8
    assert np.array_equal(unpack_bits(raw, bits, count), values)


def test_little_endian_bit_stream():
    # 3-bit 1, 2, 3 → stream bits 100 010 110 (LSB first) → 0b11010001, then a padded byte
    assert pack_bits(np.array([1, 2, 3]), 3) == bytes([0b11010001, 0])
    assert pack_bits(np.array([1, 2, 3]), 4) == bytes([0x21, 0x03])


def test_rejects_out_of_range_and_wrong_length():
    with pytest.raises(ValueError):
        pack_bits(np.array([4]), 2)
    with pytest.raises(ValueError):
        pack_bits(np.array([-1]), 4)
    with pytest.raises(ValueError):
        unpack_bits(b"\x00", 4, 3)


@pytest.mark.parametrize("dtype,bits", [(TensorProto.INT4, 4), (TensorProto.INT2, 2)])
def test_matches_onnx_raw_layout(dtype, bits):
    codes = np.random.default_rng(0).integers(-(1 << (bits - 1)), 1 << (bits - 1), (5, 3, 3))
    raw = pack_bits(codes & ((1 << bits) - 1), bits)
    tensor = helper.make_tensor("w", dtype, list(codes.shape), raw, raw=True)
    assert np.array_equal(numpy_helper.to_array(tensor).astype(np.int64), codes)
