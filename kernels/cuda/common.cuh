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
__device__ __forceinline__ float e8m0_half(u8 e) {
    u32 bits = e < 2 ? (0x00200000u << e) : ((u32)(e - 1) << 23);
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
