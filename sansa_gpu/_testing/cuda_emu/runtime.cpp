// Runtime of the CUDA executor: fibers (one per CUDA thread), block barriers, warp collectives,
// atomics, and -- in the checked build -- a bounds and race checker fed by the compiler's
// ThreadSanitizer instrumentation of the kernel (we provide the __tsan_* hooks ourselves, no TSan
// runtime is linked), and on request the counts a device would pay (warp-level memory
// instructions, 32-byte sectors, atomics, busy lanes per phase; see "counting" below). Never
// instrumented itself. See sansa_gpu/_testing/cuda_executor.py.
#include "cuda_emu.h"

#include <dlfcn.h>
#include <sys/mman.h>
#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

#include <algorithm>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#define EMU_EXPORT extern "C" __attribute__((visibility("default")))

// ------------------------------------------------------------------------------------ fibers
#if defined(__x86_64__)
extern "C" void cuda_emu_switch(void** save_sp, void* next_sp);
asm(R"(
    .text
    .globl cuda_emu_switch
    .hidden cuda_emu_switch
    .type cuda_emu_switch,@function
cuda_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size cuda_emu_switch,.-cuda_emu_switch
)");
#else
#include <ucontext.h>
#endif

namespace cuda_emu {
namespace {

enum State { RUNNABLE, WAIT_BLOCK, WAIT_WARP, DONE };
const size_t STACK_BYTES = 256 * 1024;

// A saved execution context: the stack pointer (callee-saved registers are on the stack) or a ucontext.
struct Context {
#if defined(__x86_64__)
    void* sp = nullptr;
#else
    ucontext_t uc;
#endif
};

void switch_context(Context& from, Context& to) {
#if defined(__x86_64__)
    cuda_emu_switch(&from.sp, to.sp);
#else
    swapcontext(&from.uc, &to.uc);
#endif
}

struct Fiber {
    char* stack = nullptr;
    Context ctx;
    State state = RUNNABLE;
    dim3 tidx{0, 0, 0};
    // what the fiber waits at
    int kind = 0;
    unsigned int mask = 0;
    uint64_t value = 0, result = 0;
    int arg = 0, width = 32;
    const char* file = "";
    int line = 0;
    int phase = 0;  // counting: index into Launch::phase_names (0 = "all")
};

struct Access {
    int32_t block = -1, tid = -1;
    uint32_t bar = 0, wsync = 0;
    bool write = false, atomic = false;
    const void* pc = nullptr;
};

struct Cell {
    Access w;         // last plain write
    Access aw1, aw2;  // last atomics (read-modify-writes; aw2: a concurrent one by another thread)
    Access r1, r2;    // last plain reads (r2: a concurrent one by another thread)
};

struct Range {
    uintptr_t lo = 0, hi = 0;
    uint64_t elem = 1;
    int arg = -1;
    bool writable = true, shared = false;
    std::string name;
    std::vector<Cell> cells;
};

struct RangeDesc {  // mirrored by ctypes in cuda_executor.py
    uint64_t lo, nbytes, elem;
    int32_t arg, writable, shared;
    const char* name;
};

// ------------------------------------------------------------------------------- counting
// One access of one lane, kept until its warp reconverges (a warp collective, a block barrier,
// the end of the block): then the accesses of the warp's lanes are grouped into warp-level
// instructions -- same static instruction (pc) and same dynamic occurrence (the k-th execution of
// that pc by the lane since the last reconvergence) -- as a GPU issues them.
enum Space : uint8_t { GLOBAL = 0, SHARED = 1, CONSTANT = 2 };
enum Kind : uint8_t { LOAD = 0, STORE = 1, ATOMIC = 2 };
struct Rec {
    const void* pc;
    uintptr_t addr;
    uint32_t size;
    uint32_t occ;
    uint16_t lane;
    uint16_t phase;
    uint8_t space, kind;
};
struct Tally {
    uint64_t warp_instructions = 0, lane_ops = 0, bytes = 0, sectors = 0;
};
struct PhaseCounts {
    Tally t[3][3];  // [space][kind]
    uint64_t warp_instructions = 0, lane_instructions = 0;  // memory instructions of every space
    uint64_t thread_slots = 0, threads_active = 0, intervals = 0, collectives = 0;
};
// Records a warp may hold before it is grouped anyway (a lane looping alone for very long
// without reconverging); grouping is then approximate for that warp, and the launch says so.
const size_t PENDING_CAP = size_t(1) << 22;

struct Launch {
    void (*body)(void**) = nullptr;
    void** args = nullptr;
    std::string kernel;
    dim3 grid{1, 1, 1}, block{1, 1, 1}, bidx{0, 0, 0};
    int block_linear = 0, nthreads = 0, current = -1;
    std::vector<Fiber> fibers;
    Context sched;  // the scheduler's context, resumed whenever a fiber blocks or ends
    bool failed = false;
    std::string error;
    // checker
    bool checked = false;
    std::vector<Range> ranges;
    uint32_t bar = 0;
    std::vector<uint32_t> wsync;
    // counting
    bool counting = false;
    std::vector<std::vector<Rec>> pending;  // per warp, since its last reconvergence
    std::vector<const char*> phase_names;   // [0] = "all"
    std::vector<PhaseCounts> phases;
    std::vector<std::vector<uint8_t>> touched;  // [phase][thread]: accessed memory in this barrier interval
    uint64_t blocks_run = 0, barriers = 0, early_groupings = 0;
};

Launch* g = nullptr;
std::mutex g_mutex;

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    return buf;
}

std::string dim_str(dim3 d) { return fmt("(%u,%u,%u)", d.x, d.y, d.z); }

std::string where() {
    std::string s = "kernel " + g->kernel + ", block " + dim_str(g->bidx);
    if (g->current >= 0) s += fmt(", thread %d %s", g->current, dim_str(g->fibers[g->current].tidx).c_str());
    return s;
}

std::string pc_str(const void* pc) {
    Dl_info info;
    if (pc && dladdr(pc, &info) && info.dli_fbase)
        return fmt("pc=%s+0x%lx", info.dli_fname ? info.dli_fname : "?", (unsigned long)((const char*)pc - (const char*)info.dli_fbase));
    return "pc=?";
}

void to_scheduler() {
    Fiber& f = g->fibers[g->current];
    switch_context(f.ctx, g->sched);
}

// Record the first error and leave the fiber for good (its stack is simply abandoned).
[[noreturn]] void fail_in_fiber(const std::string& msg) {
    if (!g->failed) {
        g->failed = true;
        g->error = msg;
    }
    to_scheduler();
    std::abort();  // never resumed
}

void fiber_main() {
    g->body(g->args);
    g->fibers[g->current].state = DONE;
    to_scheduler();
    std::abort();
}

#if !defined(__x86_64__)
void fiber_trampoline() { fiber_main(); }
#endif

// Stacks are mmap'd with a PROT_NONE guard page below them: an overflow faults instead of
// silently corrupting the neighbouring fiber.
char* new_stack() {
    const size_t page = 4096;
    void* p = mmap(nullptr, STACK_BYTES + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        std::fprintf(stderr, "cuda_emu: cannot map a fiber stack\n");
        std::abort();
    }
    mprotect(p, page, PROT_NONE);
    return static_cast<char*>(p) + page;
}

void free_stack(char* stack) {
    if (stack) munmap(stack - 4096, STACK_BYTES + 4096);
}

void start_fiber(Fiber& f) {
    if (!f.stack) f.stack = new_stack();
    f.state = RUNNABLE;
    f.phase = 0;
#if defined(__x86_64__)
    uintptr_t top = (reinterpret_cast<uintptr_t>(f.stack) + STACK_BYTES) & ~uintptr_t(15);
    void** sp = reinterpret_cast<void**>(top);
    *--sp = nullptr;                                   // fiber_main's (never used) return address
    *--sp = reinterpret_cast<void*>(&fiber_main);      // where cuda_emu_switch's `ret` goes
    for (int r = 0; r < 6; ++r) *--sp = nullptr;        // rbp rbx r12 r13 r14 r15
    f.ctx.sp = sp;
#else
    getcontext(&f.ctx.uc);
    f.ctx.uc.uc_stack.ss_sp = f.stack;
    f.ctx.uc.uc_stack.ss_size = STACK_BYTES;
    f.ctx.uc.uc_link = nullptr;
    makecontext(&f.ctx.uc, fiber_trampoline, 0);
#endif
}

void resume(int t) {
    g->current = t;
    Fiber& f = g->fibers[t];
    switch_context(g->sched, f.ctx);
    g->current = -1;
}

const char* kind_name(int kind) {
    static const char* names[] = {"__syncwarp", "__shfl_sync", "__shfl_down_sync", "__shfl_up_sync",
                                  "__shfl_xor_sync", "__ballot_sync", "__any_sync", "__all_sync"};
    return kind >= 0 && kind < 8 ? names[kind] : "?";
}

std::string state_of(const Fiber& f) {
    switch (f.state) {
        case DONE: return "exited";
        case WAIT_BLOCK: return fmt("waits at __syncthreads() %s:%d", f.file, f.line);
        case WAIT_WARP: return fmt("waits at %s %s:%d", kind_name(f.kind), f.file, f.line);
        default: return "runnable";
    }
}

// "threads 0-31 waits at ...; threads 32-63 exited" for threads [lo, hi)
std::string describe(int lo, int hi) {
    std::string out;
    int a = lo;
    while (a < hi) {
        std::string s = state_of(g->fibers[a]);
        int b = a + 1;
        while (b < hi && state_of(g->fibers[b]) == s) ++b;
        if (!out.empty()) out += "; ";
        out += (b - a == 1 ? fmt("thread %d ", a) : fmt("threads %d-%d ", a, b - 1)) + s;
        a = b;
    }
    return out;
}

void fail_sched(const std::string& msg) {
    if (!g->failed) {
        g->failed = true;
        g->error = "kernel " + g->kernel + ", block " + dim_str(g->bidx) + ": " + msg;
    }
}

void flush_warp(int w);

// All lanes of warp w wait at the same collective: compute every lane's result and release them.
bool release_warp(int w) {
    const int lo = 32 * w, hi = std::min(g->nthreads, lo + 32);
    Fiber& f0 = g->fibers[lo];
    if (hi - lo < 32) {
        fail_sched(fmt("warp %d has only %d threads but %s at %s:%d names all 32 lanes (mask 0x%08x)", w, hi - lo,
                       kind_name(f0.kind), f0.file, f0.line, f0.mask));
        return false;
    }
    for (int t = lo; t < hi; ++t) {
        const Fiber& f = g->fibers[t];
        if (f.kind != f0.kind || f.line != f0.line || std::strcmp(f.file, f0.file) != 0) {
            fail_sched(fmt("warp %d: lanes meet at different collectives: %s", w, describe(lo, hi).c_str()));
            return false;
        }
        if (f.mask != 0xffffffffu) {
            fail_sched(fmt("warp %d: %s at %s:%d with mask 0x%08x; the executor supports full-warp masks only and "
                           "every lane must name the same mask", w, kind_name(f.kind), f.file, f.line, f.mask));
            return false;
        }
        if (f.width != f0.width || f.width <= 0 || f.width > 32 || (f.width & (f.width - 1))) {
            fail_sched(fmt("warp %d: %s at %s:%d with width %d (must be a power of 2 <= 32, the same in every lane)", w,
                           kind_name(f.kind), f.file, f.line, f.width));
            return false;
        }
    }
    uint32_t bits = 0;
    for (int t = lo; t < hi; ++t)
        if (g->fibers[t].value) bits |= 1u << (t - lo);
    for (int t = lo; t < hi; ++t) {
        Fiber& f = g->fibers[t];
        const int lane = t - lo, width = f.width, seg = lane / width * width;
        const int arg = f.arg & 31;  // shfl.sync uses the low 5 bits of the lane / offset operand
        int src = lane;
        switch (f.kind) {
            case SHFL_IDX: src = seg + arg % width; break;
            case SHFL_DOWN: src = (lane - seg) + arg < width ? lane + arg : lane; break;
            case SHFL_UP: src = (lane - seg) - arg >= 0 ? lane - arg : lane; break;
            case SHFL_XOR: src = lane ^ arg; if (src >= seg + width) src = lane; break;
            default: break;
        }
        switch (f.kind) {
            case BALLOT: f.result = bits; break;
            case ANY: f.result = bits != 0; break;
            case ALL: f.result = bits == 0xffffffffu; break;
            case SYNCWARP: f.result = 0; break;
            default: f.result = g->fibers[lo + src].value; break;
        }
        f.state = RUNNABLE;
    }
    if (f0.kind == SYNCWARP) ++g->wsync[w];  // __syncwarp orders memory among the warp's lanes
    if (g->counting) {  // the warp reconverged: group what its lanes did since the last time
        flush_warp(w);
        ++g->phases[f0.phase].collectives;
    }
    return true;
}

void end_interval();

// Nothing is runnable: release a warp collective or the block barrier, or report the deadlock.
bool resolve() {
    bool released = false;
    const int n_warps = (g->nthreads + 31) / 32;
    for (int w = 0; w < n_warps && !g->failed; ++w) {
        const int lo = 32 * w, hi = std::min(g->nthreads, lo + 32);
        bool all = true, some = false;
        for (int t = lo; t < hi; ++t) {
            const bool waits = g->fibers[t].state == WAIT_WARP;
            all = all && waits;
            some = some || waits;
        }
        if (all && some) released = release_warp(w) || released;
    }
    if (g->failed) return false;
    if (released) return true;
    bool all_block = true, any_block = false;
    for (int t = 0; t < g->nthreads; ++t) {
        all_block = all_block && g->fibers[t].state == WAIT_BLOCK;
        any_block = any_block || g->fibers[t].state == WAIT_BLOCK;
    }
    if (all_block) {
        const Fiber& f0 = g->fibers[0];
        for (int t = 1; t < g->nthreads; ++t) {
            const Fiber& f = g->fibers[t];
            if (f.line != f0.line || std::strcmp(f.file, f0.file) != 0) {
                fail_sched("threads wait at different __syncthreads() calls: " + describe(0, g->nthreads));
                return false;
            }
        }
        if (g->counting) {
            end_interval();
            ++g->barriers;
        }
        for (int t = 0; t < g->nthreads; ++t) g->fibers[t].state = RUNNABLE;
        ++g->bar;
        for (auto& w : g->wsync) ++w;
        return true;
    }
    fail_sched(std::string(any_block ? "__syncthreads() is not reached by every thread of the block"
                                     : "a warp collective is not reached by every lane of its warp") +
               " (deadlock on a GPU): " + describe(0, g->nthreads));
    return false;
}

void run_block(std::mt19937_64& rng, int schedule) {
    for (auto& f : g->fibers) start_fiber(f);
    g->bar = 0;
    std::fill(g->wsync.begin(), g->wsync.end(), 0u);
    for (auto& r : g->ranges) {
        if (!r.shared) continue;
        // shared memory is not initialised on a GPU: poison it (ints read -1, floats NaN)
        std::memset(reinterpret_cast<void*>(r.lo), 0xff, r.hi - r.lo);
        std::fill(r.cells.begin(), r.cells.end(), Cell());
    }
    std::vector<int> order(g->nthreads);
    for (int t = 0; t < g->nthreads; ++t) order[t] = schedule == 1 ? g->nthreads - 1 - t : t;
    for (;;) {
        if (schedule == 2) std::shuffle(order.begin(), order.end(), rng);
        for (int t : order) {
            if (g->fibers[t].state != RUNNABLE) continue;
            resume(t);
            if (g->failed) return;
        }
        bool done = true;
        for (auto& f : g->fibers) done = done && f.state == DONE;
        if (done) return;
        if (!resolve()) return;
    }
}

// -------------------------------------------------------------------------------- checker
bool ordered(const Access& a, const Access& b) {
    if (a.block < 0) return true;
    if (a.block != b.block) return false;  // blocks of a grid run concurrently on a GPU
    if (a.tid == b.tid) return true;
    if (b.bar > a.bar) return true;
    return a.tid / 32 == b.tid / 32 && b.wsync > a.wsync;
}

std::string access_str(const Access& a) {
    return fmt("%s%s by thread %d of block %d (%s)", a.atomic ? "atomic " : "", a.write ? "write" : "read", a.tid,
               a.block, pc_str(a.pc).c_str());
}

std::string range_str(const Range& r) {
    if (r.shared) return "__shared__ " + r.name;
    if (r.arg < 0) return "constant " + r.name;
    return fmt("argument #%d '%s'", r.arg, r.name.c_str());
}

void race(const Range& r, uint64_t idx, const Access& prev, const Access& cur) {
    fail_in_fiber(fmt("data race in %s: %s, ", where().c_str(), range_str(r).c_str()) +
                  fmt("element %llu: ", (unsigned long long)idx) + access_str(cur) + " conflicts with " +
                  access_str(prev) + " (no __syncthreads()/__syncwarp() between them)");
}

// Remember `cur` in the slot pair (x1, x2): x1 the latest, x2 an older access by another thread
// that is still concurrent with it (so a later conflicting access sees either).
void remember(Access& x1, Access& x2, const Access& cur) {
    if (x1.block < 0 || ordered(x1, cur)) {
        x1 = cur;
        if (x2.block >= 0 && ordered(x2, cur)) x2 = Access();
    } else if (x1.tid != cur.tid) {
        x2 = x1;
        x1 = cur;
    } else {
        x1 = cur;
    }
}

void check_cell(Range& r, uint64_t idx, const Access& cur) {
    Cell& c = r.cells[idx];
    auto conflicts = [&](const Access& a) { return a.block >= 0 && !ordered(a, cur); };
    if (conflicts(c.w)) race(r, idx, c.w, cur);
    if (!cur.atomic) {
        if (conflicts(c.aw1)) race(r, idx, c.aw1, cur);
        if (conflicts(c.aw2)) race(r, idx, c.aw2, cur);
    }
    if (cur.write) {  // plain writes and atomics
        if (conflicts(c.r1)) race(r, idx, c.r1, cur);
        if (conflicts(c.r2)) race(r, idx, c.r2, cur);
    }
    if (cur.atomic) {
        remember(c.aw1, c.aw2, cur);
    } else if (cur.write) {
        c = Cell();
        c.w = cur;
    } else {
        remember(c.r1, c.r2, cur);
    }
}

void record(const Range& r, uintptr_t a, uint64_t size, bool write, bool atomic, const void* pc);

void check_access(const void* p, uint64_t size, bool write, bool atomic, const void* pc) {
    if (!g || !(g->checked || g->counting) || g->current < 0 || g->failed) return;
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    const Fiber& self = g->fibers[g->current];
    const uintptr_t s0 = reinterpret_cast<uintptr_t>(self.stack);
    if (a >= s0 && a < s0 + STACK_BYTES) return;  // the thread's own locals
    Range* hit = nullptr;
    for (auto& r : g->ranges)
        if (a >= r.lo && a < r.hi) { hit = &r; break; }
    const char* what = atomic ? "atomic" : write ? "write" : "read";
    if (!hit) {
        for (int t = 0; t < g->nthreads; ++t) {
            const uintptr_t b = reinterpret_cast<uintptr_t>(g->fibers[t].stack);
            if (b && a >= b && a < b + STACK_BYTES)
                fail_in_fiber(fmt("%s: %s of thread %d's local variable (%s)", where().c_str(), what, t, pc_str(pc).c_str()));
        }
        // name the nearest argument array
        std::string near = "not inside any argument array or __shared__ variable";
        uint64_t best = ~0ull;
        for (auto& r : g->ranges) {
            if (r.hi == r.lo) continue;
            if (a >= r.hi && a - r.hi < best) {
                best = a - r.hi;
                near = fmt("%llu bytes past the end of %s (%llu elements)", (unsigned long long)(a - r.hi),
                           range_str(r).c_str(), (unsigned long long)((r.hi - r.lo) / r.elem));
                if (a - r.hi < r.elem * 64)
                    near += fmt(" = index %llu", (unsigned long long)((a - r.lo) / r.elem));
            } else if (a < r.lo && r.lo - a < best) {
                best = r.lo - a;
                near = fmt("%llu bytes before the start of %s", (unsigned long long)(r.lo - a), range_str(r).c_str());
            }
        }
        fail_in_fiber(fmt("out-of-bounds %s of %llu bytes in %s at %p: %s (%s)", what, (unsigned long long)size,
                          where().c_str(), p, near.c_str(), pc_str(pc).c_str()));
    }
    if (a + size > hit->hi)
        fail_in_fiber(fmt("out-of-bounds %s of %llu bytes in %s: runs past the end of %s (%s)", what,
                          (unsigned long long)size, where().c_str(), range_str(*hit).c_str(), pc_str(pc).c_str()));
    if (write && !hit->writable)
        fail_in_fiber(fmt("%s: write to read-only %s (%s)", where().c_str(), range_str(*hit).c_str(), pc_str(pc).c_str()));
    if (g->counting) record(*hit, a, size, write, atomic, pc);
    if (!g->checked) return;  // counting only: no race shadow
    Access cur;
    cur.block = g->block_linear;
    cur.tid = g->current;
    cur.bar = g->bar;
    cur.wsync = g->wsync[g->current / 32];
    cur.write = write;
    cur.atomic = atomic;
    cur.pc = pc;
    const uint64_t first = (a - hit->lo) / hit->elem, last = (a + size - 1 - hit->lo) / hit->elem;
    for (uint64_t i = first; i <= last; ++i) check_cell(*hit, i, cur);
}

// -------------------------------------------------------------------------------- counting
void record(const Range& r, uintptr_t a, uint64_t size, bool write, bool atomic, const void* pc) {
    const int t = g->current;
    const Fiber& f = g->fibers[t];
    Rec rec;
    rec.pc = pc;
    rec.addr = a;
    rec.size = uint32_t(size);
    rec.occ = 0;
    rec.lane = uint16_t(t & 31);
    rec.phase = uint16_t(f.phase);
    rec.space = r.shared ? SHARED : r.arg < 0 ? CONSTANT : GLOBAL;
    rec.kind = atomic ? ATOMIC : write ? STORE : LOAD;
    std::vector<Rec>& v = g->pending[t >> 5];
    v.push_back(rec);
    g->touched[f.phase][t] = 1;
    if (v.size() >= PENDING_CAP) {
        ++g->early_groupings;
        flush_warp(t >> 5);
    }
}

// Group warp w's pending accesses into warp-level instructions and add them to their phases.
void flush_warp(int w) {
    std::vector<Rec>& v = g->pending[w];
    if (v.empty()) return;
    // occurrence: the record's rank among its lane's records of the same pc (program order is
    // the order of appending, kept by the stable sort)
    std::stable_sort(v.begin(), v.end(), [](const Rec& a, const Rec& b) {
        return a.pc != b.pc ? a.pc < b.pc : a.lane < b.lane;
    });
    for (size_t i = 0; i < v.size(); ++i)
        v[i].occ = i > 0 && v[i].pc == v[i - 1].pc && v[i].lane == v[i - 1].lane ? v[i - 1].occ + 1 : 0;
    std::sort(v.begin(), v.end(), [](const Rec& a, const Rec& b) {
        if (a.pc != b.pc) return a.pc < b.pc;
        if (a.occ != b.occ) return a.occ < b.occ;
        if (a.space != b.space) return a.space < b.space;
        return a.lane < b.lane;
    });
    std::vector<uintptr_t> sectors;
    for (size_t i = 0; i < v.size();) {
        size_t j = i + 1;
        while (j < v.size() && v[j].pc == v[i].pc && v[j].occ == v[i].occ && v[j].space == v[i].space) ++j;
        PhaseCounts& ph = g->phases[v[i].phase];
        Tally& t = ph.t[v[i].space][v[i].kind];
        t.warp_instructions += 1;
        t.lane_ops += j - i;
        ph.warp_instructions += 1;
        ph.lane_instructions += j - i;
        sectors.clear();
        for (size_t k = i; k < j; ++k) {
            t.bytes += v[k].size;
            if (v[i].space == GLOBAL && v[k].size)
                for (uintptr_t s = v[k].addr >> 5; s <= (v[k].addr + v[k].size - 1) >> 5; ++s) sectors.push_back(s);
        }
        std::sort(sectors.begin(), sectors.end());
        t.sectors += uint64_t(std::unique(sectors.begin(), sectors.end()) - sectors.begin());
        i = j;
    }
    v.clear();
}

// A block barrier or the end of a block: every warp reconverges; close the barrier interval of
// each phase that was active in it.
void end_interval() {
    for (int w = 0; w < int(g->pending.size()); ++w) flush_warp(w);
    for (size_t p = 0; p < g->phases.size(); ++p) {
        uint64_t n = 0;
        for (uint8_t x : g->touched[p]) n += x;
        if (!n) continue;
        g->phases[p].thread_slots += uint64_t(g->nthreads);
        g->phases[p].threads_active += n;
        g->phases[p].intervals += 1;
        std::fill(g->touched[p].begin(), g->touched[p].end(), uint8_t(0));
    }
}

std::string json_string(const char* s) {
    std::string out = "\"";
    for (; *s; ++s) {
        if (*s == '"' || *s == '\\') out += '\\';
        if (uint8_t(*s) >= 0x20) out += *s;
    }
    return out + "\"";
}

std::string counts_json() {
    static const char* spaces[] = {"global", "shared", "constant"};
    static const char* kinds[] = {"load", "store", "atomic"};
    std::string out = fmt("{\"blocks\": %" PRIu64 ", \"threads_per_block\": %d, \"barriers\": %" PRIu64
                          ", \"early_groupings\": %" PRIu64 ", \"phases\": [",
                          g->blocks_run, g->nthreads, g->barriers, g->early_groupings);
    bool first = true;
    for (size_t p = 0; p < g->phases.size(); ++p) {
        const PhaseCounts& ph = g->phases[p];
        if (!ph.warp_instructions && !ph.intervals && !ph.collectives) continue;
        out += first ? "" : ", ";
        first = false;
        out += "{\"name\": " + json_string(g->phase_names[p]);
        out += fmt(", \"warp_instructions\": %" PRIu64 ", \"lane_instructions\": %" PRIu64 ", \"thread_slots\": %" PRIu64
                   ", \"threads_active\": %" PRIu64 ", \"intervals\": %" PRIu64 ", \"collectives\": %" PRIu64,
                   ph.warp_instructions, ph.lane_instructions, ph.thread_slots, ph.threads_active, ph.intervals,
                   ph.collectives);
        for (int sp = 0; sp < 3; ++sp) {
            out += fmt(", \"%s\": {", spaces[sp]);
            for (int k = 0; k < 3; ++k) {
                const Tally& t = ph.t[sp][k];
                out += fmt("%s\"%s\": {\"warp_instructions\": %" PRIu64 ", \"lane_ops\": %" PRIu64 ", \"bytes\": %" PRIu64
                           ", \"sectors\": %" PRIu64 "}",
                           k ? ", " : "", kinds[k], t.warp_instructions, t.lane_ops, t.bytes, t.sectors);
            }
            out += "}";
        }
        out += "}";
    }
    return out + "]}";
}

Fiber& self() { return g->fibers[g->current]; }

void require_kernel(const char* what) {
    if (!g || g->current < 0) {
        std::fprintf(stderr, "cuda_emu: %s called outside a kernel launch\n", what);
        std::abort();
    }
}

}  // namespace

