"""srq: Semi-Relaxed Quantization with DropBits for PyTorch vision models."""

__version__ = "0.1.0"
