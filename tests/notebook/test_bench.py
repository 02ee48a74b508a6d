"""KernelBench's core: cases, NumPy timing, bandwidth, and (on a GPU) kernel vs NumPy error."""

from __future__ import annotations

import numpy as np
import pytest

from orcd_toolkit.backends.cpu import ops
from orcd_toolkit.errors import InvalidRequest
from orcd_toolkit.notebook import bench


def test_nmse():
    ref = np.array([1.0, 2.0, 2.0], np.float32)
    assert bench.nmse(ref, ref) == 0.0
    assert bench.nmse(ref * 1.1, ref) == pytest.approx(0.01)
    assert bench.nmse(ref[:2], ref) == float("inf")
    assert np.isnan(bench.nmse(np.array([np.nan, 0, 0]), ref))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("softmax", 1, 32), "op must be one of"),
        (("rms_norm", 0, 32), "rows must be an integer in [1, 65536], got 0"),
        (("matvec", 4, 96, "Q4_K"), "cols must be a multiple of 256 for Q4_K, got 96"),
        (("matvec", 4, 96, "Q3_K"), "qtype must be one of"),
    ],
)
def test_make_case_rejects_with_a_message(args, message):
    with pytest.raises(InvalidRequest) as exc:
        bench.make_case(*args)
    assert message in str(exc.value)


def test_numpy_side_is_the_reference_op():
    case = bench.make_case("matvec", 64, 256, "Q4_K")
    r = bench.run_case(case, repeats=2, use_gpu=False)
    assert r.gpu_ms is None and r.note.startswith("NumPy only:")
    assert len(r.numpy_runs) == 2 and r.numpy_ms == pytest.approx(np.median(r.numpy_runs))
    # bytes: the raw Q4_K blocks (144 B per 256 weights) + x + out in f32
    assert r.bytes_moved == 64 * 144 + (256 + 64) * 4
    assert r.numpy_gbps == pytest.approx(r.bytes_moved / (r.numpy_ms * 1e-3) / 1e9)
    host = bench.OPS["matvec"].inputs(case, np.random.default_rng(0))
    w = ops.dequantize(host["raw"], host["qtype"], (64, 256))
    # the GPU's decode numerics for a block type: x rounded to q8_1, then the exact product
    xq = ops.round_activations(host["x"], "q8_1")
    assert not np.array_equal(xq, host["x"])
    np.testing.assert_allclose(bench.OPS["matvec"].reference(host), xq @ w.T, rtol=1e-5)
    with pytest.raises(InvalidRequest, match="repeats"):
        bench.run_case(case, repeats=0)


def test_attention_case_reference_and_bytes():
    case = bench.make_case("attention", 2, 40)
    r = bench.run_case(case, repeats=1, use_gpu=False)
    # K and V, f16, 2 KV heads of 64, 40 tokens x 2 sequences; q in and out in f32
    assert r.bytes_moved == 2 * 40 * 2 * 2 * 64 * 2 + 2 * (2 * 14 * 64 * 4)
    host = bench.OPS["attention"].inputs(case, np.random.default_rng(0))
    out = bench.OPS["attention"].reference(host)
    # brute force for sequence 1, query head 9 (KV head 1): gather its 40 keys by block table
    rows = [host["tables"][1][p // 16] for p in range(40)]
    k = np.stack([host["k"][b, p % 16, 1] for p, b in enumerate(rows)]).astype(np.float64)
    v = np.stack([host["v"][b, p % 16, 1] for p, b in enumerate(rows)]).astype(np.float64)
    s = k @ host["q"][1, 9].astype(np.float64) / 8.0
    w = np.exp(s - s.max())
    np.testing.assert_allclose(out[1, 9], (w / w.sum()) @ v, rtol=1e-5, atol=1e-6)
    with pytest.raises(InvalidRequest, match="attention: at most 256 sequences"):
        bench.make_case("attention", 1, 20000)


def test_asking_for_gpu_without_one_says_so():
    usable, reason = bench.gpu_available()
    if usable:
        pytest.skip("a GPU is usable here")
    r = bench.run_case(bench.make_case("gelu", 2, 64), repeats=1, use_gpu=True)
    assert r.gpu_ms is None and r.note == f"GPU requested but unusable: {reason}; NumPy only"


# per-op tolerances on nMSE, as scripts/kernel_parity.py states them (and why, there)
GPU_TOL = {"rms_norm": 1e-10, "add_rms_norm": 1e-10, "swiglu": 1e-10, "gelu": 1e-10,
           "matvec": 1e-9, "attention": 1e-8}


@pytest.mark.gpu
@pytest.mark.parametrize(
    "case",
    [
        ("rms_norm", 7, 3072, None),
        ("add_rms_norm", 512, 896, None),
        ("swiglu", 4, 4864, None),
        ("gelu", 3, 33, None),
        ("attention", 1, 37, None),
        ("attention", 8, 2500, None),
        *[("matvec", 896, 4864 if q.endswith("_K") else 896, q) for q in bench.QUANT_TYPES],
    ],
    ids=lambda c: " ".join(str(x) for x in c if x),
)
def test_gpu_kernel_matches_numpy(case):
    r = bench.run_case(bench.make_case(*case), repeats=5)
    assert r.gpu_ms is not None and r.gpu_ms > 0 and r.first_call_ms is not None
    assert r.nmse is not None and r.nmse <= GPU_TOL[case[0]], r
    assert r.gpu_gbps is not None and r.device != "NumPy only"