// ------------------------------------------------------------------------ device-side API
dim3 thread_idx() { require_kernel("threadIdx"); return self().tidx; }
dim3 block_idx() { require_kernel("blockIdx"); return g->bidx; }
dim3 block_dim() { require_kernel("blockDim"); return g->block; }
dim3 grid_dim() { require_kernel("gridDim"); return g->grid; }

void phase(const char* name) {
    require_kernel("SANSA_PHASE");
    if (!g->counting) return;
    int id = -1;
    for (size_t i = 0; i < g->phase_names.size() && id < 0; ++i)
        if (g->phase_names[i] == name || std::strcmp(g->phase_names[i], name) == 0) id = int(i);
    if (id < 0) {
        if (g->phase_names.size() >= 65535) fail_in_fiber(fmt("%s: too many SANSA_PHASE names", where().c_str()));
        id = int(g->phase_names.size());
        g->phase_names.push_back(name);
        g->phases.emplace_back();
        g->touched.emplace_back(size_t(g->nthreads), uint8_t(0));
    }
    self().phase = id;
}

void syncthreads(const char* file, int line) {
    require_kernel("__syncthreads");
    Fiber& f = self();
    f.state = WAIT_BLOCK;
    f.file = file;
    f.line = line;
    to_scheduler();
}

