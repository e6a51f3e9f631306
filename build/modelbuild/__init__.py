"""Seam's build pipeline: real weights in, versioned WebGPU and CPU model artifacts out (see models/README.md)."""
