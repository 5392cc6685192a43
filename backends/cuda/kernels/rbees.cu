// rbees' own CUDA kernels for the cuda-kernels backend: the ones
// candle-kernels lacks for our layouts. Everything else (rms_norm, softmax,
// silu, add, mul, Q8_1 quantisation, quantised matrix products, row lookups)
// is candle-kernels' PTX; dense products are cuBLAS.
//
// Layouts (see rbees_core::Backend): activations are row-major f32
// [rows, cols]; a token row holds its heads one after the other; the KV
// cache is [capacity, n_kv_heads * head_dim] per layer; F16 and BF16
// weights are row-major [rows, cols] of their 16-bit values, as GGUF
// stores them. All sums are f32.

#include <stdint.h>
#include <math.h>
#include <cuda_fp16.h>

#define WARP 32

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int mask = WARP / 2; mask > 0; mask >>= 1) {
        v += __shfl_xor_sync(0xffffffff, v, mask, WARP);
    }
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int mask = WARP / 2; mask > 0; mask >>= 1) {
        v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, mask, WARP));
    }
    return v;
}

// Sum (is_max = false) or max over the block; every thread gets the result.
// `scratch` holds one value per warp. blockDim.x must be a multiple of 32.
__device__ float block_reduce(float v, float *scratch, bool is_max) {
    const int lane = threadIdx.x % WARP;
    const int warp = threadIdx.x / WARP;
    const int warps = blockDim.x / WARP;
    v = is_max ? warp_max(v) : warp_sum(v);
    if (lane == 0) {
        scratch[warp] = v;
    }
    __syncthreads();
    float r = lane < warps ? scratch[lane] : (is_max ? -INFINITY : 0.0f);
    r = is_max ? warp_max(r) : warp_sum(r);
    __syncthreads(); // scratch is reused by the next reduction
    return r;
}

// RoPE of x: [seq, n_heads * head_dim], row i at position pos0 + i.
// cos/sin: [positions, half_rot]. Pair p < half_rot rotates
// (2p, 2p + 1) when interleaved (GGUF llama) or (p, p + half_rot) when
// half-split (NeoX); dimensions from 2 * half_rot on pass through.
extern "C" __global__ void rbees_rope_f32(
    const float *__restrict__ x, float *__restrict__ y,
    const float *__restrict__ cos_t, const float *__restrict__ sin_t,
    const int seq, const int n_heads, const int head_dim, const int half_rot,
    const int pos0, const int interleaved) {
    const int pairs = (head_dim + 1) / 2;
    const long total = (long)seq * n_heads * pairs;
    for (long idx = (long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long)gridDim.x * blockDim.x) {
        const int p = (int)(idx % pairs);
        const long row_head = idx / pairs;
        const int h = (int)(row_head % n_heads);
        const long i = row_head / n_heads;
        const long base = (i * n_heads + h) * head_dim;
        if (p < half_rot) {
            const int a = interleaved ? 2 * p : p;
            const int b = interleaved ? 2 * p + 1 : p + half_rot;
            const long t = (pos0 + i) * half_rot + p;
            const float c = cos_t[t];
            const float s = sin_t[t];
            const float x0 = x[base + a];
            const float x1 = x[base + b];
            y[base + a] = x0 * c - x1 * s;
            y[base + b] = x0 * s + x1 * c;
        } else {
            const int a = 2 * p;
            y[base + a] = x[base + a];
            if (a + 1 < head_dim) {
                y[base + a + 1] = x[base + a + 1];
            }
        }
    }
}

// Scores [n_heads * seq, total] of q: [seq, n_heads * head_dim] against
// cached keys 0..total (total = pos0 + seq): row h * seq + i holds
// scale * q[i, h] . k[j, h / group] for j <= pos0 + i and -inf after.
extern "C" __global__ void rbees_attention_scores_f32(
    const float *__restrict__ q, const float *__restrict__ k, float *__restrict__ out,
    const int seq, const int n_heads, const int n_kv_heads, const int head_dim,
    const int pos0, const float scale) {
    const int total = pos0 + seq;
    const int group = n_heads / n_kv_heads;
    const long n = (long)n_heads * seq * total;
    for (long idx = (long)blockIdx.x * blockDim.x + threadIdx.x; idx < n;
         idx += (long)gridDim.x * blockDim.x) {
        const int j = (int)(idx % total);
        const long r = idx / total;
        const int i = (int)(r % seq);
        const int h = (int)(r / seq);
        if (j > pos0 + i) {
            out[idx] = -INFINITY;
            continue;
        }
        const float *qr = q + ((long)i * n_heads + h) * head_dim;
        const float *kr = k + ((long)j * n_kv_heads + h / group) * head_dim;
        float dot = 0.0f;
        for (int d = 0; d < head_dim; ++d) {
            dot += qr[d] * kr[d];
        }
        out[idx] = scale * dot;
    }
}

