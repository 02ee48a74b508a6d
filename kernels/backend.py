"""``GpuBackend``: the ``Backend`` protocol (orcd_toolkit.backends.base) on the kernel library.

The same architecture code that runs on the NumPy oracle runs here, op for op:

- weights are copied to VRAM once, in bounded chunks, and stay in their GGUF block format
  (``quant.QuantWeight``; no dequantized copy of a quantized matrix). Norm weights, biases and
  sinks are f32. A tensor used twice (a tied ``output`` = ``token_embd``) is copied once.
- the KV cache is f16 ``[num_blocks, block_size, n_kv_heads, head_dim]`` per layer (the
  contract); activations are f32 CuPy arrays.
- every launch goes to one CuPy stream (Numba kernels through ``_launch.numba_stream``); the
  host only waits in ``to_host`` (the logits copy) and at the end of loading.

This first version launches eagerly and allocates activations per op from CuPy's pool; CUDA
graph capture of a decode step (``kernels/graph.py``) is a later step.

Errors: a CuPy out-of-memory while loading (weights, KV cache) is ``InsufficientVram``, during
a forward step ``VramOom``; any other CUDA failure is ``CudaError`` (``KernelError`` is one).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from orcd_toolkit.backends.base import ForwardBatch, KVCache, KVCacheLayer, RopeParams
from orcd_toolkit.errors import CudaError, InsufficientVram, InvalidRequest, OrcdError, VramOom

__all__ = [
    "GpuBackend",
    "WeightPlan",
    "PlannedTensor",
    "plan_weights",
    "chunk_ranges",
    "kv_cache_bytes",
    "translate_error",
    "DEFAULT_CHUNK_BYTES",
]

DEFAULT_CHUNK_BYTES = 64 << 20  # host->device copy unit: bounds pinned staging and latency
# types the CUDA kernels decode (cuda_modules.QTYPE_IDS; kept here so planning needs no CuPy)
KERNEL_QTYPES = frozenset((0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 30, 39))
VECTOR_QTYPES = frozenset((0, 1, 30))
# the block types (cuda_modules.BLOCK_QTYPE_IDS): the int8 (q8_1 activation) kernels' types
BLOCK_QTYPES = frozenset((2, 3, 6, 7, 8, 12, 13, 14, 39))
MAX_GRID_Y = 65535  # quant.MAX_GRID_Y: (token, slot) products per expert launch

ProgressFn = Callable[[int, int, str], None]  # (bytes copied so far, bytes planned, tensor)
F = TypeVar("F", bound=Callable[..., Any])


# -- host-side planning (no GPU needed; tested on the CPU) ----------------------------------


@dataclass(frozen=True, slots=True)
class PlannedTensor:
    """How one GGUF tensor will sit in VRAM: ``kind`` is "blocks" (raw GGUF blocks, for
    matrices and embeddings) or "f32" (norms, biases, sinks dequantized on the host)."""

    name: str
    kind: str
    qtype: int
    shape: tuple[int, ...]
    nbytes: int  # bytes in VRAM


@dataclass(frozen=True, slots=True)
class WeightPlan:
    tensors: tuple[PlannedTensor, ...]

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    def by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.tensors:
            out[t.kind] = out.get(t.kind, 0) + t.nbytes
        return out


def _tensor_kind(qtype: int, shape: tuple[int, ...]) -> str:
    return "f32" if len(shape) == 1 and qtype in VECTOR_QTYPES else "blocks"


def plan_tensor(name: str, qtype: int, shape: tuple[int, ...], nbytes: int) -> PlannedTensor:
    """The VRAM placement of one tensor; raises ``InvalidRequest`` for what no kernel reads.

    Matrices keep their file bytes (``nbytes``); 1-D F32/F16/BF16 tensors become f32.
    """
    shape = tuple(int(d) for d in shape)
    kind = _tensor_kind(int(qtype), shape)
    if kind == "f32":
        return PlannedTensor(name, kind, int(qtype), shape, 4 * int(np.prod(shape)))
    if int(qtype) not in KERNEL_QTYPES:
        raise InvalidRequest(f"tensor {name}: ggml type {int(qtype)} has no GPU kernel")
    if shape[-1] % 32:
        raise InvalidRequest(
            f"tensor {name}: row length {shape[-1]} is not a multiple of 32 (GPU kernels)"
        )
    return PlannedTensor(name, kind, int(qtype), shape, int(nbytes))


def plan_weights(tensors: dict[str, Any]) -> WeightPlan:
    """Placement of every tensor of a GGUF file (``GGUFFile.tensors``): the VRAM the weights
    will take before anything is copied, so a load can be refused up front."""
    return WeightPlan(tuple(
        plan_tensor(name, int(t.qtype), tuple(t.shape), int(t.nbytes))
        for name, t in tensors.items()
    ))


def chunk_ranges(nbytes: int, chunk_bytes: int) -> Iterator[tuple[int, int]]:
    """``[start, stop)`` byte ranges of at most ``chunk_bytes`` covering ``nbytes``."""
    if chunk_bytes <= 0:
        raise InvalidRequest(f"chunk_bytes must be positive, got {chunk_bytes}")
    for start in range(0, int(nbytes), int(chunk_bytes)):
        yield start, min(int(nbytes), start + int(chunk_bytes))


def kv_cache_bytes(num_layers: int, num_blocks: int, block_size: int, n_kv_heads: int,
                   head_dim: int) -> int:
    """VRAM of an f16 paged KV cache (K and V, every layer)."""
    return 2 * 2 * num_layers * num_blocks * block_size * n_kv_heads * head_dim


def translate_error(exc: BaseException, phase: str) -> OrcdError | None:
    """The typed error for a CUDA-stack exception (None if ``exc`` is not one).

    ``phase`` "load": out of memory is ``InsufficientVram`` (the model or KV budget does not
    fit); "run": ``VramOom`` (retriable, the process stays up). Other CUDA runtime/driver
    errors (CuPy or Numba) are ``CudaError``.
    """
    if isinstance(exc, OrcdError):
        return exc
    name = type(exc).__name__
    module = type(exc).__module__ or ""
    if name == "OutOfMemoryError" and module.startswith("cupy"):
        cls = InsufficientVram if phase == "load" else VramOom
        what = "loading the model" if phase == "load" else "a forward step"
        return cls(f"GPU out of memory while {what}: {exc}")
    cuda_names = ("CUDARuntimeError", "CUDADriverError", "CUBLASError", "CompileException",
                  "CudaAPIError", "CudaSupportError", "CudaDriverError", "NvrtcError")
    if name in cuda_names and (module.startswith("cupy") or module.startswith("numba")):
        return CudaError(f"CUDA error during {phase}: {name}: {exc}")
    return None


def _guard(phase: str) -> Callable[[F], F]:
    """Re-raise CUDA-stack exceptions of the wrapped method as typed ``OrcdError``s."""

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except OrcdError:
                raise
            except Exception as exc:  # noqa: BLE001 - translated or re-raised unchanged
                typed = translate_error(exc, phase)
                if typed is None:
                    raise
                raise typed from exc

        return wrapper  # type: ignore[return-value]

    return deco


def moe_int8_plan(gate: tuple[int, int, int], up: tuple[int, int, int], down_qtype: int,
                  pairs: int) -> str:
    """How ``GpuBackend.moe`` runs the expert products of ``pairs`` (token, slot) pairs, from
    the stacks' ``(qtype, rows, cols)`` (gate, up) and the down stack's type: "fused" (x
    rounded once, gate and up of every selected expert in one int8 launch: both stacks of one
    block type and shape, and 2 * pairs within CUDA's grid.y), "shared" (block types: x and
    the activation each rounded once, one launch per stack), "default" (a float stack: each
    product as ``quant.expert_matvec`` picks)."""
    if not all(q in BLOCK_QTYPES for q in (gate[0], up[0], down_qtype)):
        return "default"
    return "fused" if gate == up and 2 * pairs <= MAX_GRID_Y else "shared"


# -- the backend ----------------------------------------------------------------------------


class GpuBackend:
    """``Backend`` on one CUDA device (``device`` ordinal), all work on one CuPy stream.

    ``chunk_bytes`` bounds each host->device weight copy; ``on_progress(done, planned, name)``
    is called after each chunk (``planned`` is the bytes of tensors loaded so far plus the
    current one, or the plan's total when ``expect_bytes`` was set by the caller).
    """

    name = "gpu"

    def __init__(self, device: int = 0, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 on_progress: ProgressFn | None = None) -> None:
        try:
            self._init(device, chunk_bytes, on_progress)
        except OrcdError:
            raise
        except Exception as exc:  # noqa: BLE001 - translated or re-raised unchanged
            typed = translate_error(exc, "load")
            if typed is None:
                raise
            raise typed from exc

    def _init(self, device: int, chunk_bytes: int, on_progress: ProgressFn | None) -> None:
        import cupy as cp

        from orcd_toolkit.kernels import attention

        if chunk_bytes <= 0:
            raise InvalidRequest(f"chunk_bytes must be positive, got {chunk_bytes}")
        self._cp = cp
        # decode launches small grids by design (one block per token row); Numba's
        # low-occupancy warning would otherwise print on every new launch shape
        warnings.filterwarnings("ignore", message=r".*will likely result in GPU under-utilization")
        n = cp.cuda.runtime.getDeviceCount()
        if not 0 <= device < n:
            raise CudaError(f"GPU device {device} does not exist ({n} device(s))")
        self.device = int(device)
        self._dev = cp.cuda.Device(self.device)
        self._dev.use()
        props = cp.cuda.runtime.getDeviceProperties(self.device)
        name = props["name"]
        self.device_name = name.decode() if isinstance(name, bytes) else str(name)
        self.sm = f"sm_{props['major']}{props['minor']}"
        v = int(cp.cuda.runtime.runtimeGetVersion())
        self.cuda_runtime_version = f"{v // 1000}.{(v % 1000) // 10}"
        self.num_sms = int(props["multiProcessorCount"])
        self.stream = cp.cuda.Stream(non_blocking=True)
        self.chunk_bytes = int(chunk_bytes)
        self.on_progress = on_progress
        self.expect_bytes = 0
        self.weights_bytes = 0
        self.kv_bytes = 0
        self._copied = 0
        self._tensor_cache: dict[tuple[int, int, str], Any] = {}
        self._flash = attention.FlashAttention(num_sms=self.num_sms)
        self._basic = attention.BasicAttention()
        self._freqs: dict[tuple[Any, ...], tuple[Any, float]] = {}
        self._uploads: dict[str, tuple[np.ndarray, Any]] = {}
        self._consts: dict[tuple[str, int], Any] = {}
        # one zero frequency: cos 1, sin 0 is an exact identity rotation (write_kv only)
        self._zero_freq = cp.zeros((1,), cp.float64)
        from orcd_toolkit.kernels.quant import SharedActivations

        # each decode activation rounded to q8_1 once for all the int8 products reading it
        self._q8 = SharedActivations(lambda shape: self._empty(shape, cp.uint32))

    @property
    def vram_bytes_used(self) -> int:
        """Bytes this backend holds in VRAM for weights and KV caches."""
        return self.weights_bytes + self.kv_bytes

    # -- loading --------------------------------------------------------------------------

    def _copy_raw(self, raw: np.ndarray, name: str) -> Any:
        """A device uint8 copy of host bytes ``raw`` in ``chunk_bytes`` pieces, on the stream."""
        cp = self._cp
        flat = np.ascontiguousarray(raw).reshape(-1).view(np.uint8)
        dev = cp.empty(flat.shape, cp.uint8)
        planned = max(self.expect_bytes, self._copied + flat.nbytes)
        with self.stream:
            for a, b in chunk_ranges(flat.nbytes, self.chunk_bytes):
                dev[a:b].set(flat[a:b], stream=self.stream)
                self._copied += b - a
                if self.on_progress is not None:
                    self.on_progress(self._copied, planned, name)
        # pageable host memory: set() returns once the bytes are staged; ordering on the
        # stream is what later kernels need
        return dev.reshape(raw.shape)

    def _cached(self, tensor: Any, kind: str, make: Callable[[], Any]) -> Any:
        key = (int(getattr(tensor, "offset", id(tensor))), int(getattr(tensor, "nbytes", 0)), kind)
        hit = self._tensor_cache.get(key)
        if hit is None:
            hit = self._tensor_cache[key] = make()
        return hit

    def _blocks(self, tensor: Any) -> Any:
        from orcd_toolkit.kernels.quant import QuantWeight

        name = str(getattr(tensor, "name", "?"))
        plan = plan_tensor(name, int(tensor.qtype), tuple(tensor.shape), int(tensor.nbytes))

        def make() -> Any:
            shape = plan.shape
            raw = np.asarray(tensor.raw())
            rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
            data = self._copy_raw(raw, name)
            rb = data.size // max(1, rows)
            if len(shape) == 3:
                data = data.reshape(shape[0], shape[1], rb)
                w = QuantWeight(data, plan.qtype, shape[1], shape[2])
            else:
                data = data.reshape(rows, rb)
                w = QuantWeight(data, plan.qtype, rows, shape[-1])
            self.weights_bytes += int(data.nbytes)
            return w

        return self._cached(tensor, "blocks", make)

    @_guard("load")
    def load_weight(self, tensor: Any) -> Any:
        """A matrix (or an expert stack [E, rows, cols]) as raw GGUF blocks in VRAM."""
        return self._blocks(tensor)

    @_guard("load")
    def load_embedding(self, tensor: Any) -> Any:
        """The embedding table as raw blocks (rows decoded by ``embed``); shared with a tied
        ``output`` loaded by ``load_weight``."""
        return self._blocks(tensor)

    @_guard("load")
    def load_vector(self, tensor: Any) -> Any:
        """Norm weights, biases, sinks: dequantized on the host to f32, then copied."""
        from orcd_toolkit.backends.cpu import ops

        def make() -> Any:
            host = ops.dequantize(tensor.raw(), int(tensor.qtype), tuple(tensor.shape))
            host = np.ascontiguousarray(host, dtype=np.float32)
            dev = self._copy_raw(host.view(np.uint8), str(getattr(tensor, "name", "?")))
            dev = dev.view(self._cp.float32).reshape(host.shape)
            self.weights_bytes += int(dev.nbytes)
            return dev

        return self._cached(tensor, "f32", make)

    @_guard("load")
    def allocate_kv_cache(self, num_layers: int, num_blocks: int, block_size: int,
                          n_kv_heads: int, head_dim: int) -> KVCache:
        cp = self._cp
        shape = (num_blocks, block_size, n_kv_heads, head_dim)
        with self.stream:
            layers = [KVCacheLayer(k=cp.zeros(shape, cp.float16), v=cp.zeros(shape, cp.float16))
                      for _ in range(num_layers)]
        self.stream.synchronize()  # weights and zeroed caches in place before the first step
        self.kv_bytes += kv_cache_bytes(num_layers, num_blocks, block_size, n_kv_heads, head_dim)
        return KVCache(layers, num_blocks, block_size, n_kv_heads, head_dim)

    @_guard("load")
    def synchronize(self) -> None:
        """Wait for every launch and copy issued so far."""
        self.stream.synchronize()

    # -- helpers --------------------------------------------------------------------------

    def _upload_i32(self, key: str, host: np.ndarray) -> Any:
        """A device int32 copy of a small batch array, reused while its values are the same
        (positions are passed to every layer's two RoPE calls)."""
        host = np.ascontiguousarray(host, dtype=np.int32)
        hit = self._uploads.get(key)
        if hit is not None and hit[0].shape == host.shape and np.array_equal(hit[0], host):
            return hit[1]
        with self.stream:
            dev = self._cp.asarray(host)
        self._uploads[key] = (host.copy(), dev)
        return dev

    def _const(self, kind: str, n: int) -> Any:
        key = (kind, n)
        if key not in self._consts:
            with self.stream:
                fill = self._cp.ones if kind == "ones" else self._cp.zeros
                self._consts[key] = fill((n,), self._cp.float32)
        return self._consts[key]

    def _empty(self, shape: tuple[int, ...], dtype: Any = None) -> Any:
        with self.stream:
            return self._cp.empty(shape, dtype or self._cp.float32)

    def _contig(self, x: Any) -> Any:
        if x.flags.c_contiguous:
            return x
        with self.stream:
            return self._cp.ascontiguousarray(x)

    def _rope_table(self, params: RopeParams) -> tuple[Any, float]:
        from orcd_toolkit.kernels import rope

        ff = params.freq_factors
        ff_host = None if ff is None else np.asarray(self.to_host(ff), dtype=np.float64)
        key = (params.n_rot, params.freq_base, params.freq_scale, params.ext_factor,
               params.attn_factor, params.beta_fast, params.beta_slow, params.n_ctx_orig,
               None if ff_host is None else ff_host.tobytes())
        hit = self._freqs.get(key)
        if hit is None:
            freqs, mscale = rope.rope_frequencies(
                params.n_rot, freq_base=params.freq_base, freq_scale=params.freq_scale,
                ext_factor=params.ext_factor, attn_factor=params.attn_factor,
                beta_fast=params.beta_fast, beta_slow=params.beta_slow,
                n_ctx_orig=params.n_ctx_orig, freq_factors=ff_host)
            with self.stream:
                hit = self._freqs[key] = (self._cp.asarray(freqs), mscale)
        return hit

    # -- ops ------------------------------------------------------------------------------

    @_guard("run")
    def to_host(self, x: Any) -> np.ndarray:
        """Copy to a NumPy array after the stream's work (the one host wait of a step)."""
        if isinstance(x, np.ndarray):
            return x
        return x.get(stream=self.stream, blocking=True)

    @_guard("run")
    def embed(self, table: Any, token_ids: np.ndarray) -> Any:
        from orcd_toolkit.kernels import quant

        ids = np.asarray(token_ids)
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= table.rows):
            raise InvalidRequest(
                f"token id out of range [0, {table.rows}): {int(ids.min())}..{int(ids.max())}")
        dev_ids = self._upload_i32("token_ids", ids)
        out = self._empty((ids.shape[0], table.cols))
        if ids.shape[0]:
            quant.embed(out, table, dev_ids, stream=self.stream)
        return out

    @_guard("run")
    def rms_norm(self, x: Any, weight: Any, eps: float) -> Any:
        from orcd_toolkit.kernels import norms

        out = self._empty(tuple(x.shape))
        w = weight if weight is not None else self._const("ones", x.shape[1])
        if x.shape[0]:
            norms.rms_norm(out, x, w, eps, stream=self.stream)
        return out

    @_guard("run")
    def add_rms_norm(self, x: Any, residual: Any, weight: Any, eps: float) -> tuple[Any, Any]:
        from orcd_toolkit.kernels import norms

        out = self._empty(tuple(x.shape))
        summed = self._empty(tuple(x.shape))
        w = weight if weight is not None else self._const("ones", x.shape[1])
        if x.shape[0]:
            norms.rms_norm(out, x, w, eps, residual=residual, residual_out=summed,
                           stream=self.stream)
        return out, summed

    @_guard("run")
    def layer_norm(self, x: Any, weight: Any, bias: Any, eps: float) -> Any:
        from orcd_toolkit.kernels import norms

        n = x.shape[1]
        out = self._empty(tuple(x.shape))
        w = weight if weight is not None else self._const("ones", n)
        b = bias if bias is not None else self._const("zeros", n)
        if x.shape[0]:
            norms.layer_norm(out, x, w, b, eps, stream=self.stream)
        return out

    @_guard("run")
    def add_layer_norm(self, x: Any, residual: Any, weight: Any, bias: Any,
                       eps: float) -> tuple[Any, Any]:
        from orcd_toolkit.kernels import norms

        n = x.shape[1]
        out = self._empty(tuple(x.shape))
        summed = self._empty(tuple(x.shape))
        w = weight if weight is not None else self._const("ones", n)
        b = bias if bias is not None else self._const("zeros", n)
        if x.shape[0]:
            norms.layer_norm(out, x, w, b, eps, residual=residual, residual_out=summed,
                             stream=self.stream)
        return out, summed

    @_guard("run")
    def linear(self, x: Any, weight: Any, bias: Any = None) -> Any:
        """Quantized matvec up to 8 rows, tensor-core matmul (x rounded to f16) above.

        At up to 8 rows the int8 products of one x share its q8_1 rounding (q, k and v; gate
        and up): the first rounds it (inside its kernel, or by its own launch for wide x) and
        the others read it (``quant.SharedActivations``; the same numbers as rounding per
        product).
        """
        x = self._contig(x)
        out = self._empty((x.shape[0], weight.rows))
        if x.shape[0]:
            self._q8.linear(out, x, weight, bias, stream=self.stream)
        return out

    @_guard("run")
    def add(self, a: Any, b: Any) -> Any:
        from orcd_toolkit.kernels import activations

        out = self._empty(tuple(a.shape))
        activations.add(out, a, b, stream=self.stream)
        return out

    @_guard("run")
    def rope(self, x: Any, positions: np.ndarray, params: RopeParams) -> Any:
        """Rotated copy of ``x`` [T, H, D] (the input is left as it was, like the oracle)."""
        from orcd_toolkit.kernels import rope

        t, _, d = x.shape
        with self.stream:
            y = self._cp.array(x, dtype=self._cp.float32, order="C", copy=True)
        if t == 0:
            return y
        freqs, mscale = self._rope_table(params)
        pos = self._upload_i32("positions", positions)
        # the kernel rotates q heads and k heads of one call; a one-head scratch stands in
        # for k (rotated and discarded, nothing is written to a cache)
        scratch = self._empty((t, 1, d))
        rope.rope_kv_write(y, scratch, scratch, pos, freqs, mscale, params.mode,
                           stream=self.stream)
        return y

    @_guard("run")
    def write_kv(self, layer: KVCacheLayer, k: Any, v: Any, slot_mapping: np.ndarray) -> None:
        """Store k, v [T, Hkv, D] as f16 at ``slot_mapping`` (negative slots skipped)."""
        from orcd_toolkit.backends.cpu.ops import ROPE_NORM
        from orcd_toolkit.kernels import rope

        k = self._contig(k)
        v = self._contig(v)
        if k.shape[0] == 0:
            return
        slots = self._upload_i32("slot_mapping", slot_mapping)
        # the fused RoPE + KV-write kernel with a zero frequency: the rotation of k (and of k
        # passed again as q) is an exact identity, then k and v are stored as f16
        rope.rope_kv_write(k, k, v, slots, self._zero_freq, 1.0, ROPE_NORM,
                           slot_mapping=slots, k_cache=layer.k, v_cache=layer.v,
                           stream=self.stream)

    @_guard("run")
    def attention(self, q: Any, layer: KVCacheLayer, batch: ForwardBatch, *, scale: float,
                  sinks: Any = None, sliding_window: int = 0) -> Any:
        from orcd_toolkit.kernels import attention, cuda_modules

        q = self._contig(q)
        t, hq, d = q.shape
        lens = np.diff(batch.seq_starts)
        shape = attention.AttentionShape(
            num_tokens=t, num_seqs=batch.num_seqs,
            max_query_len=int(lens.max()) if lens.size else 0,
            max_context_len=int(batch.context_lens.max()) if batch.context_lens.size else 0,
            n_q_heads=hq, n_kv_heads=int(layer.k.shape[2]), head_dim=d)
        out = self._empty((t, hq, d))
        if t == 0:
            return out
        kernel = self._flash if d in cuda_modules.HEAD_DIMS else self._basic
        ws = self._empty(kernel.workspace_shape(shape))
        kernel(out, q, layer.k, layer.v, self._upload_i32("block_tables", batch.block_tables),
               self._upload_i32("seq_starts", batch.seq_starts),
               self._upload_i32("context_lens", batch.context_lens), shape, ws,
               scale=scale, sinks=sinks, sliding_window=sliding_window, stream=self.stream)
        return out

    def _pair(self, gate: Any, up: Any) -> tuple[Any, Any, Any]:
        gate, up = self._contig(gate), self._contig(up)
        return gate, up, self._empty(tuple(gate.shape))

    def _rounded_swiglu(self, gate: Any, up: Any, **kw: Any) -> Any | None:
        """At decode (up to Q8_MAX_BATCH rows of whole q8_1 chunks, each row contiguous) the
        activation is computed together with its q8_1 rounding (``quant.swiglu_rounded``),
        recorded for the next int8 product of it (the down projection reads it instead of
        launching a quantize), the halves of a fused gate/up output read in place; None
        where that does not apply."""
        from orcd_toolkit.kernels import quant

        n, cols = gate.shape
        if not (0 < n <= quant.Q8_MAX_BATCH and cols % 32 == 0 and tuple(up.shape) == (n, cols)
                and all(a.dtype == np.float32 and quant.contiguous_rows(a) for a in (gate, up))):
            return None
        out = self._empty((n, cols))
        quant.swiglu_rounded(out, gate, up, self._q8.claim(out).data, stream=self.stream, **kw)
        return out

    @_guard("run")
    def swiglu(self, gate: Any, up: Any) -> Any:
        from orcd_toolkit.kernels import activations

        out = self._rounded_swiglu(gate, up)
        if out is None:
            gate, up, out = self._pair(gate, up)
            activations.swiglu(out, gate, up, stream=self.stream)
        return out

    @_guard("run")
    def swiglu_oai(self, gate: Any, up: Any, alpha: float, limit: float) -> Any:
        from orcd_toolkit.kernels import activations

        out = self._rounded_swiglu(gate, up, oai=True, alpha=alpha, limit=limit)
        if out is None:
            gate, up, out = self._pair(gate, up)
            activations.swiglu_oai(out, gate, up, alpha, limit, stream=self.stream)
        return out

    @_guard("run")
    def gelu(self, x: Any) -> Any:
        from orcd_toolkit.kernels import activations

        x = self._contig(x)
        out = self._empty(tuple(x.shape))
        activations.gelu(out, x, stream=self.stream)
        return out

    @_guard("run")
    def moe(self, x: Any, router_logits: Any, k: int, gate_w: Any, up_w: Any, down_w: Any, *,
            gate_b: Any = None, up_b: Any = None, down_b: Any = None,
            activation: str = "swiglu_oai") -> Any:
        """Route on the device, run only the selected experts, combine (gpt-oss)."""
        from orcd_toolkit.backends.cpu.ops import SWIGLU_OAI_ALPHA, SWIGLU_OAI_LIMIT
        from orcd_toolkit.kernels import activations, moe, quant

        if activation not in ("swiglu_oai", "swiglu"):
            raise InvalidRequest(f"unsupported MoE activation {activation!r}")
        x = self._contig(x)
        router_logits = self._contig(router_logits)
        t = x.shape[0]
        ids = self._empty((t, k), self._cp.int32)
        weights = self._empty((t, k))
        out = self._empty((t, down_w.rows))
        if t == 0:
            return out
        moe.route(ids, weights, router_logits, stream=self.stream)
        g = self._empty((t, k, gate_w.rows))
        u = self._empty((t, k, up_w.rows))
        plan = moe_int8_plan((int(gate_w.qtype), gate_w.rows, gate_w.cols),
                             (int(up_w.qtype), up_w.rows, up_w.cols), int(down_w.qtype), t * k)
        xq = self._q8.rounded(x, stream=self.stream) if plan != "default" else None
        if plan == "fused":
            quant.expert_gate_up(g, u, x, gate_w, up_w, ids, gate_bias=gate_b, up_bias=up_b,
                                 stream=self.stream, x_q8=xq)
        else:
            quant.expert_matvec(g, x, gate_w, ids, x_per_slot=False, bias=gate_b,
                                stream=self.stream, x_q8=xq)
            quant.expert_matvec(u, x, up_w, ids, x_per_slot=False, bias=up_b,
                                stream=self.stream, x_q8=xq)
        act = self._empty((t, k, gate_w.rows))
        g2, u2, a2 = (a.reshape(t * k, gate_w.rows) for a in (g, u, act))
        oai = activation == "swiglu_oai"
        down_q = None
        if plan != "default" and a2.shape[1] % 32 == 0:
            # the activation and its rounding for the down products in one launch
            down_q = quant.swiglu_rounded(a2, g2, u2, self._q8.claim(a2).data, oai=oai,
                                          alpha=SWIGLU_OAI_ALPHA, limit=SWIGLU_OAI_LIMIT,
                                          stream=self.stream)
        elif oai:
            activations.swiglu_oai(a2, g2, u2, SWIGLU_OAI_ALPHA, SWIGLU_OAI_LIMIT,
                                   stream=self.stream)
        else:
            activations.swiglu(a2, g2, u2, stream=self.stream)
        y = self._empty((t, k, down_w.rows))
        if plan != "default" and down_q is None:
            down_q = self._q8.rounded(a2, stream=self.stream)
        quant.expert_matvec(y, act, down_w, ids, x_per_slot=True, bias=down_b,
                            stream=self.stream, x_q8=down_q)
        moe.combine(out, y, weights, stream=self.stream)
        return out

    @_guard("run")
    def take_rows(self, x: Any, rows: np.ndarray) -> Any:
        idx = self._upload_i32("take_rows", rows)
        with self.stream:
            return self._cp.ascontiguousarray(self._cp.take(x, idx, axis=0))
