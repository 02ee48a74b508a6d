// Quantized matrix-vector (decode) and matrix-matrix (prefill) products that read GGUF blocks
// directly, and the embedding lookup from a quantized table. Prepended with common.cuh.
//
// Layout: W is [rows, cols] in numpy order (ggml ne reversed): row r is row_bytes bytes of
// blocks. x is [n, cols] float32, y is [n, rows] float32: y = x @ W.T (+ bias).

// ---------------------------------------------------------------------------- matvec
// Decode path. Each warp (or KS warps splitting the row's segments, for short and wide
// matrices that would otherwise leave the GPU idle) owns R consecutive output rows and streams them in segments of 32
// chunks: the segment bytes are copied to shared memory with coalesced 16-byte loads (the
// blocks themselves are 17..210 bytes, so a lane reading "its" block directly would issue
// many narrow, scattered loads: that was 4-20x slower on an H200), then lane i decodes chunk
// i of the segment from shared memory and dots it with the NB input vectors. With R > 1 the
// x chunk a lane loads serves all R rows. F32/F16/BF16 rows are already vector loads and skip
// the staging. The staged copy starts at the row's 16-byte-aligned floor and may read up to
// 15 bytes past the end of the last row: device allocations are 256-byte granular.
//
// Optional MoE indirection: with expert_ids != nullptr, grid.y = number of (token, slot)
// pairs and pair p reads expert expert_ids[p] (its matrix starts at W + expert_ids[p] *
// expert_stride bytes) with input x + (p / x_div) * x_stride, adds bias + expert_ids[p] *
// rows and writes y + p * y_stride.
template <int QT> struct SegBytes {
    enum { value = QTraits<QT>::elems == 256 ? 4 * QTraits<QT>::bytes
                   : QTraits<QT>::elems == 32 ? 32 * QTraits<QT>::bytes : 0 };
};

template <int QT, int NB, int R, int KS>
__global__ void __launch_bounds__(128) qmatvec(
    const u8* __restrict__ W, const float* __restrict__ x, float* __restrict__ y,
    const float* __restrict__ bias, int rows, int cols, long long row_bytes,
    const int* __restrict__ expert_ids, long long expert_stride, int x_div, long long x_stride,
    long long y_stride) {
    constexpr int SEG = SegBytes<QT>::value;
    constexpr int SEG_PAD = SEG > 0 ? ((SEG + 15) / 16 + 1) * 16 : 16;
    __shared__ __align__(16) u8 stage[4][R][SEG_PAD];
    __shared__ float red[4][R][NB];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int kpart = warp % KS;  // KS warps split one row group's segments
    const int r0 = (blockIdx.x * (4 / KS) + warp / KS) * R;
    const bool active = r0 < rows;
    if (KS == 1 && !active) return;  // with KS > 1 every warp must reach __syncthreads
    const int p = blockIdx.y;
    const u8* Wm = W;
    const float* xp = x;
    float* yp = y;
    const float* bp = bias;
    if (expert_ids != nullptr) {
        const int e = expert_ids[p];
        Wm = W + (long long)e * expert_stride;
        if (bias != nullptr) bp = bias + (long long)e * rows;
        xp = x + (long long)(p / x_div) * x_stride;
        yp = y + (long long)p * y_stride;
    }
    const int nchunks = cols >> 5;
    float acc[R][NB];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int b = 0; b < NB; ++b) acc[r][b] = 0.f;
    for (int c0 = active ? kpart * 32 : nchunks; c0 < nchunks; c0 += 32 * KS) {
        const int c = c0 + lane;
        const u8* src[R];
        if (SEG > 0) {
            const long long seg_off = (long long)(c0 >> 5) * SEG;
            const int seg_len = (int)min((long long)SEG, row_bytes - seg_off);
            // every load of the R row segments is issued before the first store to shared
            // memory, so a lane has up to R * VPL 16-byte loads in flight (a plain copy loop
            // waited for each load in turn: 3x slower)
            constexpr int VPL = (SEG_PAD / 16 + 31) / 32;
            uint4 tmp[R][VPL];
            int nvec[R];
#pragma unroll
            for (int r = 0; r < R; ++r) {
                const int row = min(r0 + r, rows - 1);
                const u8* g = Wm + (long long)row * row_bytes + seg_off;
                const int mis = (int)((size_t)g & 15);
                const uint4* a = (const uint4*)(g - mis);
                nvec[r] = (mis + seg_len + 15) >> 4;
#pragma unroll
                for (int v = 0; v < VPL; ++v) {
                    const int i = lane + 32 * v;
                    if (i < nvec[r]) tmp[r][v] = a[i];
                }
                src[r] = stage[warp][r] + mis;
            }
#pragma unroll
            for (int r = 0; r < R; ++r) {
                uint4* dst = (uint4*)stage[warp][r];
#pragma unroll
                for (int v = 0; v < VPL; ++v) {
                    const int i = lane + 32 * v;
                    if (i < nvec[r]) dst[i] = tmp[r][v];
                }
            }
            __syncwarp();
        }
        if (c < nchunks) {
            float xr[NB == 1 ? 32 : 1];
            if (NB == 1) {
                const float4* xv = (const float4*)(xp + c * 32);
#pragma unroll
                for (int i = 0; i < 8; ++i) {
                    float4 v = xv[i];
                    xr[4 * i] = v.x; xr[4 * i + 1] = v.y; xr[4 * i + 2] = v.z; xr[4 * i + 3] = v.w;
                }
            }
#pragma unroll
            for (int r = 0; r < R; ++r) {
                float w[32];
                if (SEG > 0) {
                    dequant_chunk<QT>(src[r], c & 31, w);
                } else {
                    dequant_chunk<QT>(Wm + (long long)min(r0 + r, rows - 1) * row_bytes, c, w);
                }
                if (NB == 1) {
                    float s = 0.f;
#pragma unroll
                    for (int i = 0; i < 32; ++i) s += w[i] * xr[NB == 1 ? i : 0];
                    acc[r][0] += s;
                } else {
#pragma unroll
                    for (int b = 0; b < NB; ++b) {
                        const float4* xv = (const float4*)(xp + (long long)b * cols + c * 32);
                        float s = 0.f;
#pragma unroll
                        for (int i = 0; i < 8; ++i) {
                            float4 v = xv[i];
                            s += w[4 * i] * v.x + w[4 * i + 1] * v.y + w[4 * i + 2] * v.z + w[4 * i + 3] * v.w;
                        }
                        acc[r][b] += s;
                    }
                }
            }
        }
        if (SEG > 0) __syncwarp();
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
#pragma unroll
        for (int b = 0; b < NB; ++b) {
            acc[r][b] = warp_sum(acc[r][b]);
        }
    }
    if (KS > 1) {
        if (lane == 0) {
#pragma unroll
            for (int r = 0; r < R; ++r)
#pragma unroll
                for (int b = 0; b < NB; ++b) red[warp][r][b] = acc[r][b];
        }
        __syncthreads();
        if (kpart == 0 && lane == 0) {
#pragma unroll
            for (int r = 0; r < R; ++r)
#pragma unroll
                for (int b = 0; b < NB; ++b) {
                    float s = 0.f;
                    for (int k = 0; k < KS; ++k) s += red[warp + k][r][b];
                    acc[r][b] = s;
                }
        }
    }
    if (lane == 0 && kpart == 0 && active) {
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const int row = r0 + r;
            if (row >= rows) break;
            float bv = bp != nullptr ? bp[row] : 0.f;
#pragma unroll
            for (int b = 0; b < NB; ++b) yp[(long long)b * rows + row] = acc[r][b] + bv;
        }
    }
}

