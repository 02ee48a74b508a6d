// Shared device code for every CuPy RawModule source: no #include at all, because the device
// machine's NVRTC lacks parts of the CUDA headers (crt/mma.h; DESIGN.md section 9), and the
// CI compile check runs NVRTC with no include path. Half conversions use inline PTX instead of
// cuda_fp16.h.
//
// Block layouts follow ggml (ggml/src/ggml-common.h) and the dequantizers in gguf-py
// (gguf/quants.py), which define the bit-exact meaning of each type (DESIGN.md section 6).
// Every type is decoded in chunks of 32 consecutive elements of a row: one block for the
// 32-element types, one eighth of a super-block for the K-quants, 32 scalars for F32/F16/BF16.

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef signed char i8;

#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif

// ggml type ids (enum ggml_type) -- the same numbers as orcd_toolkit.gguf.types.GGMLType.
#define QT_F32 0
#define QT_F16 1
#define QT_Q4_0 2
#define QT_Q4_1 3
#define QT_Q5_0 6
#define QT_Q5_1 7
#define QT_Q8_0 8
#define QT_Q4_K 12
#define QT_Q5_K 13
#define QT_Q6_K 14
#define QT_BF16 30
#define QT_MXFP4 39

__device__ __forceinline__ float h2f(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ u16 f2h(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

__device__ __forceinline__ float bf2f(u16 b) { return __uint_as_float(((u32)b) << 16); }

__device__ __forceinline__ u16 ld16(const u8* p) { return *(const u16*)p; }

// Exact small-integer -> float without I2F, which issues at a quarter of the FP32 rate on
// Hopper and capped the quantized matvecs at ~2 G elements/ms: 2^23 + q holds q in its low
// mantissa bits, and subtracting 2^23 (plus an integer offset) from it is exact.
__device__ __forceinline__ float u2f(u32 q) { return __uint_as_float(0x4B000000u | q) - 8388608.f; }
__device__ __forceinline__ float u2f_off(u32 q, float off) {
    return __uint_as_float(0x4B000000u | q) - (8388608.f + off);
}

// Bytes per block and elements per block, mirrored from orcd_toolkit.gguf.types.LAYOUTS
// (tests check the two tables agree).
template <int QT> struct QTraits;
template <> struct QTraits<QT_F32>  { enum { elems = 1,   bytes = 4 }; };
template <> struct QTraits<QT_F16>  { enum { elems = 1,   bytes = 2 }; };
template <> struct QTraits<QT_BF16> { enum { elems = 1,   bytes = 2 }; };
template <> struct QTraits<QT_Q4_0> { enum { elems = 32,  bytes = 18 }; };
template <> struct QTraits<QT_Q4_1> { enum { elems = 32,  bytes = 20 }; };
template <> struct QTraits<QT_Q5_0> { enum { elems = 32,  bytes = 22 }; };
template <> struct QTraits<QT_Q5_1> { enum { elems = 32,  bytes = 24 }; };
template <> struct QTraits<QT_Q8_0> { enum { elems = 32,  bytes = 34 }; };
template <> struct QTraits<QT_Q4_K> { enum { elems = 256, bytes = 144 }; };
template <> struct QTraits<QT_Q5_K> { enum { elems = 256, bytes = 176 }; };
template <> struct QTraits<QT_Q6_K> { enum { elems = 256, bytes = 210 }; };
template <> struct QTraits<QT_MXFP4>{ enum { elems = 32,  bytes = 17 }; };

// Byte offset of 32-element chunk c inside a row.
template <int QT> __device__ __forceinline__ const u8* chunk_base(const u8* row, int c) {
    if (QTraits<QT>::elems == 1) return row + (size_t)c * 32 * QTraits<QT>::bytes;
    if (QTraits<QT>::elems == 32) return row + (size_t)c * QTraits<QT>::bytes;
    return row + (size_t)(c >> 3) * QTraits<QT>::bytes;  // K-quant super-block
}

// K-quant packed 6-bit scale/min pair j (ggml-quants.c: get_scale_min_k4).
__device__ __forceinline__ void scale_min_k4(int j, const u8* q, float& sc, float& m) {
    int d, mm;
    if (j < 4) {
        d = q[j] & 63;
        mm = q[j + 4] & 63;
    } else {
        d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        mm = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
    sc = (float)d;
    m = (float)mm;
}

// Dequantize chunk c (32 consecutive elements) of a row into y[0..31].
template <int QT> __device__ __forceinline__ void dequant_chunk(const u8* row, int c, float* y);

template <> __device__ __forceinline__ void dequant_chunk<QT_F32>(const u8* row, int c, float* y) {
    const float4* p = (const float4*)chunk_base<QT_F32>(row, c);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        float4 v = p[i];
        y[4 * i] = v.x; y[4 * i + 1] = v.y; y[4 * i + 2] = v.z; y[4 * i + 3] = v.w;
    }
}

template <> __device__ __forceinline__ void dequant_chunk<QT_F16>(const u8* row, int c, float* y) {
    const uint4* p = (const uint4*)chunk_base<QT_F16>(row, c);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        uint4 v = p[i];
        u32 w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            y[8 * i + 2 * k] = h2f((u16)(w[k] & 0xFFFF));
            y[8 * i + 2 * k + 1] = h2f((u16)(w[k] >> 16));
        }
    }
}

