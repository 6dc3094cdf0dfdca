// Fused scoring and masked top-k: s = (x Wt) Z per user, own items (with exclude_seen) and
// blocked items excluded, k best sorted, padded with -1 / -inf.
//
// Contract (same as sansa_gpu/cpu/inference.py, bit for bit): candidates are the items reached
// through Z from a latent row t with float32(h[t]) != 0 that the user does not have (when
// exclude_seen) and that are not blocked (blocked[c] != 0, when has_blocked); order is
// score descending, then lower item index. h = x Wt is accumulated in float64 in the order
// (user's items ascending, then Wt row order); s[c] = sum over t ascending of
// float32(h[t]) * Z[t, c] in float32. Every add and multiply is an explicitly rounded intrinsic
// (no FMA contraction) and every sum runs in that fixed order, so scores equal the CPU twin's
// exactly and so do the ids, ties included (scores are assumed not NaN: the weights are finite).
// No atomics.
//
// Layout: one warp per user, a persistent grid of warps (warp w takes users w, w + W, ...).
// Each warp owns dense scratch rows in global memory, zero on entry and reset on exit through
// the lists of what it touched (so buffers are reused across users and launches without a
// memset; tlist and list are written before they are read and need no reset):
//   h      n_latent doubles   hmark  n_latent bytes   tlist  n_latent ints  (touched latent rows)
//   s      n_items floats     flag   n_items bytes    list   n_items uint64 (reached items, then
//                                                                            their top-k keys)
// flag: 0 untouched, 1 reached (a candidate), 2 the user's own item (only with exclude_seen).
//
// Steps per user (the work is the CPU twin's: the touched entries of Wt and Z, once each):
//   1. own items -> flag 2 (with exclude_seen).
//   2. h: items of x in order; lanes split the Wt row (its latent ids are distinct, so lanes
//      never collide and each h[t] sees its terms in CPU order); first touches -> tlist.
//   3. sort tlist ascending, in place (warp bitonic sort, or a scan of hmark when that is
//      cheaper: both give the same list).
//   4. scatter, t ascending: for each touched t with hv = float32(h[t]) != 0, lanes split Z's
//      row t and do s[c] = s[c] + hv * Z[t, c] for the items c that are not the user's own; the
//      first touch of c (flag 0 -> 1) appends c to list. A row's column indices are distinct,
//      so no two lanes update the same s[c], and a __syncwarp between rows orders a row's
//      updates before the next row's. Each s[c] thus receives its terms one at a time in
//      ascending t, starting from 0: exactly the CPU's sum. Own items are skipped with
//      exclude_seen (the CPU scores them too but never returns them); without it, each reached
//      own item then gets s[i] + x_i (B = I + Wt Z, as the CPU). Then reset h, hmark (through tlist).
//   5. keys: list[a] = c becomes the 64-bit key (order-preserving bits of s[c] << ibits) |
//      (n_items - 1 - c): keys are distinct and a larger key ranks first (score desc, then item
//      asc: the CPU's rule, equal scores sharing their high bits). The score's exact bits are
//      decoded back from the key for the output. Blocked items are dropped here (the list is
//      compacted in order: one byte read per reached item, not per update). s[c], flag[c] and
//      the own-item flags are reset.
//   6. select: if there are more than k keys, a radix select on 5-bit digits (one histogram bin
//      per lane, counted with ballots), from the digit holding the highest bit where the keys
//      differ down, finds the digits of the k-th largest key; each pass keeps, compacted in
//      place, only the keys whose digits so far are >= the selected ones (one read of the kept
//      keys per pass), and ends when the keys kept are exactly the k largest.
//   7. bitonic sort of the <= k keys (descending), decode and write them; pad with -1 / -inf.
#include "sansa_common.cuh"

#define SANSA_FULL_MASK 0xffffffffu

// Append `value` for every lane whose `take` is set, in lane order; returns the new length.
template <typename T>
__device__ __forceinline__ int warp_append(bool take, T value, T* list, int length, int lane) {
    const unsigned ballot = __ballot_sync(SANSA_FULL_MASK, take);
    if (take) list[length + __popc(ballot & ((1u << lane) - 1u))] = value;
    return length + __popc(ballot);
}