uint64_t warp_collective(int kind, unsigned int mask, uint64_t value, int arg, int width, const char* file, int line) {
    require_kernel(kind_name(kind));
    Fiber& f = self();
    f.state = WAIT_WARP;
    f.kind = kind;
    f.mask = mask;
    f.value = value;
    f.arg = arg;
    f.width = width;
    f.file = file;
    f.line = line;
    to_scheduler();
    return self().result;
}

#define EMU_RMW(T, name, expr)                                                          \
    T name(T* p, T v) {                                                                 \
        check_access(p, sizeof(T), true, true, __builtin_return_address(0));            \
        T old = *p;                                                                     \
        *p = (expr);                                                                    \
        return old;                                                                     \
    }
EMU_RMW(int, atomic_add, (int)((unsigned)old + (unsigned)v))
EMU_RMW(unsigned int, atomic_add, old + v)
EMU_RMW(unsigned long long, atomic_add, old + v)
EMU_RMW(float, atomic_add, old + v)
EMU_RMW(double, atomic_add, old + v)
EMU_RMW(int, atomic_exch, v)
EMU_RMW(unsigned int, atomic_exch, v)
EMU_RMW(unsigned long long, atomic_exch, v)
EMU_RMW(float, atomic_exch, v)
EMU_RMW(int, atomic_min, std::min(old, v))
EMU_RMW(unsigned int, atomic_min, std::min(old, v))
EMU_RMW(long long, atomic_min, std::min(old, v))
EMU_RMW(unsigned long long, atomic_min, std::min(old, v))
EMU_RMW(int, atomic_max, std::max(old, v))
EMU_RMW(unsigned int, atomic_max, std::max(old, v))
EMU_RMW(long long, atomic_max, std::max(old, v))
EMU_RMW(unsigned long long, atomic_max, std::max(old, v))
#undef EMU_RMW