template <> __device__ __forceinline__ void dequant_chunk<QT_BF16>(const u8* row, int c, float* y) {
    const uint4* p = (const uint4*)chunk_base<QT_BF16>(row, c);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        uint4 v = p[i];
        u32 w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            y[8 * i + 2 * k] = __uint_as_float(w[k] << 16);
            y[8 * i + 2 * k + 1] = __uint_as_float(w[k] & 0xFFFF0000u);
        }
    }
}

// Q4_0: f16 d, 16 B nibbles; element j (<16) is the low nibble of qs[j], j+16 the high one.
template <> __device__ __forceinline__ void dequant_chunk<QT_Q4_0>(const u8* row, int c, float* y) {
    const u8* b = chunk_base<QT_Q4_0>(row, c);
    float d = h2f(ld16(b));
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        u16 q = ld16(b + 2 + 2 * i);
        y[2 * i] = d * u2f_off(q & 0xF, 8.f);
        y[2 * i + 1] = d * u2f_off((q >> 8) & 0xF, 8.f);
        y[2 * i + 16] = d * u2f_off((q >> 4) & 0xF, 8.f);
        y[2 * i + 17] = d * u2f_off(q >> 12, 8.f);
    }
}

// Q4_1: f16 d, f16 m, 16 B nibbles; x = d*q + m.
template <> __device__ __forceinline__ void dequant_chunk<QT_Q4_1>(const u8* row, int c, float* y) {
    const u8* b = chunk_base<QT_Q4_1>(row, c);
    float d = h2f(ld16(b)), m = h2f(ld16(b + 2));
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        u16 q = ld16(b + 4 + 2 * i);
        y[2 * i] = d * u2f(q & 0xF) + m;
        y[2 * i + 1] = d * u2f((q >> 8) & 0xF) + m;
        y[2 * i + 16] = d * u2f((q >> 4) & 0xF) + m;
        y[2 * i + 17] = d * u2f(q >> 12) + m;
    }
}

// Q5_0: f16 d, u32 qh (bit j = 5th bit of element j), 16 B nibbles; x = d*(q-16).
template <> __device__ __forceinline__ void dequant_chunk<QT_Q5_0>(const u8* row, int c, float* y) {
    const u8* b = chunk_base<QT_Q5_0>(row, c);
    float d = h2f(ld16(b));
    u32 qh = (u32)ld16(b + 2) | ((u32)ld16(b + 4) << 16);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        u16 q = ld16(b + 6 + 2 * i);
        int j0 = 2 * i, j1 = 2 * i + 1;
        y[j0] = d * u2f_off((q & 0xF) | (((qh >> j0) & 1) << 4), 16.f);
        y[j1] = d * u2f_off(((q >> 8) & 0xF) | (((qh >> j1) & 1) << 4), 16.f);
        y[j0 + 16] = d * u2f_off(((q >> 4) & 0xF) | (((qh >> (j0 + 16)) & 1) << 4), 16.f);
        y[j1 + 16] = d * u2f_off((q >> 12) | (((qh >> (j1 + 16)) & 1) << 4), 16.f);
    }
}

// Q5_1: f16 d, f16 m, u32 qh, 16 B nibbles; x = d*q + m.
template <> __device__ __forceinline__ void dequant_chunk<QT_Q5_1>(const u8* row, int c, float* y) {
    const u8* b = chunk_base<QT_Q5_1>(row, c);
    float d = h2f(ld16(b)), m = h2f(ld16(b + 2));
    u32 qh = *(const u32*)(b + 4);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        u16 q = ld16(b + 8 + 2 * i);
        int j0 = 2 * i, j1 = 2 * i + 1;
        y[j0] = d * u2f((q & 0xF) | (((qh >> j0) & 1) << 4)) + m;
        y[j1] = d * u2f(((q >> 8) & 0xF) | (((qh >> j1) & 1) << 4)) + m;
        y[j0 + 16] = d * u2f(((q >> 4) & 0xF) | (((qh >> (j0 + 16)) & 1) << 4)) + m;
        y[j1 + 16] = d * u2f((q >> 12) | (((qh >> (j1 + 16)) & 1) << 4)) + m;
    }
}

// Q8_0: f16 d, 32 x i8.
template <> __device__ __forceinline__ void dequant_chunk<QT_Q8_0>(const u8* row, int c, float* y) {
    const u8* b = chunk_base<QT_Q8_0>(row, c);
    float d = h2f(ld16(b));
#pragma unroll
    for (int i = 0; i < 16; ++i) {
        u16 q = ld16(b + 2 + 2 * i);
        y[2 * i] = d * u2f_off((q & 0xFF) ^ 0x80, 128.f);  // int8 as offset binary
        y[2 * i + 1] = d * u2f_off((q >> 8) ^ 0x80, 128.f);
    }
}

// Q4_K: f16 d, f16 dmin, 12 B scales, 128 B qs. Chunk s (0..7) of a super-block uses the
// low (s even) or high (s odd) nibbles of qs[32*(s/2) .. +32] with scale/min pair s.
template <> __device__ __forceinline__ void dequant_chunk<QT_Q4_K>(const u8* row, int c, float* y) {
    const u8* b = chunk_base<QT_Q4_K>(row, c);
    int s = c & 7;
    float d = h2f(ld16(b)), dmin = h2f(ld16(b + 2));
    float sc, m;
    scale_min_k4(s, b + 4, sc, m);
    float d1 = d * sc, m1 = dmin * m;
    const uint4* qs = (const uint4*)(b + 16 + 32 * (s >> 1));
    int shift = (s & 1) * 4;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        uint4 v = qs[i];
        u32 w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int k = 0; k < 4; ++k) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                y[16 * i + 4 * k + e] = d1 * u2f((w[k] >> (8 * e + shift)) & 0xF) - m1;
            }
        }
    }
}

