"""GpuBackend against the NumPy oracle: the same ForwardBatches through both backends.

GPU tests (marked ``gpu``, skipped with the reason elsewhere) run on tiny synthetic llama /
qwen2 files written here with the real files' tensor types (SmolLM2: Q8_0 embedding, Q4_1
matrices; Qwen2.5-0.5B Q4_K_M: Q5_0 / Q8_0 / Q4_K / Q6_K, Q/K/V biases, untied Q8_0 output),
and on the real SmolLM2 / Qwen2.5-0.5B files where the store has them.

Tolerance on the logits' normalized MSE ``sum((gpu-ref)^2) / sum(ref^2)`` against the exact
oracle, derived before the device run from a CPU emulation of the GPU's three roundings:
(a) K/V stored as f16 (relative rounding <= 2^-11); (b) prefill linears (> 8 rows) on f16
tensor cores (x and W rounded to f16, nMSE ~1.6e-7 per linear); (c) decode linears of the
block types (<= 8 rows) and every MoE expert matmul on the int8 kernels, which round x to q8_1
per 32 values exactly as llama.cpp CUDA's quantize_q8_1 (``NumpyBackend(activations="gpu")``,
the kernels' parity tests check the q values). (c) dominates: once a decode input moves by
~1e-7, Q8 roundings flip downstream, so with (a)-(b) the int8 rounding noise itself is what
shows, whichever reference. ``test_gpu_numerics_floor_on_cpu`` measures the emulated floor:
nMSE <= 2.8e-4 on the synthetic models, <= 2.7e-4 on SmolLM2 / Qwen2.5-0.5B (f16 alone,
without int8: <= 8.7e-7). Tolerance: 3e-3, over 10x that floor. Top-1 must be equal on every
row whose oracle top-2 margin exceeds 8x the row's rms logit difference (rows nearer a tie
are decided by the noise; the emulation flips 1 of 8 such rows on Qwen2.5-0.5B, none on the
synthetic models), and the greedy continuation identical (it is in the emulation).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orcd_toolkit.backends.base import ForwardBatch
from orcd_toolkit.backends.cpu import NumpyBackend
from orcd_toolkit.kernels.backend import (
    chunk_ranges,
    kv_cache_bytes,
    plan_tensor,
    plan_weights,
    translate_error,
)

SYNTH_NMSE_TOL = 3e-3
REAL_NMSE_TOL = 3e-3
BLOCK_SIZE = 16

# -- synthetic models ------------------------------------------------------------------------

F32, Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K = 0, 2, 3, 6, 8, 12, 14
D, N_HEAD, N_KV, HEAD_DIM, N_FF, N_LAYER = 256, 4, 2, 64, 512, 2


def _spm_vocab() -> dict[str, Any]:
    """A 320-token SentencePiece vocabulary (byte fallback) so the CLI can tokenize."""
    pieces = ["▁"] + [chr(c) for c in range(97, 123)] + ["▁" + chr(c) for c in range(97, 123)]
    pieces += ["th", "he", "in", "er", "an", "re", "on", "at"]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + pieces
    scores = [0.0] * 259 + [-float(i + 1) for i in range(len(pieces))]
    types = [2, 3, 3] + [6] * 256 + [1] * len(pieces)
    return {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": np.array(scores, dtype=np.float32),
        "tokenizer.ggml.token_type": np.array(types, dtype=np.int32),
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.add_bos_token": True,
    }


VOCAB = 320
EMBD_STD_TIED = 0.02


def synthetic_specs(arch: str) -> list[tuple[str, tuple[int, ...], int, str]]:
    """(name, shape, ggml type, init) of a 2-layer model with the real file's types."""
    out: list[tuple[str, tuple[int, ...], int, str]] = []
    kv = N_KV * HEAD_DIM
    if arch == "llama":  # SmolLM2-135M Q4_1: Q8_0 embedding (tied output), Q4_1 matrices
        out.append(("token_embd.weight", (VOCAB, D), Q8_0, "matrix"))
        for i in range(N_LAYER):
            p = f"blk.{i}."
            out += [(p + "attn_norm.weight", (D,), F32, "norm"),
                    (p + "attn_q.weight", (D, D), Q4_1, "matrix"),
                    (p + "attn_k.weight", (kv, D), Q4_1, "matrix"),
                    (p + "attn_v.weight", (kv, D), Q4_1, "matrix"),
                    (p + "attn_output.weight", (D, D), Q4_1, "matrix"),
                    (p + "ffn_norm.weight", (D,), F32, "norm"),
                    (p + "ffn_gate.weight", (N_FF, D), Q4_1, "matrix"),
                    (p + "ffn_up.weight", (N_FF, D), Q4_1, "matrix"),
                    (p + "ffn_down.weight", (D, N_FF), Q4_1, "matrix")]
        out.append(("output_norm.weight", (D,), F32, "norm"))
        return out
    if arch == "qwen2":  # Qwen2.5-0.5B Q4_K_M: Q5_0 / Q8_0 v / Q4_K and Q6_K down, biases
        out.append(("token_embd.weight", (VOCAB, D), Q5_0, "matrix"))
        for i in range(N_LAYER):
            p = f"blk.{i}."
            out += [(p + "attn_norm.weight", (D,), F32, "norm"),
                    (p + "attn_q.weight", (D, D), Q5_0, "matrix"),
                    (p + "attn_q.bias", (D,), F32, "bias"),
                    (p + "attn_k.weight", (kv, D), Q5_0, "matrix"),
                    (p + "attn_k.bias", (kv,), F32, "bias"),
                    (p + "attn_v.weight", (kv, D), Q8_0 if i == 0 else Q5_0, "matrix"),
                    (p + "attn_v.bias", (kv,), F32, "bias"),
                    (p + "attn_output.weight", (D, D), Q5_0, "matrix"),
                    (p + "ffn_norm.weight", (D,), F32, "norm"),
                    (p + "ffn_gate.weight", (N_FF, D), Q5_0, "matrix"),
                    (p + "ffn_up.weight", (N_FF, D), Q5_0, "matrix"),
                    (p + "ffn_down.weight", (D, N_FF), Q6_K if i == 0 else Q4_K, "matrix")]
        out += [("output_norm.weight", (D,), F32, "norm"),
                ("output.weight", (VOCAB, D), Q8_0, "matrix")]
        return out
    raise ValueError(arch)