#define EMU_CAS(T)                                                                      \
    T atomic_cas(T* p, T compare, T v) {                                                \
        check_access(p, sizeof(T), true, true, __builtin_return_address(0));            \
        T old = *p;                                                                     \
        if (old == compare) *p = v;                                                     \
        return old;                                                                     \
    }
EMU_CAS(int)
EMU_CAS(unsigned int)
EMU_CAS(unsigned long long)
#undef EMU_CAS

}  // namespace cuda_emu

// ------------------------------------------------------------ ThreadSanitizer hooks (checked)
// The checked build compiles the kernel with -fsanitize=thread and links no TSan runtime: every
// load and store of the kernel calls one of these.
using cuda_emu::check_access;
#define EMU_TSAN_RW(n)                                                                                        \
    extern "C" void __tsan_read##n(void* p) { check_access(p, n, false, false, __builtin_return_address(0)); }   \
    extern "C" void __tsan_write##n(void* p) { check_access(p, n, true, false, __builtin_return_address(0)); }   \
    extern "C" void __tsan_unaligned_read##n(void* p) { check_access(p, n, false, false, __builtin_return_address(0)); } \
    extern "C" void __tsan_unaligned_write##n(void* p) { check_access(p, n, true, false, __builtin_return_address(0)); } \
    extern "C" void __tsan_volatile_read##n(void* p) { check_access(p, n, false, false, __builtin_return_address(0)); }  \
    extern "C" void __tsan_volatile_write##n(void* p) { check_access(p, n, true, false, __builtin_return_address(0)); }