// Q5_K: f16 d, f16 dmin, 12 B scales, 32 B qh, 128 B qs; chunk s takes bit s of qh[l].
template <> __device__ __forceinline__ void dequant_chunk<QT_Q5_K>(const u8* row, int c, float* y) {
    const u8* b = chunk_base<QT_Q5_K>(row, c);
    int s = c & 7;
    float d = h2f(ld16(b)), dmin = h2f(ld16(b + 2));
    float sc, m;
    scale_min_k4(s, b + 4, sc, m);
    float d1 = d * sc, m1 = dmin * m;
    const uint4* qh = (const uint4*)(b + 16);
    const uint4* qs = (const uint4*)(b + 48 + 32 * (s >> 1));
    int shift = (s & 1) * 4;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        uint4 v = qs[i];
        uint4 h = qh[i];
        u32 w[4] = {v.x, v.y, v.z, v.w};
        u32 hw[4] = {h.x, h.y, h.z, h.w};
#pragma unroll
        for (int k = 0; k < 4; ++k) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                int q = ((w[k] >> (8 * e + shift)) & 0xF) | (((hw[k] >> (8 * e + s)) & 1) << 4);
                y[16 * i + 4 * k + e] = d1 * u2f((u32)q) - m1;
            }
        }
    }
}

// Q6_K: 128 B ql, 64 B qh, 16 x i8 scales, f16 d. Chunk s: half h = s/4 (128 elements),
// quarter qq = s%4; element l (0..31) of the chunk is
//   ((ql[64h + l + 32*(qq&1)] >> 4*(qq>>1)) & 0xF) | (((qh[32h + l] >> 2*qq) & 3) << 4), minus 32,
// scaled by d * scales[8h + 2*qq + l/16].
template <> __device__ __forceinline__ void dequant_chunk<QT_Q6_K>(const u8* row, int c, float* y) {
    const u8* b = chunk_base<QT_Q6_K>(row, c);
    int s = c & 7;
    int h = s >> 2, qq = s & 3;
    float d = h2f(ld16(b + 208));
    const u8* ql = b + 64 * h + 32 * (qq & 1);
    const u8* qh = b + 128 + 32 * h;
    const i8* sc = (const i8*)(b + 192 + 8 * h + 2 * qq);
    float d0 = d * (float)sc[0], d1 = d * (float)sc[1];
    int lshift = 4 * (qq >> 1), hshift = 2 * qq;
#pragma unroll
    for (int i = 0; i < 16; ++i) {
        u16 lo = ld16(ql + 2 * i);
        u16 hi = ld16(qh + 2 * i);
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            int l = 2 * i + e;
            int q = (((lo >> (8 * e)) >> lshift) & 0xF) | ((((hi >> (8 * e)) >> hshift) & 3) << 4);
            y[l] = (l < 16 ? d0 : d1) * u2f_off((u32)q, 32.f);
        }
    }
}

// MXFP4: u8 E8M0 exponent, 16 B of E2M1 codes; ggml stores the e2m1 values doubled and halves
// the scale (ggml-impl.h: GGML_E8M0_TO_FP32_HALF, kvalues_mxfp4).
__device__ __forceinline__ float e8m0_half(u32 e) {  // e in [0, 255]
    // 2^(e - 128): exponent field e - 1 for e >= 2, the subnormals 2^-128 and 2^-127 below
    // (two multiply-adds and a select: no shift of a register constant, no mask)
    const u32 bits = e >= 2u ? e * 0x00800000u - 0x00800000u : e * 0x00200000u + 0x00200000u;
    return __uint_as_float(bits);
}

// The doubled e2m1 magnitudes {0,1,2,3,4,6,8,12} packed as nibbles: a per-lane table lookup
// in __constant__ memory serializes when lanes index different entries (it ran at ~150 GB/s
// on an H200); a shift of a register constant does not.
__device__ __forceinline__ float e2m1x2(u32 q) {
    float mag = u2f((0xC8643210u >> (4 * (q & 7))) & 0xF);
    return (q & 8) ? -mag : mag;
}

template <> __device__ __forceinline__ void dequant_chunk<QT_MXFP4>(const u8* row, int c, float* y) {
    const u8* b = chunk_base<QT_MXFP4>(row, c);
    float d = e8m0_half(b[0]);
#pragma unroll
    for (int i = 0; i < 16; ++i) {
        u8 q = b[1 + i];
        y[i] = d * e2m1x2(q & 0xF);
        y[i + 16] = d * e2m1x2(q >> 4);
    }
}

