// Column-parallel minimal-residual refinement of K ~= L^{-1} (docs/gpu_training.md, "The refinement kernel").
// GPU twin of sansa_gpu/cpu/refine.py::_refine_column, bit-identical to it:
//  * one warp per column j. Every sparse product walks its inputs in the CPU's order, one column of
//    L at a time, the warp's lanes sharing the walk (the rows of one L column are distinct, so no two
//    lanes add to the same entry at once): each entry of r = e_j - L k_j and q = L r receives its terms
//    in the CPU's order, with explicitly rounded operations (no FMA contraction);
//  * rows are listed in first-touch order (a ballot prefix per 32 entries: the CPU's order), and the
//    dot products (||r||^2, ||q||^2, r.q) are summed lane-strided, then by a shuffle tree, exactly as
//    the CPU's lane_tree_sum does; so every run gives the same K, equal to the CPU's;
//  * the selection (diagonal + the cap - 1 largest |float32 value|, ties to the lower row) is two
//    warp radix selects: the threshold magnitude, then, among the entries tied at it, the row bound.
//    No single-thread loop: every lane owns 8 of the 256 histogram bins.
// Scratch does not grow with the catalogue: each warp owns two open-addressing hash tables (r and q)
// of 2^table_log2 int keys + double values in global memory (keys start and end EMPTY), and lists of
// their used slots. A column whose touched rows could exceed half a table (the bound is counted
// before each product) is not processed: out_count[j] = -1 and out_need[j] = the bound, and the host
// runs those columns again with larger tables.
// Persistent warps: global warp w owns cols[w], cols[w + n_warps], ... (a column list lets the host
// retry overflowed columns and work in chunks after an out-of-memory). Candidates of column j go to
// out_rows/out_vals[offsets[j] - offset_base ...] in list order; the host sorts them by (column, row)
// before the global cut. blockDim.x must be SANSA_REFINE_THREADS.
#include "sansa_common.cuh"
#ifndef SANSA_PHASE
#define SANSA_PHASE(name) do {} while (0)
#endif

#define SANSA_REFINE_THREADS 128
#define SANSA_EMPTY (-1)

__device__ __forceinline__ unsigned int sansa_slot_of(int row, unsigned int mask) {
    return ((unsigned int)row * 2654435761u) & mask;  // Knuth's multiplicative hash
}

// The slot of `row` in the table, inserted (EMPTY -> row, *fresh = true) if absent. Keys are only
// touched atomically while lanes insert, so concurrent probes of other rows are safe.
__device__ __forceinline__ int sansa_find_or_insert(int* keys, unsigned int mask, int row, bool* fresh) {
    unsigned int h = sansa_slot_of(row, mask);
    while (true) {
        const int prev = atomicCAS(&keys[h], SANSA_EMPTY, row);
        if (prev == SANSA_EMPTY || prev == row) {
            *fresh = prev == SANSA_EMPTY;
            return (int)h;
        }
        h = (h + 1u) & mask;
    }
}

// The slot of `row`, or -1 when absent (no insertion may run concurrently).
__device__ __forceinline__ int sansa_find(const int* keys, unsigned int mask, int row) {
    unsigned int h = sansa_slot_of(row, mask);
    while (true) {
        const int k = keys[h];
        if (k == row) return (int)h;
        if (k == SANSA_EMPTY) return -1;
        h = (h + 1u) & mask;
    }
}

// One step of a sparse accumulation by a warp: each `active` lane adds `term` to its `row` of the table
// (keys, vals), inserting the row (value 0.0 + term: the CPU's first touch) when absent; rows inserted
// now are appended to `list` (their slots) in lane order, `n` counting them. The rows of one step must
// be distinct; the closing __syncwarp lets the next step's lanes touch the same rows.
__device__ __forceinline__ void sansa_warp_add(int* keys, double* vals, unsigned int mask, int* list, int& n,
                                               bool active, int row, double term) {
    bool fresh = false;
    int slot = 0;
    if (active) {
        slot = sansa_find_or_insert(keys, mask, row, &fresh);
        vals[slot] = __dadd_rn(fresh ? 0.0 : vals[slot], term);
    }
    const int pos = sansa_warp_slot(fresh, n);
    if (fresh) list[pos] = slot;
    __syncwarp();
}