EMU_TSAN_RW(1)
EMU_TSAN_RW(2)
EMU_TSAN_RW(4)
EMU_TSAN_RW(8)
EMU_TSAN_RW(16)
#undef EMU_TSAN_RW
extern "C" void __tsan_read_range(void* p, unsigned long n) { check_access(p, n, false, false, __builtin_return_address(0)); }
extern "C" void __tsan_write_range(void* p, unsigned long n) { check_access(p, n, true, false, __builtin_return_address(0)); }
extern "C" void __tsan_func_entry(void*) {}
extern "C" void __tsan_func_exit() {}
extern "C" void __tsan_init() {}
extern "C" void __tsan_vptr_update(void**, void*) {}
extern "C" void __tsan_vptr_read(void**) {}

// ------------------------------------------------------------------------------- launching
EMU_EXPORT int cuda_emu_launch(void (*body)(void**), void** args, const char* kernel, const unsigned* grid,
                               const unsigned* block, int checked, const cuda_emu::RangeDesc* ranges, int n_ranges,
                               int schedule, unsigned long long seed, char* err, unsigned long errlen, int counting,
                               char** counts_out) {
    using namespace cuda_emu;
    std::lock_guard<std::mutex> lock(g_mutex);
    Launch L;
    L.body = body;
    L.args = args;
    L.kernel = kernel;
    L.grid = dim3{grid[0], grid[1], grid[2]};
    L.block = dim3{block[0], block[1], block[2]};
    L.nthreads = int(block[0] * block[1] * block[2]);
    L.fibers.resize(L.nthreads);
    L.wsync.assign((L.nthreads + 31) / 32, 0u);
    L.checked = checked != 0;
    L.counting = counting != 0;
    if (L.counting) {
        L.pending.resize(L.wsync.size());
        L.phase_names.push_back("all");
        L.phases.emplace_back();
        L.touched.emplace_back(size_t(L.nthreads), uint8_t(0));
    }
    if (counts_out) *counts_out = nullptr;
    for (unsigned z = 0, t = 0; z < block[2]; ++z)
        for (unsigned y = 0; y < block[1]; ++y)
            for (unsigned x = 0; x < block[0]; ++x, ++t) L.fibers[t].tidx = dim3{x, y, z};
    // argument arrays (checked build) and the kernel's __shared__ variables (always: poisoned per block)
    for (int i = 0; i < n_ranges; ++i) {
        Range r;
        r.lo = ranges[i].lo;
        r.hi = ranges[i].lo + ranges[i].nbytes;
        r.elem = ranges[i].elem ? ranges[i].elem : 1;
        r.arg = ranges[i].arg;
        r.writable = ranges[i].writable != 0;
        r.shared = ranges[i].shared != 0;
        r.name = ranges[i].name ? ranges[i].name : "";
        if (L.checked) r.cells.resize(ranges[i].nbytes / r.elem + 1);
        L.ranges.push_back(std::move(r));
    }
    g = &L;
#if defined(__x86_64__)
    // IEEE defaults for the kernel (round to nearest, no flush-to-zero / denormals-are-zero), as on
    // a GPU without --use_fast_math, whatever the host process set.
    const unsigned int mxcsr = _mm_getcsr();
    _mm_setcsr(0x1f80);
#endif
    std::mt19937_64 rng(seed);
    for (unsigned z = 0; z < grid[2] && !L.failed; ++z)
        for (unsigned y = 0; y < grid[1] && !L.failed; ++y)
            for (unsigned x = 0; x < grid[0] && !L.failed; ++x) {
                L.bidx = dim3{x, y, z};
                L.block_linear = int(x + grid[0] * (y + grid[1] * z));
                run_block(rng, schedule);
                if (L.counting && !L.failed) {
                    end_interval();
                    ++L.blocks_run;
                }
            }
    g = nullptr;
#if defined(__x86_64__)
    _mm_setcsr(mxcsr);
#endif
    if (L.counting && !L.failed && counts_out) {
        g = &L;  // counts_json reads the launch through g
        const std::string json = counts_json();
        g = nullptr;
        *counts_out = static_cast<char*>(std::malloc(json.size() + 1));
        if (*counts_out) std::memcpy(*counts_out, json.c_str(), json.size() + 1);
    }
    for (auto& f : L.fibers) free_stack(f.stack);
    if (L.failed) {
        std::snprintf(err, errlen, "%s", L.error.c_str());
        return 1;
    }
    return 0;
}

EMU_EXPORT void cuda_emu_free_counts(char* p) { std::free(p); }
