"""Type table, dequantization (bit for bit vs. checked-in gguf.quants goldens), quantizers,
random blocks and the reference products."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from orcd_toolkit import gguf
from orcd_toolkit.gguf import GGMLType

GOLDENS = Path(__file__).parent / "data" / "dequant_goldens.npz"


@pytest.fixture(scope="module")
def goldens() -> dict[str, np.ndarray]:
    with np.load(GOLDENS) as z:
        return {k: z[k] for k in z.files}


def _cases(g: dict[str, np.ndarray]) -> list[str]:
    return sorted({k.rsplit("/", 1)[0] for k in g if k.endswith("/raw")})


def _assert_bits_equal(ours: np.ndarray, ref_bits: np.ndarray) -> None:
    ours_bits = ours.astype(np.float32).view(np.uint32).reshape(ref_bits.shape)
    ref = ref_bits.view(np.float32)
    nan = np.isnan(ref)
    np.testing.assert_array_equal(np.isnan(ours.reshape(ref.shape)), nan)
    np.testing.assert_array_equal(ours_bits[~nan], ref_bits[~nan])


def test_goldens_cover_every_type(goldens):
    cases = _cases(goldens)
    for qt in GGMLType:
        assert f"{qt.name}/random" in cases and f"{qt.name}/edge" in cases
        if qt in gguf.GGUF_QUANTIZABLE:
            assert f"{qt.name}/quant" in cases
    # the real files' types: Q5_0, Q8_0, Q6_K, Q4_K (Qwen), Q4_1 (SmolLM2)
    assert {c.split("/")[0] for c in cases if c.endswith("/real")} >= {
        "Q5_0",
        "Q8_0",
        "Q6_K",
        "Q4_K",
        "Q4_1",
    }


def test_dequantize_matches_goldens_bit_for_bit(goldens):
    for case in _cases(goldens):
        qt = GGMLType[case.split("/")[0]]
        raw = goldens[f"{case}/raw"]
        n_cols = raw.shape[-1] // gguf.LAYOUTS[qt].block_bytes * gguf.LAYOUTS[qt].block_elems
        ours = gguf.dequantize(raw, qt, (raw.shape[0], n_cols))
        assert ours.dtype == np.float32 and ours.shape == (raw.shape[0], n_cols)
        _assert_bits_equal(ours, goldens[f"{case}/out"])


def test_quantize_matches_goldens(goldens):
    for case in _cases(goldens):
        if not case.endswith("/quant"):
            continue
        qt = GGMLType[case.split("/")[0]]
        with np.errstate(all="ignore"):
            raw = gguf.quantize(goldens[f"{case}/in"], qt)
        np.testing.assert_array_equal(raw, goldens[f"{case}/raw"], err_msg=case)


def test_dequantize_is_gguf_quants_on_fresh_random_data():
    """Beyond the goldens: fresh random blocks of every type, 3-D shape, vs gguf.quants."""
    from gguf import GGMLQuantizationType, quants

    rng = np.random.default_rng(7)
    for qt in GGMLType:
        raw = gguf.random_blocks(qt, (2, 3, 256), rng)
        ours = gguf.dequantize(raw, qt, (2, 3, 256))
        ref = np.asarray(quants.dequantize(raw, GGMLQuantizationType(int(qt))), dtype=np.float32)
        np.testing.assert_array_equal(ours.view(np.uint32), ref.reshape(2, 3, 256).view(np.uint32))


def test_layouts_agree_with_gguf_package():
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    for qt, layout in gguf.LAYOUTS.items():
        assert GGML_QUANT_SIZES[GGMLQuantizationType(int(qt))] == (
            layout.block_elems,
            layout.block_bytes,
        )
        assert GGMLQuantizationType(int(qt)).name == qt.name
    assert set(gguf.LAYOUTS) == set(GGMLType)


def test_layout_values_from_design_table():
    expect = {
        "Q4_0": (32, 18),
        "Q4_1": (32, 20),
        "Q5_0": (32, 22),
        "Q5_1": (32, 24),
        "Q8_0": (32, 34),
        "Q4_K": (256, 144),
        "Q5_K": (256, 176),
        "Q6_K": (256, 210),
        "MXFP4": (32, 17),
        "F32": (1, 4),
        "F16": (1, 2),
        "BF16": (1, 2),
    }
    for name, (e, b) in expect.items():
        assert gguf.LAYOUTS[GGMLType[name]] == gguf.BlockLayout(e, b)


def test_row_bytes():
    assert gguf.row_bytes(GGMLType.Q5_0, 896) == 28 * 22
    assert gguf.row_bytes(GGMLType.Q6_K, 4864) == 19 * 210
    assert gguf.row_bytes(GGMLType.F32, 7) == 28
    assert gguf.tensor_bytes(GGMLType.Q8_0, (3, 64)) == 3 * 68
    with pytest.raises(gguf.GGUFTensorError) as info:
        gguf.row_bytes(GGMLType.Q4_K, 896)
    assert info.value.rule == "row_length" and "256" in str(info.value)


@pytest.mark.parametrize("type_id,name", [(10, "Q2_K"), (11, "Q3_K"), (16, "IQ2_XXS"), (99, "99")])
def test_unsupported_types_are_named(type_id, name):
    with pytest.raises(gguf.GGUFUnsupportedTypeError) as info:
        gguf.row_bytes(type_id, 256)
    assert name in str(info.value)
    with pytest.raises(gguf.GGUFUnsupportedTypeError):
        gguf.dequantize(np.zeros(84, np.uint8), type_id, (256,))


def test_dequantize_checks_size():
    with pytest.raises(gguf.GGUFTensorError) as info:
        gguf.dequantize(np.zeros(33, np.uint8), GGMLType.Q8_0, (32,))
    assert info.value.rule == "tensor_size"


KGOLDENS = Path(__file__).parent / "data" / "kquant_goldens.npz"


@pytest.mark.parametrize("qt", [GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K])
def test_kquant_quantizer_matches_llamacpp_c(qt):
    """Bytes recorded from ggml's quantize_row_q*_K_ref (scripts/gen_kquant_goldens.py)."""
    with np.load(KGOLDENS) as z:
        x, ref = z["in"], z[f"{qt.name}/raw"]
    ours = gguf.quantize(x, qt)
    assert ours.shape == ref.shape
    bad = np.flatnonzero((ours != ref).reshape(-1, gguf.LAYOUTS[qt].block_bytes).any(axis=1))
    assert bad.size == 0, f"{bad.size} blocks differ, first {bad[:5]}"