def write_synthetic(path: str | os.PathLike[str], arch: str, seed: int = 0) -> Path:
    """Write the tiny ``llama`` or ``qwen2`` model (random weights, seeded) to ``path``."""
    from orcd_toolkit.gguf.writer import TensorData, write_gguf
    from orcd_toolkit.models.synth import TensorSpec, tensor_bytes

    rng = np.random.default_rng(seed)
    md: dict[str, Any] = {
        "general.architecture": arch,
        "general.name": f"synthetic tiny {arch}",
        f"{arch}.block_count": N_LAYER,
        f"{arch}.context_length": 512,
        f"{arch}.embedding_length": D,
        f"{arch}.feed_forward_length": N_FF,
        f"{arch}.attention.head_count": N_HEAD,
        f"{arch}.attention.head_count_kv": N_KV,
        f"{arch}.rope.freq_base": 100000.0 if arch == "llama" else 1000000.0,
        f"{arch}.attention.layer_norm_rms_epsilon": 1e-5 if arch == "llama" else 1e-6,
        **_spm_vocab(),
    }
    tensors = {}
    for name, shape, qtype, init in synthetic_specs(arch):
        if arch == "llama" and name == "token_embd.weight":
            # tied output: at synth's std 1 the input token's own embedding dominates the
            # residual stream and greedy decoding repeats it; rows of std 0.02 let the layers
            # decide (a varied 16-token greedy run)
            vals = rng.standard_normal(shape).astype(np.float32) * np.float32(EMBD_STD_TIED)
            tensors[name] = TensorData.from_values(vals, qtype)
            continue
        raw = tensor_bytes(TensorSpec(name, shape, qtype, init), rng)
        tensors[name] = TensorData(qtype, shape, raw)  # type: ignore[arg-type]
    return write_gguf(path, md, tensors)


