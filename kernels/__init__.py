"""The GPU backend (installed as ``orcd_toolkit.kernels``): Numba CUDA kernels, CuPy RawModule
CUDA C++ sources, device memory and VRAM accounting, CUDA graphs.

Importing this package never touches the GPU; :func:`orcd_toolkit.kernels.device.probe` does.
"""
