"""Synthetic presets: the published files' layouts, deterministic bytes, and the CLI."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from orcd_toolkit.models.synth import F32, MXFP4, Q4_K, Q6_K, Q8_0, get_preset, write_preset


def _types(preset) -> Counter:  # noqa: ANN001
    return Counter(t.qtype for t in preset.tensors)


def test_phi3_mini_4k_q4_k_m_layout() -> None:
    p = get_preset("phi3-mini-4k")
    md = p.metadata
    assert md["phi3.block_count"] == 32 and md["phi3.embedding_length"] == 3072
    assert md["phi3.feed_forward_length"] == 8192 and md["phi3.rope.dimension_count"] == 96
    assert len(md["tokenizer.ggml.tokens"]) == 32064
    assert len(p.tensors) == 195
    # llama-quant.cpp use_more_bits(i, 32): layers 0-3, 28-31 and 6, 9, ..., 27 -> 16 layers
    q6_layers = sorted(
        int(t.name.split(".")[1]) for t in p.tensors if t.qtype == Q6_K and "attn_qkv" in t.name
    )
    assert q6_layers == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
    assert _types(p) == {F32: 65, Q4_K: 97, Q6_K: 33}
    shapes = {t.name: t.shape for t in p.tensors}
    assert shapes["blk.0.attn_qkv.weight"] == (9216, 3072)
    assert shapes["blk.0.ffn_up.weight"] == (16384, 3072)
    assert shapes["output.weight"] == (32064, 3072)


def test_gpt_oss_20b_mxfp4_layout() -> None:
    p = get_preset("gpt-oss-20b")
    # ggml-org/gpt-oss-20b-GGUF (mxfp4): 459 tensors: 289 f32, 98 q8_0, 72 mxfp4
    assert len(p.tensors) == 459
    assert _types(p) == {F32: 289, Q8_0: 98, MXFP4: 72}
    shapes = {t.name: t.shape for t in p.tensors}
    assert shapes["blk.0.ffn_gate_exps.weight"] == (32, 2880, 2880)
    assert shapes["blk.0.attn_q.weight"] == (4096, 2880)
    assert shapes["blk.0.attn_sinks.weight"] == (64,)
    assert shapes["token_embd.weight"] == (201088, 2880)
    assert p.metadata["gpt-oss.rope.scaling.type"] == "yarn"


def test_gpt2_124m_layout() -> None:
    p = get_preset("gpt2-124m")
    assert len(p.tensors) == 5 + 12 * 12
    shapes = {t.name: t.shape for t in p.tensors}
    assert shapes["position_embd.weight"] == (1024, 768)
    assert shapes["blk.11.attn_qkv.weight"] == (2304, 768)


def test_same_seed_same_bytes_other_seed_other_weights(tmp_path: Path) -> None:
    p = get_preset("phi3-mini-4k", tiny=True)
    a = write_preset(p, tmp_path / "a.gguf", seed=3).read_bytes()
    b = write_preset(p, tmp_path / "b.gguf", seed=3).read_bytes()
    c = write_preset(p, tmp_path / "c.gguf", seed=4).read_bytes()
    assert a == b and a != c and len(a) == len(c)


def test_synthetic_k_quant_weights_are_centred(synth_path) -> None:  # noqa: ANN001
    """Random K-quant blocks must not share a positive mean, or every input maps to the same
    output (a degenerate model whose parity cannot fail)."""
    from orcd_toolkit import gguf

    gf = gguf.load(synth_path("phi3-mini-4k"))
    for name in ("blk.0.attn_output.weight", "blk.0.attn_qkv.weight"):
        w = gf.tensors[name].dequantize()
        assert abs(float(w.mean())) < 0.05 * float(w.std()), name
        assert 0.5 / np.sqrt(w.shape[1]) < float(w.std()) < 2 / np.sqrt(w.shape[1])


def test_cli_synth_and_requant(tmp_path: Path) -> None:
    out = tmp_path / "g.gguf"
    cmd = [
        sys.executable,
        "-m",
        "orcd_toolkit",
        "synth",
        "--preset",
        "gpt2-124m",
        "--tiny",
        "--out",
        str(out),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    q = tmp_path / "q.gguf"
    res = subprocess.run(
        [sys.executable, "-m", "orcd_toolkit", "synth", "--requant", "Q8_0", "--from", str(out), "--out", str(q)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    from orcd_toolkit import gguf

    gq = gguf.load(q)
    assert gq.tensors["blk.0.attn_qkv.weight"].qtype == Q8_0
    assert gq.tensors["blk.0.attn_norm.weight"].qtype == F32
    bad = subprocess.run(
        [sys.executable, "-m", "orcd_toolkit", "synth", "--preset", "nope", "--out", str(q)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bad.returncode != 0 and "unknown preset 'nope'" in bad.stderr


@pytest.mark.slow
def test_requantized_qwen_q4_0_is_pure(qwen05_path) -> None:  # noqa: ANN001
    from orcd_toolkit import gguf
    from orcd_toolkit.models.synth import cached_requant

    gf = gguf.load(cached_requant(qwen05_path, 2))
    kinds = Counter(int(t.qtype) for t in gf.tensors.values())
    assert set(kinds) == {F32, 2}