// ---------------------------------------------------------------------------- int8 (q8_1) dots
// The batch-1 decode path in the manner of llama.cpp's mmvq (ggml-cuda/mmvq.cu, vecdotq.cuh,
// quantize.cu): x is rounded per 32 values to q8_1 (d = amax / 127, q = roundf(x / d), value
// q * f16(d): orcd_toolkit.backends.cpu.ops.round_activations(x, "q8_1")) and every weight
// chunk is dotted with it as integers (dp4a), then scaled once per chunk (per 16 for Q6_K).
// Integer weight offsets (Q4_0's -8, Q5_0's -16, Q6_K's -32) and minima (Q4_1, Q5_1, Q4_K,
// Q5_K) use the block sums of q, so the result is exactly sum(dequant(w) * q * f16(d)) up to
// f32 rounding of the per-chunk scale products. Inline PTX throughout: the device's NVRTC
// headers are incomplete (see the top of this file).

// One 32-value chunk of x in q8_1, as staged in shared memory (XQ_WORDS words per chunk: an
// odd stride, so 32 lanes reading 32 consecutive chunks hit 32 different banks).
#define XQ_WORDS 11
struct XQ8 {
    int q[8];   // the 32 int8 values, 4 per word, element order
    float d;    // f16(amax / 127) as float
    int s_lo;   // sum of q[0..15]
    int s;      // sum of all 32 q
    u32 tab;    // MXFP4: the low word of its magnitude table, in a register (prep_xq8)
};

__device__ __forceinline__ int dp4a(int a, int b, int c) {
    int r;
    asm("dp4a.s32.s32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}

// unsigned bytes of a times signed bytes of b
__device__ __forceinline__ int dp4a_us(u32 a, int b, int c) {
    int r;
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}

// Butterfly reductions over a full warp (every lane ends with the result; the same shuffle
// order everywhere, so every kernel that reduces a value this way gets the same bits).
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ u32 prmt(u32 a, u32 b, u32 sel) {
    u32 r;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(sel));
    return r;
}

__device__ __forceinline__ u32 shf_r(u32 lo, u32 hi, u32 sh) {
    u32 r;
    asm("shf.r.wrap.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(lo), "r"(hi), "r"(sh));
    return r;
}

// Not volatile: volatile asm keeps its order, which serialized the 8 independent chunks of a
// quantize_x_q8_1 batch into one long latency chain (~1 us per batch of 8 on an H200). They
// are called in warp-uniform control flow only.
__device__ __forceinline__ u32 shf_l(u32 lo, u32 hi, u32 sh) {
    u32 r;
    asm("shf.l.wrap.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(lo), "r"(hi), "r"(sh));
    return r;
}

__device__ __forceinline__ u32 redux_max(u32 v) {
    u32 r;
    asm("redux.sync.max.u32 %0, %1, 0xffffffff;" : "=r"(r) : "r"(v));
    return r;
}

__device__ __forceinline__ int redux_add(int v) {
    int r;
    asm("redux.sync.add.s32 %0, %1, 0xffffffff;" : "=r"(r) : "r"(v));
    return r;
}

// N consecutive 32-bit words from p, where p is known to be ALIGN-byte aligned (shared memory).
// Under 4-byte alignment: N + 1 aligned loads and a funnel shift each (half the instructions of
// 16-bit loads). May read up to 4 bytes past p + 4N: the staging buffers are padded for it.
template <int N, int ALIGN>
__device__ __forceinline__ void ld_words(const u8* p, u32* v) {
    if (ALIGN % 16 == 0 && N % 4 == 0) {
#pragma unroll
        for (int i = 0; i < N / 4; ++i) {
            const uint4 t = ((const uint4*)p)[i];
            v[4 * i] = t.x; v[4 * i + 1] = t.y; v[4 * i + 2] = t.z; v[4 * i + 3] = t.w;
        }
    } else if (ALIGN % 4 == 0) {
#pragma unroll
        for (int i = 0; i < N; ++i) v[i] = ((const u32*)p)[i];
    } else {
        // pointer arithmetic on p (not an integer round trip) keeps its address space
        // visible to the compiler: shared-memory segments load with LDS, not generic loads
        const u32 mis = (u32)(size_t)p & 3u;
        const u32* a = (const u32*)(p - mis);
        const u32 sh = mis * 8u;
        u32 w[N + 1];
#pragma unroll
        for (int i = 0; i <= N; ++i) w[i] = a[i];
#pragma unroll
        for (int i = 0; i < N; ++i) v[i] = shf_r(w[i], w[i + 1], sh);
    }
}

// Four 1-bit values (bits 0..3 of n) moved to bit 4 of bytes 0..3: the shifted copies of n in
// n * 0x02040810 do not overlap, so the product is their OR.
__device__ __forceinline__ u32 spread_bit4(u32 n) { return (n * 0x02040810u) & 0x10101010u; }

// K-quant 6-bit scale/min pair j as integers (get_scale_min_k4), branch-free from the three
// words of the 12 scale bytes (q is 4-byte aligned in Q4_K / Q5_K super-blocks): lanes of a
// warp hold different j, and the branchy byte version ran both sides.
__device__ __forceinline__ void scale_min_k4_int(int j, const u8* q, int& sc, int& m) {
    const u32 w0 = ((const u32*)q)[0], w1 = ((const u32*)q)[1], w2 = ((const u32*)q)[2];
    const int sh = 8 * (j & 3);
    const u32 a = w0 >> sh, b = w1 >> sh, c = w2 >> sh;
    sc = j < 4 ? (int)(a & 63) : (int)((c & 0xF) | (((a >> 6) & 3) << 4));
    m = j < 4 ? (int)(b & 63) : (int)(((c >> 4) & 0xF) | (((b >> 6) & 3) << 4));
}

// Sum over chunk c (32 elements; b = chunk_base, i.e. the block or K-quant super-block) of
// dequant(w) * q * d for x's q8_1 chunk.
template <int QT> __device__ __forceinline__ float dot_q8(const u8* b, int c, const XQ8& x);

template <> __device__ __forceinline__ float dot_q8<QT_Q4_0>(const u8* b, int, const XQ8& x) {
    u32 v[4];
    ld_words<4, 2>(b + 2, v);
    int s = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        s = dp4a((int)(v[i] & 0x0F0F0F0Fu), x.q[i], s);
        s = dp4a((int)((v[i] >> 4) & 0x0F0F0F0Fu), x.q[i + 4], s);
    }
    return h2f(ld16(b)) * x.d * (float)(s - 8 * x.s);
}

template <> __device__ __forceinline__ float dot_q8<QT_Q4_1>(const u8* b, int, const XQ8& x) {
    u32 v[4];
    ld_words<4, 4>(b + 4, v);
    int s = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        s = dp4a((int)(v[i] & 0x0F0F0F0Fu), x.q[i], s);
        s = dp4a((int)((v[i] >> 4) & 0x0F0F0F0Fu), x.q[i + 4], s);
    }
    return x.d * (h2f(ld16(b)) * (float)s + h2f(ld16(b + 2)) * (float)x.s);
}

template <> __device__ __forceinline__ float dot_q8<QT_Q5_0>(const u8* b, int, const XQ8& x) {
    u32 v[5];  // qh, then 16 B of nibbles
    ld_words<5, 2>(b + 2, v);
    int s = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const u32 lo = (v[1 + i] & 0x0F0F0F0Fu) | spread_bit4((v[0] >> (4 * i)) & 0xFu);
        const u32 hi = ((v[1 + i] >> 4) & 0x0F0F0F0Fu) | spread_bit4((v[0] >> (16 + 4 * i)) & 0xFu);
        s = dp4a((int)lo, x.q[i], s);
        s = dp4a((int)hi, x.q[i + 4], s);
    }
    return h2f(ld16(b)) * x.d * (float)(s - 16 * x.s);
}