// ---------------------------------------------------------------------------- matvec, pipelined
// Batch-1 decode for the block types (the hot path of a decode step). A grid of resident
// warps walks (row group, segment) items; while a warp decodes item i from shared memory,
// the 16-byte loads of item i+1 are already in flight in registers, so memory latency
// overlaps the decode instead of following it (the unpipelined kernel above waits for every
// segment before decoding it). R rows per group share each x chunk.
template <int QT, int R>
__global__ void __launch_bounds__(128) qmatvec_pipe(
    const u8* __restrict__ W, const float* __restrict__ x, float* __restrict__ y,
    const float* __restrict__ bias, int rows, int cols, long long row_bytes) {
    constexpr int SEG = SegBytes<QT>::value;
    static_assert(SEG > 0, "block types only");
    constexpr int SEG_PAD = ((SEG + 15) / 16 + 1) * 16;
    constexpr int VPL = (SEG_PAD / 16 + 31) / 32;
    __shared__ __align__(16) u8 stage[4][R][SEG_PAD];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int gw = blockIdx.x * 4 + warp, nw = gridDim.x * 4;
    const int n_groups = (rows + R - 1) / R;
    const int nchunks = cols >> 5, nseg = (nchunks + 31) >> 5;
    const int my_groups = gw < n_groups ? (n_groups - gw + nw - 1) / nw : 0;
    const int n_items = my_groups * nseg;
    // x staged once per block, chunk c at xs[33 c]: a lane reading its own chunk straight
    // from global memory touches a different 128-byte line per lane (the loads, not the
    // weights, were the limit: 2x slower with one row per warp than with four); the pad
    // makes both the staging stores and the per-chunk reads bank-conflict free
    extern __shared__ float xs[];
    for (int i = threadIdx.x; i < (cols >> 2); i += blockDim.x) {
        const float4 v = ((const float4*)x)[i];
        float* d = xs + (i >> 3) * 33 + ((i & 7) << 2);
        d[0] = v.x; d[1] = v.y; d[2] = v.z; d[3] = v.w;
    }
    __syncthreads();
    if (n_items == 0) return;
    uint4 tmp[R][VPL];
    int mis[R], nvec[R];
    auto load = [&](int item) {
        const int g = gw + (item / nseg) * nw, seg = item % nseg;
        const long long seg_off = (long long)seg * SEG;
        const int seg_len = (int)min((long long)SEG, row_bytes - seg_off);
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const int row = min(g * R + r, rows - 1);
            const u8* gp = W + (long long)row * row_bytes + seg_off;
            mis[r] = (int)((size_t)gp & 15);
            nvec[r] = (mis[r] + seg_len + 15) >> 4;
            const uint4* a = (const uint4*)(gp - mis[r]);
#pragma unroll
            for (int v = 0; v < VPL; ++v) {
                const int i = lane + 32 * v;
                if (i < nvec[r]) tmp[r][v] = a[i];
            }
        }
    };
    load(0);
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = 0.f;
    for (int it = 0; it < n_items; ++it) {
        const int g = gw + (it / nseg) * nw, seg = it % nseg;
        int cur_mis[R];
        __syncwarp();  // the previous item's decode is done with the stage
#pragma unroll
        for (int r = 0; r < R; ++r) {
            uint4* dst = (uint4*)stage[warp][r];
#pragma unroll
            for (int v = 0; v < VPL; ++v) {
                const int i = lane + 32 * v;
                if (i < nvec[r]) dst[i] = tmp[r][v];
            }
            cur_mis[r] = mis[r];
        }
        __syncwarp();
        if (it + 1 < n_items) load(it + 1);
        const int c = seg * 32 + lane;
        if (c < nchunks) {
            float xr[32];
            const float* xc = xs + c * 33;
#pragma unroll
            for (int i = 0; i < 32; ++i) xr[i] = xc[i];
#pragma unroll
            for (int r = 0; r < R; ++r) {
                float w[32];
                dequant_chunk<QT>(stage[warp][r] + cur_mis[r], lane, w);
                float s = 0.f;
#pragma unroll
                for (int i = 0; i < 32; ++i) s += w[i] * xr[i];
                acc[r] += s;
            }
        }
        if (seg == nseg - 1) {
#pragma unroll
            for (int r = 0; r < R; ++r) {
                const float s = warp_sum(acc[r]);
                const int row = g * R + r;
                if (lane == 0 && row < rows) y[row] = s + (bias != nullptr ? bias[row] : 0.f);
                acc[r] = 0.f;
            }
        }
    }
}

