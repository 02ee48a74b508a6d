"""Synthetic GGUF models: the exact layout of published files, random weights, real tokenizers.

No weights of Phi-3, GPT-OSS or GPT-2 are reachable here, so these presets reproduce what a
loader and kernels see in the real files — metadata keys and values, tensor names, shapes and
ggml types — with seeded random weights and the real vocabulary:

- ``phi3-mini-4k``: Phi-3-mini-4k-instruct "Q4_K_M" as llama.cpp's quantizer lays it out
  (llama-quant.cpp, LLAMA_FTYPE_MOSTLY_Q4_K_M): Q4_K by default, Q6_K for ``output`` and for
  ``attn_qkv`` / ``ffn_down`` of the layers ``use_more_bits`` picks, F32 norms. Hyper-parameters
  and the SPM vocabulary come from llama.cpp's ``ggml-vocab-phi-3.gguf`` (the real model's
  header).
- ``gpt-oss-20b``: ggml-org's MXFP4 file: MXFP4 experts; Q8_0 attention, embedding and
  output; F32 norms, biases, sinks and router; YaRN x32; o200k_harmony vocabulary (from the
  tokenizer package, see docs/tokenizer.md).
- ``gpt2-124m``: GPT-2 small as convert_hf_to_gguf writes it at F16: F16 matrices, F32 norms
  and biases, ``output`` duplicated from the tied embedding; header from ``ggml-vocab-gpt-2.gguf``.

``tiny=True`` keeps every rule (types per layer, SWA pattern, fused tensors, vocabulary) at
small widths and depth, so tests run the full architecture in seconds on the NumPy backend.
Weights are written tensor by tensor (``gguf.GGUFWriter`` streaming), so a 12 GB preset never
sits in memory.

``requantize(src, dst, qtype)`` rewrites a real model with every matrix in one type (what
``llama-quantize --pure`` does): F32 stays for 1-D tensors.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orcd_toolkit.errors import InvalidRequest

TESTDATA_VOCAB = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "vocab"

# ggml type ids (ggml.h)
F32, F16, Q4_0, Q8_0, Q4_K, Q6_K, MXFP4 = 0, 1, 2, 8, 12, 14, 39
# llama_ftype values written as general.file_type
FTYPE_MOSTLY_F16, FTYPE_Q4_0, FTYPE_Q4_K_M, FTYPE_MXFP4_MOE = 1, 2, 15, 38


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One tensor of a preset: numpy-order shape, ggml type, and how to fill it."""

    name: str
    shape: tuple[int, ...]
    qtype: int
    init: str = "matrix"  # "matrix" (random weights), "norm" (around 1), "bias" (small), "sinks"


@dataclass(slots=True)
class Preset:
    """Everything a synthetic file holds except the weight values."""

    name: str
    metadata: dict[str, Any]
    tensors: list[TensorSpec]

    @property
    def arch(self) -> str:
        return str(self.metadata["general.architecture"])


