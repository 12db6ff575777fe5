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
