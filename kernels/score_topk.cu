// Fused scoring and masked top-k: s = (x Wt) Z per user, own items excluded, k best sorted,
// padded with -1 / -inf.
//
// Contract (same as sansa_gpu/cpu/inference.py, bit for bit): candidates are the items reached
// through Z from a latent row t with float32(h[t]) != 0 that the user does not have; order is
// score descending, then lower item index. h = x Wt is accumulated in float64 in the order
// (user's items ascending, then Wt row order); s[c] = sum over t ascending of
// float32(h[t]) * Z[t, c] in float32. Every add and multiply is an explicitly rounded intrinsic
// (no FMA contraction) and every sum runs in that fixed order, so scores equal the CPU twin's
// exactly and so do the ids, ties included. No atomics.
//
// Layout: one warp per user, a persistent grid of warps (warp w takes users w, w + W, ...).
// Each warp owns dense scratch rows in global memory, zero on entry and reset on exit through
// the lists of what it touched (so buffers are reused across users and launches without a
// memset):
//   h      n_latent doubles    hmark  n_latent bytes   tlist  n_latent ints (touched latent rows)
//   s      n_items floats      flag   n_items bytes    rlist  n_items ints  (reached items)
// flag: 0 untouched, 1 candidate, 2 the user's own item, 3 already taken into the top-k.
// Steps per user:
//   1. own items -> flag 2.
//   2. h: items of x in order; lanes split the Wt row (its latent ids are distinct, so lanes
//      never collide and each h[t] sees its terms in CPU order); first touches -> tlist.
//   3. reach: for each touched t with float32(h[t]) != 0, lanes split Z's row t; first reached
//      items (flag 0 -> 1) -> rlist. Own items (flag 2) are reached but never candidates.
//   4. s: lanes split rlist; each lane sums its item's column of Z (Zt row, ascending t) over
//      the rows with float32(h[t]) != 0: the CPU's ascending-t order.
//   5. top-k: k rounds of warp arg-best over rlist (candidates only); the winner -> flag 3.
//   6. reset h, hmark (tlist), s, flag (rlist), own-item flags.
#include "sansa_common.cuh"

#define SANSA_FULL_MASK 0xffffffffu

__device__ __forceinline__ void warp_argbest(float& s, int& i) {
    for (int off = 16; off > 0; off >>= 1) {
        const float os = __shfl_down_sync(SANSA_FULL_MASK, s, off);
        const int oi = __shfl_down_sync(SANSA_FULL_MASK, i, off);
        if (sansa_ranks_before(os, oi, s, i)) { s = os; i = oi; }
    }
    s = __shfl_sync(SANSA_FULL_MASK, s, 0);
    i = __shfl_sync(SANSA_FULL_MASK, i, 0);
}

// Append `value` for every lane whose `take` is set, in lane order; returns the new length.
__device__ __forceinline__ int warp_append(bool take, int value, int* list, int length, int lane) {
    const unsigned ballot = __ballot_sync(SANSA_FULL_MASK, take);
    if (take) list[length + __popc(ballot & ((1u << lane) - 1u))] = value;
    return length + __popc(ballot);
}