// ---------------------------------------------------------------------------- matvec, int8
// The default decode path for the block types (llama.cpp mmvq's arithmetic on the segment walk
// of qmatvec_pipe): each block first rounds its NB input vectors to q8_1 chunks in shared
// memory (quantize_x_q8_1; the weight copies of the first S-1 items are already in flight),
// then every lane dots one 32-element weight chunk of each of its R rows with integer dp4a
// (dot_q8<QT>) and scales once per chunk. The f32 kernels were bound by the per-element decode
// arithmetic (~2 G elements/ms whatever the type); here a chunk costs ~30-60 instructions, and
// the limit becomes the bytes in flight: each warp keeps S-1 items (R row segments each)
// streaming into an S-deep shared-memory ring with cp.async while it computes on the oldest.
// MoE indirection as in qmatvec (NB = 1): grid.y enumerates (token, slot) pairs when
// expert_ids is set. Without it, the NB vectors are x + b * cols, their outputs y + b * rows.
// Two products of one x in one launch (MoE gate and up: W2 != nullptr): grid.y is 2 * pairs,
// and y-blocks from `pairs` on read W2 and write y2 (bias2): one grid streams both matrices
// of every selected expert, with x rounded once (xq) instead of one ramp and tail per matrix.
// xq_out (dense, xq == nullptr): block 0 also stores its rounding of x there, with both block
// sums, so the next products of the same x (k and v after q, up after gate) read it as xq
// instead of rounding x in every block again; it costs no launch.
template <int QT> struct SegPadQ8 {
    // one 16-byte vector more than qmatvec_pipe: ld_words may read 4 bytes past a chunk
    enum { value = ((SegBytes<QT>::value + 15) / 16 + 2) * 16 };
};

// Sum each of R per-lane values over the warp with fewer shuffles than R separate
// butterflies: the first log2(R) steps halve the set of rows each lane carries (a transpose),
// the rest reduce one value. Lane l ends with the total of row ((l >> 4) & 1) * 2 + ((l >> 3)
// & 1) for R = 4, (l >> 4) & 1 for R = 2, row 0 for R = 1; lanes with l % (32 / R) == 0 hold
// distinct rows. R = 4: 6 shuffles instead of 20.
template <int R>
__device__ __forceinline__ float reduce_rows(const float* v, int lane) {
    float k;
    if (R == 4) {
        const bool hi16 = lane & 16, hi8 = lane & 8;
        float k0 = hi16 ? v[2] : v[0], k1 = hi16 ? v[3] : v[1];
        k0 += __shfl_xor_sync(0xffffffffu, hi16 ? v[0] : v[2], 16);
        k1 += __shfl_xor_sync(0xffffffffu, hi16 ? v[1] : v[3], 16);
        k = hi8 ? k1 : k0;
        k += __shfl_xor_sync(0xffffffffu, hi8 ? k0 : k1, 8);
#pragma unroll
        for (int o = 4; o > 0; o >>= 1) k += __shfl_xor_sync(0xffffffffu, k, o);
    } else if (R == 2) {
        const bool hi16 = lane & 16;
        k = hi16 ? v[1] : v[0];
        k += __shfl_xor_sync(0xffffffffu, hi16 ? v[0] : v[1], 16);
#pragma unroll
        for (int o = 8; o > 0; o >>= 1) k += __shfl_xor_sync(0xffffffffu, k, o);
    } else {
        k = warp_sum(v[0]);
    }
    return k;
}

// What grid.y slice blockIdx.y of an int8 product reads and writes: the second matrix of a
// fused pair (W2 != nullptr: slices from `pairs` on read W2, bias2, write y2), and with MoE
// indirection the expert of (token, slot) pair p, its input row p / x_div and output row p.
struct Product {
    const u8* W;
    const float* x;
    float* y;
    const float* bias;
    int p;
    long long x_row;  // the input vector's index (0 without experts)
};
__device__ __forceinline__ Product product_of(
    const u8* W, const float* x, float* y, const float* bias, int rows,
    const int* __restrict__ expert_ids, long long expert_stride, int x_div, long long x_stride,
    long long y_stride, const u8* W2, const float* bias2, float* y2, int pairs) {
    Product pr{W, x, y, bias, (int)blockIdx.y, 0};
    if (W2 != nullptr && pr.p >= pairs) {
        pr.p -= pairs;
        pr.W = W2;
        pr.y = y2;
        pr.bias = bias2;
    }
    if (expert_ids != nullptr) {
        pdl_wait();  // the expert ids come from the routing kernel before this one
        const int e = expert_ids[pr.p];
        pr.W += (long long)e * expert_stride;
        if (pr.bias != nullptr) pr.bias += (long long)e * rows;
        pr.x_row = pr.p / x_div;
        pr.x = x + pr.x_row * x_stride;
        pr.y += (long long)pr.p * y_stride;
    }
    return pr;
}

// reduce_rows<RR> over R = 8 rows runs twice, on rows 0-3 and 4-7
template <int R> struct ReducedRows { enum { value = R > 4 ? 4 : R }; };
// the row (of RR) whose total reduce_rows<RR> leaves in this lane, and whether the lane is
// the first of those holding it
template <int RR> __device__ __forceinline__ int reduced_row(int lane) {
    return RR == 4 ? ((lane >> 4) & 1) * 2 + ((lane >> 3) & 1) : (RR == 2 ? (lane >> 4) & 1 : 0);
}
template <int RR> __device__ __forceinline__ bool holds_row(int lane) {
    return (lane & (32 / RR - 1)) == 0;
}

