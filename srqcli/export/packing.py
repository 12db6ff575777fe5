"""Bit packing of integer codes at their true width (1–8 bits), little-endian.

Element ``i`` of a ``b``-bit stream occupies stream bits ``i·b … i·b+b−1`` (least significant
bit first), and stream bit ``j`` is bit ``j mod 8`` of byte ``j div 8``. For ``b = 4`` and
``b = 2`` this is exactly ONNX's INT4/INT2 raw layout (first element in the low nibble/bits);
for ``b = 8`` it is one byte per element. The last byte is zero-padded.
"""

from __future__ import annotations

import numpy as np


def packed_nbytes(count: int, bits: int) -> int:
    return (count * bits + 7) // 8


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Pack non-negative integers ``< 2**bits`` (any shape, flattened in C order)."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    flat = np.ascontiguousarray(values, dtype=np.int64).reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= (1 << bits)):
        raise ValueError(f"values out of range for {bits}-bit packing")
    u8 = flat.astype(np.uint8)
    if bits == 8:
        return u8.tobytes()
    if 8 % bits == 0:  # 1, 2, 4 bits: whole elements per byte, no bit shuffling
        per = 8 // bits
        pad = (-u8.size) % per
        if pad:
            u8 = np.concatenate([u8, np.zeros(pad, np.uint8)])
        groups = u8.reshape(-1, per).astype(np.uint16)
        shifts = (np.arange(per, dtype=np.uint16) * bits)
        return (groups << shifts).sum(axis=1).astype(np.uint8).tobytes()
    bitplanes = np.unpackbits(u8[:, None], axis=1, bitorder="little")[:, :bits]
    return np.packbits(bitplanes.reshape(-1), bitorder="little").tobytes()


def unpack_bits(data: bytes | np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``count`` values as int64."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    buf = np.frombuffer(bytes(data), dtype=np.uint8) if not isinstance(data, np.ndarray) else data.astype(np.uint8).reshape(-1)
    need = packed_nbytes(count, bits)
    if buf.size != need:
        raise ValueError(f"expected {need} bytes for {count} {bits}-bit values, got {buf.size}")
    if bits == 8:
        return buf.astype(np.int64)
    if 8 % bits == 0:
        per = 8 // bits
        shifts = np.arange(per, dtype=np.uint8) * bits
        vals = (buf[:, None] >> shifts) & ((1 << bits) - 1)
        return vals.reshape(-1)[:count].astype(np.int64)
    stream = np.unpackbits(buf, bitorder="little")[: count * bits].reshape(count, bits)
    weights = (1 << np.arange(bits, dtype=np.int64))
    return (stream.astype(np.int64) * weights).sum(axis=1)