template <> __device__ __forceinline__ float dot_q8<QT_Q5_1>(const u8* b, int, const XQ8& x) {
    u32 v[5];
    ld_words<5, 4>(b + 4, v);
    int s = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const u32 lo = (v[1 + i] & 0x0F0F0F0Fu) | spread_bit4((v[0] >> (4 * i)) & 0xFu);
        const u32 hi = ((v[1 + i] >> 4) & 0x0F0F0F0Fu) | spread_bit4((v[0] >> (16 + 4 * i)) & 0xFu);
        s = dp4a((int)lo, x.q[i], s);
        s = dp4a((int)hi, x.q[i + 4], s);
    }
    return x.d * (h2f(ld16(b)) * (float)s + h2f(ld16(b + 2)) * (float)x.s);
}

template <> __device__ __forceinline__ float dot_q8<QT_Q8_0>(const u8* b, int, const XQ8& x) {
    u32 v[8];
    ld_words<8, 2>(b + 2, v);
    int s0 = 0, s1 = 0;  // two chains: dp4a latency, not throughput, bounds one chain
#pragma unroll
    for (int i = 0; i < 8; i += 2) {
        s0 = dp4a((int)v[i], x.q[i], s0);
        s1 = dp4a((int)v[i + 1], x.q[i + 1], s1);
    }
    return h2f(ld16(b)) * x.d * (float)(s0 + s1);
}

template <> __device__ __forceinline__ float dot_q8<QT_Q4_K>(const u8* b, int c, const XQ8& x) {
    const int sub = c & 7;
    u32 v[8];
    ld_words<8, 16>(b + 16 + 32 * (sub >> 1), v);
    // the nibble is masked in place (the high one stays 16x too large, an unsigned byte) and
    // the exact sum is shifted back once: one LOP per word instead of a shift and a mask
    const int shift = (sub & 1) * 4;
    const u32 mask = 0x0F0F0F0Fu << shift;
    int s0 = 0, s1 = 0;
#pragma unroll
    for (int i = 0; i < 8; i += 2) {
        s0 = dp4a_us(v[i] & mask, x.q[i], s0);
        s1 = dp4a_us(v[i + 1] & mask, x.q[i + 1], s1);
    }
    const int s = (s0 + s1) >> shift;  // a multiple of 16 when shift is 4: exact
    int sc, m;
    scale_min_k4_int(sub, b + 4, sc, m);
    const u32 dm = *(const u32*)b;  // f16 d, f16 dmin
    return x.d * (h2f((u16)dm) * (float)(sc * s) - h2f((u16)(dm >> 16)) * (float)(m * x.s));
}

