"""The real model files and llama.cpp's vocab GGUFs load, validate and decode."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest

from orcd_toolkit import gguf

VOCABS = ["gpt-2", "llama-bpe", "llama-spm", "phi-3", "qwen2"]


def test_qwen05_opens_fast_with_291_tensors(qwen05_path):
    gguf.load(qwen05_path).close()  # warm the page cache: we time parsing, not the disk
    # CPU time, not wall time: the test machine is shared (2 cores); ~0.12 s when idle
    t0 = time.process_time()
    f = gguf.load(qwen05_path)
    elapsed = time.process_time() - t0
    assert elapsed < 0.5, f"load took {elapsed:.3f} s of CPU"
    assert f.arch == "qwen2"
    assert len(f.tensors) == 291
    counts = Counter(t.qtype for t in f.tensors.values())
    assert set(counts) == {
        gguf.GGMLType.Q5_0,
        gguf.GGMLType.Q8_0,
        gguf.GGMLType.Q6_K,
        gguf.GGMLType.Q4_K,
        gguf.GGMLType.F32,
    }
    assert len(f.metadata["tokenizer.ggml.tokens"]) == 151936
    assert len(f.metadata["tokenizer.ggml.merges"]) == 151387
    assert f.metadata["qwen2.embedding_length"] == 896
    assert gguf.check_vocab(f) == 151936
    emb = f.tensors["token_embd.weight"]
    assert emb.shape == (151936, 896) and emb.ne == (896, 151936)
    assert emb.raw().shape == (151936, 896 // 32 * 22)


def test_smollm2_types(smollm2_path):
    f = gguf.load(smollm2_path)
    assert f.arch == "llama"
    assert {t.qtype for t in f.tensors.values()} == {
        gguf.GGMLType.Q4_1,
        gguf.GGMLType.Q8_0,
        gguf.GGMLType.F32,
    }
    gguf.check_vocab(f)


@pytest.mark.parametrize(
    "name",
    [
        # GGUFReader needs seconds per 50k tokens: the big vocabularies only with --run-slow
        pytest.param(n, marks=pytest.mark.slow) if n in ("gpt-2", "qwen2", "llama-bpe") else n
        for n in VOCABS
    ],
)
def test_vocab_files_match_gguf_reader(testdata, name):
    """Our parse equals gguf.GGUFReader's on every key of llama.cpp's vocab files."""
    path = testdata / "vocab" / f"ggml-vocab-{name}.gguf"
    f = gguf.load(path)
    reader = f.reader()
    fields = {k: v for k, v in reader.fields.items() if not k.startswith("GGUF.")}
    assert list(fields) == list(f.metadata)
    for key, field in fields.items():
        ours = f.metadata[key]
        kind = f.value_kinds[key]
        assert [int(t) for t in field.types] == [int(kind.type)] + (
            [int(kind.item)] if kind.item is not None else []
        )
        theirs = field.contents()
        if isinstance(ours, np.ndarray):
            np.testing.assert_array_equal(ours, np.asarray(theirs))
        else:
            assert ours == theirs, key
    gguf.check_vocab(f)


def test_dequantize_real_tensors(qwen05_path):
    """Each type of the real file decodes like gguf.quants (our wrapper adds shape checks)."""
    from gguf import GGMLQuantizationType, quants

    f = gguf.load(qwen05_path)
    seen = set()
    for t in f.tensors.values():
        if t.qtype in seen or len(t.shape) != 2:
            continue
        seen.add(t.qtype)
        rows = t.raw()[:8]
        ours = gguf.dequantize(rows, t.qtype, (8, t.shape[1]))
        ref = quants.dequantize(np.array(rows), GGMLQuantizationType(int(t.qtype)))
        np.testing.assert_array_equal(ours.view(np.uint32), ref.astype(np.float32).view(np.uint32))
    assert len(seen) == 4  # Q5_0, Q8_0, Q6_K, Q4_K (F32 tensors are 1-D norms)


@pytest.mark.slow
def test_qwen15_types(qwen15_path):
    f = gguf.load(qwen15_path)
    counts = Counter(t.qtype for t in f.tensors.values())
    assert counts[gguf.GGMLType.Q4_K] == 169
    assert set(counts) == {gguf.GGMLType.Q4_K, gguf.GGMLType.Q6_K, gguf.GGMLType.F32}
    assert gguf.check_vocab(f) == 151936