# -- batches -----------------------------------------------------------------------------------


class Ragged:
    """Two sequences in non-consecutive KV blocks, stepped together (prefill, then mixed
    decode / prefill-continuation steps), building ForwardBatches as the contract defines."""

    def __init__(self, tables: list[list[int]]) -> None:
        self.tables = tables
        self.lengths = [0] * len(tables)

    def batch(self, new_tokens: list[list[int]], all_logits: bool) -> ForwardBatch:
        ids, pos, slots, starts, last = [], [], [], [0], []
        for s, toks in enumerate(new_tokens):
            for j, tok in enumerate(toks):
                p = self.lengths[s] + j
                ids.append(tok)
                pos.append(p)
                slots.append(self.tables[s][p // BLOCK_SIZE] * BLOCK_SIZE + p % BLOCK_SIZE)
            starts.append(starts[-1] + len(toks))
            last.append(starts[-1] - 1)
        ctx = [self.lengths[s] + len(t) for s, t in enumerate(new_tokens)]
        width = max(len(t) for t in self.tables)
        table = np.full((len(self.tables), width), -1, np.int32)
        for s, t in enumerate(self.tables):
            table[s, : len(t)] = t
        for s, t in enumerate(new_tokens):
            self.lengths[s] += len(t)
        return ForwardBatch(
            token_ids=np.array(ids), positions=np.array(pos), seq_starts=np.array(starts),
            context_lens=np.array(ctx), block_tables=table, slot_mapping=np.array(slots),
            logits_indices=np.arange(len(ids)) if all_logits else np.array(last),
        )


def _nmse(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.sum((got.astype(np.float64) - ref) ** 2) / np.sum(ref.astype(np.float64) ** 2))


def _run_steps(model: Any, prompts: list[list[int]]) -> list[np.ndarray]:
    """Prefill (all logits), then 3 steps: seq 0 decodes one token each step, seq 1 first
    feeds a 3-token continuation chunk, then decodes. Fed tokens come from a fixed rule
    (not from the model's choice), so both backends see identical batches."""
    be = model.backend
    kv = model.new_kv_cache(8, BLOCK_SIZE)
    r = Ragged([[3, 0, 6], [5, 1, 7]])
    outs = [be.to_host(model.forward(r.batch(prompts, all_logits=True), kv))]
    feed = [[[17], [40, 41, 42]], [[99], [123]], [[250], [7]]]
    for step in feed:
        outs.append(be.to_host(model.forward(r.batch(step, all_logits=True), kv)))
    return outs


def _prompts(vocab: int) -> list[list[int]]:
    rng = np.random.default_rng(7)
    return [[1] + rng.integers(3, vocab, 19).tolist(), [1] + rng.integers(3, vocab, 12).tolist()]


def _compare(path: Path, tol: float, n_greedy: int = 16) -> dict[str, Any]:
    """Run both backends on ``path``; assert the contract; return the measured numbers."""
    from orcd_toolkit.kernels.backend import GpuBackend
    from orcd_toolkit.models import load_model
    from orcd_toolkit.models.runner import SequenceRunner

    ref = load_model(path, NumpyBackend())
    gpu_be = GpuBackend()
    gpu = load_model(path, gpu_be)
    prompts = _prompts(ref.vocab_size)
    ref_out = _run_steps(ref, prompts)
    gpu_out = _run_steps(gpu, prompts)
    worst = 0.0
    for i, (a, b) in enumerate(zip(gpu_out, ref_out, strict=True)):
        assert a.shape == b.shape and a.dtype == np.float32
        assert np.isfinite(a).all()
        e = _nmse(a, b)
        worst = max(worst, e)
        assert e <= tol, f"step {i}: logits nMSE {e:.3g} > {tol:g}"
        top_g, top_r = a.argmax(axis=1), b.argmax(axis=1)
        top2 = np.sort(b, axis=1)[:, -2:]
        noise = np.sqrt(np.mean((a.astype(np.float64) - b) ** 2, axis=1))
        decided = (top2[:, 1] - top2[:, 0]) > 8 * noise
        bad = np.nonzero((top_g != top_r) & decided)[0]
        assert bad.size == 0, f"step {i}: top-1 differs on rows {bad.tolist()}"
    ref_ids, _ = SequenceRunner(ref, 64).greedy(prompts[0], n_greedy)
    gpu_ids, _ = SequenceRunner(gpu, 64).greedy(prompts[0], n_greedy)
    assert gpu_ids == ref_ids
    assert gpu_be.weights_bytes > 0 and gpu_be.kv_bytes > 0
    return {"worst_nmse": worst, "greedy": gpu_ids, "weights_bytes": gpu_be.weights_bytes,
            "kv_bytes": gpu_be.kv_bytes, "sm": gpu_be.sm,
            "cuda_runtime_version": gpu_be.cuda_runtime_version}


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def synthetic_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("synth") / f"{request.param}.gguf",
                           request.param)


# -- GPU ---------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_synthetic_gpu_matches_numpy(synthetic_model: Path) -> None:
    res = _compare(synthetic_model, SYNTH_NMSE_TOL)
    print(f"{synthetic_model.stem}: {res}")
    assert res["sm"].startswith("sm_")


@pytest.mark.gpu
def test_smollm2_gpu_matches_numpy(smollm2_path: Path) -> None:
    res = _compare(smollm2_path, REAL_NMSE_TOL)
    print(f"smollm2: {res}")


@pytest.mark.gpu
def test_qwen05_gpu_matches_numpy(qwen05_path: Path) -> None:
    res = _compare(qwen05_path, REAL_NMSE_TOL)
    print(f"qwen2.5-0.5b: {res}")


@pytest.mark.gpu
def test_weights_stay_in_blocks_and_tied_output_is_shared(synthetic_model: Path) -> None:
    from orcd_toolkit import gguf
    from orcd_toolkit.kernels.backend import GpuBackend
    from orcd_toolkit.kernels.quant import QuantWeight
    from orcd_toolkit.models import load_model

    seen: list[tuple[int, int, str]] = []
    be = GpuBackend(chunk_bytes=4096, on_progress=lambda d, p, n: seen.append((d, p, n)))
    model = load_model(synthetic_model, be)
    gf = gguf.load(synthetic_model)
    plan = plan_weights(gf.tensors)
    assert be.weights_bytes == plan.total_bytes  # tied output copied once, no f32 matrices
    assert isinstance(model.layers[0].wq, QuantWeight)
    assert int(model.layers[0].wq.qtype) == int(gf.tensors["blk.0.attn_q.weight"].qtype)
    assert str(model.layers[0].attn_norm.dtype) == "float32"
    done = [d for d, _, _ in seen]
    assert done == sorted(done) and done[-1] == plan.total_bytes
    assert int(np.diff([0, *done]).max()) <= 4096


@pytest.mark.gpu
def test_oom_is_typed() -> None:
    from orcd_toolkit.errors import InsufficientVram
    from orcd_toolkit.kernels.backend import GpuBackend

    be = GpuBackend()
    with pytest.raises(InsufficientVram):
        be.allocate_kv_cache(1, 1 << 22, 1 << 10, 8, 128)  # 16 TiB of f16 KV


# -- CPU: host logic ---------------------------------------------------------------------------


def test_plan_keeps_matrices_in_blocks(synthetic_model: Path) -> None:
    from orcd_toolkit import gguf

    gf = gguf.load(synthetic_model)
    plan = plan_weights(gf.tensors)
    by_name = {t.name: t for t in plan.tensors}
    for name, t in gf.tensors.items():
        p = by_name[name]
        if len(t.shape) == 1:
            assert p.kind == "f32" and p.nbytes == 4 * t.shape[0]
        else:
            assert p.kind == "blocks" and p.nbytes == t.nbytes and p.qtype == int(t.qtype)
    dense_f32 = sum(4 * int(np.prod(t.shape)) for t in gf.tensors.values())
    assert plan.total_bytes < dense_f32 / 3  # quantized matrices are not dequantized
    assert set(plan.by_kind()) == {"f32", "blocks"}


def test_plan_rejects_what_no_kernel_reads() -> None:
    from orcd_toolkit.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match="multiple of 32"):
        plan_tensor("w", Q8_0, (4, 48), 4 * 51)
    with pytest.raises(InvalidRequest, match="no GPU kernel"):
        plan_tensor("w", 10, (4, 256), 4 * 84)  # Q2_K
    assert plan_tensor("b", F32, (7,), 28).kind == "f32"


