"""Op-parity command for the GPU kernels (like llama.cpp's test-backend-ops).

Every op, every tensor type, several shapes (odd sizes and the real shapes of Qwen2.5-0.5B,
Phi-3-mini and gpt-oss-20b), random inputs from fixed seeds, normalized MSE
``sum((gpu - ref)^2) / sum(ref^2)`` against the NumPy reference
(``orcd_toolkit.backends.cpu.ops``, ``engine.sampling``) with a per-op tolerance, and guard
elements after every output that must stay untouched (outputs are poisoned with NaN first, so
an unwritten element also fails). Prints a table; ``--out FILE`` also writes it.

Run on a GPU machine:  python scripts/kernel_parity.py [--quick] [--out parity.txt]
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orcd_toolkit.backends.cpu import ops  # noqa: E402
from orcd_toolkit.gguf.quants import random_blocks  # noqa: E402
from orcd_toolkit.gguf.types import GGMLType  # noqa: E402
from orcd_toolkit.notebook.bench import nmse  # noqa: E402 - the measure KernelBench reports

GUARD = 64
SENTINEL = np.float32(1234.5)

# per-op tolerances on normalized MSE, and why
TOL = {
    "matvec": 1e-10,  # exact dequantization, f32 products and sums: only summation order differs
    # int8 path vs its twin round_activations(x, "q8_1") @ dequant(W).T: the same q values,
    # integer dots, f32 per-chunk scales and sums (a single q off by one costs ~3e-10 at 896)
    "matvec_q8": 1e-10,
    # what the int8 path costs against the exact f32 product (x ~ N(0, 1): ~2e-5 expected,
    # the q8_1 rounding llama.cpp's CUDA backend applies too); a bound, reported per shape
    "q8_cost": 1e-3,
    "matmul_mma": 1e-6,  # x and dequantized w rounded to f16 (2^-11 relative), f32 accumulation
    "embed": 1e-12,  # the same f32 decode as gguf.quants; only (d*sc)*q vs d*(sc*q) rounding
    "norm": 1e-10,  # float64 reductions, f32 elementwise like the reference
    "rope": 1e-10,  # angles in float64 on both sides
    "kv_write": 1e-6,  # f16 cache vs the f32 reference rounded to f16
    "attention": 1e-10,  # f16 K/V decoded exactly, f32 online softmax with __expf
    "activation": 1e-10,  # f32 exp/tanh, 1-2 ulp apart
    "moe_route": 1e-12,  # weights in float64; ids must match exactly
    "moe": 1e-10,  # matvec tolerance through the expert FFN
    # int8 path through the FFN: the down projection rounds the GPU's own SwiGLU output, which
    # is 1-2 ulp from the reference's, so a few of its q may sit on the other side of a
    # rounding tie (each such flip ~1e-7 at 2880 columns); the exact per-product check is
    # expert_matvec_q8 at the matvec_q8 tolerance
    "moe_q8": 1e-5,
    "sampling": 0.0,  # token ids must match exactly (nMSE column: logprobs)
}


@dataclass
class Row:
    op: str
    qtype: str
    shape: str
    nmse: float
    tol: float
    ok: bool
    note: str = ""


ROWS: list[Row] = []


def record(
    op: str, qtype: str, shape: str, err: float, tol: float, guard_ok: bool = True, note: str = ""
) -> None:
    ok = bool(np.isfinite(err) and err <= tol and guard_ok)
    if not guard_ok:
        note = (note + " guard overwritten").strip()
    ROWS.append(Row(op, qtype, shape, err, tol, ok, note))
    flag = "ok" if ok else "FAIL"
    print(
        f"  {op:<18} {qtype:<7} {shape:<34} nmse={err:.3e} tol={tol:.0e} {flag} {note}", flush=True
    )


def guarded(cp, shape: tuple[int, ...], dtype=np.float32):
    """A poisoned output array with GUARD sentinel elements after it; returns (view, base)."""
    n = int(np.prod(shape))
    base = cp.full(n + GUARD, np.nan, dtype=dtype)
    base[n:] = SENTINEL
    return base[:n].reshape(shape), base


def guard_ok(cp, base, n: int) -> bool:
    return bool(cp.all(base[n:] == SENTINEL).get())


def run_case(name: str, fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the harness reports every failure and goes on
        traceback.print_exc()
        ROWS.append(
            Row(name, "-", "-", float("nan"), 0.0, False, f"{type(exc).__name__}: {exc}"[:120])
        )


# --------------------------------------------------------------------------- quantized linear

ALL_TYPES = [
    GGMLType.F32,
    GGMLType.F16,
    GGMLType.BF16,
    GGMLType.Q4_0,
    GGMLType.Q4_1,
    GGMLType.Q5_0,
    GGMLType.Q5_1,
    GGMLType.Q8_0,
    GGMLType.Q4_K,
    GGMLType.Q5_K,
    GGMLType.Q6_K,
    GGMLType.MXFP4,
]
K_TYPES = {GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K}


def linear_shapes(qt: GGMLType, quick: bool) -> list[tuple[int, int, str]]:
    """(rows, cols, label): odd sizes and the real model rows this type has to serve."""
    if qt in K_TYPES:
        shapes = [
            (1001, 512, "odd"),
            (896, 4864, "qwen0.5b ffn_down"),
            (4864, 1024, "odd-ish 4864x1024"),
        ]
        if not quick:
            shapes += [
                (3072, 3072, "phi3 attn_qkv/out"),
                (3072, 8192, "phi3 ffn_down"),
                (1536, 8960, "qwen1.5b ffn_down"),
            ]
        return shapes
    shapes = [
        (1001, 96, "odd"),
        (896, 896, "qwen0.5b attn_q/o"),
        (128, 896, "qwen0.5b attn_k/v"),
        (4864, 896, "qwen0.5b ffn_gate/up"),
        (896, 4864, "qwen0.5b ffn_down"),
    ]
    if qt == GGMLType.MXFP4:
        shapes.append((2880, 2880, "gpt-oss expert"))
    if not quick and qt in (GGMLType.Q8_0, GGMLType.Q6_K, GGMLType.F16):
        shapes.append((151936, 896, "qwen0.5b vocab"))
    return shapes


def check_linear(cp, quant, qt: GGMLType, rows: int, cols: int, label: str, rng) -> None:
    raw = random_blocks(qt, (rows, cols), rng)
    w_ref = ops.dequantize(raw, int(qt), (rows, cols))
    w = quant.QuantWeight(cp.asarray(raw), qt, rows, cols)
    bias = rng.normal(0, 0.1, rows).astype(np.float32)
    q8 = int(qt) in quant.cuda_modules.BLOCK_QTYPE_IDS
    for n in (1, 3, 8):
        x = rng.normal(0, 1, (n, cols)).astype(np.float32)
        if n == 3:
            x[1, :32] = 0.0  # an all-zero block: d = 0, q = 0
            x[2, 32:64] *= 1e-3
        out, base = guarded(cp, (n, rows))
        quant.matvec(out, cp.asarray(x), w, cp.asarray(bias), q8_activations=False)
        ref = ops.matmul(x, w_ref, bias)
        record(
            "matvec",
            qt.name,
            f"{rows}x{cols} n={n} {label}",
            nmse(out.get(), ref),
            TOL["matvec"],
            guard_ok(cp, base, n * rows),
        )
        if q8:
            out, base = guarded(cp, (n, rows))
            quant.matvec(out, cp.asarray(x), w, cp.asarray(bias))  # the default: int8 path
            got = out.get()
            ref_q8 = ops.matmul(ops.round_activations(x, "q8_1"), w_ref, bias)
            record(
                "matvec_q8",
                qt.name,
                f"{rows}x{cols} n={n} {label}",
                nmse(got, ref_q8),
                TOL["matvec_q8"],
                guard_ok(cp, base, n * rows),
            )
            if n == 1:
                record("q8_cost", qt.name, f"{rows}x{cols} n=1 {label}", nmse(got, ref),
                       TOL["q8_cost"], note="int8 path vs exact f32 product")
            # x rounded once by quantize_activations: the same numbers, bit for bit
            xd = cp.asarray(x)
            xq_base = cp.full(n * quant.q8_words(cols) + GUARD, 0xDEADBEEF, cp.uint32)
            xq = xq_base[:n * quant.q8_words(cols)].reshape(n, quant.q8_words(cols))
            qa = quant.quantize_activations(xq, xd)
            out, base = guarded(cp, (n, rows))
            quant.matvec(out, xd, w, cp.asarray(bias), x_q8=qa)
            same = bool(np.array_equal(out.get(), got))
            record("matvec_q8 x_q8", qt.name, f"{rows}x{cols} n={n} {label}",
                   nmse(out.get(), ref_q8), TOL["matvec_q8"],
                   guard_ok(cp, base, n * rows) and same
                   and bool(cp.all(xq_base[n * quant.q8_words(cols):] == 0xDEADBEEF).get()),
                   "" if same else "differs from the in-kernel rounding")
            # the rounding a product stores for the next products of x (x_q8_out): the
            # words of quantize_activations, and the product itself unchanged
            xo_base = cp.full(n * quant.q8_words(cols) + GUARD, 0xDEADBEEF, cp.uint32)
            xo = quant.Q8Activations(
                xo_base[:n * quant.q8_words(cols)].reshape(n, quant.q8_words(cols)), n, cols)
            out, base = guarded(cp, (n, rows))
            quant.matvec(out, xd, w, cp.asarray(bias), x_q8_out=xo)
            same = bool(np.array_equal(out.get(), got)) and bool(cp.array_equal(xo.data, xq).get())
            record("matvec_q8 x_q8_out", qt.name, f"{rows}x{cols} n={n} {label}",
                   nmse(out.get(), ref_q8), TOL["matvec_q8"],
                   guard_ok(cp, base, n * rows) and same
                   and bool(cp.all(xo_base[n * quant.q8_words(cols):] == 0xDEADBEEF).get()),
                   "" if same else "stored rounding or product differs")
    if q8:
        for r, nb, st, ks in quant.cuda_modules.q8_variants(int(qt)):  # every variant compiled
            x = rng.normal(0, 1, (nb, cols)).astype(np.float32)
            out, base = guarded(cp, (nb, rows))
            try:
                quant.matvec(out, cp.asarray(x), w, None, rows_per_warp=r, stages=st,
                             warps_per_row=ks, ctas_per_sm=1)
            except quant.KernelError as exc:  # x staging too large for this variant
                print(f"  matvec_q8 R={r} NB={nb} S={st} KS={ks} {rows}x{cols}: skipped ({exc})")
                continue
            ref_q8 = ops.matmul(ops.round_activations(x, "q8_1"), w_ref)
            record("matvec_q8", qt.name,
                   f"{rows}x{cols} n={nb} R={r} S={st} KS={ks} 1 cta/SM {label}",
                   nmse(out.get(), ref_q8), TOL["matvec_q8"], guard_ok(cp, base, nb * rows))
    if q8:
        # the row-group kernel, every variant that takes these rows (x in registers up to
        # Q8_ROWS_MAX_CHUNKS chunks; x in shared memory at any width): within tolerance, and
        # the segment kernel's bits
        x = rng.normal(0, 1, (1, cols)).astype(np.float32)
        xd = cp.asarray(x)
        seg = cp.empty((1, rows), cp.float32)
        quant.matvec(seg, xd, w, cp.asarray(bias), rows_per_warp=1, row_groups=False)
        ref_q8 = ops.matmul(ops.round_activations(x, "q8_1"), w_ref, bias)
        narrow = cols // 32 <= quant.cuda_modules.Q8_ROWS_MAX_CHUNKS
        variants = [(r, nch, st, False) for r, nch, st in quant.cuda_modules.Q8_ROWS_VARIANTS]
        variants += [(r, nch, st, True)
                     for r, nch, st in quant.cuda_modules.Q8_ROWS_BULK_VARIANTS]
        for r, nch, st, bulk in variants:
            if nch and not narrow:
                continue
            out, base = guarded(cp, (1, rows))
            quant.Q8_ROWS_BULK = bulk
            quant.Q8_ROWS_X_SHARED = nch == 0
            try:
                quant.matvec(out, xd, w, cp.asarray(bias), rows_per_warp=r, stages=st,
                             row_groups=True, ctas_per_sm=1)
            finally:
                quant.Q8_ROWS_BULK = None
                quant.Q8_ROWS_X_SHARED = None
            same = bool(np.array_equal(out.get(), seg.get()))
            kind = ("bulk copies" if bulk else "cp.async") + (", x shared" if nch == 0 else "")
            record("matvec_q8 row groups", qt.name,
                   f"{rows}x{cols} n=1 R={r} S={st} {kind} {label}",
                   nmse(out.get(), ref_q8), TOL["matvec_q8"], guard_ok(cp, base, rows) and same,
                   "" if same else "differs from the segment kernel")
    for n in (37, 512) if rows * cols <= 16e6 else (37,):
        x = rng.normal(0, 1, (n, cols)).astype(np.float32)
        out, base = guarded(cp, (n, rows))
        quant.matmul(out, cp.asarray(x), w, cp.asarray(bias))
        ref = ops.matmul(x, w_ref, bias)
        record(
            "matmul_mma",
            qt.name,
            f"{rows}x{cols} n={n} {label}",
            nmse(out.get(), ref),
            TOL["matmul_mma"],
            guard_ok(cp, base, n * rows),
        )
    ids = rng.integers(0, rows, 9).astype(np.int32)
    out, base = guarded(cp, (9, cols))
    quant.embed(out, w, cp.asarray(ids))
    record(
        "embed",
        qt.name,
        f"{rows}x{cols} ids=9 {label}",
        nmse(out.get(), w_ref[ids]),
        TOL["embed"],
        guard_ok(cp, base, 9 * cols),
    )


def check_div127(cp, quant) -> None:
    """The int8 path computes d = amax / 127 with an FMA correction instead of an IEEE division
    (common.cuh div127): it must equal the IEEE quotient bit for bit. Every float of the binade
    [1, 2) (division by 127 commutes with powers of two in the normal range) and every subnormal."""
    import re

    text = (quant.cuda_modules.CUDA_DIR / "common.cuh").read_text()
    fn = re.search(r"__device__ __forceinline__ float div127\(float a\) \{.*?\n\}", text, re.S)
    kern = cp.ElementwiseKernel(
        "uint32 bits", "uint32 bad",
        "float a = __uint_as_float(bits); bad = __float_as_uint(div127(a)) != __float_as_uint(a / 127.f);",
        "div127_check", preamble=fn.group(0))
    bad = 0
    for lo in (0x3F800000, 0x00000001):
        bad += int(kern(cp.arange(lo, lo + 2**23, dtype=cp.uint32)).sum())
    record("q8_1 d=amax/127", "f32", "all of [1,2) and the subnormals", float(bad), 0.0,
           note="count of floats where the FMA quotient differs from IEEE")


# --------------------------------------------------------------------------- norms, rope, acts


def check_norms(cp, norms, rng) -> None:
    for rows, n in ((1, 896), (7, 3072), (512, 2880), (3, 100)):
        x = rng.normal(0, 1, (rows, n)).astype(np.float32)
        r = rng.normal(0, 1, (rows, n)).astype(np.float32)
        w = rng.normal(1, 0.1, n).astype(np.float32)
        b = rng.normal(0, 0.1, n).astype(np.float32)
        shape = f"{rows}x{n}"
        out, base = guarded(cp, (rows, n))
        norms.rms_norm(out, cp.asarray(x), cp.asarray(w), 1e-6)
        record(
            "rms_norm",
            "f32",
            shape,
            nmse(out.get(), ops.rms_norm(x, w, 1e-6)),
            TOL["norm"],
            guard_ok(cp, base, rows * n),
        )
        out, base = guarded(cp, (rows, n))
        ro, rbase = guarded(cp, (rows, n))
        norms.rms_norm(
            out, cp.asarray(x), cp.asarray(w), 1e-6, residual=cp.asarray(r), residual_out=ro
        )
        ref, ref_sum = ops.add_rms_norm(x, r, w, 1e-6)
        record(
            "add_rms_norm",
            "f32",
            shape,
            max(nmse(out.get(), ref), nmse(ro.get(), ref_sum)),
            TOL["norm"],
            guard_ok(cp, base, rows * n) and guard_ok(cp, rbase, rows * n),
        )
        out, base = guarded(cp, (rows, n))
        norms.layer_norm(out, cp.asarray(x), cp.asarray(w), cp.asarray(b), 1e-5)
        record(
            "layer_norm",
            "f32",
            shape,
            nmse(out.get(), ops.layer_norm(x, w, b, 1e-5)),
            TOL["norm"],
            guard_ok(cp, base, rows * n),
        )
        out, base = guarded(cp, (rows, n))
        ro, rbase = guarded(cp, (rows, n))
        norms.layer_norm(
            out,
            cp.asarray(x),
            cp.asarray(w),
            cp.asarray(b),
            1e-5,
            residual=cp.asarray(r),
            residual_out=ro,
        )
        ref, ref_sum = ops.add_layer_norm(x, r, w, b, 1e-5)
        record(
            "add_layer_norm",
            "f32",
            shape,
            max(nmse(out.get(), ref), nmse(ro.get(), ref_sum)),
            TOL["norm"],
            guard_ok(cp, base, rows * n) and guard_ok(cp, rbase, rows * n),
        )


ROPE_CASES = [
    # label, T, Hq, Hkv, D, n_rot, mode, kwargs
    ("qwen2 neox", 5, 14, 2, 64, 64, ops.ROPE_NEOX, {"freq_base": 1e6}),
    ("llama norm", 3, 9, 3, 64, 64, ops.ROPE_NORM, {"freq_base": 1e4}),
    ("phi3 neox partial", 4, 32, 32, 96, 64, ops.ROPE_NEOX, {"freq_base": 1e4}),
    (
        "gpt-oss yarn",
        6,
        64,
        8,
        64,
        64,
        ops.ROPE_NEOX,
        {
            "freq_base": 150000.0,
            "freq_scale": 1 / 32,
            "ext_factor": 1.0,
            "attn_factor": 1.0,
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "n_ctx_orig": 4096,
        },
    ),
]


def check_rope(cp, rope, rng) -> None:
    for label, t, hq, hkv, d, n_rot, mode, kw in ROPE_CASES:
        q = rng.normal(0, 1, (t, hq, d)).astype(np.float32)
        k = rng.normal(0, 1, (t, hkv, d)).astype(np.float32)
        v = rng.normal(0, 1, (t, hkv, d)).astype(np.float32)
        pos = rng.integers(0, 30000, t).astype(np.int32)
        nb, bs = 4, 16
        slots = rng.permutation(nb * bs)[:t].astype(np.int32)
        slots[-1] = -1  # a padding token: skipped
        freqs, mscale = rope.rope_frequencies(n_rot, **kw)
        qd, kd, vd = cp.asarray(q), cp.asarray(k), cp.asarray(v)
        kc = cp.zeros((nb, bs, hkv, d), cp.float16)
        vc = cp.zeros((nb, bs, hkv, d), cp.float16)
        rope.rope_kv_write(
            qd,
            kd,
            vd,
            cp.asarray(pos),
            cp.asarray(freqs),
            mscale,
            mode,
            slot_mapping=cp.asarray(slots),
            k_cache=kc,
            v_cache=vc,
        )
        q_ref = ops.rope(q, pos, n_rot, mode, **kw)
        k_ref = ops.rope(k, pos, n_rot, mode, **kw)
        shape = f"T={t} {hq}/{hkv}x{d} rot={n_rot}"
        record("rope", label, shape, max(nmse(qd.get(), q_ref), nmse(kd.get(), k_ref)), TOL["rope"])
        kc_ref = np.zeros((nb, bs, hkv, d), np.float32)
        vc_ref = np.zeros((nb, bs, hkv, d), np.float32)
        ops.write_kv(
            kc_ref,
            vc_ref,
            k_ref.astype(np.float16).astype(np.float32),
            v.astype(np.float16).astype(np.float32),
            slots,
        )
        err = max(
            nmse(kc.get().astype(np.float32), kc_ref), nmse(vc.get().astype(np.float32), vc_ref)
        )
        record("rope_kv_write", label, shape + " f16 cache", err, TOL["kv_write"])


def check_activations(cp, act, rng) -> None:
    for rows, n in ((1, 4864), (512, 2880), (3, 33)):
        g = rng.normal(0, 3, (rows, n)).astype(np.float32)
        u = rng.normal(0, 3, (rows, n)).astype(np.float32)
        shape = f"{rows}x{n}"
        for name, fn, ref in (
            ("swiglu", lambda o, a, b: act.swiglu(o, a, b), ops.swiglu(g, u)),
            ("swiglu_oai", lambda o, a, b: act.swiglu_oai(o, a, b), ops.swiglu_oai(g, u)),
            ("add", lambda o, a, b: act.add(o, a, b), g + u),
        ):
            out, base = guarded(cp, (rows, n))
            fn(out, cp.asarray(g), cp.asarray(u))
            record(
                name,
                "f32",
                shape,
                nmse(out.get(), ref),
                TOL["activation"],
                guard_ok(cp, base, rows * n),
            )
        out, base = guarded(cp, (rows, n))
        act.gelu(out, cp.asarray(g))
        record(
            "gelu",
            "f32",
            shape,
            nmse(out.get(), ops.gelu(g)),
            TOL["activation"],
            guard_ok(cp, base, rows * n),
        )
    # strided halves of a fused gate/up projection (phi3 style)
    gu = rng.normal(0, 3, (4, 2 * 8192)).astype(np.float32)
    gud = cp.asarray(gu)
    out, base = guarded(cp, (4, 8192))
    act.swiglu(out, gud[:, :8192], gud[:, 8192:])
    record(
        "swiglu",
        "f32",
        "4x8192 strided halves (phi3)",
        nmse(out.get(), ops.swiglu(gu[:, :8192], gu[:, 8192:])),
        TOL["activation"],
        guard_ok(cp, base, 4 * 8192),
    )


# --------------------------------------------------------------------------- attention

ATTN_MODELS = [
    # label, Hq, Hkv, D, sinks, window
    ("qwen0.5b", 14, 2, 64, False, 0),
    ("qwen1.5b", 12, 2, 128, False, 0),
    ("phi3 MHA", 32, 32, 96, False, 0),
    ("gpt-oss sinks+swa", 64, 8, 64, True, 128),
]


def make_batch(rng, seqs: list[tuple[int, int]], block_size: int):
    """Ragged batch metadata for (n_new, context_len) per sequence, paged with shuffled blocks."""
    nblocks = [-(-ctx // block_size) for _, ctx in seqs]
    total = sum(nblocks) + 3
    perm = rng.permutation(total).astype(np.int32)
    tables = np.full((len(seqs), max(nblocks)), -1, np.int32)
    at = 0
    for i, nb in enumerate(nblocks):
        tables[i, :nb] = perm[at : at + nb]
        at += nb
    starts = np.zeros(len(seqs) + 1, np.int32)
    starts[1:] = np.cumsum([n for n, _ in seqs])
    lens = np.array([c for _, c in seqs], np.int32)
    return tables, starts, lens, total


def check_attention(cp, attn, rng, quick: bool) -> None:
    batches = [
        ("mixed prefill+decode", [(1, 37), (5, 300), (1, 1), (64, 64), (17, 530)]),
        ("decode b=8 long", [(1, int(c)) for c in rng.integers(900, 2500, 8)]),
    ]
    if not quick:
        batches.append(("prefill 512", [(512, 512)]))
    for label, hq, hkv, d, use_sinks, window in ATTN_MODELS:
        for blabel, seqs in batches:
            bs = 16
            tables, starts, lens, nblk = make_batch(rng, seqs, bs)
            t = int(starts[-1])
            q = rng.normal(0, 1, (t, hq, d)).astype(np.float32)
            kc = rng.normal(0, 1, (nblk, bs, hkv, d)).astype(np.float16)
            vc = rng.normal(0, 1, (nblk, bs, hkv, d)).astype(np.float16)
            sinks = rng.normal(0, 1, hq).astype(np.float32) if use_sinks else None
            scale = 1.0 / np.sqrt(d)
            ref = ops.paged_attention(
                q,
                kc.astype(np.float32),
                vc.astype(np.float32),
                tables,
                starts,
                lens,
                scale=scale,
                sinks=sinks,
                sliding_window=window,
            )
            shape = attn.AttentionShape(
                t, len(seqs), int(np.diff(starts).max()), int(lens.max()), hq, hkv, d
            )
            dev = [cp.asarray(a) for a in (q, kc, vc, tables, starts, lens)]
            for kern in (attn.BasicAttention(), attn.FlashAttention()):
                out, base = guarded(cp, (t, hq, d))
                ws = cp.empty(kern.workspace_shape(shape), cp.float32)
                kern(
                    out,
                    *dev,
                    shape,
                    ws,
                    scale=scale,
                    sinks=None if sinks is None else cp.asarray(sinks),
                    sliding_window=window,
                )
                splits = kern.splits(shape) if hasattr(kern, "splits") else 1
                record(
                    f"attention_{kern.name}",
                    "f16kv",
                    f"{label} {blabel} T={t} splits={splits}",
                    nmse(out.get(), ref),
                    TOL["attention"],
                    guard_ok(cp, base, t * hq * d),
                )


# --------------------------------------------------------------------------- moe, sampling


def check_moe(cp, quant, moe, act, rng) -> None:
    for label, qt, n_exp, k, d, f, t in (
        ("gpt-oss-like", GGMLType.MXFP4, 8, 4, 2880, 2880, 3),
        ("small q8_0", GGMLType.Q8_0, 16, 2, 256, 512, 5),
    ):
        logits = rng.normal(0, 1, (t, n_exp)).astype(np.float32)
        logits[0, 1] = logits[0, 2]  # a tie: lower id first
        ids = cp.empty((t, k), cp.int32)
        wts = cp.empty((t, k), cp.float32)
        moe.route(ids, wts, cp.asarray(logits))
        ref_ids, ref_w = ops.moe_route(logits, k)
        ids_ok = bool(np.array_equal(ids.get(), ref_ids))
        record(
            "moe_route",
            "f32",
            f"T={t} E={n_exp} k={k}",
            nmse(wts.get(), ref_w),
            TOL["moe_route"],
            ids_ok,
            "" if ids_ok else "ids differ",
        )
        raw_g = random_blocks(qt, (n_exp, f, d), rng)
        raw_u = random_blocks(qt, (n_exp, f, d), rng)
        raw_d = random_blocks(qt, (n_exp, d, f), rng)
        gb = rng.normal(0, 0.1, (n_exp, f)).astype(np.float32)
        ub = rng.normal(0, 0.1, (n_exp, f)).astype(np.float32)
        db = rng.normal(0, 0.1, (n_exp, d)).astype(np.float32)
        x = rng.normal(0, 1, (t, d)).astype(np.float32)
        wg = quant.QuantWeight(cp.asarray(raw_g), qt, f, d)
        wu = quant.QuantWeight(cp.asarray(raw_u), qt, f, d)
        wd = quant.QuantWeight(cp.asarray(raw_d), qt, d, f)
        g = cp.empty((t, k, f), cp.float32)
        u = cp.empty((t, k, f), cp.float32)
        h = cp.empty((t, k, f), cp.float32)
        y = cp.empty((t, k, d), cp.float32)
        xd = cp.asarray(x)
        for q8 in (False, True):
            out, base = guarded(cp, (t, d))
            quant.expert_matvec(g, xd, wg, ids, x_per_slot=False, bias=cp.asarray(gb),
                                q8_activations=q8)
            quant.expert_matvec(u, xd, wu, ids, x_per_slot=False, bias=cp.asarray(ub),
                                q8_activations=q8)
            actf = act.swiglu_oai if qt == GGMLType.MXFP4 else act.swiglu
            actf(h.reshape(t * k, f), g.reshape(t * k, f), u.reshape(t * k, f))
            quant.expert_matvec(y, h, wd, ids, x_per_slot=True, bias=cp.asarray(db),
                                q8_activations=q8)
            moe.combine(out, y, wts)
            if q8:  # one expert product against its exact twin (same x on both sides)
                wg_ref = ops.dequantize(raw_g, int(qt), (n_exp, f, d))
                xr = ops.round_activations(x, "q8_1")
                ref_g = np.stack([np.stack([ops.matmul(xr[i:i + 1], wg_ref[e], gb[e])[0]
                                            for e in ref_ids[i]]) for i in range(t)])
                record("expert_matvec_q8", qt.name, f"{label} gate T={t} k={k} {f}x{d}",
                       nmse(g.get(), ref_g), TOL["matvec_q8"])
                xq = cp.empty((t, quant.q8_words(d)), cp.uint32)
                g2 = cp.empty_like(g)
                quant.expert_matvec(g2, xd, wg, ids, x_per_slot=False, bias=cp.asarray(gb),
                                    x_q8=quant.quantize_activations(xq, xd))
                same = bool(cp.array_equal(g2, g).get())
                record("expert_matvec_q8 x_q8", qt.name, f"{label} gate T={t} k={k} {f}x{d}",
                       nmse(g2.get(), ref_g), TOL["matvec_q8"], same,
                       "" if same else "differs from the in-kernel rounding")
                # gate and up in one launch (what GpuBackend.moe runs): the same words
                g3, g3_base = guarded(cp, (t, k, f))
                u3, u3_base = guarded(cp, (t, k, f))
                quant.expert_gate_up(g3, u3, xd, wg, wu, ids, gate_bias=cp.asarray(gb),
                                     up_bias=cp.asarray(ub), x_q8=quant.quantize_activations(xq, xd))
                same = bool(cp.array_equal(g3, g).get()) and bool(cp.array_equal(u3, u).get())
                record("expert_gate_up_q8", qt.name, f"{label} gate+up T={t} k={k} {f}x{d}",
                       nmse(g3.get(), ref_g), TOL["matvec_q8"],
                       same and guard_ok(cp, g3_base, t * k * f) and guard_ok(cp, u3_base, t * k * f),
                       "" if same else "differs from two expert_matvec launches")
                # the segment kernel (the default is the row-group kernel): the same bits
                g4, g4_base = guarded(cp, (t, k, f))
                quant.expert_matvec(g4, xd, wg, ids, x_per_slot=False, bias=cp.asarray(gb),
                                    row_groups=False)
                same = bool(cp.array_equal(g4, g).get())
                record("expert_matvec_q8 segment kernel", qt.name,
                       f"{label} gate T={t} k={k} {f}x{d}", nmse(g4.get(), ref_g),
                       TOL["matvec_q8"], same and guard_ok(cp, g4_base, t * k * f),
                       "" if same else "differs from the row-group kernel")
            # the int8 path's twin: every expert product sees round_activations(x, "q8_1")
            scheme = "q8_1" if q8 else "exact"
            ref = ops.moe_experts(
                x,
                ref_ids,
                ref_w,
                ops.LinearWeight(ops.dequantize(raw_g, int(qt), (n_exp, f, d)), scheme),
                ops.LinearWeight(ops.dequantize(raw_u, int(qt), (n_exp, f, d)), scheme),
                ops.LinearWeight(ops.dequantize(raw_d, int(qt), (n_exp, d, f)), scheme),
                gate_b=gb,
                up_b=ub,
                down_b=db,
                activation="swiglu_oai" if qt == GGMLType.MXFP4 else "swiglu",
            )
            record(
                "moe_experts" + ("_q8" if q8 else ""),
                qt.name,
                f"{label} T={t} E={n_exp} k={k} d={d} f={f}",
                nmse(out.get(), ref),
                TOL["moe_q8" if q8 else "moe"],
                guard_ok(cp, base, t * d),
            )


def check_sampling(cp, sampling, rng, quick: bool) -> None:
    from orcd_toolkit.engine import rng as erng
    from orcd_toolkit.engine import sampling as esamp
    from orcd_toolkit.engine.params import SamplingParams

    vocab = 151936 if not quick else 5000
    cases = [
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=1.0),
        SamplingParams(temperature=0.7, top_k=40),
        SamplingParams(temperature=0.8, top_p=0.9),
        SamplingParams(temperature=1.0, top_k=50, top_p=0.8, min_p=0.05),
        SamplingParams(temperature=1.3, min_p=0.1),
        SamplingParams(temperature=0.9, top_k=1),
        SamplingParams(
            temperature=1.0,
            repetition_penalty=1.3,
            presence_penalty=0.5,
            frequency_penalty=0.4,
            top_p=0.95,
        ),
    ]
    n = len(cases) * 4
    params = [cases[i % len(cases)] for i in range(n)]
    logits = (rng.normal(0, 3, (n, vocab))).astype(np.float32)
    logits[1, 7] = logits[1, 9] = logits[1].max() + 1  # an argmax tie
    seeds = rng.integers(0, 2**63, n, dtype=np.uint64)
    draw = rng.integers(0, 1000, n).astype(np.int64)
    hist_len = rng.integers(1, 60, n).astype(np.int32)
    num_prompt = (hist_len // 2).astype(np.int32)
    hist = np.zeros((n, 64), np.int32)
    for i in range(n):
        hist[i, : hist_len[i]] = rng.integers(0, vocab, hist_len[i])
        hist[i, : hist_len[i] // 3] = hist[i, 0]  # repeats: counts > 1
    ref_tok, ref_lp = [], []
    for i in range(n):
        u = float(erng.uniform_draws(np.array([seeds[i]]), np.array([draw[i]]))[0])
        h = hist[i, : hist_len[i]]
        tok, lps = esamp.sample_row(
            logits[i], params[i], u, h[: num_prompt[i]], h[num_prompt[i] :], []
        )
        ref_tok.append(tok)
        ref_lp.append(esamp.log_softmax(logits[i])[tok])
    f32 = lambda name: cp.asarray(np.array([getattr(p, name) for p in params], np.float32))  # noqa: E731
    dev_params = {
        "temperature": f32("temperature"),
        "top_k": cp.asarray(np.array([p.top_k for p in params], np.int32)),
        "top_p": f32("top_p"),
        "min_p": f32("min_p"),
        "repetition_penalty": f32("repetition_penalty"),
        "presence_penalty": f32("presence_penalty"),
        "frequency_penalty": f32("frequency_penalty"),
    }
    toks = cp.empty(n, cp.int32)
    lps = cp.empty(n, cp.float32)
    probs = cp.empty((n, vocab), cp.float32)
    counts = cp.zeros((n, vocab), cp.int32)
    xd = cp.asarray(logits)
    sampling.sample(
        toks,
        lps,
        xd,
        dev_params,
        cp.asarray(seeds),
        cp.asarray(draw),
        probs,
        counts,
        history=cp.asarray(hist),
        history_len=cp.asarray(hist_len),
        num_prompt=cp.asarray(num_prompt),
    )
    got = toks.get()
    match = int(np.sum(got == np.array(ref_tok)))
    clean = bool(int(cp.count_nonzero(counts).get()) == 0)
    unchanged = bool(cp.array_equal(xd, cp.asarray(logits)).get())
    err = nmse(lps.get(), np.array(ref_lp))
    ok = match == n and clean and unchanged
    note = f"{match}/{n} tokens equal" + ("" if clean else ", counts not cleared")
    ROWS.append(
        Row("sample", "f32", f"N={n} V={vocab} 8 param sets", err, 1e-10, ok and err <= 1e-10, note)
    )
    print(f"  sample N={n} V={vocab}: {note}; logprob nmse {err:.3e}", flush=True)


def table() -> str:
    lines = ["| op | type | shape | nMSE | tol | pass |", "|---|---|---|---|---|---|"]
    for r in ROWS:
        note = f" ({r.note})" if r.note else ""
        lines.append(
            f"| {r.op} | {r.qtype} | {r.shape} | {r.nmse:.2e} | {r.tol:.0e} | "
            f"{'yes' if r.ok else 'NO'}{note} |"
        )
    n_ok = sum(r.ok for r in ROWS)
    lines.append(f"\n{n_ok}/{len(ROWS)} cases pass")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer and smaller shapes")
    ap.add_argument("--out", type=Path, help="also write the table here")
    ap.add_argument(
        "--only", default="", help="comma-separated groups: linear,norm,rope,act,attn,moe,sample"
    )
    args = ap.parse_args(argv)

    import cupy as cp

    from orcd_toolkit.kernels import activations, attention, moe, norms, quant, rope, sampling
    from orcd_toolkit.kernels.device import probe_cupy

    dev = probe_cupy()
    print(f"device: {dev.name} (cc {dev.compute_capability})", flush=True)
    groups = set(filter(None, args.only.split(","))) or {
        "linear",
        "norm",
        "rope",
        "act",
        "attn",
        "moe",
        "sample",
    }
    rng = np.random.default_rng(1234)
    t0 = time.perf_counter()
    if "linear" in groups:
        run_case("div127", lambda: check_div127(cp, quant))
        for qt in ALL_TYPES:
            for rows, cols, label in linear_shapes(qt, args.quick):
                run_case(
                    f"linear {qt.name}",
                    lambda qt=qt, r=rows, c=cols, lab=label: check_linear(
                        cp, quant, qt, r, c, lab, rng
                    ),
                )
    if "norm" in groups:
        run_case("norms", lambda: check_norms(cp, norms, rng))
    if "rope" in groups:
        run_case("rope", lambda: check_rope(cp, rope, rng))
    if "act" in groups:
        run_case("activations", lambda: check_activations(cp, activations, rng))
    if "attn" in groups:
        run_case("attention", lambda: check_attention(cp, attention, rng, args.quick))
    if "moe" in groups:
        run_case("moe", lambda: check_moe(cp, quant, moe, activations, rng))
    if "sample" in groups:
        run_case("sampling", lambda: check_sampling(cp, sampling, rng, args.quick))
    cp.cuda.Device().synchronize()
    text = (
        f"device: {dev.name}\n"
        + table()
        + f"\nwall {time.perf_counter() - t0:.1f} s (compile included)"
    )
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if all(r.ok for r in ROWS) else 1


if __name__ == "__main__":
    raise SystemExit(main())
