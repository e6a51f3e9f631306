"""Weight quantization: preset names -> configs, numpy packing, and the fused dequantize kernels."""