// Sorts a[0, n) in place with the whole warp: ascending, or descending when Descending.
// Bitonic network of the next power of two P >= n in the form where every comparator (i, j),
// i < j, puts the element that ranks first at i (each merge starts by comparing i with its
// mirror in the block). Positions >= n stand for padding that ranks last, which such a
// comparator would leave in place, so comparators reaching past n are skipped: this sorts any n.
// Every element is in one comparator per step, so lanes never collide within a step.
template <bool Descending, typename T>
__device__ void warp_bitonic_sort(T* a, int n, int lane) {
    unsigned long long p = 1;
    while (p < (unsigned long long)n) p <<= 1;
    for (unsigned long long size = 2; size <= p; size <<= 1) {
        for (unsigned long long stride = size >> 1; stride > 0; stride >>= 1) {
            for (unsigned long long c = lane; c < (p >> 1); c += 32) {
                // comparator c: lower index i (bit `stride` clear), partner j (mirror or i + stride)
                const unsigned long long i = ((c & ~(stride - 1)) << 1) | (c & (stride - 1));
                const unsigned long long j = stride == (size >> 1) ? i ^ (size - 1) : i ^ stride;
                if (j < (unsigned long long)n) {
                    const T x = a[i], y = a[j];
                    if (Descending ? y > x : y < x) { a[i] = y; a[j] = x; }
                }
            }
            __syncwarp();
        }
    }
}

