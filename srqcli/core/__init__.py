"""Pure-torch quantization math: grids, the SRQ autograd function, DropBits."""
