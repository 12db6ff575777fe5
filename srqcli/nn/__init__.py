"""Quantizer modules, quantized layers and model surgery."""