@pytest.mark.parametrize("qt", [GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K])
def test_kquant_quantizer_error_and_input_checks(qt):
    x = np.random.default_rng(4).standard_normal((8, 512)).astype(np.float32)
    y = gguf.dequantize(gguf.quantize(x, qt), qt, x.shape)
    rel = np.sqrt(np.mean((y - x) ** 2) / np.mean(x**2))
    assert rel < {GGMLType.Q4_K: 0.12, GGMLType.Q5_K: 0.06, GGMLType.Q6_K: 0.03}[qt], rel
    x[0, 3] = np.nan
    with pytest.raises(gguf.GGUFQuantizeError, match="finite"):
        gguf.quantize(x, qt)
    with pytest.raises(gguf.GGUFTensorError):
        gguf.quantize(np.zeros((1, 128), np.float32), qt)


def test_quantize_error_is_small_for_fine_types():
    x = np.random.default_rng(1).standard_normal((4, 256)).astype(np.float32)
    for qt, tol in [(GGMLType.Q8_0, 0.02), (GGMLType.F16, 1e-3), (GGMLType.BF16, 1e-2)]:
        y = gguf.dequantize(gguf.quantize(x, qt), qt, x.shape)
        assert np.max(np.abs(y - x)) < tol * np.max(np.abs(x)), qt