template <int QT, int R, int NB, int S, int KS>
__global__ void __launch_bounds__(128) qmatvec_q8(
    const u8* __restrict__ W, const float* __restrict__ x, float* __restrict__ y,
    const float* __restrict__ bias, int rows, int cols, long long row_bytes,
    const int* __restrict__ expert_ids, long long expert_stride, int x_div, long long x_stride,
    long long y_stride, const u32* __restrict__ xq, u32* __restrict__ xq_out,
    const u8* __restrict__ W2, const float* __restrict__ bias2, float* __restrict__ y2,
    int pairs) {
    constexpr int SEG = SegBytes<QT>::value;
    static_assert(SEG > 0, "block types only");
    constexpr int SEG_PAD = SegPadQ8<QT>::value;
    constexpr int VPL = (SEG_PAD / 16 + 31) / 32;
    __shared__ __align__(16) u8 stage[4][S][R][SEG_PAD];
    // [NB][cols / 32][XQ_WORDS] words (one extern name per module, 16-byte aligned for the
    // row-group kernel's copies)
    extern __shared__ __align__(16) float xs_dyn[];
    u32* xs = (u32*)xs_dyn;
    static_assert(KS == 1 || KS == 4, "a row group is one warp's or the whole block's");
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int n_groups = (rows + R - 1) / R;
    const int nchunks = cols >> 5, nseg = (nchunks + 31) >> 5;
    // KS = 1: warp gw owns groups gw, gw + nw, ... and walks all their segments. KS = 4 (wide,
    // short matrices, which leave too few warps otherwise): the block owns a group and warp w
    // takes its segments w, w + 4, ...; every warp walks the same number of items per group
    // (empty ones past the row's end), so the partial sums meet at a __syncthreads.
    const int gw = KS == 1 ? blockIdx.x * 4 + warp : blockIdx.x;
    const int nw = KS == 1 ? gridDim.x * 4 : gridDim.x;
    const int spg = KS == 1 ? nseg : (nseg + KS - 1) / KS;  // items per group
    const int seg0 = KS == 1 ? 0 : warp;
    const int my_groups = gw < n_groups ? (n_groups - gw + nw - 1) / nw : 0;
    const int n_items = my_groups * spg;
    const Product pr = product_of(W, x, y, bias, rows, expert_ids, expert_stride, x_div,
                                  x_stride, y_stride, W2, bias2, y2, pairs);
    const u8* Wm = pr.W;
    const float* xp = pr.x;
    float* yp = pr.y;
    const float* bp = pr.bias;
    const int p = pr.p;
    // (row group, segment) of the next item to issue and of the item being computed, advanced
    // incrementally: a division by nseg per item cost more than the dot products of a chunk
    int iss_g = gw, iss_seg = seg0, cur_g = gw, cur_seg = seg0;
    // 32-bit byte offsets inside the matrix (the wrapper checks it is under 4 GiB): the 64-bit
    // address arithmetic per row and item was a good part of the instructions per chunk
    const u32 rb = (u32)row_bytes, wlo = (u32)(size_t)Wm & 15u;
    // Row r of group g starts at (g R + r) rb, except that rows past the matrix's end read
    // its last row: per item the group's first offset and its last valid row are computed
    // once, and each row adds min(r, last) * rb (two instructions; the clamped product per
    // row, recomputed by issue() and by the consumer, was a fifth of the loop's instructions)
    auto item_base = [&](int g, int seg) -> u32 {
        return (u32)g * (u32)R * rb + (u32)seg * (u32)SEG;
    };
    auto row_off = [&](u32 base, int last, int r) -> u32 { return base + (u32)min(r, last) * rb; };
    // this warp's ring in shared memory as a 32-bit address (cvta once, not per copy)
    const u32 ring = smem_u32(&stage[warp][0][0][0]);
    // every lane copies its 16-byte vectors of the R row segments of the next item into ring
    // slot item % S, from the segment's 16-byte-aligned floor; one commit group per item
    // (empty past the end, so group counting stays uniform). (Bulk TMA copies, one per row
    // segment issued by lane r, measured no faster on any shape: MXFP4 experts 17.4 against
    // 17.0 us, Q6_K 151936x1536 67.6 against 65.2 us; H200.)
    auto issue = [&](int item) {
        if (item < n_items && iss_seg < nseg) {
            const int seg_len = min(SEG, (int)(rb - (u32)iss_seg * (u32)SEG));
            const u32 base = item_base(iss_g, iss_seg);
            const int last = rows - 1 - iss_g * R;
#pragma unroll
            for (int r = 0; r < R; ++r) {
                const u32 off = row_off(base, last, r);
                const u32 mis = (wlo + off) & 15u;
                const int nvec = ((int)mis + seg_len + 15) >> 4;
                // the floor as pointer arithmetic: off - mis in 32 bits wraps below zero
                // when the matrix itself starts off a 16-byte boundary (an expert of a stack
                // whose matrix bytes are not a multiple of 16)
                const uint4* a = (const uint4*)(Wm + off - mis);
                const u32 dst = ring + (u32)(((item % S) * R + r) * SEG_PAD);
#pragma unroll
                for (int v = 0; v < VPL; ++v) {
                    const int i = lane + 32 * v;
                    if (i < nvec) cp_async16(dst + 16 * i, a + i);
                }
            }
        }
        if (item < n_items) {
            iss_seg += KS;
            if (iss_seg >= seg0 + KS * spg) {
                iss_seg = seg0;
                iss_g += nw;
            }
        }
        cp_async_commit();
    };
#pragma unroll
    for (int s = 0; s < S - 1; ++s) issue(s);
    // the weights are constant: their first copies above may run ahead of the kernel before
    // this one (programmatic launch); x, bias and y may not
    if (expert_ids == nullptr) pdl_wait();
    const int words = NB * nchunks * XQ_WORDS;
    if (xq == nullptr) {
        const bool out_block = xq_out != nullptr && blockIdx.x == 0 && blockIdx.y == 0;
        quantize_x_q8_1<QT, NB>(xp, cols, cols, xs, threadIdx.x >> 5, blockDim.x >> 5, 1,
                                out_block);
        if (out_block) {
            __syncthreads();
            for (int i = threadIdx.x; i < words; i += blockDim.x) xq_out[i] = xs[i];
        }
    } else {
        // x already rounded by quantize_q8_1 (shared by every matvec of one activation): copy
        // this block's NB vectors (or its pair's one) to shared memory; all loads in flight
        // 8 loads per thread in flight before the first store: a plain copy loop waited one
        // L2 round trip per 128 words (8 for a 2880-wide x) before the first dot product
        const u32* src = xq + (expert_ids != nullptr
                               ? (long long)(p / x_div) * (x_stride / 32) * XQ_WORDS : 0);
        for (int i0 = threadIdx.x; i0 < words; i0 += 8 * blockDim.x) {
            u32 v[8];
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                const int i = i0 + j * blockDim.x;
                v[j] = i < words ? src[i] : 0u;
            }
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                const int i = i0 + j * blockDim.x;
                if (i < words) xs[i] = v[j];
            }
        }
    }
    __syncthreads();
    if (n_items == 0) return;
    const u32 tab = mxfp4_tab<QT>();
    // rows of at most 32 chunks (one segment): a lane's x chunk is the same for every item
    XQ8 xq_fixed;
    const bool x_fixed = NB == 1 && nseg == 1 && KS == 1;
    if (x_fixed && lane < nchunks) {
        load_xq8(xs, lane, xq_fixed);
        prep_xq8<QT>(xq_fixed, tab);
    }
    float acc[R][NB];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int b = 0; b < NB; ++b) acc[r][b] = 0.f;
    for (int it = 0; it < n_items; ++it) {
        // the next kernel (programmatic launch) may start once every block here has reached
        // a warp's last item (a block counts as triggered at its first warp's call, or when it
        // exits): its weight copies overlap this kernel's tail. Triggering at entry let a chain
        // of launches run several kernels ahead, their waiting blocks holding the SM slots and
        // their prefetches the DRAM queue of the kernel still running (short, wide matrices
        // got slower: 1536x8960 Q4_K 7.5 -> 9.4 us, H200)
        if (it == n_items - 1) pdl_trigger();
        issue(it + S - 1);
        cp_async_wait<S - 1>();  // this lane's copies of item it have landed
        __syncwarp();            // ... and every other lane's
        const int c = cur_seg * 32 + lane;  // >= nchunks on the empty items of KS > 1
        if (c < nchunks) {
            const u8* src[R];
            const u32 base = wlo + item_base(cur_g, cur_seg);
            const int last = rows - 1 - cur_g * R;
#pragma unroll
            for (int r = 0; r < R; ++r)  // where issue() put the segment's first byte
                src[r] = chunk_base<QT>(stage[warp][it % S][r] + (row_off(base, last, r) & 15u), lane);
#pragma unroll
            for (int b = 0; b < NB; ++b) {
                XQ8 xq;
                if (x_fixed) xq = xq_fixed;
                else {
                    load_xq8(xs + b * nchunks * XQ_WORDS, c, xq);
                    prep_xq8<QT>(xq, tab);
                }
#pragma unroll
                for (int r = 0; r < R; ++r) acc[r][b] += dot_q8<QT>(src[r], lane, xq);
            }
        }
        __syncwarp();  // all lanes are done with slot it % S before it is refilled
        if (cur_seg + KS >= seg0 + KS * spg) {  // the last item of this group for this warp
            if (NB == 1) {
                // R = 8: two transposing reductions of 4 rows each
                constexpr int RR = ReducedRows<R>::value;
                const int rr = reduced_row<RR>(lane);
                const bool holder = holds_row<RR>(lane);
#pragma unroll
                for (int h = 0; h < R / RR; ++h) {
                    float v[RR];
#pragma unroll
                    for (int r = 0; r < RR; ++r) v[r] = acc[h * RR + r][0];
                    float t = reduce_rows<RR>(v, lane);
                    const int row = cur_g * R + h * RR + rr;
                    if (KS > 1) {
                        __shared__ float red[KS][R];
                        if (holder) red[warp][h * RR + rr] = t;
                        __syncthreads();
                        t = 0.f;
#pragma unroll
                        for (int k = 0; k < KS; ++k) t += red[k][h * RR + rr];
                        __syncthreads();  // red is rewritten at the next group
                    }
                    if (holder && (KS == 1 || warp == 0) && row < rows)
                        yp[row] = t + (bp != nullptr ? bp[row] : 0.f);
                }
            } else {
#pragma unroll
                for (int r = 0; r < R; ++r) {
#pragma unroll
                    for (int b = 0; b < NB; ++b) {
                        const float s = warp_sum(acc[r][b]);
                        const int row = cur_g * R + r;
                        if (lane == 0 && row < rows)
                            yp[(long long)b * rows + row] = s + (bp != nullptr ? bp[row] : 0.f);
                    }
                }
            }
#pragma unroll
            for (int r = 0; r < R; ++r)
#pragma unroll
                for (int b = 0; b < NB; ++b) acc[r][b] = 0.f;
        }
        cur_seg += KS;
        if (cur_seg >= seg0 + KS * spg) {
            cur_seg = seg0;
            cur_g += nw;
        }
    }
}

