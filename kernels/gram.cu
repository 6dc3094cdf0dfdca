// The lower triangle of the Gram X^T X and its column norms in one pass (docs/gpu_training.md).
// GPU twin of sansa_gpu/cpu/gram.py::_gram_block, bit-identical to it:
//  * one warp per column j (permuted order; item = perm[j]); the warp walks the users of the item
//    in CSC order and, for each user, its lanes split the user's items (distinct rows, so no two
//    lanes touch the same row at once): every entry is summed over users in the CPU's order, and a
//    product of two float32 values is exact in float64 (no FMA can change it);
//  * rows are listed in first-touch order (a ballot prefix per 32 items = the CPU's order), and the
//    squared column norm is summed lane-strided then by a shuffle tree, as lane_tree_sum does;
//  * the kept entries (diagonal, or row > j with value * scale_i * scale_j >= min_value) are written in
//    list order to the column's slots; the host sorts them by row and applies the optional per-column
//    cap with the CPU's rule.
// Persistent warps: global warp w owns columns b0 + w, b0 + w + n_warps, ... < b1. Each warp has dense
// scratch slices of length n in global memory: acc (double), mark (int stamps j + 1, zero-initialised
// once; every column has its own stamp, so they are never cleared), list (int).
#include "sansa_common.cuh"
#ifndef SANSA_PHASE
#define SANSA_PHASE(name) do {} while (0)
#endif

template <typename Offset>
__global__ void gram_columns(
    const long long n, const long long b0, const long long b1,
    const Offset* __restrict__ Xc_indptr, const int* __restrict__ Xc_indices, const float* __restrict__ Xc_data,
    const Offset* __restrict__ Xr_indptr, const int* __restrict__ Xr_indices, const float* __restrict__ Xr_data,
    const long long* __restrict__ perm, const long long* __restrict__ inv_perm,
    const double min_value, const double* __restrict__ scale,
    const long long* __restrict__ slot_start,
    double* __restrict__ acc_all, int* __restrict__ mark_all, int* __restrict__ list_all,
    int* __restrict__ out_rows, double* __restrict__ out_vals, long long* __restrict__ out_count,
    double* __restrict__ sq_norms)
{
    const unsigned full = 0xffffffffu;
    const int lane = threadIdx.x & 31;
    const long long warps_per_block = blockDim.x >> 5;
    const long long warp = (long long)blockIdx.x * warps_per_block + (threadIdx.x >> 5);
    const long long n_warps = (long long)gridDim.x * warps_per_block;
    double* acc = acc_all + warp * n;
    int* mark = mark_all + warp * n;
    int* list = list_all + warp * n;

    for (long long jj = b0 + warp; jj < b1; jj += n_warps) {
        const int j = (int)jj;
        const int stamp = j + 1;
        const long long item = perm[j];
        SANSA_PHASE("accumulate");
        int nt = 0;  // the same in every lane
        for (Offset p = Xc_indptr[item]; p < Xc_indptr[item + 1]; ++p) {
            const int u = Xc_indices[p];
            const double xv = (double)Xc_data[p];
            const Offset q_end = Xr_indptr[u + 1];
            for (Offset q0 = Xr_indptr[u]; q0 < q_end; q0 += 32) {
                const Offset q = q0 + lane;
                const bool active = q < q_end;
                int i = 0;
                bool fresh = false;
                double prod = 0.0;
                if (active) {
                    i = (int)inv_perm[Xr_indices[q]];
                    fresh = mark[i] != stamp;
                    prod = __dmul_rn(xv, (double)Xr_data[q]);
                }
                const int pos = sansa_warp_slot(fresh, nt);
                if (active) {
                    if (fresh) {
                        mark[i] = stamp;
                        list[pos] = i;
                        acc[i] = prod;  // the CPU's 0.0 + prod
                    } else {
                        acc[i] = __dadd_rn(acc[i], prod);
                    }
                }
                __syncwarp();
            }
        }
        SANSA_PHASE("norm_and_keep");
        double part = 0.0;
        for (int a = lane; a < nt; a += 32) {
            const double v = acc[list[a]];
            part = __dadd_rn(part, __dmul_rn(v, v));
        }
        for (int off = 16; off > 0; off >>= 1) part = __dadd_rn(part, __shfl_down_sync(full, part, off));
        if (lane == 0) sq_norms[item] = part;

        const long long base = slot_start[jj - b0];
        const double s_j = scale[j];
        long long kept = 0;
        for (int a0 = 0; a0 < nt; a0 += 32) {
            const int a = a0 + lane;
            int i = 0;
            double v = 0.0;
            bool keep = false;
            if (a < nt) {
                i = list[a];
                v = acc[i];
                keep = i == j || (i > j && v * scale[i] * s_j >= min_value);
            }
            const long long pos = base + sansa_warp_slot(keep, kept);
            if (keep) {
                out_rows[pos] = i;
                out_vals[pos] = v;
            }
        }
        if (lane == 0) out_count[jj - b0] = kept;
        __syncwarp();
    }
}
