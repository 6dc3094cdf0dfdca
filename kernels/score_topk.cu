// Fused scoring and masked top-k: s = (x Wt) Z per user, own items excluded, k best sorted,
// padded with -1 / -inf. One block per user of the batch; dense per-user scratch rows in global
// memory (h: n_latent floats, s: n_items floats, flag: n_items bytes), zero on entry and left zero
// on exit so the buffers are reused across batches without clearing.
//
// Contract (same as sansa_gpu/cpu/inference.py): candidates are the items reached through Z
// (structurally nonzero score) that the user does not have; order is score descending, then
// lower item index. Accumulation is float32 with atomics, so scores match the CPU (float64
// accumulation) to float32 rounding.
//
// First version: top-k by k rounds of block arg-best over the score row, O(k * n_items) per
// user. Issue 5 replaces it with a radix select.
#include "sansa_common.cuh"

template <typename Offset>
__global__ void score_topk_dense(
    const Offset* __restrict__ x_indptr, const int* __restrict__ x_indices, const float* __restrict__ x_data,
    const long long* __restrict__ wt_indptr, const int* __restrict__ wt_indices, const float* __restrict__ wt_data,
    const long long* __restrict__ z_indptr, const int* __restrict__ z_indices, const float* __restrict__ z_data,
    const int n_latent, const int n_items, const int k, const long long user_offset, const int n_batch,
    float* __restrict__ h_scratch, float* __restrict__ s_scratch, unsigned char* __restrict__ flag_scratch,
    long long* __restrict__ out_ids, float* __restrict__ out_scores)
{
    __shared__ float sh_s[32];
    __shared__ int sh_i[32];
    const int b = blockIdx.x;
    if (b >= n_batch) return;
    const long long u = user_offset + b;
    float* h = h_scratch + (long long)b * n_latent;
    float* s = s_scratch + (long long)b * n_items;
    unsigned char* flag = flag_scratch + (long long)b * n_items;
    const Offset x_begin = x_indptr[u], x_end = x_indptr[u + 1];

    // h = x Wt
    for (Offset p = x_begin + threadIdx.x; p < x_end; p += blockDim.x) {
        const int i = x_indices[p];
        const float x = x_data[p];
        for (long long q = wt_indptr[i]; q < wt_indptr[i + 1]; ++q) atomicAdd(&h[wt_indices[q]], x * wt_data[q]);
    }
    __syncthreads();
    // s = h Z; flag marks structurally reached items; h is cleared as it is consumed
    for (int t = threadIdx.x; t < n_latent; t += blockDim.x) {
        const float hv = h[t];
        if (hv != 0.0f) {
            for (long long q = z_indptr[t]; q < z_indptr[t + 1]; ++q) {
                const int c = z_indices[q];
                atomicAdd(&s[c], hv * z_data[q]);
                flag[c] = 1;
            }
            h[t] = 0.0f;
        }
    }
    __syncthreads();
    for (Offset p = x_begin + threadIdx.x; p < x_end; p += blockDim.x) flag[x_indices[p]] = 0;
    __syncthreads();
    // k rounds of block arg-best; the winner's flag is cleared
    for (int r = 0; r < k; ++r) {
        float best = SANSA_NEG_INF;
        int best_i = SANSA_NO_ITEM;
        for (int c = threadIdx.x; c < n_items; c += blockDim.x) {
            if (flag[c]) {
                const float v = s[c];
                if (sansa_ranks_before(v, c, best, best_i)) { best = v; best_i = c; }
            }
        }
        sansa_block_argbest(best, best_i, sh_s, sh_i);
        if (threadIdx.x == 0) {
            const long long o = (long long)b * k + r;
            if (best_i == SANSA_NO_ITEM) {
                out_ids[o] = -1;
                out_scores[o] = SANSA_NEG_INF;
            } else {
                out_ids[o] = best_i;
                out_scores[o] = best;
                flag[best_i] = 0;
            }
        }
        __syncthreads();
    }
    for (int c = threadIdx.x; c < n_items; c += blockDim.x) {
        s[c] = 0.0f;
        flag[c] = 0;
    }
}