// ---------------------------------------------------------------------------- matvec, int8, row groups
// Batch 1, rows of at most 32 * NCH chunks (NCH = 3: 3072 columns; gpt-oss's 2880-wide experts
// and vocabulary, Phi-3's attention and gate_up, every Qwen vocabulary). An item is a whole
// group of R consecutive rows: R * row_bytes contiguous bytes, which the warp copies into its
// ring slot with cp.async at one stride (no per-row offsets, lengths or clamps; BULK: one
// bulk copy issued by lane 0, completing on the slot's mbarrier), and lane l
// keeps x chunks l, l + 32, ... in registers for the whole kernel (rounded once per block, or
// read from xq), so an item costs its copies, the dot products and one reduction. qmatvec_q8's
// segment walk spent as many instructions per chunk on its per-segment copies, row offsets and
// x reloads as on the MXFP4 dot itself: ncu had its expert gate+up issue-bound (61 % of issue
// slots busy at 33 % of DRAM bandwidth). Same arguments, numbers and bits as qmatvec_q8 with
// KS = 1 and NB = 1 (each lane adds its chunks in the same order, and every R reduces a row
// with the same butterfly), plus slot_bytes: the ring slot size (q8_rows_slot on the host), the
// dynamic shared memory being 4 warps x S slots, then x's rounding when xq is null.
// NCH = 0 (wide rows: the down projections, 4864-8960 columns): x's chunks stay in shared
// memory, padded to XQ_WIDE_WORDS (rounded there, or copied there from xq once per block),
// and lane l loads chunk c there before its dot, one load of x per chunk that the R rows
// share; 9 chunks per lane in registers would take 108 of them. A whole row is still one
// copy, so a warp has the full row in flight where the segment walk had at most S segments
// of 1024 columns.
template <int QT, int R, int NCH, int S, int BULK>
__global__ void __launch_bounds__(128) qmatvec_q8_rows(
    const u8* __restrict__ W, const float* __restrict__ x, float* __restrict__ y,
    const float* __restrict__ bias, int rows, int cols, long long row_bytes,
    const int* __restrict__ expert_ids, long long expert_stride, int x_div, long long x_stride,
    long long y_stride, const u32* __restrict__ xq, u32* __restrict__ xq_out,
    const u8* __restrict__ W2, const float* __restrict__ bias2, float* __restrict__ y2,
    int pairs, int slot_bytes) {
    static_assert(SegBytes<QT>::value > 0, "block types only");
    // [4][S][slot_bytes] ring (16-byte copies), then [cols / 32][XQ_WORDS]
    extern __shared__ __align__(16) float xs_dyn[];
    u8* const ring_base = (u8*)xs_dyn;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int n_groups = (rows + R - 1) / R;
    const int nchunks = cols >> 5;
    const int gw = blockIdx.x * 4 + warp, nw = gridDim.x * 4;
    const int n_items = gw < n_groups ? (n_groups - gw + nw - 1) / nw : 0;
    const Product pr = product_of(W, x, y, bias, rows, expert_ids, expert_stride, x_div,
                                  x_stride, y_stride, W2, bias2, y2, pairs);
    const u8* Wm = pr.W;
    const float* xp = pr.x;
    float* yp = pr.y;
    const float* bp = pr.bias;
    const u32* xsrc = xq != nullptr ? xq + pr.x_row * (x_stride / 32) * XQ_WORDS : nullptr;
    // 32-bit byte offsets inside the matrix (the wrapper checks it is under 4 GiB)
    const u32 rb = (u32)row_bytes, gbytes = (u32)R * rb, total = (u32)rows * rb;
    const u32 wlo = (u32)(size_t)Wm & 15u;
    u8* const my_ring = ring_base + warp * S * slot_bytes;
    const u32 ring = smem_u32(my_ring);
    int iss_g = gw;
    // BULK: one bulk copy per item by lane 0, completing on the slot's mbarrier
    __shared__ __align__(8) unsigned long long bars[BULK ? 4 : 1][BULK ? S : 1];
    const u32 bar0 = smem_u32(&bars[BULK ? warp : 0][0]);
    if (BULK) {
        if (lane == 0) {
#pragma unroll
            for (int s = 0; s < S; ++s) mbar_init(bar0 + 8u * s, 1u);
            fence_mbar_init();
        }
        __syncwarp();
    }
    // the group's bytes (the last group's valid rows only) from their 16-byte-aligned floor
    // into slot item % S; without BULK one cp.async commit group per item, empty past the end
    auto issue = [&](int item) {
        if (item < n_items) {
            const u32 off = (u32)iss_g * gbytes;
            const u32 mis = (wlo + off) & 15u;
            const int nvec = (int)((mis + min(gbytes, total - off) + 15u) >> 4);
            const uint4* a = (const uint4*)(Wm + off - mis);  // not off - mis: see qmatvec_q8
            const u32 dst = ring + (u32)((item % S) * slot_bytes);
            if (BULK) {
                if (lane == 0) {
                    const u32 bar = bar0 + 8u * (u32)(item % S);
                    fence_proxy_async();
                    mbar_expect_tx(bar, 16u * (u32)nvec);
                    cp_bulk(dst, a, 16u * (u32)nvec, bar);
                }
            } else {
#pragma unroll 4
                for (int i = lane; i < nvec; i += 32) cp_async16(dst + 16u * (u32)i, a + i);
            }
            iss_g += nw;
        }
        if (!BULK) cp_async_commit();
    };
#pragma unroll
    for (int s = 0; s < S - 1; ++s) issue(s);
    // the weights are constant: their first copies may run ahead of the kernel before this
    // one (programmatic launch); x, bias and y may not
    if (expert_ids == nullptr) pdl_wait();
    // NCH > 0: x rounded here when xq is null; NCH = 0: x's chunks padded to XQ_WIDE_WORDS,
    // then (xq null) the kernel's own rounding
    u32* const xs = (u32*)(ring_base + 4 * S * slot_bytes);
    u32* const xs_round = NCH == 0 ? xs + nchunks * XQ_WIDE_WORDS : xs;
    if (xsrc == nullptr) {
        const bool out_block = xq_out != nullptr && blockIdx.x == 0 && blockIdx.y == 0;
        quantize_x_q8_1<QT, 1>(xp, cols, cols, xs_round, warp, 4, 1, out_block);
        __syncthreads();
        if (out_block)
            for (int i = threadIdx.x; i < nchunks * XQ_WORDS; i += blockDim.x)
                xq_out[i] = xs_round[i];
        xsrc = xs_round;
    }
    if (NCH == 0) {
        // every word in flight at once from global (one L2 round trip; the wait also covers
        // the ring's first cp.async items, which only the non-bulk variants have)
        for (int i = threadIdx.x; i < nchunks * XQ_WORDS; i += blockDim.x) {
            const int c = i / XQ_WORDS, j = i - c * XQ_WORDS;
            if (xq != nullptr)
                cp_async4(smem_u32(xs + c * XQ_WIDE_WORDS + j), xsrc + i);
            else
                xs[c * XQ_WIDE_WORDS + j] = xsrc[i];
        }
        if (xq != nullptr) {
            cp_async_commit();
            cp_async_wait<0>();
        }
        __syncthreads();
    }
    if (n_items == 0) return;  // no block-wide barrier below
    const u32 tab = mxfp4_tab<QT>();
    XQ8 xk[NCH > 0 ? NCH : 1];
#pragma unroll
    for (int k = 0; k < NCH; ++k) {
        if (lane + 32 * k < nchunks) {
            load_xq8(xsrc, lane + 32 * k, xk[k]);
            prep_xq8<QT>(xk[k], tab);
        }
    }
    int cur_g = gw;
    for (int it = 0; it < n_items; ++it) {
        if (it == n_items - 1) pdl_trigger();  // see qmatvec_q8
        issue(it + S - 1);
        if (BULK) {
            mbar_wait(bar0 + 8u * (u32)(it % S), (u32)(it / S) & 1u);
        } else {
            cp_async_wait<S - 1>();  // this lane's copies of item it have landed
            __syncwarp();            // ... and every other lane's
        }
        // rows past the matrix's end (last group) read stale bytes of the slot, never stored
        const u32 slot_off = (u32)((it % S) * slot_bytes) + ((wlo + (u32)cur_g * gbytes) & 15u);
        const u8* g0 = my_ring + slot_off;
        float acc[R];
#pragma unroll
        for (int r = 0; r < R; ++r) acc[r] = 0.f;
        auto add_chunk = [&](int c, const XQ8& xc) {
            if constexpr (QT == QT_MXFP4) {  // see dot_mxfp4_smem
                const u32 s = ring + slot_off + 17u * (u32)c + 1u;
#pragma unroll
                for (int r = 0; r < R; ++r) acc[r] += dot_mxfp4_smem(s + (u32)r * rb, xc);
            } else {
#pragma unroll
                for (int r = 0; r < R; ++r)
                    acc[r] += dot_q8<QT>(chunk_base<QT>(g0 + r * rb, c), c, xc);
            }
        };
        if constexpr (NCH > 0) {
#pragma unroll
            for (int k = 0; k < NCH; ++k) {
                const int c = lane + 32 * k;
                if (c < nchunks) add_chunk(c, xk[k]);
            }
        } else {
#pragma unroll 2
            for (int c = lane; c < nchunks; c += 32) {  // the same chunks, in the same order
                XQ8 xc;
                load_xq8_wide(xs, c, xc);
                prep_xq8<QT>(xc, tab);
                add_chunk(c, xc);
            }
        }
        __syncwarp();  // all lanes are done with slot it % S before it is refilled
        constexpr int RR = ReducedRows<R>::value;
        const int rr = reduced_row<RR>(lane);
#pragma unroll
        for (int h = 0; h < R / RR; ++h) {
            const float t = reduce_rows<RR>(acc + h * RR, lane);
            const int row = cur_g * R + h * RR + rr;
            if (holds_row<RR>(lane) && row < rows) yp[row] = t + (bp != nullptr ? bp[row] : 0.f);
        }
        cur_g += nw;
    }
}

