// Host emulation of the CUDA subset used by kernels/*.cu (force-included with `-include`, so the
// kernel sources compile unchanged as host C++). Test infrastructure: see
// sansa_gpu/_testing/cuda_executor.py for how it is built, launched and checked.
//
// Semantics (runtime.cpp):
//  * every CUDA thread of a block is a fiber of its own; the block's fibers run cooperatively on one
//    OS thread, so __syncthreads() is a real barrier and warp collectives (__shfl_*_sync,
//    __ballot_sync, __syncwarp) exchange values between the 32 lanes of a warp;
//  * blocks of a grid run one after another, so `__shared__` variables (function statics here)
//    are per block;
//  * a barrier or warp collective that not every required thread reaches, a partial mask, or
//    lanes meeting at different collectives is reported as an error (kernel, block, threads);
//  * atomics are atomic (no fiber switch happens inside one) and are seen as atomics by the
//    race checker of the checked build.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

// Defined in every executor build (kernels test it to compile executor-only hooks such as
// SANSA_PHASE in kernels/sansa_common.cuh; nvcc / NVRTC never see it).
#define CUDA_EMU_EXECUTOR 1

#define __global__
#define __device__
#define __host__
// CUDA's __forceinline__: always inlined here too, so each call site of a helper is its own code
// (the counting build groups accesses by instruction address, as a GPU's static instructions).
#define __forceinline__ inline __attribute__((always_inline))
#define __restrict__ __restrict
// Blocks run one after another, so a function-local static is per-block shared memory. (The
// executor finds these statics in the built library's symbol table: in kernel code every
// function-local static is a __shared__ variable.)
#define __shared__ static

namespace cuda_emu {

struct dim3 {
    unsigned int x, y, z;
};

// Runtime entry points (runtime.cpp; never instrumented).
dim3 thread_idx();
dim3 block_idx();
dim3 block_dim();
dim3 grid_dim();
void syncthreads(const char* file, int line);
// SANSA_PHASE(name): the calling thread's accesses count under phase `name` from here on
// (counting build; a no-op otherwise).
void phase(const char* name);
enum Collective : int { SYNCWARP = 0, SHFL_IDX = 1, SHFL_DOWN = 2, SHFL_UP = 3, SHFL_XOR = 4, BALLOT = 5, ANY = 6, ALL = 7 };
// Every lane of the warp deposits `value`; returns what CUDA's collective `kind` gives this lane.
uint64_t warp_collective(int kind, unsigned int mask, uint64_t value, int arg, int width, const char* file, int line);

int atomic_add(int* p, int v);
unsigned int atomic_add(unsigned int* p, unsigned int v);
unsigned long long atomic_add(unsigned long long* p, unsigned long long v);
float atomic_add(float* p, float v);
double atomic_add(double* p, double v);
int atomic_exch(int* p, int v);
unsigned int atomic_exch(unsigned int* p, unsigned int v);
unsigned long long atomic_exch(unsigned long long* p, unsigned long long v);
float atomic_exch(float* p, float v);
int atomic_min(int* p, int v);
unsigned int atomic_min(unsigned int* p, unsigned int v);
long long atomic_min(long long* p, long long v);
unsigned long long atomic_min(unsigned long long* p, unsigned long long v);
int atomic_max(int* p, int v);
unsigned int atomic_max(unsigned int* p, unsigned int v);
long long atomic_max(long long* p, long long v);
unsigned long long atomic_max(unsigned long long* p, unsigned long long v);
int atomic_cas(int* p, int compare, int v);
unsigned int atomic_cas(unsigned int* p, unsigned int compare, unsigned int v);
unsigned long long atomic_cas(unsigned long long* p, unsigned long long compare, unsigned long long v);

template <typename T>
inline T shfl(int kind, unsigned int mask, T v, int arg, int width, const char* file, int line) {
    static_assert(sizeof(T) <= 8, "warp shuffles move at most 8 bytes");
    uint64_t raw = 0;
    std::memcpy(&raw, &v, sizeof(T));
    raw = warp_collective(kind, mask, raw, arg, width, file, line);
    T out;
    std::memcpy(&out, &raw, sizeof(T));
    return out;
}

}  // namespace cuda_emu

using cuda_emu::dim3;
typedef cuda_emu::dim3 uint3;