template <> __device__ __forceinline__ float dot_q8<QT_Q5_K>(const u8* b, int c, const XQ8& x) {
    const int sub = c & 7;
    u32 v[8], h[8];
    ld_words<8, 16>(b + 48 + 32 * (sub >> 1), v);
    ld_words<8, 16>(b + 16, h);
    const int shift = (sub & 1) * 4;
    const u32 hrot = (u32)(4 - sub) & 31u;
    int s = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        // bit sub of each qh byte to bit 4: one rotation left by 4 - sub, masked
        const u32 q = ((v[i] >> shift) & 0x0F0F0F0Fu) | (shf_l(h[i], h[i], hrot) & 0x10101010u);
        s = dp4a((int)q, x.q[i], s);
    }
    int sc, m;
    scale_min_k4_int(sub, b + 4, sc, m);
    const u32 dm = *(const u32*)b;  // f16 d, f16 dmin
    return x.d * (h2f((u16)dm) * (float)(sc * s) - h2f((u16)(dm >> 16)) * (float)(m * x.s));
}

template <> __device__ __forceinline__ float dot_q8<QT_Q6_K>(const u8* b, int c, const XQ8& x) {
    const int sub = c & 7, h = sub >> 2, qq = sub & 3;
    // The chunk's 32 low nibbles (ql, nibble 4 * (qq >> 1)) and 2-bit highs (qh, bits 2qq and
    // 2qq + 1 of each byte) start at one alignment (offsets differ by multiples of 32), in a
    // 210-byte block that is only 2-byte aligned. Each output word is one funnel shift of two
    // aligned words per source: the byte realignment and the nibble / high-bit placement in
    // one shift amount (the high bits need only move inside their byte, and the 0x30 mask
    // drops what crosses), instead of a realignment shift, then a shift or rotation.
    const u8* pl = b + 64 * h + 32 * (qq & 1);
    const u32 mis = (u32)(size_t)pl & 3u;
    const u32 s_lo = 8 * mis + 4 * (qq >> 1);
    int s_hi = (int)(8 * mis) - (4 - 2 * qq);  // H << (4 - 2qq): from one word earlier if < 0
    const u32* al = (const u32*)(pl - mis);
    const u32* ah = (const u32*)(b + 128 + 32 * h - mis) - (s_hi < 0 ? 1 : 0);
    const u32 sh_hi = (u32)s_hi & 31u;
    u32 wl[9], wh[9];
#pragma unroll
    for (int i = 0; i < 9; ++i) {
        wl[i] = al[i];
        wh[i] = ah[i];
    }
    int s0 = 0, s1 = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const u32 q = (shf_r(wl[i], wl[i + 1], s_lo) & 0x0F0F0F0Fu)
                    | (shf_r(wh[i], wh[i + 1], sh_hi) & 0x30303030u);
        if (i < 4) s0 = dp4a((int)q, x.q[i], s0);
        else s1 = dp4a((int)q, x.q[i], s1);
    }
    const i8* sc = (const i8*)(b + 192 + 8 * h + 2 * qq);
    const int t = (int)sc[0] * (s0 - 32 * x.s_lo) + (int)sc[1] * (s1 - 32 * (x.s - x.s_lo));
    return h2f(ld16(b + 208)) * x.d * (float)t;
}

// MXFP4: kvalues_mxfp4 (e2m1 doubled: 0 1 2 3 4 6 8 12, bit 3 the sign) through prmt. The
// four nibbles in the low 16 bits of a selector pick bytes of the magnitude table, and a set
// bit 3 makes prmt return the selected byte's sign instead, 0 for these positive entries:
// prmt(table, v) is the magnitudes of the positive values (0 for the negative ones), and
// prmt(table, v ^ 0x8888) those of the negative ones. Two dp4a sums then give sum(w q) =
// pos - neg with no sign select and no byte reordering: x's words are pre-permuted to the
// nibble order (prep_xq8) once per chunk, which R rows share.
// e: the block's scale byte, zero-extended
__device__ __forceinline__ float dot_mxfp4_words(const u32* v, u32 e, const XQ8& x) {
    constexpr u32 T1 = 0x0C080604u;
    const u32 T0 = x.tab;
    int sp = 0, sn = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const u32 lo = v[i], hi = v[i] >> 16;  // nibbles of elements 4i, 4i+16, 4i+1, 4i+17 / +2, +3
        sp = dp4a((int)prmt(T0, T1, lo), x.q[2 * i], sp);
        sn = dp4a((int)prmt(T0, T1, lo ^ 0x8888u), x.q[2 * i], sn);
        sp = dp4a((int)prmt(T0, T1, hi), x.q[2 * i + 1], sp);
        sn = dp4a((int)prmt(T0, T1, hi ^ 0x8888u), x.q[2 * i + 1], sn);
    }
    return e8m0_half(e) * x.d * (float)(sp - sn);
}

template <> __device__ __forceinline__ float dot_q8<QT_MXFP4>(const u8* b, int, const XQ8& x) {
    u32 v[4];
    ld_words<4, 1>(b + 1, v);
    return dot_mxfp4_words(v, b[0], x);
}

