"""Property-based fuzzing of the validation pass on real and synthetic headers (short: a few
hundred examples in the default suite; scripts/fuzz_gguf.py runs the long campaign).

Property: any mutation of a valid file either loads, with every tensor view inside the file
and decodable, or raises a GGUFError (one line) — never another exception, within a bound."""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orcd_toolkit import gguf
from orcd_toolkit.gguf.reader import GGUFValueType as VT
from orcd_toolkit.gguf.writer import MetaValue, TensorData, write_gguf

INTERESTING = [
    0,
    1,
    2,
    3,
    4,
    8,
    9,
    13,
    31,
    32,
    33,
    63,
    64,
    255,
    2**16,
    2**31,
    2**32 - 1,
    2**32,
    2**40,
    2**42 + 1,
    2**63 - 1,
    2**63,
    2**64 - 1,
]


@pytest.fixture(scope="module")
def seeds(tmp_path_factory, testdata) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    tensors = {
        f"t.{qt.name}": TensorData(qt, (2, 256), gguf.random_blocks(qt, (2, 256), rng))
        for qt in gguf.GGMLType
    }
    md = {
        "general.architecture": "llama",
        "llama.block_count": 1,
        "k.i8": MetaValue(-1, VT.INT8),
        "k.f64": MetaValue(1.0, VT.FLOAT64),
        "k.b": True,
        "tokenizer.ggml.tokens": ["a", "b", "c"],
        "tokenizer.ggml.token_type": np.array([1, 1, 3], np.int32),
        "tokenizer.ggml.bos_token_id": 1,
    }
    p = tmp_path_factory.mktemp("fz") / "synthetic.gguf"
    write_gguf(p, md, tensors)
    return {
        "synthetic": p.read_bytes(),
        "spm": (testdata / "vocab" / "ggml-vocab-llama-spm.gguf").read_bytes(),
    }


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 2**20), st.integers(0, 7)),
    st.tuples(st.just("u64"), st.integers(0, 2**20), st.sampled_from(INTERESTING)),
    st.tuples(st.just("u32"), st.integers(0, 2**20), st.sampled_from(INTERESTING[:17])),
    st.tuples(st.just("bytes"), st.integers(0, 2**20), st.binary(min_size=1, max_size=12)),
    st.tuples(st.just("cut"), st.integers(0, 2**20), st.just(0)),
    st.tuples(st.just("del"), st.integers(0, 2**20), st.integers(1, 40)),
)


def _apply(blob: bytes, muts: list[tuple], head_bias: bool) -> bytes:
    buf = bytearray(blob)
    for kind, pos, arg in muts:
        if not buf:
            break
        # most mutations land in the first 2 KiB: counts, keys, types, tensor infos of small files
        pos = pos % (min(len(buf), 2048) if head_bias else len(buf))
        if kind == "flip":
            buf[pos] ^= 1 << arg
        elif kind == "u64":
            buf[pos : pos + 8] = struct.pack("<Q", arg)
        elif kind == "u32":
            buf[pos : pos + 4] = struct.pack("<I", arg % 2**32)
        elif kind == "bytes":
            buf[pos : pos + len(arg)] = arg
        elif kind == "cut":
            del buf[pos:]
        else:
            del buf[pos : pos + arg]
    return bytes(buf)


def _check(blob: bytes) -> None:
    t0 = time.perf_counter()
    try:
        f = gguf.load_bytes(blob)
    except gguf.GGUFError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg and exc.rule
    else:
        for t in f.tensors.values():
            assert f.data_offset <= t.offset and t.offset + t.nbytes <= len(blob)
            raw = t.raw()
            assert raw.nbytes == t.nbytes
            out = gguf.dequantize(raw.reshape(-1, t.row_bytes)[:1], t.qtype, (1, t.ne[0]))
            assert out.dtype == np.float32
        for check in (gguf.check_vocab,):
            try:
                check(f)
            except gguf.GGUFModelError:
                pass
    assert time.perf_counter() - t0 < 2.0


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(muts=st.lists(mutation, min_size=1, max_size=6), head_bias=st.booleans())
def test_fuzz_synthetic_all_types(seeds, muts, head_bias):
    _check(_apply(seeds["synthetic"], muts, head_bias))


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(muts=st.lists(mutation, min_size=1, max_size=6), head_bias=st.booleans())
def test_fuzz_real_vocab_header(seeds, muts, head_bias):
    _check(_apply(seeds["spm"], muts, head_bias))
