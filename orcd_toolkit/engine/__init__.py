"""The inference engine: continuous batching over a paged KV cache (issue #6, docs/engine.md).

Public API: ``LLMEngine`` (submit / abort / step / run), ``EngineConfig``,
``GenerationRequest``, ``SamplingParams``, ``RequestOutput``, ``RequestHandle``, the
allocators, the metrics hooks, and the protocols in ``interfaces``.
"""

from orcd_toolkit.engine.allocators import ContiguousAllocator, PagedAllocator
from orcd_toolkit.engine.config import EngineConfig
from orcd_toolkit.engine.engine import LLMEngine, build_engine
from orcd_toolkit.engine.errors import (
    DuplicateRequest,
    InvalidSamplingParams,
    QueueFull,
    RequestTooLarge,
)
from orcd_toolkit.engine.interfaces import (
    InferenceEngine,
    KVCacheAllocator,
    MetricsHook,
    ModelRunner,
    RequestStats,
    SamplingBatch,
    StepStats,
    TokenSampler,
)
from orcd_toolkit.engine.metrics import MetricsRecorder, NoopMetrics
from orcd_toolkit.engine.outputs import RequestHandle, RequestOutput
from orcd_toolkit.engine.params import GenerationRequest, SamplingParams
from orcd_toolkit.engine.sampling import HostTokenSampler

__all__ = [
    "ContiguousAllocator",
    "DuplicateRequest",
    "EngineConfig",
    "GenerationRequest",
    "HostTokenSampler",
    "InferenceEngine",
    "InvalidSamplingParams",
    "KVCacheAllocator",
    "LLMEngine",
    "MetricsHook",
    "MetricsRecorder",
    "ModelRunner",
    "NoopMetrics",
    "PagedAllocator",
    "QueueFull",
    "RequestHandle",
    "RequestOutput",
    "RequestStats",
    "RequestTooLarge",
    "SamplingBatch",
    "SamplingParams",
    "StepStats",
    "TokenSampler",
    "build_engine",
]