template <typename Offset>
__global__ void score_topk_warp(
    const Offset* __restrict__ x_indptr, const int* __restrict__ x_indices, const float* __restrict__ x_data,
    const long long* __restrict__ wt_indptr, const int* __restrict__ wt_indices, const float* __restrict__ wt_data,
    const long long* __restrict__ z_indptr, const int* __restrict__ z_indices, const float* __restrict__ z_data,
    const long long* __restrict__ zt_indptr, const int* __restrict__ zt_indices, const float* __restrict__ zt_data,
    const int n_latent, const int n_items, const int k, const int n_users,
    double* __restrict__ h_scratch, unsigned char* __restrict__ hmark_scratch, int* __restrict__ tlist_scratch,
    float* __restrict__ s_scratch, unsigned char* __restrict__ flag_scratch, int* __restrict__ rlist_scratch,
    long long* __restrict__ out_ids, float* __restrict__ out_scores)
{
    const int lane = threadIdx.x & 31;
    const long long warp = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const long long n_warps = ((long long)gridDim.x * blockDim.x) >> 5;
    double* h = h_scratch + warp * n_latent;
    unsigned char* hmark = hmark_scratch + warp * n_latent;
    int* tlist = tlist_scratch + warp * n_latent;
    float* s = s_scratch + warp * n_items;
    unsigned char* flag = flag_scratch + warp * n_items;
    int* rlist = rlist_scratch + warp * n_items;

    for (long long u = warp; u < n_users; u += n_warps) {
        const Offset x_begin = x_indptr[u], x_end = x_indptr[u + 1];
        // 1. own items
        for (Offset p = x_begin + lane; p < x_end; p += 32) flag[x_indices[p]] = 2;
        __syncwarp();
        // 2. h = x Wt, float64, CPU order
        int nt = 0;
        for (Offset p = x_begin; p < x_end; ++p) {
            const int i = x_indices[p];
            const double x = (double)x_data[p];
            const long long q_begin = wt_indptr[i], q_end = wt_indptr[i + 1];
            for (long long q0 = q_begin; q0 < q_end; q0 += 32) {
                const long long q = q0 + lane;
                bool first = false;
                int t = 0;
                if (q < q_end) {
                    t = wt_indices[q];
                    first = hmark[t] == 0;
                    hmark[t] = 1;
                    h[t] = __dadd_rn(h[t], __dmul_rn(x, (double)wt_data[q]));
                }
                nt = warp_append(first, t, tlist, nt, lane);
            }
            __syncwarp();
        }
        // 3. reached items
        int nr = 0;
        for (int a = 0; a < nt; ++a) {
            const int t = tlist[a];
            if ((float)h[t] == 0.0f) continue;  // warp-uniform
            const long long q_begin = z_indptr[t], q_end = z_indptr[t + 1];
            for (long long q0 = q_begin; q0 < q_end; q0 += 32) {
                const long long q = q0 + lane;
                bool first = false;
                int c = 0;
                if (q < q_end) {
                    c = z_indices[q];
                    first = flag[c] == 0;
                    if (first) flag[c] = 1;
                }
                nr = warp_append(first, c, rlist, nr, lane);
            }
            __syncwarp();
        }
        // 4. scores of the candidates, ascending t
        for (int a = lane; a < nr; a += 32) {
            const int c = rlist[a];
            float acc = 0.0f;
            for (long long q = zt_indptr[c]; q < zt_indptr[c + 1]; ++q) {
                const int t = zt_indices[q];
                if (hmark[t]) {
                    const float hv = (float)h[t];
                    if (hv != 0.0f) acc = __fadd_rn(acc, __fmul_rn(hv, zt_data[q]));
                }
            }
            s[c] = acc;
        }
        __syncwarp();
        // 5. top-k
        const long long o = u * k;
        for (int r = 0; r < k; ++r) {
            float best = SANSA_NEG_INF;
            int best_i = SANSA_NO_ITEM;
            for (int a = lane; a < nr; a += 32) {
                const int c = rlist[a];
                if (flag[c] == 1) {
                    const float v = s[c];
                    if (sansa_ranks_before(v, c, best, best_i)) { best = v; best_i = c; }
                }
            }
            warp_argbest(best, best_i);
            __syncwarp();  // order the lanes' reads of flag[] above before lane 0 writes it (shuffles do not)
            if (lane == 0) {
                if (best_i == SANSA_NO_ITEM) {
                    out_ids[o + r] = -1;
                    out_scores[o + r] = SANSA_NEG_INF;
                } else {
                    out_ids[o + r] = best_i;
                    out_scores[o + r] = best;
                    flag[best_i] = 3;
                }
            }
            __syncwarp();
        }
        // 6. reset scratch
        for (int a = lane; a < nr; a += 32) {
            const int c = rlist[a];
            s[c] = 0.0f;
            flag[c] = 0;
        }
        for (int a = lane; a < nt; a += 32) {
            const int t = tlist[a];
            h[t] = 0.0;
            hmark[t] = 0;
        }
        for (Offset p = x_begin + lane; p < x_end; p += 32) flag[x_indices[p]] = 0;
        __syncwarp();
    }
}