// The same dot for a block whose first code byte is at shared-memory address s (its scale
// byte at s - 1), as a 32-bit address: the aligned floor is one mask and the funnel shift
// amount one shift (shf.r.wrap takes it mod 32), where the pointer form spent five
// instructions per block on the misalignment. Volatile: the loads must stay after the
// cp.async wait that makes the bytes visible.
__device__ __forceinline__ float dot_mxfp4_smem(u32 s, const XQ8& x) {
    const u32 a = s & ~3u, sh = s << 3;
    u32 w[5], e;
    asm volatile("ld.shared.u32 %0, [%1];" : "=r"(w[0]) : "r"(a));
    asm volatile("ld.shared.u32 %0, [%1+4];" : "=r"(w[1]) : "r"(a));
    asm volatile("ld.shared.u32 %0, [%1+8];" : "=r"(w[2]) : "r"(a));
    asm volatile("ld.shared.u32 %0, [%1+12];" : "=r"(w[3]) : "r"(a));
    asm volatile("ld.shared.u32 %0, [%1+16];" : "=r"(w[4]) : "r"(a));
    asm volatile("ld.shared.u8 %0, [%1+-1];" : "=r"(e) : "r"(s));
    u32 v[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) v[i] = shf_r(w[i], w[i + 1], sh);
    return dot_mxfp4_words(v, e, x);
}

// Correctly rounded a / 127 without the IEEE division's slow-path branch (Markstein: with
// y = RN(1/127) and q within an ulp of a/127, RN(q + RN(a - q*127) * y) is RN(a/127)); the
// parity command checks it against a / 127.f for every float of a binade and the subnormals.
__device__ __forceinline__ float div127(float a) {
    const float y = 1.f / 127.f;
    const float q = a * y;
    return fmaf(fmaf(-q, 127.f, a), y, q);
}

__device__ __forceinline__ float rcp_approx(float x) {
    float r;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
}

// Block-cooperative: NB vectors x [NB][x_ld] (f32, global; cols used of each) -> q8_1 chunks
// in shared memory, vector-major (XQ_WORDS words each). Warp w takes chunks w, w + nwarps, ...
// 8 at a time with all 8 loads issued first; lane l quantizes element l, the warp's amax and
// sums come from redux.sync (|x| as u32 bits orders like the floats). q must equal
// roundf(x / d) with the IEEE quotient (NumPy's): the quotient is taken as x * rcp(d) (error
// < 3e-5 at |x/d| <= 127.5) and only when some element of the batch lies within 2^-14 of a
// rounding tie (or d is subnormal) does the warp redo the batch with IEEE divisions (a few
// per cent of batches). Straight-line code for the common case: the per-element IEEE
// division and its branch made the prologue ~1 us per 8 chunks.
// Which block sums of q the dot of a type reads (Q8_0 and MXFP4 none, Q6_K both halves).
template <int QT> struct Q8Sums { enum { any = QT != QT_Q8_0 && QT != QT_MXFP4, lo = QT == QT_Q6_K }; };

// NB = 0: the number of vectors is the runtime n_rows (the standalone quantize kernel); warp
// and nwarps: this warp's index among the nwarps that share the work. all_sums (block-uniform):
// fill both block sums whatever QT reads, for a rounding that other types' products will
// share (the matvec's write-out of its x).
template <int QT, int NB>
__device__ __forceinline__ void quantize_x_q8_1(const float* __restrict__ x, int cols,
                                                long long x_ld, u32* xs, int warp, int nwarps,
                                                int n_rows = 1, bool all_sums = false) {
    const int lane = threadIdx.x & 31;
    const int nchunks = cols >> 5, total = (NB == 0 ? n_rows : NB) * nchunks;
    // the loads of batch k + 1 are issued before batch k is quantized: one L2 round trip for
    // the whole vector instead of one per batch (wide rows have 5-9 batches per warp)
    auto load8 = [&](int c0, float* v) {
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            const int c = c0 + j * nwarps;
            const int b = NB == 1 ? 0 : c / nchunks, k = NB == 1 ? c : c - b * nchunks;
            v[j] = c < total ? x[b * x_ld + k * 32 + lane] : 0.f;
        }
    };
    float vn[8];
    load8(warp, vn);
    for (int c0 = warp; c0 < total; c0 += 8 * nwarps) {
        float v[8], d[8];
        int q[8];
        bool near = false;
#pragma unroll
        for (int j = 0; j < 8; ++j) v[j] = vn[j];
        if (c0 + 8 * nwarps < total) load8(c0 + 8 * nwarps, vn);
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            const float amax = __uint_as_float(redux_max(__float_as_uint(fabsf(v[j]))));
            d[j] = div127(amax);
            const float t = v[j] * rcp_approx(d[j]);
            const float at = fabsf(t);
            near |= amax != 0.f && (d[j] < 1.17549435e-38f || fabsf(at - floorf(at) - 0.5f) < 6.1035156e-05f);
            q[j] = amax == 0.f ? 0 : (int)roundf(t);
        }
        if (__any_sync(0xffffffffu, near)) {
#pragma unroll
            for (int j = 0; j < 8; ++j) q[j] = d[j] == 0.f ? 0 : (int)roundf(v[j] / d[j]);
        }
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            const int c = c0 + j * nwarps;
            const int qj = max(-127, min(127, q[j]));
            const int s_lo = Q8Sums<QT>::lo || all_sums ? redux_add(lane < 16 ? qj : 0) : 0;
            const int s = Q8Sums<QT>::any || all_sums ? redux_add(qj) : 0;
            if (c < total) {
                u32* dst = xs + c * XQ_WORDS;
                ((i8*)dst)[lane] = (i8)qj;
                if (lane == 0) {
                    dst[8] = __float_as_uint(h2f(f2h(d[j])));
                    dst[9] = (u32)s_lo;
                    dst[10] = (u32)s;
                }
            }
        }
    }
}

