"""The seams of DESIGN.md §3 in one place.

Each Protocol lives next to the code that implements it; this module only gathers them so a
reader (or a third-party backend) finds every seam by one import:

- ``InferenceEngine``, ``KVCacheAllocator``, ``MetricsHook``: ``orcd_toolkit.engine.interfaces``
- ``Backend`` (and its ``ForwardBatch`` / ``KVCache`` value types): ``orcd_toolkit.backends.base``
- ``AttentionKernel``: ``orcd_toolkit.kernels.attention`` — resolved lazily, because importing
  the GPU backend pulls in CuPy, which a CPU-only user may not have installed.
"""

from __future__ import annotations

from typing import Any

from orcd_toolkit.backends.base import Backend, ForwardBatch, KVCache
from orcd_toolkit.engine.interfaces import InferenceEngine, KVCacheAllocator, MetricsHook

# AttentionKernel is also available (module __getattr__ below) but not star-exported.
__all__ = [
    "Backend",
    "ForwardBatch",
    "InferenceEngine",
    "KVCache",
    "KVCacheAllocator",
    "MetricsHook",
]


def __getattr__(name: str) -> Any:
    if name == "AttentionKernel":
        from orcd_toolkit.kernels.attention import AttentionKernel

        return AttentionKernel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