// The inverse layout: probs [n_heads * seq, total] times cached values ->
// [seq, n_heads * head_dim].
//
// Positions with a zero probability are skipped, not multiplied: after the
// causal softmax those are the masked (future) positions, whose value rows
// may hold anything (a later token of the chunk, or a non-finite value),
// and 0 * inf or 0 * NaN would make the row NaN where the CPU backends,
// which skip them too, give a finite result. Skipping by value rather than
// bounding the loop at the causal limit keeps the op what its contract
// says, probs times values, for any probs (the conformance suite reads
// cached rows back through one-hot probabilities at any position).
extern "C" __global__ void rbees_attention_weighted_sum_f32(
    const float *__restrict__ probs, const float *__restrict__ v, float *__restrict__ out,
    const int seq, const int n_heads, const int n_kv_heads, const int head_dim,
    const int total) {
    const int group = n_heads / n_kv_heads;
    const long n = (long)seq * n_heads * head_dim;
    for (long idx = (long)blockIdx.x * blockDim.x + threadIdx.x; idx < n;
         idx += (long)gridDim.x * blockDim.x) {
        const int d = (int)(idx % head_dim);
        const long r = idx / head_dim;
        const int h = (int)(r % n_heads);
        const long i = r / n_heads;
        const float *p = probs + ((long)h * seq + i) * total;
        const float *vc = v + (long)(h / group) * head_dim + d;
        const long stride = (long)n_kv_heads * head_dim;
        float acc = 0.0f;
        for (int j = 0; j < total; ++j) {
            const float pj = p[j];
            if (pj != 0.0f) {
                acc += pj * vc[j * stride];
            }
        }
        out[idx] = acc;
    }
}

// Fused causal attention, one block per (query row i, head h): the head's
// query in shared memory, one warp per key for the scores (kept in dynamic
// shared memory: head_dim + pos0 + seq floats), a block softmax, then each
// thread sums values for its output dimensions. Grid: (seq, n_heads).
// Every loop stops at the row's causal limit (len = pos0 + i + 1): masked
// positions are never read, so their keys and values (later tokens of the
// chunk, stale rows of a reused cache slot, non-finite or not) cannot
// reach the output.
extern "C" __global__ void rbees_attention_f32(
    const float *__restrict__ q, const float *__restrict__ k, const float *__restrict__ v,
    float *__restrict__ out, const int seq, const int n_heads, const int n_kv_heads,
    const int head_dim, const int pos0, const float scale) {
    extern __shared__ float smem[];
    __shared__ float scratch[WARP];
    const int i = blockIdx.x;
    const int h = blockIdx.y;
    const int len = pos0 + i + 1; // causal: keys 0..=pos0 + i
    const int kvh = h / (n_heads / n_kv_heads);
    const long stride = (long)n_kv_heads * head_dim;
    float *sq = smem;
    float *sc = smem + head_dim;

    const float *qr = q + ((long)i * n_heads + h) * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        sq[d] = qr[d];
    }
    __syncthreads();

    const int lane = threadIdx.x % WARP;
    const int warp = threadIdx.x / WARP;
    const int warps = blockDim.x / WARP;
    for (int j = warp; j < len; j += warps) {
        const float *kr = k + j * stride + (long)kvh * head_dim;
        float dot = 0.0f;
        for (int d = lane; d < head_dim; d += WARP) {
            dot += sq[d] * kr[d];
        }
        dot = warp_sum(dot);
        if (lane == 0) {
            sc[j] = scale * dot;
        }
    }
    __syncthreads();

    float m = -INFINITY;
    for (int j = threadIdx.x; j < len; j += blockDim.x) {
        m = fmaxf(m, sc[j]);
    }
    m = block_reduce(m, scratch, true);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < len; j += blockDim.x) {
        const float e = expf(sc[j] - m);
        sc[j] = e;
        sum += e;
    }
    sum = block_reduce(sum, scratch, false); // also orders the writes to sc
    const float inv = 1.0f / sum;

    const float *vr = v + (long)kvh * head_dim;
    float *o = out + ((long)i * n_heads + h) * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < len; ++j) {
            acc += sc[j] * vr[j * stride + d];
        }
        o[d] = acc * inv;
    }
}

// silu(gate) * up, the Llama feed-forward activation, in one pass.
extern "C" __global__ void rbees_swiglu_f32(
    const float *__restrict__ gate, const float *__restrict__ up, float *__restrict__ out,
    const long n) {
    for (long idx = (long)blockIdx.x * blockDim.x + threadIdx.x; idx < n;
         idx += (long)gridDim.x * blockDim.x) {
        const float g = gate[idx];
        out[idx] = g / (1.0f + expf(-g)) * up[idx];
    }
}

// ---- F16 and BF16 weights ---------------------------------------------------
// They stay in their 16-bit type on the device (half the bytes of f32 to
// read per token); each value is widened to f32 where it is used, exactly
// (every f16 and bf16 value is an f32 value), and multiplied with the f32
// activations in f32, so the products equal those of the weights widened
// at load up to the order of the sums.

