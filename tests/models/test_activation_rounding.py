"""The reference's llama.cpp-arithmetic mode (``NumpyBackend(activations="ggml-cpu")``)
against llama.cpp's own C code (goldens from scripts/gen_activation_goldens.py, made with the
pinned llama-cpp-python 0.3.36 on x86 AVX-512).

* ``round_activations`` equals ggml-cpu's ``from_float`` of Q8_0, Q8_1, Q8_K, F16 and BF16
  bit for bit, on Gaussian, heavy-tailed (massive-activation), zero-block, exact-tie and
  tiny/huge inputs.
* a matmul on a ``LinearWeight`` equals ggml's ``vec_dot`` of every weight type: the
  difference is f32 summation order only, measured <= 2.2e-7 of sum(|x||w|) over 512
  products; the tolerance 1e-6 leaves room for that and nothing else (the exact product,
  without the rounding, is off by 1e-3 .. 0.2 on the same rows).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from orcd_toolkit.backends.cpu import NumpyBackend, ops
from orcd_toolkit.gguf.types import GGMLType

GOLDENS = Path(__file__).parent / "data" / "activation_goldens.npz"
DOT_TOL = 1e-6


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDENS) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize(
    "key,scheme",
    [("q8_0", "q8_0"), ("q8_1cpu", "q8_0"), ("q8_K", "q8_K"), ("f16", "f16"), ("bf16", "bf16")],
)
def test_round_activations_bit_exact_with_ggml(golden, key, scheme) -> None:  # noqa: ANN001
    ours = ops.round_activations(golden["x"], scheme)
    ref = golden[key]
    differ = ours.view(np.uint32) != ref.view(np.uint32)
    assert not differ.any(), f"{differ.sum()} of {differ.size} values differ"


def test_cuda_q8_1_rounds_ties_away_from_zero(golden) -> None:  # noqa: ANN001
    """The CUDA scheme (quantize_q8_1: roundf(x / d)) differs from the CPU AVX one
    (round-half-even(x * 127/amax)) exactly at ties: rows 20-23 are built of halves with
    amax 127, where d = 1 and every x.5 is a tie."""
    x = golden["x"][20:24]
    cuda = ops.round_activations(x, "q8_1")
    cpu = ops.round_activations(x, "q8_0")
    halves = np.abs(x - np.trunc(x)) == 0.5
    assert halves.any()
    np.testing.assert_array_equal(cuda[halves], np.trunc(x[halves]) + np.sign(x[halves]))
    np.testing.assert_array_equal(cpu[halves], np.rint(x[halves]))
    np.testing.assert_array_equal(cuda[~halves], cpu[~halves])


class _Tensor:
    def __init__(self, raw: np.ndarray, qtype: int, shape: tuple[int, int]) -> None:
        self._raw, self.qtype, self.shape = raw, qtype, shape

    def raw(self) -> np.ndarray:
        return self._raw


@pytest.mark.parametrize("qtype", [t for t in GGMLType if t != GGMLType.F32], ids=lambda t: t.name)
def test_matmul_equals_ggml_vec_dot(golden, qtype) -> None:  # noqa: ANN001
    raw = golden[f"dot_w/{qtype.name}"]
    ref = golden[f"dot_y/{qtype.name}"]
    x = golden["dot_x"]
    shape = (raw.shape[0], x.shape[1])
    w = NumpyBackend(activations="ggml-cpu").load_weight(_Tensor(raw, int(qtype), shape))
    assert getattr(w, "act_scheme", None) == ops.ggml_cpu_activation_scheme(int(qtype))
    scale = np.abs(x) @ np.abs(np.asarray(w)).T
    rel = np.abs(ops.matmul(x, w) - ref) / scale
    assert rel.max() <= DOT_TOL, rel.max()
    # and the exact product is measurably not llama.cpp's number (the test can fail)
    exact = np.abs(ops.matmul(x, np.asarray(w)) - ref) / scale
    assert exact.max() > 100 * DOT_TOL


def test_expert_stack_keeps_block_minima() -> None:
    """w[e] of a Q4_1 expert stack keeps that expert's minima (the MoE path indexes stacks)."""
    rng = np.random.default_rng(0)
    w = ops.LinearWeight(rng.standard_normal((3, 4, 64)).astype(np.float32), "q8_0",
                         rng.standard_normal((3, 4, 2)).astype(np.float32))
    np.testing.assert_array_equal(w[1].block_mins, w.block_mins[1])
    assert w[:, :2].block_mins is None
    assert w[1].act_scheme == "q8_0"
    assert type(ops.matmul(rng.standard_normal((2, 64)), w[0])) is np.ndarray


def test_vectors_and_f32_weights_stay_plain() -> None:
    be = NumpyBackend(activations="ggml-cpu")
    f32 = _Tensor(np.zeros((2, 32 * 4), np.uint8), int(GGMLType.F32), (2, 32))
    assert type(be.load_weight(f32)) is np.ndarray
    f16 = _Tensor(np.zeros((2, 64), np.uint8), int(GGMLType.F16), (2, 32))
    assert type(be.load_vector(f16)) is np.ndarray


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="activations must be one of"):
        NumpyBackend(activations="q8")
    with pytest.raises(ValueError, match="unknown activation scheme"):
        ops.round_activations(np.zeros((1, 32), np.float32), "q4")
    with pytest.raises(ValueError, match="divisible by 256"):
        ops.round_activations(np.zeros((1, 96), np.float32), "q8_K")


def test_gpu_twin_rounds_decode_batches_and_experts_only() -> None:
    """``activations="gpu"`` mirrors the GPU dispatch: q8_1 for block types at <= 8 rows
    (int8 matvec), exact above (tensor-core matmul) and for float weights; expert stacks always."""
    from orcd_toolkit.backends.cpu.backend import GPU_Q8_MAX_BATCH
    from orcd_toolkit.gguf.quants import random_blocks

    rng = np.random.default_rng(3)
    be = NumpyBackend(activations="gpu")
    raw = random_blocks(GGMLType.Q4_K, (8, 256), rng)
    w = be.load_weight(_Tensor(raw, int(GGMLType.Q4_K), (8, 256)))
    plain = np.asarray(w)
    x = rng.standard_normal((GPU_Q8_MAX_BATCH + 1, 256)).astype(np.float32)
    small = x[:GPU_Q8_MAX_BATCH]
    np.testing.assert_array_equal(
        ops.matmul(small, w), ops.matmul(ops.round_activations(small, "q8_1"), plain)
    )
    np.testing.assert_array_equal(ops.matmul(x, w), ops.matmul(x, plain))
    stack = be.load_weight(_Tensor(random_blocks(GGMLType.MXFP4, (2, 8, 256), rng),
                                   int(GGMLType.MXFP4), (2, 8, 256)))  # fmt: skip
    np.testing.assert_array_equal(
        ops.matmul(x, stack[1]), ops.matmul(ops.round_activations(x, "q8_1"), np.asarray(stack[1]))
    )
    f16 = _Tensor(np.zeros((8, 512), np.uint8), int(GGMLType.F16), (8, 256))
    assert type(be.load_weight(f16)) is np.ndarray