// Programmatic dependent launch (sm_90): a kernel launched with the programmatic stream
// serialization attribute (kernels/_launch.py launch_pdl) may start while the kernel before it
// on the stream still runs, once every block of that one has called pdl_trigger (or exited);
// it must call pdl_wait before it reads anything an earlier kernel writes, or writes anything
// an earlier kernel reads. Work that depends only on constant data (a matvec's weight
// copies) goes before the wait: the next product's weight stream starts under the previous
// product's tail and launch gap. Launched without the attribute, both are no-ops.
__device__ __forceinline__ void pdl_trigger() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }
__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }

// cp.async (sm_80+): 16-byte global -> shared copies that need no registers, so a warp can
// keep several segments in flight (inline PTX; no cuda_pipeline headers on the device).
__device__ __forceinline__ u32 smem_u32(const void* p) {
    u32 a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}
__device__ __forceinline__ void cp_async16(u32 saddr, const void* g) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(saddr), "l"(g) : "memory");
}
__device__ __forceinline__ void cp_async4(u32 saddr, const void* g) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(saddr), "l"(g) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

// Bulk (TMA) copies (sm_90): one instruction moves a contiguous, 16-byte aligned run from
// global to shared memory and counts its bytes on an mbarrier, which the consumers wait on
// (phase parity flips with each use). Inline PTX, as the rest.
__device__ __forceinline__ void mbar_init(u32 bar, u32 count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}
// makes the initialised barriers visible to the async proxy that completes them
__device__ __forceinline__ void fence_mbar_init() {
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}
// orders this thread's earlier generic-proxy shared accesses before later async-proxy writes
// (a slot the warp has read is overwritten by the next bulk copy)
__device__ __forceinline__ void fence_proxy_async() {
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}
__device__ __forceinline__ void mbar_expect_tx(u32 bar, u32 bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ void cp_bulk(u32 dst, const void* src, u32 bytes, u32 bar) {
    asm volatile(
        "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
        ::"r"(dst), "l"(src), "r"(bytes), "r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_wait(u32 bar, u32 parity) {
    u32 done;
    do {
        asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; "
                     "selp.u32 %0, 1, 0, p; }" : "=r"(done) : "r"(bar), "r"(parity) : "memory");
    } while (!done);
}

// x's q words as dot_q8<QT> reads them: MXFP4 takes them in the order of its nibbles (word
// 2i: elements 4i, 4i+16, 4i+1, 4i+17; word 2i+1: 4i+2, 4i+18, 4i+3, 4i+19); others as stored.
// prmt takes one MXFP4 table word as a register: as a literal (or any value the compiler
// proves warp-uniform, which it keeps in a uniform register) it was copied into a register
// before each of the 16 prmt of a chunk, a sixth of the int8 MXFP4 matvec's instructions.
// Each lane reads its own lane's word through a shuffle with a per-lane source: the compiler
// cannot prove that uniform or constant, so the table stays in one ordinary register for the
// whole kernel. Call with the whole warp converged (kernel entry).
template <int QT> __device__ __forceinline__ u32 mxfp4_tab() {
    if (QT != QT_MXFP4) return 0u;
    const u32 lane = threadIdx.x & 31u;
    return __shfl_sync(0xffffffffu, 0x03020100u ^ lane, (int)lane) ^ lane;
}

// tab: mxfp4_tab() of the calling kernel (MXFP4 only)
template <int QT> __device__ __forceinline__ void prep_xq8(XQ8& x, u32 tab) {
    x.tab = tab;
    if (QT == QT_MXFP4) {
        int p[8];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            p[2 * i] = (int)prmt((u32)x.q[i], (u32)x.q[i + 4], 0x5140u);
            p[2 * i + 1] = (int)prmt((u32)x.q[i], (u32)x.q[i + 4], 0x7362u);
        }
#pragma unroll
        for (int i = 0; i < 8; ++i) x.q[i] = p[i];
    }
}

// The row-group matvec's wide variant keeps x's chunks in shared memory padded to 12 words
// (48 bytes), so a chunk is three 16-byte loads where XQ_WORDS' odd stride takes eleven
// 4-byte ones (the first layout lost to the segment kernel on 3 of 7 wide shapes). ncu counts
// ~0.6 bank conflicts per such load; on 9216x3072 Q4_K the product still ran as fast as with
// x in registers.
#define XQ_WIDE_WORDS 12
__device__ __forceinline__ void load_xq8_wide(const u32* xs, int c, XQ8& x) {
    const uint4* p = (const uint4*)(xs + c * XQ_WIDE_WORDS);
    const uint4 a = p[0], b = p[1], e = p[2];
    x.q[0] = (int)a.x; x.q[1] = (int)a.y; x.q[2] = (int)a.z; x.q[3] = (int)a.w;
    x.q[4] = (int)b.x; x.q[5] = (int)b.y; x.q[6] = (int)b.z; x.q[7] = (int)b.w;
    x.d = __uint_as_float(e.x);
    x.s_lo = (int)e.y;
    x.s = (int)e.z;
}

__device__ __forceinline__ void load_xq8(const u32* xs, int c, XQ8& x) {
    const u32* p = xs + c * XQ_WORDS;
#pragma unroll
    for (int i = 0; i < 8; ++i) x.q[i] = (int)p[i];
    x.d = __uint_as_float(p[8]);
    x.s_lo = (int)p[9];
    x.s = (int)p[10];
}