#define threadIdx (::cuda_emu::thread_idx())
#define blockIdx (::cuda_emu::block_idx())
#define blockDim (::cuda_emu::block_dim())
#define gridDim (::cuda_emu::grid_dim())
#define warpSize 32

#define __syncthreads() ::cuda_emu::syncthreads(__FILE__, __LINE__)
#define __syncwarp(...) ((void)::cuda_emu::warp_collective(::cuda_emu::SYNCWARP, ::cuda_emu::syncwarp_mask(__VA_ARGS__), 0, 0, 32, __FILE__, __LINE__))
#define __shfl_sync(mask, v, lane, ...) ::cuda_emu::shfl(::cuda_emu::SHFL_IDX, (mask), (v), (lane), ::cuda_emu::shfl_width(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_down_sync(mask, v, d, ...) ::cuda_emu::shfl(::cuda_emu::SHFL_DOWN, (mask), (v), (int)(d), ::cuda_emu::shfl_width(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_up_sync(mask, v, d, ...) ::cuda_emu::shfl(::cuda_emu::SHFL_UP, (mask), (v), (int)(d), ::cuda_emu::shfl_width(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_xor_sync(mask, v, m, ...) ::cuda_emu::shfl(::cuda_emu::SHFL_XOR, (mask), (v), (int)(m), ::cuda_emu::shfl_width(__VA_ARGS__), __FILE__, __LINE__)
#define __ballot_sync(mask, pred) ((unsigned int)::cuda_emu::warp_collective(::cuda_emu::BALLOT, (mask), (pred) ? 1u : 0u, 0, 32, __FILE__, __LINE__))
#define __any_sync(mask, pred) ((int)::cuda_emu::warp_collective(::cuda_emu::ANY, (mask), (pred) ? 1u : 0u, 0, 32, __FILE__, __LINE__))
#define __all_sync(mask, pred) ((int)::cuda_emu::warp_collective(::cuda_emu::ALL, (mask), (pred) ? 1u : 0u, 0, 32, __FILE__, __LINE__))

namespace cuda_emu {
inline unsigned int syncwarp_mask() { return 0xffffffffu; }
inline unsigned int syncwarp_mask(unsigned int m) { return m; }
inline int shfl_width() { return 32; }
inline int shfl_width(int w) { return w; }
}  // namespace cuda_emu

// Atomics (CUDA's overload set). Always inlined, so the runtime function is called from the
// kernel's own call site (its return address identifies the instruction in the counting build).
#define CUDA_EMU_ATOMIC(cuda_name, emu_name)                                              \
    template <typename T, typename... A>                                                  \
    __attribute__((always_inline)) inline auto cuda_name(T* p, A... a) -> decltype(::cuda_emu::emu_name(p, a...)) {       \
        return ::cuda_emu::emu_name(p, a...);                                              \
    }
CUDA_EMU_ATOMIC(atomicAdd, atomic_add)
CUDA_EMU_ATOMIC(atomicExch, atomic_exch)
CUDA_EMU_ATOMIC(atomicMin, atomic_min)
CUDA_EMU_ATOMIC(atomicMax, atomic_max)
CUDA_EMU_ATOMIC(atomicCAS, atomic_cas)
#undef CUDA_EMU_ATOMIC

// Bit reinterpretation and counting.
inline unsigned int __float_as_uint(float x) { unsigned int u; std::memcpy(&u, &x, 4); return u; }
inline int __float_as_int(float x) { int u; std::memcpy(&u, &x, 4); return u; }
inline float __uint_as_float(unsigned int u) { float x; std::memcpy(&x, &u, 4); return x; }
inline float __int_as_float(int u) { float x; std::memcpy(&x, &u, 4); return x; }
inline long long __double_as_longlong(double x) { long long u; std::memcpy(&u, &x, 8); return u; }
inline double __longlong_as_double(long long u) { double x; std::memcpy(&x, &u, 8); return x; }
inline int __popc(unsigned int x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned int)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }

// Explicitly rounded arithmetic: one IEEE operation each, round to nearest even (the build uses
// -ffp-contract=off, so nothing is fused into an FMA behind our back).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fmaf(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }

// CUDA's min/max overloads for the integer and floating types.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
inline unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }
