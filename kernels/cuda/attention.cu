// Paged attention for a ragged batch (prepended with common.cuh). Semantics are those of
// orcd_toolkit.backends.cpu.ops.paged_attention: the i-th of the n new tokens of a sequence
// with context_len ctx sits at KV index ctx - n + i and sees keys j <= that (and, with a
// sliding window W > 0, only qpos - j < W); GQA maps query head h to KV head h / (Hq / Hkv);
// an optional per-head sink logit joins the softmax max and denominator only.
// Caches are f16 [num_blocks, block_size, Hkv, D]; q and out are f32 [T, Hq, D].

__device__ __forceinline__ long long kv_offset(const int* __restrict__ table, int key, int block_size,
                                               int Hkv, int kvh, int D) {
    int blk = table[key / block_size];
    return (((long long)blk * block_size + key % block_size) * Hkv + kvh) * D;
}

// ---------------------------------------------------------------------------- flash
// Block = 4 warps for (sequence b, tile of up to qtile new tokens, KV head, split). Its work
// items are every (token of the tile, query head of the GQA group): up to 4*IPW of them,
// IPW per warp, so the K/V tiles staged in shared memory serve the whole group (GQA) and
// all tokens of the tile (prefill). Keys are streamed 32 at a time with an online softmax;
// split s handles one slice of the keys (split-K "flash decoding") and writes an unnormalised
// partial (acc, max, sum) that attention_combine merges.
template <int D, int IPW>
__global__ void __launch_bounds__(128) attention_flash(
    const float* __restrict__ q, const u16* __restrict__ k_cache, const u16* __restrict__ v_cache,
    const int* __restrict__ block_tables, int max_blocks, const int* __restrict__ seq_starts,
    const int* __restrict__ context_lens, float* __restrict__ part_acc, float* __restrict__ part_ml,
    int T, int Hq, int Hkv, int block_size, float scale, int window, int qtile, int tiles_per_seq) {
    constexpr int DL = D / 32;  // accumulator elements per lane
    __shared__ float qs[4 * IPW][D];
    __shared__ float ks[32][D + 1];
    __shared__ float vs[32][D];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int b = blockIdx.x / tiles_per_seq, tile = blockIdx.x % tiles_per_seq;
    const int kvh = blockIdx.y, split = blockIdx.z, splits = gridDim.z;
    const int s0 = seq_starts[b], n_new = seq_starts[b + 1] - s0;
    if (tile * qtile >= n_new) return;
    const int ntok = min(qtile, n_new - tile * qtile);
    const int group = Hq / Hkv;
    const int n_items = ntok * group;
    const int ctx = context_lens[b];
    const int first_qpos = ctx - n_new + tile * qtile;
    const int hi = first_qpos + ntok;  // keys [lo, hi) can matter to this tile
    const int lo = window > 0 ? max(0, first_qpos - window + 1) : 0;
    const int per = (((hi - lo) + splits - 1) / splits + 31) & ~31;
    const int k_begin = lo + split * per, k_end = min(hi, k_begin + per);
    const int* table = block_tables + (long long)b * max_blocks;

    // stage the queries of the block's items
    for (int i = threadIdx.x; i < 4 * IPW * D; i += 128) {
        int it = i / D, d = i % D;
        float v = 0.f;
        if (it < n_items) {
            int tok = s0 + tile * qtile + it / group, h = kvh * group + it % group;
            v = q[((long long)tok * Hq + h) * D + d];
        }
        qs[it][d] = v;
    }
    float m[IPW], l[IPW], acc[IPW][DL];
#pragma unroll
    for (int i = 0; i < IPW; ++i) {
        m[i] = -INFINITY;
        l[i] = 0.f;
#pragma unroll
        for (int e = 0; e < DL; ++e) acc[i][e] = 0.f;
    }
    for (int kt = k_begin; kt < k_end; kt += 32) {
        __syncthreads();
        for (int i = threadIdx.x; i < 32 * (D / 2); i += 128) {
            int j = i / (D / 2), d2 = i % (D / 2);
            int key = kt + j;
            float k0 = 0.f, k1 = 0.f, v0 = 0.f, v1 = 0.f;
            if (key < k_end) {
                long long off = kv_offset(table, key, block_size, Hkv, kvh, D) + 2 * d2;
                u32 kw = *(const u32*)(k_cache + off), vw = *(const u32*)(v_cache + off);
                k0 = h2f((u16)(kw & 0xFFFF)); k1 = h2f((u16)(kw >> 16));
                v0 = h2f((u16)(vw & 0xFFFF)); v1 = h2f((u16)(vw >> 16));
            }
            ks[j][2 * d2] = k0; ks[j][2 * d2 + 1] = k1;
            vs[j][2 * d2] = v0; vs[j][2 * d2 + 1] = v1;
        }
        __syncthreads();
        const int key = kt + lane;
#pragma unroll
        for (int i = 0; i < IPW; ++i) {
            const int it = warp + 4 * i;
            if (it >= n_items) break;
            const int qpos = first_qpos + it / group;
            float s = 0.f;
#pragma unroll 8
            for (int d = 0; d < D; ++d) s += qs[it][d] * ks[lane][d];
            s *= scale;
            bool ok = key < k_end && key <= qpos && (window <= 0 || qpos - key < window);
            s = ok ? s : -INFINITY;
            float m_new = fmaxf(m[i], warp_max(s));
            if (m_new == -INFINITY) continue;  // nothing visible yet for this item
            float p = ok ? __expf(s - m_new) : 0.f;
            float corr = __expf(m[i] - m_new);
            l[i] = l[i] * corr + warp_sum(p);
            m[i] = m_new;
#pragma unroll
            for (int e = 0; e < DL; ++e) acc[i][e] *= corr;
            for (int j = 0; j < 32; ++j) {
                float pj = __shfl_sync(0xffffffffu, p, j);
#pragma unroll
                for (int e = 0; e < DL; ++e) acc[i][e] += pj * vs[j][lane + 32 * e];
            }
        }
    }
#pragma unroll
    for (int i = 0; i < IPW; ++i) {
        const int it = warp + 4 * i;
        if (it >= n_items) break;
        int tok = s0 + tile * qtile + it / group, h = kvh * group + it % group;
        long long base = ((long long)split * T + tok) * Hq + h;
#pragma unroll
        for (int e = 0; e < DL; ++e) part_acc[base * D + lane + 32 * e] = acc[i][e];
        if (lane == 0) {
            part_ml[2 * base] = m[i];
            part_ml[2 * base + 1] = l[i];
        }
    }
}

// Merge the split partials of every (token, head) into out; one warp each.
template <int D>
__global__ void attention_combine(const float* __restrict__ part_acc, const float* __restrict__ part_ml,
                                  const float* __restrict__ sinks, float* __restrict__ out, int T,
                                  int Hq, int splits) {
    const int w = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (w >= T * Hq) return;
    const int h = w % Hq;
    float M = sinks != nullptr ? sinks[h] : -INFINITY;
    for (int s = 0; s < splits; ++s) M = fmaxf(M, part_ml[2 * ((long long)s * T * Hq + w)]);
    float L = sinks != nullptr ? __expf(sinks[h] - M) : 0.f;
    float o[D / 32];
#pragma unroll
    for (int e = 0; e < D / 32; ++e) o[e] = 0.f;
    for (int s = 0; s < splits; ++s) {
        long long base = (long long)s * T * Hq + w;
        float ms = part_ml[2 * base];
        if (ms == -INFINITY) continue;
        float f = __expf(ms - M);
        L += part_ml[2 * base + 1] * f;
#pragma unroll
        for (int e = 0; e < D / 32; ++e) o[e] += part_acc[base * D + lane + 32 * e] * f;
    }
    float inv = L > 0.f ? 1.f / L : 0.f;
#pragma unroll
    for (int e = 0; e < D / 32; ++e) out[(long long)w * D + lane + 32 * e] = o[e] * inv;
}

// ---------------------------------------------------------------------------- basic
// The reference GPU kernel: one block per (token, query head), three plain passes over the
// context through a caller-provided score buffer [T, Hq, max_ctx]: scores, softmax, weighted
// sum of V. Nothing is shared between heads or tokens.
__device__ float block_reduce(float v, float* red, bool is_max) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = is_max ? warp_max(v) : warp_sum(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float r = is_max ? -INFINITY : 0.f;
    for (int i = 0; i < nw; ++i) r = is_max ? fmaxf(r, red[i]) : r + red[i];
    return r;
}

__global__ void attention_basic(
    const float* __restrict__ q, const u16* __restrict__ k_cache, const u16* __restrict__ v_cache,
    const int* __restrict__ block_tables, int max_blocks, const int* __restrict__ seq_starts,
    const int* __restrict__ context_lens, const float* __restrict__ sinks, float* __restrict__ scores,
    float* __restrict__ out, int B, int Hq, int Hkv, int D, int block_size, float scale, int window,
    int max_ctx) {
    __shared__ float red[32];
    const int tok = blockIdx.x, h = blockIdx.y;
    int b = 0;
    while (b < B - 1 && seq_starts[b + 1] <= tok) ++b;
    const int s0 = seq_starts[b], n_new = seq_starts[b + 1] - s0, ctx = context_lens[b];
    const int qpos = ctx - n_new + (tok - s0);
    const int kvh = h / (Hq / Hkv);
    const int* table = block_tables + (long long)b * max_blocks;
    const float* qv = q + ((long long)tok * Hq + h) * D;
    float* sc = scores + ((long long)tok * Hq + h) * max_ctx;
    float mx = sinks != nullptr ? sinks[h] : -INFINITY;
    for (int j = threadIdx.x; j <= qpos; j += blockDim.x) {
        float s = -INFINITY;
        if (window <= 0 || qpos - j < window) {
            const u16* kv = k_cache + kv_offset(table, j, block_size, Hkv, kvh, D);
            s = 0.f;
            for (int d = 0; d < D; ++d) s += qv[d] * h2f(kv[d]);
            s *= scale;
        }
        sc[j] = s;
        mx = fmaxf(mx, s);
    }
    mx = block_reduce(mx, red, true);
    float sum = 0.f;
    for (int j = threadIdx.x; j <= qpos; j += blockDim.x) {
        float p = sc[j] == -INFINITY ? 0.f : __expf(sc[j] - mx);
        sc[j] = p;
        sum += p;
    }
    sum = block_reduce(sum, red, false);
    if (sinks != nullptr) sum += __expf(sinks[h] - mx);
    __syncthreads();
    const float inv = 1.f / sum;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float o = 0.f;
        for (int j = 0; j <= qpos; ++j) {
            if (sc[j] == 0.f) continue;
            o += sc[j] * h2f(v_cache[kv_offset(table, j, block_size, Hkv, kvh, D) + d]);
        }
        out[((long long)tok * Hq + h) * D + d] = o * inv;
    }
}