// Order-preserving unsigned image of a float: a < b <=> key(a) < key(b) for non-NaN floats,
// with -0 mapped as +0 (they compare equal).
__device__ __forceinline__ unsigned float_order_key(float v) {
    const unsigned u = __float_as_uint(v == 0.0f ? 0.0f : v);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ float float_from_order_key(unsigned k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

__device__ __forceinline__ unsigned long long shift_right(unsigned long long v, int s) {
    return s >= 64 ? 0ull : v >> s;
}

// This lane's bin count for one chunk of 32 keys: lane b counts the valid lanes whose 5-bit
// digit is b (a ballot per digit bit; no shared memory, no atomics).
__device__ __forceinline__ int warp_digit_count(bool valid, unsigned digit, int lane) {
    unsigned match = __ballot_sync(SANSA_FULL_MASK, valid);
    if (match == 0u) return 0;  // warp-uniform
    for (int bit = 0; bit < 5; ++bit) {
        const unsigned set = __ballot_sync(SANSA_FULL_MASK, valid && ((digit >> bit) & 1u));
        match &= ((lane >> bit) & 1) ? set : ~set;
    }
    return __popc(match);
}

// Lane b holds count[b] (keys with digit b); 1 <= need <= sum(count). Returns the digit b of the
// need-th largest key and, in `above` / `in_bin`, the number of keys with digit > b / == b.
__device__ __forceinline__ int warp_select_digit(int count, int need, int lane, int& above, int& in_bin) {
    int suffix = count;  // number of keys with digit >= lane
    for (int off = 1; off < 32; off <<= 1) {
        const int o = __shfl_down_sync(SANSA_FULL_MASK, suffix, off);
        if (lane + off < 32) suffix += o;
    }
    const unsigned reach = __ballot_sync(SANSA_FULL_MASK, suffix >= need);  // the digits <= b
    const int b = 31 - __clz((int)reach);
    in_bin = __shfl_sync(SANSA_FULL_MASK, count, b);
    above = __shfl_sync(SANSA_FULL_MASK, suffix, b) - in_bin;
    return b;
}

template <typename Offset>
__global__ void score_topk_warp(
    const Offset* __restrict__ x_indptr, const int* __restrict__ x_indices, const float* __restrict__ x_data,
    const long long* __restrict__ wt_indptr, const int* __restrict__ wt_indices, const float* __restrict__ wt_data,
    const long long* __restrict__ z_indptr, const int* __restrict__ z_indices, const float* __restrict__ z_data,
    const unsigned char* __restrict__ blocked, const int has_blocked, const int exclude_seen, const int n_latent, const int n_items, const int k, const int n_users,
    double* __restrict__ h_scratch, unsigned char* __restrict__ hmark_scratch, int* __restrict__ tlist_scratch,
    float* __restrict__ s_scratch, unsigned char* __restrict__ flag_scratch,
    unsigned long long* __restrict__ list_scratch,
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
    unsigned long long* list = list_scratch + warp * n_items;
    // bits of the item part of a key: n_items - 1 - c < 2^ibits (0 for a 1-item catalogue)
    const int ibits = n_items > 1 ? 32 - __clz(n_items - 1) : 0;
    const unsigned long long item_mask = (1ull << ibits) - 1ull;

    for (long long u = warp; u < n_users; u += n_warps) {
        SANSA_PHASE("gather");
        const Offset x_begin = x_indptr[u], x_end = x_indptr[u + 1];
        // 1. own items
        if (exclude_seen) {
            for (Offset p = x_begin + lane; p < x_end; p += 32) flag[x_indices[p]] = 2;
        }
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
        __syncwarp();
        // 3. touched latents ascending: rebuild tlist from a scan of hmark (n_latent / 32 rounds
        // of a byte load and a ballot) or bitonic-sort it (log2(P) (log2(P) + 1) / 2 steps of
        // P / 64 rounds of two loads and stores, P = nt rounded up to a power of two), whichever
        // is cheaper; both give the same list.
        SANSA_PHASE("sort_latents");
        {
            int log_p = 0;
            while ((1LL << log_p) < nt) ++log_p;
            const long long sort_rounds = (long long)(log_p * (log_p + 1) / 2) * (((1LL << log_p) + 63) / 64);
            if ((n_latent + 31) / 32 <= 2 * sort_rounds) {
                int found = 0;
                for (int t0 = 0; t0 < n_latent; t0 += 32) {
                    const int t = t0 + lane;
                    found = warp_append(t < n_latent && hmark[t] != 0, t, tlist, found, lane);
                }
                __syncwarp();
            } else {
                warp_bitonic_sort<false>(tlist, nt, lane);
            }
        }
        // 4. scatter Z's rows in ascending t into s; first-reached items -> list
        SANSA_PHASE("scatter");
        int nr = 0;
        for (int a = 0; a < nt; ++a) {
            const int t = tlist[a];
            const float hv = (float)h[t];
            if (hv == 0.0f) continue;  // warp-uniform
            const long long q_begin = z_indptr[t], q_end = z_indptr[t + 1];
            for (long long q0 = q_begin; q0 < q_end; q0 += 32) {
                const long long q = q0 + lane;
                bool first = false;
                int c = 0;
                if (q < q_end) {
                    c = z_indices[q];
                    const unsigned char f = flag[c];
                    if (f != 2) {
                        first = f == 0;
                        if (first) flag[c] = 1;
                        s[c] = __fadd_rn(s[c], __fmul_rn(hv, z_data[q]));
                    }
                }
                nr = warp_append(first, (unsigned long long)c, list, nr, lane);
            }
            __syncwarp();  // this row's updates of s / flag before the next row's
        }
        __syncwarp();  // every lane's reads of tlist / h (rows skipped too) before the reset
        if (!exclude_seen) {
            // own items reached score with B = I + Wt Z (EASE's B, zero diagonal): s[i] + x_i, as the
            // CPU twin (_add_own); the user's items are distinct, so lanes never share an s[i]
            for (Offset p = x_begin + lane; p < x_end; p += 32) {
                const int i = x_indices[p];
                if (flag[i] == 1) s[i] = __fadd_rn(s[i], x_data[p]);
            }
            __syncwarp();
        }
        for (int a = lane; a < nt; a += 32) {
            const int t = tlist[a];
            h[t] = 0.0;
            hmark[t] = 0;
        }
        // 5. item -> key, in place; reset s, flag
        SANSA_PHASE("keys");
        unsigned long long key_and = ~0ull, key_or = 0ull;
        int kept_keys = 0;
        for (int a0 = 0; a0 < nr; a0 += 32) {  // nr is warp-uniform: every lane runs every round
            const int a = a0 + lane;
            bool keep = false;
            unsigned long long key = 0ull;
            if (a < nr) {
                const int c = (int)list[a];
                keep = !(has_blocked && blocked[c]);
                key = ((unsigned long long)float_order_key(s[c]) << ibits) | (unsigned long long)(n_items - 1 - c);
                s[c] = 0.0f;
                flag[c] = 0;
            }
            __syncwarp();  // the round's reads of list before any lane overwrites them (to <= a)
            const int to = sansa_warp_slot(keep, kept_keys);
            if (keep) {
                list[to] = key;
                key_and &= key;
                key_or |= key;
            }
        }
        __syncwarp();
        nr = kept_keys;
        if (exclude_seen) {
            for (Offset p = x_begin + lane; p < x_end; p += 32) flag[x_indices[p]] = 0;
        }
        // 6. keep the k largest keys in list[0, n)
        SANSA_PHASE("select");
        int n = k > 0 ? nr : 0;
        if (0 < k && k < nr) {
            for (int off = 16; off > 0; off >>= 1) {
                key_and &= __shfl_xor_sync(SANSA_FULL_MASK, key_and, off);
                key_or |= __shfl_xor_sync(SANSA_FULL_MASK, key_or, off);
            }
            // Digits of 5 bits at shifts 5j, starting with the one holding the highest bit where
            // keys differ (nr >= 2 distinct keys, so there is one); the bits above are common.
            const unsigned long long diff = key_and ^ key_or;
            const unsigned diff_hi = (unsigned)(diff >> 32);
            const int top = diff_hi ? 63 - __clz((int)diff_hi) : 31 - __clz((int)(unsigned)diff);
            int shift = (top / 5 + 1) * 5;                          // bits >= shift: common prefix
            unsigned long long prefix = shift_right(key_and, shift);
            int need = k;  // keys still to take among those whose bits >= shift equal prefix
            // histogram of the first digit (every key has the prefix)
            int count = 0;
            for (int a0 = 0; a0 < n; a0 += 32) {
                const int a = a0 + lane;
                const bool valid = a < n;
                const unsigned digit = valid ? (unsigned)(list[a] >> (shift - 5)) & 31u : 0u;
                count += warp_digit_count(valid, digit, lane);
            }
            // Invariant: list[0, n) are the keys with (key >> shift) >= prefix; those above it
            // are among the k largest, need of those equal to it are, 1 <= need <= their number,
            // and lane b's count is how many of those equal have digit b below shift.
            while (true) {
                int above, in_bin;
                const int b = warp_select_digit(count, need, lane, above, in_bin);
                need -= above;
                shift -= 5;
                prefix = (prefix << 5) | (unsigned long long)b;
                const bool last = in_bin == need;  // all of bin b are in: the k largest are found
                // keep (key >> shift) >= prefix, compacted in place (write index <= read index);
                // unless last, count the next digit of the keys equal to the new prefix
                int kept = 0;
                count = 0;
                for (int a0 = 0; a0 < n; a0 += 32) {
                    const int a = a0 + lane;
                    const bool valid = a < n;
                    const unsigned long long key = valid ? list[a] : 0ull;
                    const unsigned long long high = key >> shift;
                    const bool keep = valid && high >= prefix;
                    if (!last) {
                        const bool equal = valid && high == prefix;  // shift > 0 here (see below)
                        count += warp_digit_count(equal, equal ? (unsigned)(key >> (shift - 5)) & 31u : 0u, lane);
                    }
                    __syncwarp();  // the chunk's reads before any lane overwrites them
                    const unsigned ballot = __ballot_sync(SANSA_FULL_MASK, keep);
                    const int to = kept + __popc(ballot & ((1u << lane) - 1u));
                    if (keep && to != a) list[to] = key;
                    kept += __popc(ballot);
                }
                __syncwarp();
                n = kept;
                // At shift 0 the prefix is a whole key: at most one key equals it (keys are
                // distinct) and 1 <= need <= in_bin, so `last` holds and shift never goes below 0.
                if (last) break;
            }
        }
        // 7. sort the n <= k winners (key descending = score desc, item asc) and write them
        SANSA_PHASE("sort_write");
        const long long o = u * (long long)k;
        unsigned long long mine = 0ull;  // k <= 32: the key of rank `lane`
        if (k <= 32) {
            // one key per lane, bitonic sort across the warp in registers: every lane works in every
            // step (the in-memory sort keeps at most k / 2 lanes busy); 0 pads (below any key)
            mine = lane < n ? list[lane] : 0ull;
            for (int size = 2; size <= 32; size <<= 1) {
                for (int stride = size >> 1; stride > 0; stride >>= 1) {
                    const unsigned long long other = __shfl_xor_sync(SANSA_FULL_MASK, mine, stride);
                    const bool take_max = ((lane & stride) == 0) == ((lane & size) == 0);
                    mine = take_max ? (other > mine ? other : mine) : (other < mine ? other : mine);
                }
            }
        } else {
            warp_bitonic_sort<true>(list, n, lane);
        }
        for (int r = lane; r < k; r += 32) {  // k <= 32: one pass, r == lane
            if (r < n) {
                const unsigned long long key = k <= 32 ? mine : list[r];
                out_ids[o + r] = (long long)(n_items - 1 - (int)(key & item_mask));
                out_scores[o + r] = float_from_order_key((unsigned)(key >> ibits));
            } else {
                out_ids[o + r] = -1;
                out_scores[o + r] = SANSA_NEG_INF;
            }
        }
        __syncwarp();  // the reads of list above before the next user's writes
    }
}
