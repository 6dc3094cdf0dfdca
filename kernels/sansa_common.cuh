// Shared device helpers for sansa_gpu kernels.
#pragma once

#define SANSA_NEG_INF __int_as_float(0xff800000)
#define SANSA_NO_ITEM 0x7fffffff

// SANSA_PHASE("name"): the calling thread's work from here on belongs to phase `name` in the CPU
// executor's counts (sansa_gpu/_testing, docs/executor_counts.md: busy lanes, memory sectors and
// atomics per phase). Every thread that enters a phase should say so. On the device (nvcc /
// NVRTC) it is nothing; `"" id` only accepts a string literal.
#if defined(CUDA_EMU_EXECUTOR)
#define SANSA_PHASE(id) ::cuda_emu::phase("" id)
#else
#define SANSA_PHASE(id) do {} while (0)
#endif

// This lane's position among the lanes of the warp whose `take` is set, counted from `count` (the
// same in every lane), which then advances by their number: the ballot-prefix compaction with which
// the kernels append to lists and results in lane order. Every lane of the warp must call it.
template <typename T>
__device__ __forceinline__ T sansa_warp_slot(bool take, T& count) {
    const unsigned mask = __ballot_sync(0xffffffffu, take);
    const T pos = count + (T)__popc(mask & ((1u << (threadIdx.x & 31)) - 1u));
    count += (T)__popc(mask);
    return pos;
}

// (score desc, index asc): true when (s1, i1) ranks before (s2, i2).
__device__ __forceinline__ bool sansa_ranks_before(float s1, int i1, float s2, int i2) {
    return s1 > s2 || (s1 == s2 && i1 < i2);
}

// Block-wide arg-best over (score, index) pairs; every thread gets the result.
// blockDim.x must be a multiple of 32 and at most 1024.
__device__ __forceinline__ void sansa_block_argbest(float& s, int& i, float* sh_s, int* sh_i) {
    const unsigned full = 0xffffffffu;
    for (int off = 16; off > 0; off >>= 1) {
        float os = __shfl_down_sync(full, s, off);
        int oi = __shfl_down_sync(full, i, off);
        if (sansa_ranks_before(os, oi, s, i)) { s = os; i = oi; }
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    if (lane == 0) { sh_s[warp] = s; sh_i[warp] = i; }
    __syncthreads();
    if (warp == 0) {
        s = lane < n_warps ? sh_s[lane] : SANSA_NEG_INF;
        i = lane < n_warps ? sh_i[lane] : SANSA_NO_ITEM;
        for (int off = 16; off > 0; off >>= 1) {
            float os = __shfl_down_sync(full, s, off);
            int oi = __shfl_down_sync(full, i, off);
            if (sansa_ranks_before(os, oi, s, i)) { s = os; i = oi; }
        }
        if (lane == 0) { sh_s[0] = s; sh_i[0] = i; }
    }
    __syncthreads();
    s = sh_s[0];
    i = sh_i[0];
    __syncthreads();
}

// Block-wide sums / min. Every thread of the block must call them; all threads get the result.
// `sh` needs 32 slots; the trailing __syncthreads lets callers reuse it immediately.
template <typename T>
__device__ __forceinline__ T sansa_warp_sum(T v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    return v;
}

template <typename T>
__device__ __forceinline__ T sansa_block_sum(T v, T* sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    v = sansa_warp_sum(v);
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < n_warps ? sh[lane] : T(0);
        v = sansa_warp_sum(v);
        if (lane == 0) sh[0] = v;
    }
    __syncthreads();
    v = sh[0];
    __syncthreads();
    return v;
}

__device__ __forceinline__ int sansa_block_min(int v, int* sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    for (int off = 16; off > 0; off >>= 1) v = min(v, __shfl_down_sync(0xffffffffu, v, off));
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < n_warps ? sh[lane] : 0x7fffffff;
        for (int off = 16; off > 0; off >>= 1) v = min(v, __shfl_down_sync(0xffffffffu, v, off));
        if (lane == 0) sh[0] = v;
    }
    __syncthreads();
    v = sh[0];
    __syncthreads();
    return v;
}