__device__ __forceinline__ double sansa_warp_tree_sum(double part) {
    // lane 0 gets the CPU's warp_tree_combine order; broadcast to every lane
    for (int off = 16; off > 0; off >>= 1) part = __dadd_rn(part, __shfl_down_sync(0xffffffffu, part, off));
    return __shfl_sync(0xffffffffu, part, 0);
}

__device__ __forceinline__ long long sansa_warp_total(long long v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    return __shfl_sync(0xffffffffu, v, 0);
}

// The k-th largest (k >= 1) of the 32-bit keys that key_of(a, &key) marks valid for a < n_items, by an
// 8-bit radix select over the warp's 256-bin histogram `hist`; *kept_at returns how many entries equal
// to it are among the k largest. Every lane calls it and gets the result.
template <typename KeyOf>
__device__ unsigned int sansa_warp_select(KeyOf key_of, int n_items, long long k, unsigned int* hist,
                                          long long* kept_at) {
    const unsigned full = 0xffffffffu;
    const int lane = threadIdx.x & 31;
    unsigned int prefix = 0u, pmask = 0u;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = lane; b < 256; b += 32) hist[b] = 0u;
        __syncwarp();
        for (int a = lane; a < n_items; a += 32) {
            unsigned int key;
            if (key_of(a, &key) && (key & pmask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
        }
        __syncwarp();
        // lane l owns bins 8l .. 8l + 7; entries in bins above lane l's: the lanes above it
        long long own = 0;
        for (int b = 8 * lane; b < 8 * lane + 8; ++b) own += hist[b];
        long long above = own;  // inclusive suffix sum over lanes >= l, then made exclusive
        for (int off = 1; off < 32; off <<= 1) {
            const long long v = __shfl_down_sync(full, above, off);
            if (lane + off < 32) above += v;
        }
        above -= own;
        int found = -1;
        long long cum = above, rest = 0;
        if (above < k) {
            for (int b = 8 * lane + 7; b >= 8 * lane; --b) {
                if (cum + (long long)hist[b] >= k) { found = b; rest = k - cum; break; }
                cum += hist[b];
            }
        }
        const unsigned who = __ballot_sync(full, found >= 0);
        const int src = __ffs((int)who) - 1;  // exactly one lane finds it
        found = __shfl_sync(full, found, src);
        k = __shfl_sync(full, rest, src);
        prefix |= (unsigned int)found << shift;
        pmask |= 255u << shift;
        __syncwarp();
    }
    *kept_at = k;
    return prefix;
}

