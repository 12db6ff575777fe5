"""Export of quantized models to ONNX and packed safetensors, and the bit-allocation report."""