def test_chunk_ranges_cover_exactly() -> None:
    from orcd_toolkit.errors import InvalidRequest

    assert list(chunk_ranges(10, 4)) == [(0, 4), (4, 8), (8, 10)]
    assert list(chunk_ranges(8, 4)) == [(0, 4), (4, 8)]
    assert list(chunk_ranges(0, 4)) == []
    with pytest.raises(InvalidRequest):
        list(chunk_ranges(8, 0))
    assert kv_cache_bytes(2, 8, 16, 2, 64) == 2 * 2 * 2 * 8 * 16 * 2 * 64


def test_cuda_errors_are_typed() -> None:
    cupy = pytest.importorskip("cupy")
    from orcd_toolkit.errors import CudaError, InsufficientVram, VramOom

    oom = cupy.cuda.memory.OutOfMemoryError(1 << 40, 0, 0)
    assert isinstance(translate_error(oom, "load"), InsufficientVram)
    assert isinstance(translate_error(oom, "run"), VramOom)
    rt = cupy.cuda.runtime.CUDARuntimeError(700)  # cudaErrorIllegalAddress
    err = translate_error(rt, "run")
    assert isinstance(err, CudaError) and "CUDARuntimeError" in str(err)
    assert translate_error(ValueError("x"), "run") is None


class _F16Oracle(NumpyBackend):
    """The oracle with the GPU's two roundings: f16 KV cache, f16 inputs to prefill linears."""

    def write_kv(self, layer: Any, k: np.ndarray, v: np.ndarray, slot_mapping: np.ndarray) -> None:
        super().write_kv(layer, k.astype(np.float16).astype(np.float32),
                         v.astype(np.float16).astype(np.float32), slot_mapping)

    def linear(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
        if x.shape[0] > 8:
            x = x.astype(np.float16).astype(np.float32)
            weight = weight.astype(np.float16).astype(np.float32)
        return super().linear(x, weight, bias)


def test_gpu_numerics_floor_on_cpu(synthetic_model: Path) -> None:
    """The error of the GPU's roundings (f16 KV, f16 prefill linears, q8_1 decode
    activations), emulated on the CPU, is well under the GPU tolerance (the tolerance is not
    tuned to the GPU's result); f16 alone is far below it."""
    from orcd_toolkit.models import load_model

    ref = load_model(synthetic_model, NumpyBackend())
    prompts = _prompts(ref.vocab_size)
    ref_out = _run_steps(ref, prompts)
    floors = {}
    for mode in ("exact", "gpu"):
        emu = load_model(synthetic_model, _F16Oracle(activations=mode))
        floors[mode] = max(_nmse(a, b) for a, b in zip(_run_steps(emu, prompts), ref_out,
                                                        strict=True))
    print(f"{synthetic_model.stem}: emulated floor nMSE {floors}")
    assert 0 < floors["exact"] < 1e-5
    assert 0 < floors["gpu"] < SYNTH_NMSE_TOL / 10


def test_gpu_twin_batch_limit_matches_the_kernels() -> None:
    """The NumPy twin rounds exactly the batches the GPU sends to its int8 kernels."""
    from orcd_toolkit.backends.cpu.backend import GPU_Q8_MAX_BATCH
    from orcd_toolkit.kernels import quant

    assert GPU_Q8_MAX_BATCH == quant.Q8_MAX_BATCH == quant.MATVEC_MAX_BATCH


@pytest.mark.gpu
def test_moe_op_matches_its_int8_twin(tmp_path: Path) -> None:
    """GpuBackend.moe on gpt-oss-style MXFP4 expert stacks with biases (x rounded once, gate
    and up of the selected experts in one launch, the SwiGLU output rounded once for down)
    against NumpyBackend(activations="gpu"), whose expert products see the same q8_1 roundings:
    nMSE <= 1e-5, scripts/kernel_parity.py's moe_q8 tolerance (the down projection rounds the
    GPU's own SwiGLU output, 1-2 ulp from the oracle's, so a q may sit across a rounding tie).
    Decode (T = 1) and a 5-token chunk; router ties and weights as in the oracle."""
    from orcd_toolkit import gguf
    from orcd_toolkit.gguf.quants import random_blocks
    from orcd_toolkit.gguf.writer import TensorData, write_gguf
    from orcd_toolkit.kernels.backend import GpuBackend

    rng = np.random.default_rng(11)
    n_exp, d, f, mxfp4 = 8, 512, 256, 39
    tensors = {}
    for name, shape in (("gate", (n_exp, f, d)), ("up", (n_exp, f, d)), ("down", (n_exp, d, f))):
        tensors[f"blk.0.ffn_{name}_exps.weight"] = TensorData(
            mxfp4, shape, random_blocks(mxfp4, shape, rng))  # type: ignore[arg-type]
        tensors[f"blk.0.ffn_{name}_exps.bias"] = TensorData.from_values(
            rng.normal(0, 0.1, shape[:2]).astype(np.float32), F32)
    f_ = gguf.load(write_gguf(tmp_path / "experts.gguf", {"general.architecture": "gpt-oss"},
                              tensors))
    names = [f"blk.0.ffn_{p}_exps.{s}" for p in ("gate", "up", "down") for s in ("weight", "bias")]
    ref_be, gpu_be = NumpyBackend(activations="gpu"), GpuBackend()
    ref_w, gpu_w = {}, {}
    for n in names:
        t = f_.tensors[n]
        load = "load_weight" if n.endswith("weight") else "load_vector"
        ref_w[n], gpu_w[n] = getattr(ref_be, load)(t), getattr(gpu_be, load)(t)
    for t_tok in (1, 5):
        x = rng.normal(0, 1, (t_tok, d)).astype(np.float32)
        logits = rng.normal(0, 1, (t_tok, n_exp)).astype(np.float32)
        logits[0, 1] = logits[0, 2]  # a tie: lower id first
        outs = []
        for be, w in ((ref_be, ref_w), (gpu_be, gpu_w)):
            xs, ls = (x, logits) if be is ref_be else (gpu_be._cp.asarray(x),
                                                       gpu_be._cp.asarray(logits))
            y = be.moe(xs, ls, 4, *(w[n] for n in names[::2]), gate_b=w[names[1]],
                       up_b=w[names[3]], down_b=w[names[5]], activation="swiglu_oai")
            outs.append(np.asarray(be.to_host(y), dtype=np.float64))
        assert np.isfinite(outs[1]).all()
        assert _nmse(outs[1], outs[0]) <= 1e-5, (t_tok, _nmse(outs[1], outs[0]))
