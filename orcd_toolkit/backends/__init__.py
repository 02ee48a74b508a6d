"""Backends that execute a forward pass: the NumPy reference (``cpu``) and, via
``orcd_toolkit.kernels``, the GPU. The seam is ``backends.base.Backend``."""