// x [n_rows, cols] f32 -> xq [n_rows, cols / 32, XQ_WORDS] (q8_1 chunks, the same words the
// matvec prologue writes to shared memory), for matvecs that share one activation vector or
// whose x is wide compared with their rows (the per-block prologue repeats the quantization
// in every block: for 896x4864 that was as much work as the product itself).
__global__ void __launch_bounds__(128) quantize_q8_1(const float* __restrict__ x,
                                                     u32* __restrict__ xq, int n_rows, int cols) {
    pdl_trigger();  // at entry: this kernel is short (one chunk per warp)
    pdl_wait();
    quantize_x_q8_1<QT_Q6_K, 0>(x, cols, cols, xq, blockIdx.x * 4 + (threadIdx.x >> 5),
                                gridDim.x * 4, n_rows);
}

// The feed-forward activation and its q8_1 rounding in one launch: act = swiglu(g, u) (OAI:
// gpt-oss's clamped form, alpha and limit) as kernels/activations.py computes it (the same
// float32 operations and libdevice expf), then act rounded to xq as quantize_q8_1 does. The
// down projection reads xq (a shared rounding) instead of a separate quantize launch after
// the activation. Warp w writes act for chunks w, w + nwarps, ... and rounds exactly those
// (quantize_x_q8_1's distribution), so it reads back only its own stores (__syncwarp). act:
// [n_rows, cols] contiguous; g and u rows g_ld / u_ld floats apart (the two halves of a fused
// gate/up product are read in place).
template <int OAI>
__global__ void __launch_bounds__(128) swiglu_q8_1(const float* __restrict__ g,
                                                   const float* __restrict__ u,
                                                   float* act,  // written, then read back
                                                   u32* __restrict__ xq, int n_rows, int cols,
                                                   long long g_ld, long long u_ld, float alpha,
                                                   float limit) {
    pdl_trigger();  // at entry, as quantize_q8_1
    pdl_wait();
    const int gw = blockIdx.x * 4 + (threadIdx.x >> 5), nw = gridDim.x * 4;
    const int lane = threadIdx.x & 31, nchunks = cols >> 5, total = n_rows * nchunks;
    for (int c = gw; c < total; c += nw) {
        const int r = c / nchunks, col = (c - r * nchunks) * 32 + lane;
        const float gv = g[r * g_ld + col], uv = u[r * u_ld + col];
        float a;
        if (OAI) {  // numba-cuda lowers min / max of float32 to fminf / fmaxf too
            const float x = fminf(gv, limit);
            const float y = fmaxf(fminf(uv, limit), -limit);
            a = x / (1.f + expf(alpha * -x)) * (y + 1.f);
        } else {
            a = gv / (1.f + expf(-gv)) * uv;
        }
        act[(long long)r * cols + col] = a;
    }
    __syncwarp();
    quantize_x_q8_1<QT_Q6_K, 0>(act, cols, cols, xq, gw, nw, n_rows);
}

