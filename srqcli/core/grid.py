"""Integer quantization grids.

A grid is the set of integer codes ``k_min … k_max`` a ``b``-bit quantizer may output; the
real values are ``α·k``, so zero is always exact (docs/method.md §1).
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_BITS = 2
MAX_BITS = 8


@dataclass(frozen=True)
class IntGrid:
    """The integer code range of a ``bits``-bit grid, signed or unsigned."""

    bits: int
    signed: bool

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 16:
            raise ValueError(f"bits must be in 1..16, got {self.bits}")

    @property
    def kmin(self) -> int:
        return -(2 ** (self.bits - 1)) if self.signed else 0

    @property
    def kmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1

    @property
    def levels(self) -> int:
        return 2**self.bits

    def narrowed(self, drop: int) -> IntGrid:
        """The grid with ``drop`` fewer bits (same signedness)."""
        return IntGrid(self.bits - drop, self.signed)


#: Largest ``x·|w|`` (``x`` a uint8 activation code, ``w`` an int8 weight code) for which
#: onnxruntime's u8s8 kernels on x86 without VNNI (AVX2, AVX-512BW) compute exact integers:
#: they add pairs of products with ``VPMADDUBSW``, whose int16 result saturates at 32767, so
#: ``2·x·|w| ≤ 32767``. VNNI and ARM kernels accumulate in int32 and never saturate; a file
#: that keeps every product under this bound computes the same integers on every CPU.
PAIR_PRODUCT_MAX = 16383


def portable_weight_bits(weight_bits: int, act_bits: int) -> int:
    """The widest signed weight grid, at most ``weight_bits`` wide, whose codes times any
    ``act_bits``-bit input code keep within :data:`PAIR_PRODUCT_MAX`.

    Export stores a ``b``-bit input code in a uint8 container as ``0 … 2^b − 1`` (signed grids
    with zero point ``2^(b−1)``), so the largest product is ``(2^b − 1)·2^(w−1)``. Only 8-bit
    weights with 8-bit inputs break it (``255·128``); they train on the 7-bit grid instead
    (``255·64 = 16320``), the weight-side ``reduce_range`` that onnxruntime's own quantizer
    recommends for such CPUs (docs/method-decisions.md, "Portable integer layers").
    """
    x_max = 2**act_bits - 1
    bits = weight_bits
    while bits > MIN_BITS and x_max * 2 ** (bits - 1) > PAIR_PRODUCT_MAX:
        bits -= 1
    return bits