def test_random_blocks_deterministic_and_tame():
    for qt in GGMLType:
        a = gguf.random_blocks(qt, (8, 512), np.random.default_rng(5))
        b = gguf.random_blocks(qt, (8, 512), np.random.default_rng(5))
        np.testing.assert_array_equal(a, b)
        assert a.shape == (8, gguf.row_bytes(qt, 512)) and a.dtype == np.uint8
        x = gguf.dequantize(a, qt, (8, 512))
        assert np.isfinite(x).all(), qt
        assert 0 < np.abs(x).max() < 16, (qt, float(np.abs(x).max()))
        assert x.std() > 1e-4, qt


@pytest.mark.parametrize("qt", list(GGMLType))
def test_reference_matmul(qt):
    rng = np.random.default_rng(11)
    w_raw = gguf.random_blocks(qt, (48, 512), rng)
    w = gguf.dequantize(w_raw, qt, (48, 512)).astype(np.float64)
    x = rng.standard_normal((3, 512)).astype(np.float32)
    expect = x.astype(np.float64) @ w.T
    got = gguf.matmul(x, w_raw, qt, (48, 512), chunk_rows=7)
    assert got.dtype == np.float32 and got.shape == (3, 48)
    np.testing.assert_allclose(got, expect, rtol=1e-6, atol=1e-6)
    # chunking does not change a single bit (each output row is computed independently)
    np.testing.assert_array_equal(got, gguf.matmul(x, w_raw, qt, (48, 512), chunk_rows=1024))
    mv = gguf.matvec(w_raw, qt, (48, 512), x[1])
    np.testing.assert_array_equal(mv, got[1])
    d = gguf.dot(w_raw[5], qt, x[2])
    assert d == pytest.approx(float(expect[2, 5]), rel=1e-12, abs=1e-12)


def test_matmul_shape_errors():
    raw = gguf.random_blocks(GGMLType.Q8_0, (4, 64), np.random.default_rng(0))
    with pytest.raises(gguf.GGUFTensorError):
        gguf.matmul(np.zeros((1, 32), np.float32), raw, GGMLType.Q8_0, (4, 64))
    with pytest.raises(gguf.GGUFTensorError):
        gguf.matmul(np.zeros((1, 64), np.float32), raw, GGMLType.Q8_0, (2, 2, 64))


def test_real_q4k_row_against_independent_decoder(goldens):
    """An independent NumPy decoding of Q4_K from ggml's block_q4_K layout (ggml-quants.c
    dequantize_row_q4_K), checked against gguf.quants on a real row: the layout the kernels
    implement is the one the file uses."""
    raw = goldens["Q4_K/real/raw"].reshape(-1, 144)
    d = raw[:, 0:2].copy().view(np.float16).astype(np.float32)[:, 0]
    dmin = raw[:, 2:4].copy().view(np.float16).astype(np.float32)[:, 0]
    scales = raw[:, 4:16].astype(np.int32)
    qs = raw[:, 16:144]
    out = np.empty((raw.shape[0], 256), np.float32)
    for b in range(raw.shape[0]):
        sc, mn = [], []
        for j in range(8):  # get_scale_min_k4
            if j < 4:
                sc.append(scales[b, j] & 63)
                mn.append(scales[b, j + 4] & 63)
            else:
                sc.append((scales[b, j + 4] & 0xF) | ((scales[b, j - 4] >> 6) << 4))
                mn.append((scales[b, j + 4] >> 4) | ((scales[b, j] >> 6) << 4))
        for j in range(4):  # 64 values per step: low nibbles then high nibbles of 32 bytes
            q = qs[b, 32 * j : 32 * j + 32]
            lo = np.float32(d[b] * sc[2 * j]) * (q & 0xF) - np.float32(dmin[b] * mn[2 * j])
            hi = np.float32(d[b] * sc[2 * j + 1]) * (q >> 4) - np.float32(dmin[b] * mn[2 * j + 1])
            out[b, 64 * j : 64 * j + 32] = lo
            out[b, 64 * j + 32 : 64 * j + 64] = hi
    ref = goldens["Q4_K/real/out"].view(np.float32).reshape(-1, 256)
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-7)
