"""Per-layer statistics and the bit-allocation report."""