template <bool BF16> __device__ __forceinline__ float widen(const uint16_t bits) {
    if (BF16) {
        return __uint_as_float((uint32_t)bits << 16); // bf16 is f32's upper half
    }
    return __half2float(__ushort_as_half(bits));
}

// Activation rows one launch of the mat-vec kernel takes (the host's
// `float16::MATVEC_MAX_ROWS`); more rows take the widened cuBLAS path.
#define MATVEC_MAX_ROWS 8

// y[r, o] = sum_c x[r, c] * w[o, c] for r < m <= MATVEC_MAX_ROWS, o < n: one
// warp per weight row, its lanes striding over the row (8 values, 16 bytes,
// per load when k is a multiple of 8 and the buffers are 16-byte aligned;
// one value per load otherwise), every activation row against the same
// loaded weights, then a warp sum per output. Block: whole warps; grid:
// ceil(n / warps per block).
template <bool BF16>
__device__ void matvec_16(
    const uint16_t *__restrict__ w, const float *__restrict__ x, float *__restrict__ y,
    const int m, const int n, const int k) {
    const int lane = threadIdx.x % WARP;
    const long o = (long)blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    if (o >= n) {
        return; // the whole warp: o is the same for its lanes
    }
    const uint16_t *wr = w + o * k;
    float acc[MATVEC_MAX_ROWS];
#pragma unroll
    for (int r = 0; r < MATVEC_MAX_ROWS; ++r) {
        acc[r] = 0.0f;
    }
    const bool vector = (k % 8 == 0) && ((uintptr_t)w % 16 == 0) && ((uintptr_t)x % 16 == 0);
    if (vector) {
        const uint4 *w8 = (const uint4 *)wr;
        for (int c8 = lane; c8 < k / 8; c8 += WARP) {
            const uint4 p = w8[c8];
            const uint32_t words[4] = {p.x, p.y, p.z, p.w};
            float wf[8];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                // Little-endian: the lower half of a word is the earlier value.
                wf[2 * i] = widen<BF16>((uint16_t)(words[i] & 0xffffu));
                wf[2 * i + 1] = widen<BF16>((uint16_t)(words[i] >> 16));
            }
#pragma unroll
            for (int r = 0; r < MATVEC_MAX_ROWS; ++r) {
                if (r < m) {
                    const float4 *xr = (const float4 *)(x + (long)r * k) + 2 * c8;
                    const float4 a = xr[0];
                    const float4 b = xr[1];
                    float s = acc[r];
                    s = fmaf(wf[0], a.x, s);
                    s = fmaf(wf[1], a.y, s);
                    s = fmaf(wf[2], a.z, s);
                    s = fmaf(wf[3], a.w, s);
                    s = fmaf(wf[4], b.x, s);
                    s = fmaf(wf[5], b.y, s);
                    s = fmaf(wf[6], b.z, s);
                    s = fmaf(wf[7], b.w, s);
                    acc[r] = s;
                }
            }
        }
    } else {
        for (int c = lane; c < k; c += WARP) {
            const float wf = widen<BF16>(wr[c]);
#pragma unroll
            for (int r = 0; r < MATVEC_MAX_ROWS; ++r) {
                if (r < m) {
                    acc[r] = fmaf(wf, x[(long)r * k + c], acc[r]);
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < MATVEC_MAX_ROWS; ++r) {
        if (r < m) { // m is the same for every lane, so the whole warp sums
            const float s = warp_sum(acc[r]);
            if (lane == 0) {
                y[(long)r * n + o] = s;
            }
        }
    }
}

extern "C" __global__ void rbees_matvec_f16(
    const uint16_t *__restrict__ w, const float *__restrict__ x, float *__restrict__ y,
    const int m, const int n, const int k) {
    matvec_16<false>(w, x, y, m, n, k);
}

extern "C" __global__ void rbees_matvec_bf16(
    const uint16_t *__restrict__ w, const float *__restrict__ x, float *__restrict__ y,
    const int m, const int n, const int k) {
    matvec_16<true>(w, x, y, m, n, k);
}

// n 16-bit values widened to f32: a band of weight rows for cuBLAS' f32
// product when there are more activation rows than the mat-vec kernel takes.
template <bool BF16>
__device__ void widen_16(const uint16_t *__restrict__ src, float *__restrict__ dst, const long n) {
    for (long idx = (long)blockIdx.x * blockDim.x + threadIdx.x; idx < n;
         idx += (long)gridDim.x * blockDim.x) {
        dst[idx] = widen<BF16>(src[idx]);
    }
}

extern "C" __global__ void rbees_widen_f16(
    const uint16_t *__restrict__ src, float *__restrict__ dst, const long n) {
    widen_16<false>(src, dst, n);
}

extern "C" __global__ void rbees_widen_bf16(
    const uint16_t *__restrict__ src, float *__restrict__ dst, const long n) {
    widen_16<true>(src, dst, n);
}