template <typename Offset>
__global__ void refine_columns(
    const long long n,
    const Offset* __restrict__ L_indptr, const int* __restrict__ L_indices, const float* __restrict__ L_data,
    const Offset* __restrict__ K_indptr, const int* __restrict__ K_indices, const float* __restrict__ K_data,
    const long long* __restrict__ cols, const long long n_cols,
    const long long* __restrict__ cap, const long long* __restrict__ offsets, const long long offset_base,
    const double tol, const int update, const int table_log2,
    int* __restrict__ keys_r_all, double* __restrict__ vals_r_all,
    int* __restrict__ keys_q_all, double* __restrict__ vals_q_all,
    int* __restrict__ list_r_all, int* __restrict__ list_q_all,
    int* __restrict__ out_rows, float* __restrict__ out_vals,
    long long* __restrict__ out_count, double* __restrict__ out_rr, long long* __restrict__ out_need)
{
    __shared__ unsigned int hist_all[SANSA_REFINE_THREADS / 32][256];
    const int lane = threadIdx.x & 31;
    const long long warp_in_block = threadIdx.x >> 5;
    const long long warp = (long long)blockIdx.x * (SANSA_REFINE_THREADS / 32) + warp_in_block;
    const long long n_warps = (long long)gridDim.x * (SANSA_REFINE_THREADS / 32);
    const long long table = 1ll << table_log2;
    const unsigned int mask = (unsigned int)(table - 1);
    const long long half = table / 2;  // at most this many keys per table: probes stay short
    int* keys_r = keys_r_all + warp * table;
    double* vals_r = vals_r_all + warp * table;
    int* keys_q = keys_q_all + warp * table;
    double* vals_q = vals_q_all + warp * table;
    int* list_r = list_r_all + warp * half;
    int* list_q = list_q_all + warp * half;
    unsigned int* hist = hist_all[warp_in_block];

    for (long long c = warp; c < n_cols; c += n_warps) {
        const int j = (int)cols[c];
        const Offset kb = K_indptr[j], ke = K_indptr[j + 1];
        int nr = 0, nq = 0;
        double rr = 0.0, alpha = 0.0;
        long long count = 0;  // candidates written (update); -1: the tables were too small

        // ---- r = e_j - L k_j
        SANSA_PHASE("r");
        long long bound = 0;
        for (Offset p = kb + lane; p < ke; p += 32) {
            const int i = K_indices[p];
            bound += (long long)(L_indptr[i + 1] - L_indptr[i]);
        }
        bound = sansa_warp_total(bound) + 1 + (long long)(ke - kb);  // + the diagonal, + k_j's own rows
        if (bound > half && half < n) {  // a table of >= 2n slots holds any column
            count = -1;
        } else {
            for (Offset p = kb; p < ke; ++p) {
                const int i = K_indices[p];
                const double v = (double)K_data[p];
                const Offset s_end = L_indptr[i + 1];
                for (Offset s0 = L_indptr[i]; s0 < s_end; s0 += 32) {
                    const Offset s = s0 + lane;
                    const bool active = s < s_end;
                    // r -= L v, as r + (-(L v)): IEEE subtraction; the product of two floats is exact
                    sansa_warp_add(keys_r, vals_r, mask, list_r, nr, active, active ? L_indices[s] : 0,
                                   active ? -__dmul_rn((double)L_data[s], v) : 0.0);
                }
            }
            sansa_warp_add(keys_r, vals_r, mask, list_r, nr, lane == 0, j, 1.0);  // r = e_j - L k_j
            double part = 0.0;
            for (int a = lane; a < nr; a += 32) {
                const double x = vals_r[list_r[a]];
                part = __dadd_rn(part, __dmul_rn(x, x));
            }
            rr = sansa_warp_tree_sum(part);
        }

        if (update && count == 0) {
            // ---- q = L r ; alpha = r.q / q.q
            SANSA_PHASE("q");
            if (sqrt(rr) > tol) {
                long long qbound = 0;
                for (int a = lane; a < nr; a += 32) {
                    const int slot = list_r[a];
                    if (vals_r[slot] != 0.0) {
                        const int t = keys_r[slot];
                        qbound += (long long)(L_indptr[t + 1] - L_indptr[t]);
                    }
                }
                qbound = sansa_warp_total(qbound);
                if (qbound > half && half < n) {
                    count = -1;
                    bound = qbound;
                } else {
                    for (int a = 0; a < nr; ++a) {
                        const int t_slot = list_r[a];
                        const double rv = vals_r[t_slot];
                        if (rv == 0.0) continue;  // the same in every lane
                        const int t = keys_r[t_slot];
                        const Offset s_end = L_indptr[t + 1];
                        for (Offset s0 = L_indptr[t]; s0 < s_end; s0 += 32) {
                            const Offset s = s0 + lane;
                            const bool active = s < s_end;
                            sansa_warp_add(keys_q, vals_q, mask, list_q, nq, active, active ? L_indices[s] : 0,
                                           active ? __dmul_rn((double)L_data[s], rv) : 0.0);
                        }
                    }
                    __syncwarp();  // every lane's reads of vals_r (skipped zero entries too) before the writes below
                    double part = 0.0;
                    for (int a = lane; a < nq; a += 32) {
                        const double x = vals_q[list_q[a]];
                        part = __dadd_rn(part, __dmul_rn(x, x));
                    }
                    const double qq = sansa_warp_tree_sum(part);
                    part = 0.0;
                    for (int a = lane; a < nr; a += 32) {
                        const int slot = list_r[a];
                        const int sq = sansa_find(keys_q, mask, keys_r[slot]);
                        if (sq >= 0) part = __dadd_rn(part, __dmul_rn(vals_r[slot], vals_q[sq]));
                    }
                    const double rq = sansa_warp_tree_sum(part);
                    if (qq > 0.0) alpha = __ddiv_rn(rq, qq);
                }
            }
        }

        if (update && count == 0) {
            // ---- candidate c = k_j + alpha r, accumulated in the r table
            SANSA_PHASE("candidate");
            for (int a = lane; a < nr; a += 32) vals_r[list_r[a]] = __dmul_rn(vals_r[list_r[a]], alpha);
            __syncwarp();
            for (Offset p0 = kb; p0 < ke; p0 += 32) {  // k_j's rows are distinct: lanes never collide
                const Offset p = p0 + lane;
                const bool active = p < ke;
                sansa_warp_add(keys_r, vals_r, mask, list_r, nr, active, active ? K_indices[p] : 0,
                               active ? (double)K_data[p] : 0.0);
            }

            // ---- select: the diagonal + the (cap - 1) largest |float32 value|, ties to the lower row
            SANSA_PHASE("select");
            long long m = 0;
            for (int a = lane; a < nr; a += 32) {
                const int slot = list_r[a];
                if (keys_r[slot] != j && (float)vals_r[slot] != 0.0f) ++m;
            }
            m = sansa_warp_total(m);
            const long long n_free = cap[j] - 1;
            const bool cut = m > n_free;
            unsigned int tau_key = 0u;
            int row_bound = 0x7fffffff;  // tied entries kept: rows <= row_bound
            if (cut && n_free <= 0) {
                tau_key = 0xffffffffu;  // nothing but the diagonal
            } else if (cut) {
                long long n_ties = 0;
                auto magnitude = [&](int a, unsigned int* key) {
                    const int slot = list_r[a];
                    const float v32 = (float)vals_r[slot];
                    *key = __float_as_uint(fabsf(v32));
                    return keys_r[slot] != j && v32 != 0.0f;
                };
                tau_key = sansa_warp_select(magnitude, nr, n_free, hist, &n_ties);
                long long tied = 0;
                for (int a = lane; a < nr; a += 32) {
                    unsigned int key;
                    if (magnitude(a, &key) && key == tau_key) ++tied;
                }
                tied = sansa_warp_total(tied);
                if (n_ties < tied) {  // keep the n_ties lowest rows among the tied: the n_ties-th largest ~row
                    auto low_row = [&](int a, unsigned int* key) {
                        unsigned int mag;
                        const bool ok = magnitude(a, &mag) && mag == tau_key;
                        *key = 0x7fffffffu - (unsigned int)keys_r[list_r[a]];
                        return ok;
                    };
                    long long unused = 0;
                    row_bound = (int)(0x7fffffffu - sansa_warp_select(low_row, nr, n_ties, hist, &unused));
                }
            }
            SANSA_PHASE("write");
            const long long base = offsets[j] - offset_base;
            for (int a0 = 0; a0 < nr; a0 += 32) {
                const int a = a0 + lane;
                bool keep = false;
                int row = 0;
                float v32 = 0.0f;
                if (a < nr) {
                    const int slot = list_r[a];
                    row = keys_r[slot];
                    v32 = (float)vals_r[slot];
                    if (row == j) {
                        keep = true;
                    } else if (v32 != 0.0f) {
                        const unsigned int key = __float_as_uint(fabsf(v32));
                        keep = !cut || key > tau_key || (key == tau_key && row <= row_bound);
                    }
                }
                const long long pos = base + sansa_warp_slot(keep, count);
                if (keep) {
                    out_rows[pos] = row;
                    out_vals[pos] = v32;
                }
            }
        }

        // ---- results, and both tables back to EMPTY for the next column
        SANSA_PHASE("reset");
        if (lane == 0) {
            out_rr[j] = count < 0 && nr == 0 ? -1.0 : rr;
            if (update || count < 0) out_count[j] = count;
            if (count < 0) out_need[j] = bound;
        }
        for (int a = lane; a < nr; a += 32) keys_r[list_r[a]] = SANSA_EMPTY;
        for (int a = lane; a < nq; a += 32) keys_q[list_q[a]] = SANSA_EMPTY;
        __syncwarp();
    }
}
