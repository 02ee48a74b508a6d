"""NumPy reference backend: f32 activations, weights dequantized once at load, BLAS matmuls."""

from orcd_toolkit.backends.cpu.backend import NumpyBackend

__all__ = ["NumpyBackend"]
