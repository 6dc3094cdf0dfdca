// Column-parallel minimal-residual refinement of K ~= L^{-1} (DESIGN.md section 2).
// GPU twin of sansa_gpu/cpu/refine.py::_refine_column: same arithmetic (float64 accumulation,
// float32 storage), same per-column cap, same selection rule (diagonal kept, then the cap - 1
// largest |float32 value|, ties by lower row). Summation order differs (atomics), so values agree
// to rounding.
//
// Persistent blocks: block b owns columns col_begin + b, col_begin + b + gridDim.x, ... < col_end
// (a column range lets the host retry in chunks after an out-of-memory). Each block has dense scratch
// slices of length n in global memory: acc_r, acc_q (double, zero on entry and restored to zero
// on exit), mark_r, mark_q (int stamps j + 1; zero-initialised once), list_r, list_q (touched
// rows). Candidates of column j go to out_rows/out_vals[offsets[j] - offset_base : ... + out_count[j]],
// in no particular order (the host sorts them by (column, row) before the global cut).
#include "sansa_common.cuh"

__device__ __forceinline__ void sansa_touch(int* mark, int* list, int* n_listed, int row, int stamp) {
    if (atomicExch(&mark[row], stamp) != stamp) list[atomicAdd(n_listed, 1)] = row;
}

__device__ __forceinline__ unsigned int sansa_mag_key(float v) { return __float_as_uint(fabsf(v)); }