def _use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama-quant.cpp: the layers that get Q6_K in Q4_K_M."""
    return (
        i_layer < n_layers // 8
        or i_layer >= 7 * n_layers // 8
        or (i_layer - n_layers // 8) % 3 == 2
    )


def _typed_metadata(gf: Any) -> dict[str, Any]:
    """A loaded file's metadata with each value's stored GGUF type kept (MetaValue)."""
    from orcd_toolkit.gguf.writer import MetaValue

    return {
        k: MetaValue(v, gf.value_kinds[k].type, gf.value_kinds[k].item)
        for k, v in gf.metadata.items()
    }


def _vocab_metadata(filename: str, vocab_dir: Path | None) -> dict[str, Any]:
    """The real model header that llama.cpp's vocab-only file carries (typed as stored);
    plain values for the keys a preset reads or overrides."""
    from orcd_toolkit import gguf

    path = (vocab_dir or Path(os.environ.get("ORCD_VOCAB_DIR", TESTDATA_VOCAB))) / filename
    if not path.is_file():
        raise InvalidRequest(f"vocabulary file {path} not found (set ORCD_VOCAB_DIR)")
    gf = gguf.load(path)
    md = _typed_metadata(gf)
    arch = gf.arch
    for key, value in gf.metadata.items():
        if (
            key.startswith(f"{arch}.")
            or key == "general.architecture"
            or key == "tokenizer.ggml.tokens"
        ):
            md[key] = value
    return md


def phi3_mini_4k(tiny: bool = False, vocab_dir: Path | None = None) -> Preset:
    md = _vocab_metadata("ggml-vocab-phi-3.gguf", vocab_dir)
    if tiny:
        # 256-wide rows keep every K-quant row whole (QK_K = 256); head size 64
        md.update({
            "phi3.embedding_length": 256, "phi3.feed_forward_length": 512, "phi3.block_count": 4,
            "phi3.attention.head_count": 4, "phi3.attention.head_count_kv": 4,
            "phi3.rope.dimension_count": 64,
        })  # fmt: skip
    md["general.file_type"] = FTYPE_Q4_K_M
    md["general.name"] = "Phi3 (synthetic, random weights)" + (" tiny" if tiny else "")
    n_layer, d = md["phi3.block_count"], md["phi3.embedding_length"]
    ff, vocab = md["phi3.feed_forward_length"], len(md["tokenizer.ggml.tokens"])
    head_dim = d // md["phi3.attention.head_count"]
    qkv = d + 2 * md["phi3.attention.head_count_kv"] * head_dim
    tensors = [TensorSpec("token_embd.weight", (vocab, d), Q4_K)]
    for i in range(n_layer):
        more = Q6_K if _use_more_bits(i, n_layer) else Q4_K
        p = f"blk.{i}."
        tensors += [
            TensorSpec(p + "attn_norm.weight", (d,), F32, "norm"),
            TensorSpec(p + "attn_qkv.weight", (qkv, d), more),
            TensorSpec(p + "attn_output.weight", (d, d), Q4_K),
            TensorSpec(p + "ffn_norm.weight", (d,), F32, "norm"),
            TensorSpec(p + "ffn_up.weight", (2 * ff, d), Q4_K),
            TensorSpec(p + "ffn_down.weight", (d, ff), more),
        ]
    tensors += [
        TensorSpec("output_norm.weight", (d,), F32, "norm"),
        TensorSpec("output.weight", (vocab, d), Q6_K),
    ]
    return Preset("phi3-mini-4k", md, tensors)


def gpt_oss_20b(tiny: bool = False, vocab_dir: Path | None = None) -> Preset:
    from orcd_toolkit.tokenizer.o200k import harmony_gguf_metadata

    md: dict[str, Any] = {
        "general.architecture": "gpt-oss",
        "general.type": "model",
        "general.name": "Gpt Oss 20b (synthetic, random weights)" + (" tiny" if tiny else ""),
        "general.file_type": FTYPE_MXFP4_MOE,
        "general.quantization_version": 2,
        "gpt-oss.block_count": 24,
        "gpt-oss.context_length": 131072,
        "gpt-oss.embedding_length": 2880,
        "gpt-oss.feed_forward_length": 2880,
        "gpt-oss.attention.head_count": 64,
        "gpt-oss.attention.head_count_kv": 8,
        "gpt-oss.rope.freq_base": 150000.0,
        "gpt-oss.attention.layer_norm_rms_epsilon": 1e-5,
        "gpt-oss.expert_count": 32,
        "gpt-oss.expert_used_count": 4,
        "gpt-oss.attention.key_length": 64,
        "gpt-oss.attention.value_length": 64,
        "gpt-oss.attention.sliding_window": 128,
        "gpt-oss.expert_feed_forward_length": 2880,
        "gpt-oss.rope.scaling.type": "yarn",
        "gpt-oss.rope.scaling.factor": 32.0,
        "gpt-oss.rope.scaling.original_context_length": 4096,
    }
    if tiny:
        # the window is short so the alternating SWA layers mask within a test prompt
        md.update({
            "gpt-oss.block_count": 4, "gpt-oss.embedding_length": 256,
            "gpt-oss.feed_forward_length": 128, "gpt-oss.expert_feed_forward_length": 128,
            "gpt-oss.attention.head_count": 4, "gpt-oss.attention.head_count_kv": 2,
            "gpt-oss.expert_count": 8, "gpt-oss.expert_used_count": 4,
            "gpt-oss.attention.sliding_window": 8,
        })  # fmt: skip
    md.update(harmony_gguf_metadata())
    template = (vocab_dir or TESTDATA_VOCAB).parent / "templates" / "openai-gpt-oss-120b.jinja"
    if template.is_file():
        md["tokenizer.chat_template"] = template.read_text()
    n_layer, d = md["gpt-oss.block_count"], md["gpt-oss.embedding_length"]
    n_head, n_kv, hd = md["gpt-oss.attention.head_count"], md["gpt-oss.attention.head_count_kv"], 64
    e, f = md["gpt-oss.expert_count"], md["gpt-oss.expert_feed_forward_length"]
    vocab = len(md["tokenizer.ggml.tokens"])
    tensors = [TensorSpec("token_embd.weight", (vocab, d), Q8_0)]
    for i in range(n_layer):
        p = f"blk.{i}."
        tensors += [
            TensorSpec(p + "attn_norm.weight", (d,), F32, "norm"),
            TensorSpec(p + "attn_q.weight", (n_head * hd, d), Q8_0),
            TensorSpec(p + "attn_q.bias", (n_head * hd,), F32, "bias"),
            TensorSpec(p + "attn_k.weight", (n_kv * hd, d), Q8_0),
            TensorSpec(p + "attn_k.bias", (n_kv * hd,), F32, "bias"),
            TensorSpec(p + "attn_v.weight", (n_kv * hd, d), Q8_0),
            TensorSpec(p + "attn_v.bias", (n_kv * hd,), F32, "bias"),
            TensorSpec(p + "attn_output.weight", (d, n_head * hd), Q8_0),
            TensorSpec(p + "attn_output.bias", (d,), F32, "bias"),
            TensorSpec(p + "attn_sinks.weight", (n_head,), F32, "sinks"),
            TensorSpec(p + "post_attention_norm.weight", (d,), F32, "norm"),
            TensorSpec(p + "ffn_gate_inp.weight", (e, d), F32),
            TensorSpec(p + "ffn_gate_inp.bias", (e,), F32, "bias"),
            TensorSpec(p + "ffn_gate_exps.weight", (e, f, d), MXFP4),
            TensorSpec(p + "ffn_gate_exps.bias", (e, f), F32, "bias"),
            TensorSpec(p + "ffn_up_exps.weight", (e, f, d), MXFP4),
            TensorSpec(p + "ffn_up_exps.bias", (e, f), F32, "bias"),
            TensorSpec(p + "ffn_down_exps.weight", (e, d, f), MXFP4),
            TensorSpec(p + "ffn_down_exps.bias", (e, d), F32, "bias"),
        ]
    tensors += [
        TensorSpec("output_norm.weight", (d,), F32, "norm"),
        TensorSpec("output.weight", (vocab, d), Q8_0),
    ]
    return Preset("gpt-oss-20b", md, tensors)


def gpt2_124m(tiny: bool = False, vocab_dir: Path | None = None) -> Preset:
    md = _vocab_metadata("ggml-vocab-gpt-2.gguf", vocab_dir)
    if tiny:
        md.update({
            "gpt2.embedding_length": 128, "gpt2.feed_forward_length": 512, "gpt2.block_count": 2,
            "gpt2.attention.head_count": 4, "gpt2.context_length": 256,
        })  # fmt: skip
    md["general.file_type"] = FTYPE_MOSTLY_F16
    md["general.name"] = "gpt-2 (synthetic, random weights)" + (" tiny" if tiny else "")
    n_layer, d = md["gpt2.block_count"], md["gpt2.embedding_length"]
    ff, ctx, vocab = (
        md["gpt2.feed_forward_length"],
        md["gpt2.context_length"],
        len(md["tokenizer.ggml.tokens"]),
    )
    tensors = [
        TensorSpec("token_embd.weight", (vocab, d), F16),
        TensorSpec("position_embd.weight", (ctx, d), F32),
        TensorSpec("output_norm.weight", (d,), F32, "norm"),
        TensorSpec("output_norm.bias", (d,), F32, "bias"),
        TensorSpec("output.weight", (vocab, d), F16),
    ]
    for i in range(n_layer):
        p = f"blk.{i}."
        tensors += [
            TensorSpec(p + "attn_norm.weight", (d,), F32, "norm"),
            TensorSpec(p + "attn_norm.bias", (d,), F32, "bias"),
            TensorSpec(p + "attn_qkv.weight", (3 * d, d), F16),
            TensorSpec(p + "attn_qkv.bias", (3 * d,), F32, "bias"),
            TensorSpec(p + "attn_output.weight", (d, d), F16),
            TensorSpec(p + "attn_output.bias", (d,), F32, "bias"),
            TensorSpec(p + "ffn_norm.weight", (d,), F32, "norm"),
            TensorSpec(p + "ffn_norm.bias", (d,), F32, "bias"),
            TensorSpec(p + "ffn_up.weight", (ff, d), F16),
            TensorSpec(p + "ffn_up.bias", (ff,), F32, "bias"),
            TensorSpec(p + "ffn_down.weight", (d, ff), F16),
            TensorSpec(p + "ffn_down.bias", (d,), F32, "bias"),
        ]
    return Preset("gpt2-124m", md, tensors)


PRESETS: dict[str, Callable[..., Preset]] = {
    "phi3-mini-4k": phi3_mini_4k,
    "gpt-oss-20b": gpt_oss_20b,
    "gpt2-124m": gpt2_124m,
}


def get_preset(name: str, tiny: bool = False, vocab_dir: Path | None = None) -> Preset:
    if name not in PRESETS:
        raise InvalidRequest(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name](tiny=tiny, vocab_dir=vocab_dir)


def _values(spec: TensorSpec, rng: np.random.Generator) -> np.ndarray:
    """Random f32 values for a dense tensor. Matrix scale 1/sqrt(fan_in) keeps activations
    O(1) through the residual stream, so logits are peaked rather than uniform."""
    if spec.init == "norm":
        return (1.0 + 0.1 * rng.standard_normal(spec.shape)).astype(np.float32)
    if spec.init == "bias":
        return (0.05 * rng.standard_normal(spec.shape)).astype(np.float32)
    if spec.init == "sinks":
        return rng.normal(0.0, 1.0, spec.shape).astype(np.float32)
    return (rng.standard_normal(spec.shape) / np.sqrt(spec.shape[-1])).astype(np.float32)


def _target_std(spec: TensorSpec) -> float:
    # embeddings/output: logits with std ~4 (peaked, not one-hot); other matrices 1/sqrt(fan_in)
    if spec.name.startswith(("token_embd", "output.", "position_embd")):
        return 4.0 / np.sqrt(spec.shape[-1]) if spec.name.startswith("output.") else 1.0
    return 1.0 / np.sqrt(spec.shape[-1])


def _q4_k_blocks(n_blocks: int, std: float, rng: np.random.Generator) -> np.ndarray:
    """Random Q4_K blocks whose values are centred: x = d*(sc*q - m) with m = round(7.5*sc).

    Uniform random bytes would give every sub-block a positive mean (q in 0..15, mins
    random), and a matrix whose rows share a mean direction maps every input to nearly the
    same output: a degenerate model whose parity tests cannot fail. Layout (ggml-common.h
    block_q4_K): f16 d, f16 dmin, 12 B 6-bit scales/mins (get_scale_min_k4 packing), 128 B
    nibbles.
    """
    sc = rng.integers(1, 9, size=(n_blocks, 8))
    m = np.rint(7.5 * sc).astype(np.int64)
    packed = np.zeros((n_blocks, 12), np.uint8)
    packed[:, 0:4] = (sc[:, 0:4] | ((sc[:, 4:8] >> 4) << 6)).astype(np.uint8)
    packed[:, 4:8] = (m[:, 0:4] | ((m[:, 4:8] >> 4) << 6)).astype(np.uint8)
    packed[:, 8:12] = ((sc[:, 4:8] & 0xF) | ((m[:, 4:8] & 0xF) << 4)).astype(np.uint8)
    d = np.full((n_blocks, 1), std / 23.5, np.float16)
    out = np.empty((n_blocks, 144), np.uint8)
    out[:, 0:2] = d.view(np.uint8)
    out[:, 2:4] = d.view(np.uint8)
    out[:, 4:16] = packed
    out[:, 16:] = rng.integers(0, 256, size=(n_blocks, 128), dtype=np.uint8)
    return out


def _q6_k_blocks(n_blocks: int, std: float, rng: np.random.Generator) -> np.ndarray:
    """Random Q6_K blocks (x = d * scale * (q - 32); codes and int8 scales uniform, so values
    are centred) with ``d`` set for the wanted std (scale std ~73, (q-32) std ~18.5).
    Layout: 128 B low nibbles, 64 B high bits, 16 x int8 scales, f16 d."""
    out = rng.integers(0, 256, size=(n_blocks, 210), dtype=np.uint8)
    out[:, 208:210] = np.full((n_blocks, 1), std / 1350.0, np.float16).view(np.uint8)
    return out


def tensor_bytes(spec: TensorSpec, rng: np.random.Generator) -> np.ndarray:
    """Raw GGUF data (uint8 [..., row_bytes]) for one tensor of a preset."""
    from orcd_toolkit import gguf

    if spec.qtype in (Q4_K, Q6_K):
        # gguf.quants cannot quantize K-quants: build well-formed, centred random blocks
        n_blocks = int(np.prod(spec.shape)) // 256
        make = _q4_k_blocks if spec.qtype == Q4_K else _q6_k_blocks
        blocks = make(n_blocks, float(_target_std(spec)), rng)
        return blocks.reshape(spec.shape[:-1] + (gguf.row_bytes(spec.qtype, spec.shape[-1]),))
    values = _values(spec, rng)
    if spec.init == "matrix":
        values *= np.float32(_target_std(spec) * np.sqrt(spec.shape[-1]))
    return gguf.quantize(values, spec.qtype)


def _write_streaming(
    path: Path,
    metadata: dict[str, Any],
    items: Iterator[tuple[str, tuple[int, ...], int, Callable[[], np.ndarray]]],
    specs: list[tuple[str, tuple[int, ...], int]],
) -> None:
    """Write a GGUF v3 file tensor by tensor (infos first, then each tensor's data)."""
    from gguf import GGMLQuantizationType, GGUFValueType, GGUFWriter

    from orcd_toolkit import gguf
    from orcd_toolkit.gguf.writer import _array_items, infer_value

    meta = dict(metadata)
    arch = meta.pop("general.architecture")
    meta.pop("general.alignment", None)
    w = GGUFWriter(path, arch)
    for key, value in meta.items():
        mv = infer_value(value)
        if int(mv.type) == int(GGUFValueType.ARRAY):
            w.add_key_value(
                key, _array_items(mv), GGUFValueType.ARRAY, sub_type=GGUFValueType(int(mv.item))
            )
        else:
            w.add_key_value(key, mv.value, GGUFValueType(int(mv.type)))
    for name, shape, qtype in specs:
        nbytes = gguf.tensor_bytes(qtype, shape)
        raw_shape = shape[:-1] + (gguf.row_bytes(qtype, shape[-1]),)
        w.add_tensor_info(
            name, raw_shape, np.dtype(np.uint8), nbytes, raw_dtype=GGMLQuantizationType(qtype)
        )
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for _name, shape, _qtype, make in items:
        raw = np.ascontiguousarray(make()).view(np.uint8)
        w.write_tensor_data(raw.reshape(shape[:-1] + (-1,)))
    w.close()


def write_preset(preset: Preset, out: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write ``preset`` with weights drawn from ``seed`` (same seed, same bytes)."""
    from orcd_toolkit import gguf

    path = Path(out)
    tmp = path.with_name(path.name + f".part-{os.getpid()}")
    rng = np.random.default_rng(seed)
    specs = [(t.name, t.shape, t.qtype) for t in preset.tensors]
    items = ((t.name, t.shape, t.qtype, (lambda t=t: tensor_bytes(t, rng))) for t in preset.tensors)
    try:
        _write_streaming(tmp, preset.metadata, items, specs)
        gguf.load(tmp).close()  # validate what we wrote before it takes the final name
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def requantize(src: str | os.PathLike[str], out: str | os.PathLike[str], qtype: int) -> Path:
    """Rewrite ``src`` with every 2-D+ tensor in ``qtype`` (1-D stay F32), like
    ``llama-quantize --pure``. Metadata is copied; general.file_type is updated for Q4_0/Q8_0.
    """
    from orcd_toolkit import gguf

    if qtype not in (Q4_0, Q8_0, F16, F32, 3, 6, 7):
        raise InvalidRequest(
            f"requantize supports F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0; got type {qtype}"
        )
    gf = gguf.load(src)
    layout = gguf.LAYOUTS[gguf.GGMLType(qtype)]
    md = _typed_metadata(gf)
    md["general.architecture"] = gf.arch
    ftypes = {Q4_0: 2, 3: 3, 6: 8, 7: 9, Q8_0: 7, F16: 1, F32: 0}
    md["general.file_type"] = ftypes[qtype]
    md["general.name"] = (
        f"{gf.metadata.get('general.name', 'model')} (requantized {gguf.GGMLType(qtype).name})"
    )
    plan: list[tuple[str, tuple[int, ...], int]] = []
    for name, t in gf.tensors.items():
        target = qtype if len(t.shape) >= 2 and t.shape[-1] % layout.block_elems == 0 else F32
        plan.append((name, tuple(t.shape), target))

    def convert(name: str, target: int) -> np.ndarray:
        values = gf.tensors[name].dequantize()
        return gguf.quantize(values, target)

    items = ((n, s, q, (lambda n=n, q=q: convert(n, q))) for n, s, q in plan)
    path = Path(out)
    tmp = path.with_name(path.name + f".part-{os.getpid()}")
    try:
        _write_streaming(tmp, md, items, plan)
        gguf.load(tmp).close()
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def cached_synth(preset: str, *, tiny: bool = True, seed: int = 0) -> Path:
    """A synthetic file under ``$ORCD_HOME/synth``, written once (same preset/seed, same bytes).

    For tests and goldens: the file is regenerated when missing, so a fresh machine reproduces
    exactly the file the committed goldens were made from (their sha256 is recorded).
    """
    import fcntl

    from orcd_toolkit.store import orcd_home

    root = orcd_home() / "synth"
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{preset}{'-tiny' if tiny else ''}-seed{seed}.gguf"
    with open(root / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            write_preset(get_preset(preset, tiny=tiny), path, seed=seed)
    return path


def cached_requant(src: str | os.PathLike[str], qtype: int) -> Path:
    """``requantize(src)`` under ``$ORCD_HOME/synth``, written once per source file name."""
    import fcntl

    from orcd_toolkit import gguf
    from orcd_toolkit.store import orcd_home

    root = orcd_home() / "synth"
    root.mkdir(parents=True, exist_ok=True)
    name = gguf.GGMLType(qtype).name.lower()
    path = root / f"{Path(src).stem}.requant-{name}.gguf"
    with open(root / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            requantize(src, path, qtype)
    return path