// An empty kernel of the same launch shape: the bench times it in the same graph method to
// show the fixed cost a small matrix cannot go below.
__global__ void empty_kernel(float* __restrict__ y) {
    if (y != nullptr && threadIdx.x == 1023) y[0] = 0.f;
}

// ---------------------------------------------------------------------------- matmul (MMA)
// Tensor-core product for prefill: a 128 (rows of W) x 64 (tokens) output tile per block of
// 4 warps. Each K step of 32 is exactly one 32-element chunk per row: thread t dequantizes
// row t's chunk to f16 in shared memory, the block converts the 64x32 slice of x to f16, and
// each warp issues mma.sync m16n8k16 (f16 inputs, f32 accumulators) on its 32x64 sub-tile.
// mma.h is not available to NVRTC on the device machine, so the instruction is inline PTX.
// Fragment layouts: PTX ISA, "Matrix Fragments for mma.m16n8k16" (f16).
#define MM_BM 128
#define MM_BN 64
#define MM_BK 32
#define MM_LD (MM_BK + 8)  // padded row (halves): conflict-free 32-bit fragment loads

__device__ __forceinline__ void mma_16816(float* c, const u32* a, const u32* b) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

template <int QT>
__global__ void __launch_bounds__(128) qmatmul_mma(
    const u8* __restrict__ W, const float* __restrict__ x, float* __restrict__ y,
    const float* __restrict__ bias, int rows, int cols, long long row_bytes, int n) {
    __shared__ __align__(16) u16 As[MM_BM * MM_LD];
    __shared__ __align__(16) u16 Bs[MM_BN * MM_LD];
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int g = lane >> 2, t4 = lane & 3;
    const int m0 = blockIdx.x * MM_BM, n0 = blockIdx.y * MM_BN;
    float acc[2][8][4];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j)