template <typename Offset>
__global__ void refine_columns(
    const long long n,
    const Offset* __restrict__ L_indptr, const int* __restrict__ L_indices, const float* __restrict__ L_data,
    const Offset* __restrict__ K_indptr, const int* __restrict__ K_indices, const float* __restrict__ K_data,
    const long long* __restrict__ cap, const long long* __restrict__ offsets, const long long offset_base,
    const long long col_begin, const long long col_end,
    const double tol, const int update,
    double* __restrict__ acc_r_all, double* __restrict__ acc_q_all,
    int* __restrict__ mark_r_all, int* __restrict__ mark_q_all,
    int* __restrict__ list_r_all, int* __restrict__ list_q_all,
    int* __restrict__ out_rows, float* __restrict__ out_vals,
    long long* __restrict__ out_count, double* __restrict__ out_rr)
{
    __shared__ double sh_d[32];
    __shared__ long long sh_ll[32];
    __shared__ int sh_i[32];
    __shared__ unsigned int hist[256];
    __shared__ int s_nr, s_nq, s_count;
    __shared__ unsigned int s_prefix, s_pmask;
    __shared__ long long s_kk;

    const long long slice = (long long)blockIdx.x * n;
    double* acc_r = acc_r_all + slice;
    double* acc_q = acc_q_all + slice;
    int* mark_r = mark_r_all + slice;
    int* mark_q = mark_q_all + slice;
    int* list_r = list_r_all + slice;
    int* list_q = list_q_all + slice;

    for (long long jj = col_begin + blockIdx.x; jj < col_end; jj += gridDim.x) {
        const int j = (int)jj;
        const int stamp = j + 1;
        if (threadIdx.x == 0) { s_nr = 0; s_nq = 0; s_count = 0; }
        __syncthreads();

        // r = e_j - L k_j
        const Offset k_begin = K_indptr[j], k_end = K_indptr[j + 1];
        for (Offset p = k_begin + threadIdx.x; p < k_end; p += blockDim.x) {
            const int i = K_indices[p];
            const double v = (double)K_data[p];
            for (Offset s = L_indptr[i]; s < L_indptr[i + 1]; ++s) {
                const int row = L_indices[s];
                sansa_touch(mark_r, list_r, &s_nr, row, stamp);
                atomicAdd(&acc_r[row], -(double)L_data[s] * v);
            }
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            sansa_touch(mark_r, list_r, &s_nr, j, stamp);
            acc_r[j] += 1.0;
        }
        __syncthreads();
        int nr = s_nr;
        double part = 0.0;
        for (int a = threadIdx.x; a < nr; a += blockDim.x) { const double x = acc_r[list_r[a]]; part += x * x; }
        const double rr = sansa_block_sum(part, sh_d);

        if (update) {
            // q = L r ; alpha = r.q / q.q
            double alpha = 0.0;
            if (rr > tol * tol) {
                for (int a = threadIdx.x; a < nr; a += blockDim.x) {
                    const int t = list_r[a];
                    const double rv = acc_r[t];
                    if (rv == 0.0) continue;
                    for (Offset s = L_indptr[t]; s < L_indptr[t + 1]; ++s) {
                        const int row = L_indices[s];
                        sansa_touch(mark_q, list_q, &s_nq, row, stamp);
                        atomicAdd(&acc_q[row], (double)L_data[s] * rv);
                    }
                }
                __syncthreads();
                const int nq = s_nq;
                part = 0.0;
                for (int a = threadIdx.x; a < nq; a += blockDim.x) { const double x = acc_q[list_q[a]]; part += x * x; }
                const double qq = sansa_block_sum(part, sh_d);
                part = 0.0;
                for (int a = threadIdx.x; a < nr; a += blockDim.x) { const int t = list_r[a]; part += acc_r[t] * acc_q[t]; }
                const double rq = sansa_block_sum(part, sh_d);
                for (int a = threadIdx.x; a < nq; a += blockDim.x) acc_q[list_q[a]] = 0.0;
                if (qq > 0.0) alpha = rq / qq;
            }
            // candidate c = k_j + alpha r, accumulated in acc_r
            for (int a = threadIdx.x; a < nr; a += blockDim.x) acc_r[list_r[a]] *= alpha;
            __syncthreads();
            for (Offset p = k_begin + threadIdx.x; p < k_end; p += blockDim.x) {
                const int i = K_indices[p];
                sansa_touch(mark_r, list_r, &s_nr, i, stamp);
                atomicAdd(&acc_r[i], (double)K_data[p]);
            }
            __syncthreads();
            nr = s_nr;

            // m = nonzero off-diagonal candidates; keep the diagonal + (cap - 1) largest
            long long m_part = 0;
            for (int a = threadIdx.x; a < nr; a += blockDim.x) {
                const int t = list_r[a];
                if (t != j && (float)acc_r[t] != 0.0f) ++m_part;
            }
            const long long m = sansa_block_sum(m_part, sh_ll);
            const long long n_free = cap[j] - 1;
            const bool cut = m > n_free;
            unsigned int tau_key = 0u;
            long long n_ties = 0;
            if (cut && n_free <= 0) {
                tau_key = 0xffffffffu;  // keep nothing but the diagonal
            } else if (cut) {
                // radix select: the n_free-th largest magnitude key, 8 bits at a time
                if (threadIdx.x == 0) { s_prefix = 0u; s_pmask = 0u; s_kk = n_free; }
                for (int shift = 24; shift >= 0; shift -= 8) {
                    for (int b = threadIdx.x; b < 256; b += blockDim.x) hist[b] = 0u;
                    __syncthreads();
                    const unsigned int prefix = s_prefix, pmask = s_pmask;
                    for (int a = threadIdx.x; a < nr; a += blockDim.x) {
                        const int t = list_r[a];
                        const float v32 = (float)acc_r[t];
                        if (t == j || v32 == 0.0f) continue;
                        const unsigned int key = sansa_mag_key(v32);
                        if ((key & pmask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
                    }
                    __syncthreads();
                    if (threadIdx.x == 0) {
                        long long cum = 0;
                        for (int b = 255; b >= 0; --b) {
                            if (cum + (long long)hist[b] >= s_kk) {
                                s_prefix = prefix | ((unsigned int)b << shift);
                                s_pmask = pmask | (255u << shift);
                                s_kk -= cum;
                                break;
                            }
                            cum += hist[b];
                        }
                    }
                    __syncthreads();
                }
                tau_key = s_prefix;
                n_ties = s_kk;  // entries equal to tau that are kept (lowest rows first)
            }
            const long long base = offsets[j] - offset_base;
            for (int a = threadIdx.x; a < nr; a += blockDim.x) {
                const int t = list_r[a];
                const float v32 = (float)acc_r[t];
                bool keep = (t == j);
                if (!keep && v32 != 0.0f) keep = !cut || sansa_mag_key(v32) > tau_key;
                if (keep) {
                    const int pos = atomicAdd(&s_count, 1);
                    out_rows[base + pos] = t;
                    out_vals[base + pos] = v32;
                }
            }
            int prev = -1;
            for (long long r = 0; r < n_ties; ++r) {
                int best = 0x7fffffff;
                for (int a = threadIdx.x; a < nr; a += blockDim.x) {
                    const int t = list_r[a];
                    const float v32 = (float)acc_r[t];
                    if (t != j && v32 != 0.0f && t > prev && sansa_mag_key(v32) == tau_key) best = min(best, t);
                }
                best = sansa_block_min(best, sh_i);
                if (best == 0x7fffffff) break;
                if (threadIdx.x == 0) {
                    const int pos = s_count++;
                    out_rows[base + pos] = best;
                    out_vals[base + pos] = (float)acc_r[best];
                }
                prev = best;
            }
            __syncthreads();
            if (threadIdx.x == 0) out_count[j] = s_count;
        }
        if (threadIdx.x == 0) out_rr[j] = rr;
        // restore the zero invariant of acc_r
        for (int a = threadIdx.x; a < nr; a += blockDim.x) acc_r[list_r[a]] = 0.0;
        __syncthreads();
    }
}