#pragma unroll
            for (int k = 0; k < 4; ++k) acc[i][j][k] = 0.f;
    const int nchunks = cols >> 5;
    const int my_row = m0 + tid;
    const u8* wrow = W + (long long)(my_row < rows ? my_row : rows - 1) * row_bytes;
    for (int c = 0; c < nchunks; ++c) {
        {   // A tile: row tid, chunk c
            float w[32];
            dequant_chunk<QT>(wrow, c, w);
            u32* dst = (u32*)(As + tid * MM_LD);
#pragma unroll
            for (int i = 0; i < 16; ++i)
                dst[i] = (u32)f2h(w[2 * i]) | ((u32)f2h(w[2 * i + 1]) << 16);
        }
        // B tile: 64 tokens x 32 k, 16 elements (4 float4) per thread
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            int idx = tid + 128 * i;      // 0..511 float4 slots
            int tok = idx >> 3, k4 = idx & 7;
            float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
            if (n0 + tok < n) v = *(const float4*)(x + (long long)(n0 + tok) * cols + c * 32 + 4 * k4);
            u32* dst = (u32*)(Bs + tok * MM_LD + 4 * k4);
            dst[0] = (u32)f2h(v.x) | ((u32)f2h(v.y) << 16);
            dst[1] = (u32)f2h(v.z) | ((u32)f2h(v.w) << 16);
        }
        __syncthreads();
#pragma unroll
        for (int ks = 0; ks < MM_BK; ks += 16) {
            u32 a[2][4], b[8][2];
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                const u16* base = As + (warp * 32 + i * 16) * MM_LD + ks;
                a[i][0] = *(const u32*)(base + g * MM_LD + 2 * t4);
                a[i][1] = *(const u32*)(base + (g + 8) * MM_LD + 2 * t4);
                a[i][2] = *(const u32*)(base + g * MM_LD + 2 * t4 + 8);
                a[i][3] = *(const u32*)(base + (g + 8) * MM_LD + 2 * t4 + 8);
            }
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                const u16* base = Bs + (j * 8 + g) * MM_LD + ks;
                b[j][0] = *(const u32*)(base + 2 * t4);
                b[j][1] = *(const u32*)(base + 2 * t4 + 8);
            }
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int j = 0; j < 8; ++j) mma_16816(acc[i][j], a[i], b[j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
#pragma unroll
        for (int j = 0; j < 8; ++j) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                int r = m0 + warp * 32 + i * 16 + g + 8 * h;
                if (r >= rows) continue;
                float bv = bias != nullptr ? bias[r] : 0.f;
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    int tok = n0 + j * 8 + 2 * t4 + e;
                    if (tok < n) y[(long long)tok * rows + r] = acc[i][j][2 * h + e] + bv;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------- dequantize
// Rows of a quantized table: out[t, :] = dequant(W[ids[t]]) (embedding lookup), or, with
// ids == nullptr, out[t, :] = dequant(W[t]) (whole-matrix dequantization for tests/cuBLAS).
// One thread per 32-element chunk.
template <int QT>
__global__ void dequant_rows(const u8* __restrict__ W, const int* __restrict__ ids,
                             float* __restrict__ out, int n, int cols, long long row_bytes) {
    const int nchunks = cols >> 5;
    long long gid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (gid >= (long long)n * nchunks) return;
    int t = (int)(gid / nchunks), c = (int)(gid % nchunks);
    int r = ids != nullptr ? ids[t] : t;
    float w[32];
    dequant_chunk<QT>(W + (long long)r * row_bytes, c, w);
    float4* dst = (float4*)(out + (long long)t * cols + c * 32);
#pragma unroll
    for (int i = 0; i < 8; ++i) dst[i] = make_float4(w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]);
}
