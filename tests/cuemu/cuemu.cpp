/* cuemu.cpp - the CPU emulation of a CUDA device behind tests/cuemu/cuemu.h:
 * thread blocks as fibers, the CUDA runtime API calls the backend makes, and
 * cublasGemmEx. One device ("cuemu"), H100-like limits by default
 * (CUEMU_SMS, CUEMU_SMEM_OPTIN and CUEMU_MEM_MB change them). Every error
 * the emulator finds in the code it runs is printed with "cuemu:" first. */
#include "cuemu.h"

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_profiler_api.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <map>
#include <mutex>
#include <vector>

/* CUEMU_ASAN=1 (set by cuemu.cmake in ASan builds, where this file itself
 * is not instrumented): fiber switches are announced to ASan */
#if !defined(CUEMU_ASAN) && defined(__SANITIZE_ADDRESS__)
#define CUEMU_ASAN 1
#endif
#if CUEMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#else
#define CUEMU_ASAN 0
#endif

#if !defined(__x86_64__)
#error "cuemu switches fibers with x86-64 code"
#endif

/* ---- fibers ---- */

/* cuemu_swap(save, to): saves the callee-saved registers and the FP control
 * words on this stack, stores the stack pointer in *save and resumes the
 * fiber whose stack pointer is `to`. A new fiber starts in cuemu_entry with
 * its Fiber* in rbx. */
extern "C" void cuemu_swap(void **save, void *to);
extern "C" void cuemu_fiber_main(cuemu::Fiber *f);
asm(R"(
    .text
    .globl cuemu_swap
    .type cuemu_swap, @function
cuemu_swap:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size cuemu_swap, .-cuemu_swap
    .globl cuemu_entry
    .type cuemu_entry, @function
cuemu_entry:
    movq %rbx, %rdi
    call cuemu_fiber_main
    ud2
    .size cuemu_entry, .-cuemu_entry
    .section .note.GNU-stack,"",@progbits
    .text
)");
extern "C" void cuemu_entry(void);

namespace cuemu {

enum State { RUN, WAIT_BLOCK, WAIT_WARP, DONE };

struct Fiber {
    void *sp;
    char *stack; /* lowest usable byte (a guard page lies below) */
    size_t stack_size;
    uint3 tid;
    unsigned lane, warp;
    State st;
#if CUEMU_ASAN
    void *fake;
#endif
};

struct Warp {
    unsigned arrived, mask; /* lanes at the pending barrier, and its mask */
    unsigned done;          /* lanes that have exited */
    unsigned gen;           /* barriers passed */
    uint64_t slot[2][32];   /* shuffle values, by barrier parity */
    float scratch[1024];    /* warp_scratch */
};

static const size_t STACK = (size_t)(CUEMU_ASAN ? 512 : 128) << 10;

uint3 g_block_idx;
dim3 g_block_dim, g_grid_dim;
Fiber *g_cur;
static void *g_main_sp; /* the launching thread, while a block runs */
static std::vector<Fiber> g_fibers;
static std::vector<Warp> g_warps;
static std::vector<Fiber *> g_ready; /* ring of runnable fibers */
static size_t g_ready_head, g_ready_n;
static unsigned g_alive, g_block_arrived;
static const std::function<void()> *g_body;
static std::vector<unsigned char> g_dyn_smem;
static const char *g_kernel_what = "kernel"; /* the running kernel's name */
#if CUEMU_ASAN
static void *g_main_bottom;
static size_t g_main_size;
#endif

[[noreturn]] static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cuemu: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (block %u,%u,%u of %u,%u,%u; %u threads)\n", g_block_idx.x, g_block_idx.y, g_block_idx.z,
            g_grid_dim.x, g_grid_dim.y, g_grid_dim.z, g_block_dim.x * g_block_dim.y * g_block_dim.z);
    va_end(ap);
    abort();
}

const uint3 &thread_idx() { return g_cur->tid; }
void *dynamic_smem() { return g_dyn_smem.data(); }
unsigned lane_id() { return g_cur->lane; }

static void make_ready(Fiber *f) {
    f->st = RUN;
    g_ready[(g_ready_head + g_ready_n++) % g_ready.size()] = f;
}

static Fiber *pop_ready() {
    if (!g_ready_n)
        return NULL;
    Fiber *f = g_ready[g_ready_head];
    g_ready_head = (g_ready_head + 1) % g_ready.size();
    g_ready_n--;
    return f;
}

/* Saves the running context's stack pointer in *save and resumes `next`
 * (the launching thread when NULL); returns when the context is resumed.
 * fake: where ASan keeps the context's fake stack (NULL: it never resumes). */
static void switch_to(void **save, Fiber *next, void **fake) {
#if CUEMU_ASAN
    __sanitizer_start_switch_fiber(fake, next ? next->stack : g_main_bottom, next ? next->stack_size : g_main_size);
#endif
    g_cur = next;
    cuemu_swap(save, next ? next->sp : g_main_sp);
#if CUEMU_ASAN
    __sanitizer_finish_switch_fiber(fake ? *fake : NULL, NULL, NULL);
#else
    (void)fake;
#endif
}

/* Leaves the running fiber (which has blocked or finished) for the next
 * runnable one, or for the launching thread once every fiber has finished;
 * returns when the fiber is resumed. */
static void switch_away(bool finished) {
    Fiber *f = g_cur, *next = pop_ready();
    if (!next && g_alive) {
        unsigned at_block = 0, at_warp = 0;
        for (Fiber &o : g_fibers)
            at_block += o.st == WAIT_BLOCK, at_warp += o.st == WAIT_WARP;
        die("%s: deadlock: %u threads wait at __syncthreads, %u at warp barriers, none can go on", g_kernel_what,
            at_block, at_warp);
    }
    void *dummy;
#if CUEMU_ASAN
    void **fake = finished ? NULL : &f->fake;
#else
    void **fake = NULL;
#endif
    switch_to(finished ? &dummy : &f->sp, next, fake);
}

static void release_block() {
    g_block_arrived = 0;
    for (Fiber &o : g_fibers)
        if (o.st == WAIT_BLOCK)
            make_ready(&o);
}

void sync_block() {
    if (++g_block_arrived == g_alive) {
        release_block();
        return;
    }
    g_cur->st = WAIT_BLOCK;
    switch_away(false);
}

/* Waits at the warp's barrier; returns the barrier's parity (which slot
 * buffer the lanes wrote before it). */
static unsigned warp_barrier(unsigned mask) {
    Fiber *f = g_cur;
    Warp &w = g_warps[f->warp];
    unsigned bit = 1u << f->lane;
    if (!(mask & bit))
        die("%s: thread %u calls a warp barrier (__syncwarp, shuffle or WMMA) whose mask %#x leaves it out",
            g_kernel_what, f->tid.x, mask);
    if (mask & w.done)
        die("%s: warp %u: thread %u waits at a warp barrier for lanes %#x, which have exited or do not exist",
            g_kernel_what, f->warp, f->tid.x, mask & w.done);
    if (w.arrived && w.mask != mask)
        die("%s: warp %u: lanes meet at warp barriers with different masks (%#x, %#x)", g_kernel_what, f->warp,
            w.mask, mask);
    unsigned parity = w.gen & 1;
    w.mask = mask;
    w.arrived |= bit;
    if (w.arrived == mask) {
        w.arrived = 0;
        w.gen++;
        unsigned base = f->warp * 32;
        for (unsigned l = 0; l < 32; l++)
            if ((mask >> l & 1) && g_fibers[base + l].st == WAIT_WARP)
                make_ready(&g_fibers[base + l]);
        return parity;
    }
    f->st = WAIT_WARP;
    switch_away(false);
    return parity;
}

void sync_warp(unsigned mask) { warp_barrier(mask); }

/* Values go to the buffer of the barrier's parity: a lane can only write
 * the same buffer again after the next barrier, which every lane reaches
 * after reading this one. */
uint64_t exchange(unsigned mask, uint64_t v, unsigned src) {
    Fiber *f = g_cur;
    Warp &w = g_warps[f->warp];
    w.slot[w.gen & 1][f->lane] = v;
    unsigned parity = warp_barrier(mask);
    if (src >= 32 || !(mask >> src & 1))
        die("%s: thread %u shuffles from lane %u, outside the mask %#x", g_kernel_what, f->tid.x, src, mask);
    return w.slot[parity][src];
}

bool first_lane(unsigned mask) { return g_cur->lane == (unsigned)__builtin_ctz(mask); }

void *warp_scratch(size_t bytes) {
    if (bytes > sizeof g_warps[0].scratch)
        die("%s: warp scratch of %zu bytes", g_kernel_what, bytes);
    return g_warps[g_cur->warp].scratch;
}

static void finish_fiber(Fiber *f) {
    f->st = DONE;
    g_alive--;
    Warp &w = g_warps[f->warp];
    w.done |= 1u << f->lane;
    /* a lane that exits while its warp waits for it can never be met */
    if (w.arrived && (w.mask >> f->lane & 1))
        die("%s: thread %u exits while lanes of its warp wait for it at a warp barrier", g_kernel_what, f->tid.x);
    if (g_block_arrived && g_block_arrived == g_alive)
        release_block();
}

} // namespace cuemu

extern "C" void cuemu_fiber_main(cuemu::Fiber *f) {
    using namespace cuemu;
#if CUEMU_ASAN
    __sanitizer_finish_switch_fiber(NULL, NULL, NULL);
#endif
    (*g_body)();
    finish_fiber(f);
    switch_away(true);
    abort(); /* a finished fiber is never resumed */
}

namespace cuemu {

static char *stack_at(size_t i) {
    static std::vector<char *> stacks;
    long page = sysconf(_SC_PAGESIZE);
    while (stacks.size() <= i) {
        size_t bytes = STACK + (size_t)page;
        void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) {
            perror("cuemu: fiber stack");
            abort();
        }
        mprotect(p, (size_t)page, PROT_NONE); /* guard: an overflow faults */
        stacks.push_back((char *)p + page);
    }
    return stacks[i];
}

static void start_fiber(Fiber *f) {
#if CUEMU_ASAN
    ASAN_UNPOISON_MEMORY_REGION(f->stack, f->stack_size);
#endif
    uint64_t *top = (uint64_t *)(((uintptr_t)f->stack + f->stack_size) & ~(uintptr_t)15);
    top[-1] = (uint64_t)(uintptr_t)cuemu_entry; /* ret */
    top[-2] = 0;                                /* rbp */
    top[-3] = (uint64_t)(uintptr_t)f;           /* rbx */
    for (int i = 4; i <= 7; i++)                /* r12-r15 */
        top[-i] = 0;
    uint32_t ctl[2];
    asm volatile("stmxcsr %0" : "=m"(ctl[0]));
    asm volatile("fnstcw %0" : "=m"(ctl[1]));
    memcpy(&top[-8], ctl, 8);
    f->sp = &top[-8];
}

/* Runs one block: every thread to its end. */
static void run_block() {
    size_t n = g_fibers.size();
    g_ready_head = g_ready_n = 0;
    for (size_t i = 0; i < n; i++) {
        Fiber &f = g_fibers[i];
        f.stack = stack_at(i);
        f.stack_size = STACK;
        start_fiber(&f);
        make_ready(&f);
    }
    for (Warp &w : g_warps) {
        w.arrived = w.gen = 0;
        w.done = 0;
    }
    /* lanes past the block's last thread do not exist */
    if (n % 32)
        g_warps.back().done = ~0u << (n % 32);
    g_alive = (unsigned)n;
    g_block_arrived = 0;
    void *fake = NULL;
    switch_to(&g_main_sp, pop_ready(), &fake); /* back when every fiber has finished */
}

static std::recursive_mutex g_dev_lock; /* one kernel, copy or GEMM at a time */

static void run_grid(const Cfg &c, const std::function<void()> &body) {
    std::lock_guard<std::recursive_mutex> lk(g_dev_lock);
    unsigned nt = c.block.x * c.block.y * c.block.z;
    g_block_dim = c.block;
    g_grid_dim = c.grid;
    g_kernel_what = c.name;
    g_body = &body;
    g_fibers.assign(nt, Fiber());
    g_warps.assign((nt + 31) / 32, Warp());
    g_ready.assign(nt, NULL);
#if CUEMU_ASAN
    pthread_attr_t at;
    if (pthread_getattr_np(pthread_self(), &at) == 0) {
        pthread_attr_getstack(&at, &g_main_bottom, &g_main_size);
        pthread_attr_destroy(&at);
    }
#endif
    for (unsigned i = 0; i < nt; i++) {
        Fiber &f = g_fibers[i];
        f.tid = make_uint3(i % c.block.x, i / c.block.x % c.block.y, i / (c.block.x * c.block.y));
        f.lane = i % 32;
        f.warp = i / 32;
    }
    g_dyn_smem.resize(c.smem ? c.smem : 1);
    for (unsigned z = 0; z < c.grid.z; z++)
        for (unsigned y = 0; y < c.grid.y; y++)
            for (unsigned x = 0; x < c.grid.x; x++) {
                g_block_idx = make_uint3(x, y, z);
                memset(g_dyn_smem.data(), 0xff, c.smem); /* not zero: reads before writes show up as NaN */
                run_block();
            }
}

/* ---- the device ---- */

static int env_int(const char *name, int dflt) {
    const char *v = getenv(name);
    return v && *v ? atoi(v) : dflt;
}
static int n_sms() { return env_int("CUEMU_SMS", 132); }
static int smem_optin() { return env_int("CUEMU_SMEM_OPTIN", 232448); }
static size_t mem_total() { return (size_t)env_int("CUEMU_MEM_MB", 8192) << 20; }

static std::mutex g_mem_lock;
static std::map<uintptr_t, size_t> g_dev_mem; /* device allocations: start -> bytes */
static size_t g_dev_used;

static bool is_device(const void *p, size_t n) {
    std::lock_guard<std::mutex> lk(g_mem_lock);
    auto it = g_dev_mem.upper_bound((uintptr_t)p);
    if (it == g_dev_mem.begin())
        return false;
    --it;
    return (uintptr_t)p >= it->first && (uintptr_t)p + n <= it->first + it->second;
}

} // namespace cuemu

/* ---- streams, events, graphs ---- */

using cuemu::g_dev_lock;
typedef std::function<void()> op_t;

struct Capture {
    uint64_t id; /* events name their capture by id: it may have ended since */
    cudaStream_t origin;
    std::vector<op_t> ops;
    std::vector<cudaStream_t> forked;
    cudaError_t err;
};
struct CUstream_st {
    Capture *cap;
    size_t seq, joined; /* ops recorded on this stream during the capture; of those, joined back to the origin */
};
struct CUevent_st {
    uint64_t cap; /* recorded in the capture of this id (0: not in one) */
    cudaStream_t src;
    size_t seq;
    double t; /* when the work before it ran (host clock, s); < 0: never recorded */
};
struct CUgraph_st {
    std::vector<op_t> ops;
};
struct CUgraphExec_st {
    std::vector<op_t> ops;
};
struct CUmemPoolHandle_st {
    int unused;
};
struct cublasContext {
    cudaStream_t stream;
};

/* Captures in progress by id, so an event recorded in one that has ended
 * since is told apart from one in a live capture. */
static std::mutex g_cap_lock;
static std::map<uint64_t, Capture *> g_captures;
static uint64_t g_cap_next = 1;
static Capture *live_capture(uint64_t id) {
    if (!id)
        return NULL;
    std::lock_guard<std::mutex> lk(g_cap_lock);
    auto it = g_captures.find(id);
    return it == g_captures.end() ? NULL : it->second;
}

static thread_local cudaError_t t_last_err = cudaSuccess;
static thread_local Capture *t_capture; /* the capture this thread began, in thread-local mode */

static cudaError_t fail(cudaError_t e, const char *what) {
    fprintf(stderr, "cuemu: %s: %s\n", what, cudaGetErrorString(e));
    t_last_err = e;
    return e;
}

/* Calls the runtime refuses on the capturing thread while it captures. */
static cudaError_t unsafe_in_capture(const char *what) {
    if (!t_capture)
        return cudaSuccess;
    t_capture->err = cudaErrorStreamCaptureUnsupported;
    return fail(cudaErrorStreamCaptureUnsupported, what);
}

/* Runs stream work now, or records it in the stream's capture. */
static cudaError_t enqueue(cudaStream_t s, op_t op, const char *what) {
    if (s && s->cap) {
        s->cap->ops.push_back(std::move(op));
        s->seq++;
        return cudaSuccess;
    }
    if (!s && t_capture) {
        t_capture->err = cudaErrorStreamCaptureImplicit;
        return fail(cudaErrorStreamCaptureImplicit, what);
    }
    std::lock_guard<std::recursive_mutex> lk(g_dev_lock);
    op();
    return cudaSuccess;
}

void cuemu::submit_grid(const Cfg &c, std::function<void()> per_thread) {
    unsigned nt = c.block.x * c.block.y * c.block.z;
    if (!nt || nt > 1024 || c.block.z > 64 || !c.grid.x || !c.grid.y || !c.grid.z || c.grid.y > 65535 ||
        c.grid.z > 65535) {
        fprintf(stderr, "cuemu: %s: launch of grid (%u,%u,%u) x block (%u,%u,%u) is over the device's limits\n",
                c.name, c.grid.x, c.grid.y, c.grid.z, c.block.x, c.block.y, c.block.z);
        t_last_err = cudaErrorInvalidConfiguration;
        return;
    }
    if (c.smem > (size_t)smem_optin()) {
        fprintf(stderr, "cuemu: %s: launch with %zu bytes of dynamic shared memory, over the device's %d\n", c.name,
                c.smem, smem_optin());
        t_last_err = cudaErrorInvalidValue;
        return;
    }
    Cfg cfg = c;
    enqueue(c.stream, [cfg, per_thread]() { run_grid(cfg, per_thread); }, "kernel launch");
}

extern "C" {

const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureImplicit: return "operation would make the legacy stream depend on a capturing blocking stream";
    case cudaErrorStreamCaptureUnjoined: return "capturing stream has unjoined work";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorIllegalState: return "the operation cannot be performed in the present state";
    default: return "cuemu: unknown error";
    }
}
const char *cudaGetErrorName(cudaError_t e) { return cudaGetErrorString(e); }

cudaError_t cudaGetLastError(void) {
    cudaError_t e = t_last_err;
    t_last_err = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError(void) { return t_last_err; }

cudaError_t cudaGetDeviceCount(int *n) {
    *n = 1;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice, "cudaSetDevice"); }
cudaError_t cudaGetDevice(int *d) {
    *d = 0;
    return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int d) {
    if (d != 0)
        return fail(cudaErrorInvalidDevice, "cudaGetDeviceProperties");
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "cuemu (CUDA emulated on the CPU)");
    p->multiProcessorCount = cuemu::n_sms();
    p->major = 9;
    p->minor = 0;
    p->totalGlobalMem = cuemu::mem_total();
    p->sharedMemPerBlock = 48 << 10;
    p->sharedMemPerBlockOptin = (size_t)cuemu::smem_optin();
    p->maxThreadsPerBlock = 1024;
    p->warpSize = 32;
    return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int *v, enum cudaDeviceAttr a, int d) {
    if (d != 0)
        return fail(cudaErrorInvalidDevice, "cudaDeviceGetAttribute");
    switch (a) {
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = cuemu::smem_optin(); return cudaSuccess;
    case cudaDevAttrMultiProcessorCount: *v = cuemu::n_sms(); return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor: *v = 9; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor: *v = 0; return cudaSuccess;
    default: return fail(cudaErrorInvalidValue, "cudaDeviceGetAttribute: attribute not emulated");
    }
}
cudaError_t cudaDeviceGetStreamPriorityRange(int *lo, int *hi) {
    *lo = 0;
    *hi = -5;
    return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) { return unsafe_in_capture("cudaDeviceSynchronize during stream capture"); }
cudaError_t cudaFuncSetAttribute(const void *fn, enum cudaFuncAttribute a, int v) {
    if (a == cudaFuncAttributeMaxDynamicSharedMemorySize && v > cuemu::smem_optin())
        return fail(cudaErrorInvalidValue, "cudaFuncSetAttribute: dynamic shared memory over the opt-in limit");
    return cudaSuccess;
}

/* memory: device allocations are heap blocks of exactly the size asked
 * for (so that ASan sees a kernel that reads past one), 256-byte aligned */
static cudaError_t dev_alloc(void **p, size_t n) {
    std::lock_guard<std::mutex> lk(cuemu::g_mem_lock);
    if (cuemu::g_dev_used + n > cuemu::mem_total() || posix_memalign(p, 256, n ? n : 1)) {
        *p = NULL;
        t_last_err = cudaErrorMemoryAllocation;
        return cudaErrorMemoryAllocation;
    }
    cuemu::g_dev_mem[(uintptr_t)*p] = n;
    cuemu::g_dev_used += n;
    return cudaSuccess;
}
cudaError_t cudaMalloc(void **p, size_t n) {
    *p = NULL;
    if (cudaError_t e = unsafe_in_capture("cudaMalloc during stream capture"))
        return e;
    return dev_alloc(p, n);
}
static cudaError_t dev_free(void *p) {
    if (!p)
        return cudaSuccess;
    std::lock_guard<std::mutex> lk(cuemu::g_mem_lock);
    auto it = cuemu::g_dev_mem.find((uintptr_t)p);
    if (it == cuemu::g_dev_mem.end())
        return fail(cudaErrorInvalidValue, "cudaFree of a pointer cudaMalloc did not return");
    cuemu::g_dev_used -= it->second;
    cuemu::g_dev_mem.erase(it);
    free(p);
    return cudaSuccess;
}
cudaError_t cudaFree(void *p) {
    if (cudaError_t e = unsafe_in_capture("cudaFree during stream capture"))
        return e;
    return dev_free(p);
}
cudaError_t cudaMemGetInfo(size_t *fr, size_t *tot) {
    std::lock_guard<std::mutex> lk(cuemu::g_mem_lock);
    *tot = cuemu::mem_total();
    *fr = *tot - cuemu::g_dev_used;
    return cudaSuccess;
}
cudaError_t cudaMallocHost(void **p, size_t n) {
    *p = NULL;
    if (cudaError_t e = unsafe_in_capture("cudaMallocHost during stream capture"))
        return e;
    if (posix_memalign(p, 4096, n ? n : 1)) {
        *p = NULL;
        return cudaErrorMemoryAllocation;
    }
    return cudaSuccess;
}
cudaError_t cudaFreeHost(void *p) {
    if (cudaError_t e = unsafe_in_capture("cudaFreeHost during stream capture"))
        return e;
    free(p);
    return cudaSuccess;
}
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t *pool, int d) {
    static CUmemPoolHandle_st the_pool;
    *pool = &the_pool;
    return d == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice, "cudaDeviceGetDefaultMemPool");
}
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t, enum cudaMemPoolAttr, void *) { return cudaSuccess; }
cudaError_t cudaMallocFromPoolAsync(void **p, size_t n, cudaMemPool_t, cudaStream_t s) {
    *p = NULL;
    if (s && s->cap)
        return fail(cudaErrorStreamCaptureUnsupported, "cuemu does not record allocations in a graph");
    return dev_alloc(p, n);
}
cudaError_t cudaFreeAsync(void *p, cudaStream_t s) {
    if (p && !cuemu::is_device(p, 1))
        return fail(cudaErrorInvalidValue, "cudaFreeAsync of a pointer that is not device memory");
    return enqueue(s, [p]() { dev_free(p); }, "cudaFreeAsync");
}

static cudaError_t check_copy(void *dst, const void *src, size_t n, enum cudaMemcpyKind k, const char *what) {
    bool dd = cuemu::is_device(dst, n), sd = cuemu::is_device(src, n);
    bool ok = k == cudaMemcpyDefault || (k == cudaMemcpyHostToDevice && dd && !sd) ||
              (k == cudaMemcpyDeviceToHost && !dd && sd) || (k == cudaMemcpyDeviceToDevice && dd && sd) ||
              (k == cudaMemcpyHostToHost && !dd && !sd);
    if (!ok) {
        char msg[192];
        snprintf(msg, sizeof msg, "%s of %zu bytes, kind %d: destination is %s, source is %s", what, n, (int)k,
                 dd ? "device memory" : "not (all) device memory", sd ? "device memory" : "not (all) device memory");
        return fail(cudaErrorInvalidValue, msg);
    }
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind k, cudaStream_t s) {
    if (!n)
        return cudaSuccess;
    if (cudaError_t e = check_copy(dst, src, n, k, "cudaMemcpyAsync"))
        return e;
    return enqueue(s, [dst, src, n]() { memcpy(dst, src, n); }, "cudaMemcpyAsync");
}
cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind k) {
    if (cudaError_t e = unsafe_in_capture("cudaMemcpy during stream capture"))
        return e;
    return cudaMemcpyAsync(dst, src, n, k, NULL);
}
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s) {
    if (!n)
        return cudaSuccess;
    if (!cuemu::is_device(p, n))
        return fail(cudaErrorInvalidValue, "cudaMemsetAsync of memory that is not (all) device memory");
    return enqueue(s, [p, v, n]() { memset(p, v, n); }, "cudaMemsetAsync");
}
cudaError_t cudaMemset(void *p, int v, size_t n) {
    if (cudaError_t e = unsafe_in_capture("cudaMemset during stream capture"))
        return e;
    return cudaMemsetAsync(p, v, n, NULL);
}

/* streams and events: work runs when it is issued, so waiting is free;
 * what is tracked is which streams a capture has taken in */
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned) {
    *s = new CUstream_st();
    return cudaSuccess;
}
cudaError_t cudaStreamCreateWithPriority(cudaStream_t *s, unsigned, int) {
    *s = new CUstream_st();
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
    if (s && s->cap)
        return fail(cudaErrorStreamCaptureUnsupported, "cudaStreamDestroy of a capturing stream");
    delete s;
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    if ((s && s->cap) || (!s && t_capture)) {
        if (s && s->cap)
            s->cap->err = cudaErrorStreamCaptureUnsupported;
        return fail(cudaErrorStreamCaptureUnsupported, "cudaStreamSynchronize of a capturing stream");
    }
    return cudaSuccess;
}
static double now_s() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned) {
    *e = new CUevent_st();
    (*e)->t = -1.0;
    return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t *e) {
    return cudaEventCreateWithFlags(e, 0);
}
/* Work runs when it is issued, so an event completes when it is recorded and
 * the time between two is the host time the work between them took (a
 * graph's event takes its time at replay). */
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    if (cudaError_t err = unsafe_in_capture("cudaEventSynchronize during stream capture"))
        return err;
    return live_capture(e->cap) ? fail(cudaErrorIllegalState, "cudaEventSynchronize of an event in a capture in progress")
                                : cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t e) {
    return cudaEventSynchronize(e);
}
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
    if (!ms || !start || !end || live_capture(start->cap) || live_capture(end->cap))
        return fail(cudaErrorInvalidValue, "cudaEventElapsedTime");
    if (start->t < 0 || end->t < 0)
        return fail(cudaErrorInvalidResourceHandle, "cudaEventElapsedTime of an event never recorded");
    *ms = (float)((end->t - start->t) * 1e3);
    return cudaSuccess;
}
cudaError_t cudaProfilerStart(void) {
    return cudaSuccess;
}
cudaError_t cudaProfilerStop(void) {
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
    delete e;
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    Capture *c = s ? s->cap : NULL;
    e->cap = c ? c->id : 0;
    e->src = s;
    e->seq = s ? s->seq : 0;
    if (!c) {
        e->t = now_s();
        return cudaSuccess;
    }
    /* a graph node: the time is taken at replay (not counted as stream work
     * for the join tracking above) */
    c->ops.push_back([e]() { e->t = now_s(); });
    return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned) {
    Capture *c = live_capture(e->cap);
    if (!c)
        return cudaSuccess;
    if (!s)
        return fail(cudaErrorStreamCaptureImplicit, "cudaStreamWaitEvent: legacy stream waits on a capture");
    if (!s->cap) { /* fork: s joins the capture */
        s->cap = c;
        s->seq = s->joined = 0;
        c->forked.push_back(s);
    } else if (s == c->origin && e->src != s) { /* join: the origin waits for the fork's work so far */
        e->src->joined = std::max(e->src->joined, e->seq);
    }
    return cudaSuccess;
}
cudaError_t cudaStreamIsCapturing(cudaStream_t s, enum cudaStreamCaptureStatus *st) {
    *st = (s && s->cap) || (!s && t_capture) ? cudaStreamCaptureStatusActive : cudaStreamCaptureStatusNone;
    return cudaSuccess;
}
cudaError_t cudaStreamBeginCapture(cudaStream_t s, enum cudaStreamCaptureMode) {
    if (!s || s->cap || t_capture)
        return fail(cudaErrorIllegalState, "cudaStreamBeginCapture");
    Capture *c = new Capture();
    {
        std::lock_guard<std::mutex> lk(g_cap_lock);
        c->id = g_cap_next++;
        g_captures[c->id] = c;
    }
    c->origin = s;
    c->err = cudaSuccess;
    s->cap = c;
    s->seq = s->joined = 0;
    t_capture = c;
    return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g) {
    *g = NULL;
    Capture *c = s ? s->cap : NULL;
    if (!c || c->origin != s)
        return fail(cudaErrorIllegalState, "cudaStreamEndCapture on a stream that did not begin a capture");
    cudaError_t e = c->err;
    for (cudaStream_t f : c->forked) {
        if (!e && f->seq > f->joined) {
            fprintf(stderr, "cuemu: stream capture: a forked stream has %zu operations not joined back\n",
                    f->seq - f->joined);
            e = cudaErrorStreamCaptureUnjoined;
        }
        f->cap = NULL;
    }
    s->cap = NULL;
    t_capture = NULL;
    if (!e)
        *g = new CUgraph_st{std::move(c->ops)};
    {
        std::lock_guard<std::mutex> lk(g_cap_lock);
        g_captures.erase(c->id);
    }
    delete c;
    if (e)
        t_last_err = e;
    return e;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *x, cudaGraph_t g, unsigned long long) {
    *x = new CUgraphExec_st{g->ops};
    return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t x, cudaStream_t s) {
    return enqueue(s, [x]() {
            for (const op_t &op : x->ops)
                op();
        }, "cudaGraphLaunch");
}
cudaError_t cudaGraphDestroy(cudaGraph_t g) {
    delete g;
    return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t x) {
    delete x;
    return cudaSuccess;
}

/* ---- cuBLAS: cublasGemmEx, fp32 accumulation ---- */

cublasStatus_t cublasCreate_v2(cublasHandle_t *h) {
    *h = new cublasContext();
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy_v2(cublasHandle_t h) {
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t s) {
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) { return CUBLAS_STATUS_SUCCESS; }
const char *cublasGetStatusString(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    default: return "CUBLAS_STATUS (other)";
    }
}
cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t, void *ws, size_t n) {
    return !n || cuemu::is_device(ws, n) ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}

} /* extern "C" */

static size_t type_size(cudaDataType t) {
    return t == CUDA_R_32F ? 4 : t == CUDA_R_16F || t == CUDA_R_16BF ? 2 : 0;
}
static float load_el(const void *p, cudaDataType t, size_t i) {
    if (t == CUDA_R_32F)
        return ((const float *)p)[i];
    if (t == CUDA_R_16F)
        return __half2float(((const __half *)p)[i]);
    return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
}
static void store_el(void *p, cudaDataType t, size_t i, float v) {
    if (t == CUDA_R_32F)
        ((float *)p)[i] = v;
    else if (t == CUDA_R_16F)
        ((__half *)p)[i] = __float2half_rn(v);
    else
        ((__nv_bfloat16 *)p)[i] = __float2bfloat16(v);
}

/* op(M) as rows x k floats, row r = what multiplies output row/column r */
static void panel(std::vector<float> &out, const void *p, cudaDataType t, int ld, bool trans, int rows, int k) {
    out.resize((size_t)rows * k);
    for (int r = 0; r < rows; r++)
        for (int q = 0; q < k; q++)
            out[(size_t)r * k + q] = load_el(p, t, trans ? (size_t)q + (size_t)r * ld : (size_t)r + (size_t)q * ld);
}

/* The GEMM's inner loop, in AVX2+FMA where the CPU has them. */
__attribute__((target_clones("arch=haswell", "default"))) static float dot(const float *x, const float *y, int k) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int q = 0; q < k; q++)
        s += x[q] * y[q];
    return s;
}

/* One product C = alpha op(A) op(B) + beta C, column-major as cuBLAS has it. */
struct Gemm {
    bool tra, trb; /* op(A) = A^T, op(B) = B^T */
    int m, n, k, lda, ldb, ldc;
    float alpha, beta;
    const void *A, *B;
    void *C;
    cudaDataType at, bt, ct;
};

/* Arguments cuBLAS refuses, whatever the pointers. */
static bool gemm_shape_ok(const Gemm &g, cublasComputeType_t comp, const char *who) {
    if (g.m < 0 || g.n < 0 || g.k < 0 || !type_size(g.at) || !type_size(g.bt) || !type_size(g.ct) ||
        (comp != CUBLAS_COMPUTE_32F && comp != CUBLAS_COMPUTE_32F_FAST_TF32) ||
        g.lda < std::max(1, g.tra ? g.k : g.m) || g.ldb < std::max(1, g.trb ? g.n : g.k) ||
        g.ldc < std::max(1, g.m)) {
        fprintf(stderr, "cuemu: %s: invalid arguments (m %d n %d k %d lda %d ldb %d ldc %d)\n", who, g.m, g.n, g.k,
                g.lda, g.ldb, g.ldc);
        return false;
    }
    return true;
}

/* The last element each operand reaches must be device memory. */
static bool gemm_mem_ok(const Gemm &g, const char *who) {
    if (!g.m || !g.n)
        return true;
    size_t a_n = !g.tra ? (size_t)g.lda * (g.k - 1) + g.m : (size_t)g.lda * (g.m - 1) + g.k;
    size_t b_n = !g.trb ? (size_t)g.ldb * (g.n - 1) + g.k : (size_t)g.ldb * (g.k - 1) + g.n;
    size_t c_n = (size_t)g.ldc * (g.n - 1) + g.m;
    if ((g.k && (!cuemu::is_device(g.A, a_n * type_size(g.at)) || !cuemu::is_device(g.B, b_n * type_size(g.bt)))) ||
        !cuemu::is_device(g.C, c_n * type_size(g.ct))) {
        fprintf(stderr, "cuemu: %s: an operand is not (all) in device memory (m %d n %d k %d)\n", who, g.m, g.n,
                g.k);
        return false;
    }
    return true;
}

static void gemm_run(const Gemm &g) {
    if (!g.m || !g.n)
        return;
    int m = g.m, n = g.n, k = g.k, ldc = g.ldc;
    std::vector<float> ap, bp;
    panel(ap, g.A, g.at, g.lda, g.tra, m, k);
    panel(bp, g.B, g.bt, g.ldb, !g.trb, n, k); /* B's column j is row j of its panel */
    /* 8 columns of C per pass over op(A), so that op(A) streams from memory
     * n / 8 times, not n times */
    int nblk = (n + 7) / 8;
#pragma omp parallel for schedule(dynamic, 1) if ((double)m * n * k > 1e7)
    for (int jb = 0; jb < nblk; jb++) {
        int j0 = jb * 8, nj = std::min(8, n - j0);
        for (int i = 0; i < m; i++)
            for (int jj = 0; jj < nj; jj++) {
                size_t ci = (size_t)i + (size_t)(j0 + jj) * ldc;
                float v = g.alpha * dot(&ap[(size_t)i * k], &bp[(size_t)(j0 + jj) * k], k);
                if (g.beta != 0.0f)
                    v += g.beta * load_el(g.C, g.ct, ci);
                store_el(g.C, g.ct, ci, v);
            }
    }
}

static Gemm gemm_of(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const void *alpha,
                    const void *A, cudaDataType at, int lda, const void *B, cudaDataType bt, int ldb,
                    const void *beta, void *C, cudaDataType ct, int ldc) {
    return Gemm{ta != CUBLAS_OP_N, tb != CUBLAS_OP_N, m, n, k, lda, ldb, ldc, *(const float *)alpha,
                *(const float *)beta, A, B, C, at, bt, ct};
}

extern "C" cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                       int k, const void *alpha, const void *A, cudaDataType at, int lda,
                                       const void *B, cudaDataType bt, int ldb, const void *beta, void *C,
                                       cudaDataType ct, int ldc, cublasComputeType_t comp, cublasGemmAlgo_t) {
    Gemm g = gemm_of(ta, tb, m, n, k, alpha, A, at, lda, B, bt, ldb, beta, C, ct, ldc);
    if (!gemm_shape_ok(g, comp, "cublasGemmEx") || !gemm_mem_ok(g, "cublasGemmEx"))
        return CUBLAS_STATUS_INVALID_VALUE;
    return enqueue(h->stream, [g]() { gemm_run(g); }, "cublasGemmEx") ? CUBLAS_STATUS_EXECUTION_FAILED
                                                                       : CUBLAS_STATUS_SUCCESS;
}

/* `count` products whose operands lie `stride` elements apart. */
extern "C" cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,
                                                     int m, int n, int k, const void *alpha, const void *A,
                                                     cudaDataType at, int lda, long long sa, const void *B,
                                                     cudaDataType bt, int ldb, long long sb, const void *beta, void *C,
                                                     cudaDataType ct, int ldc, long long sc, int count,
                                                     cublasComputeType_t comp, cublasGemmAlgo_t) {
    const char *who = "cublasGemmStridedBatchedEx";
    Gemm g = gemm_of(ta, tb, m, n, k, alpha, A, at, lda, B, bt, ldb, beta, C, ct, ldc);
    if (count < 0 || !gemm_shape_ok(g, comp, who))
        return CUBLAS_STATUS_INVALID_VALUE;
    std::vector<Gemm> all;
    for (int i = 0; i < count; i++) {
        Gemm gi = g;
        gi.A = (const char *)A + (ptrdiff_t)(i * sa) * (ptrdiff_t)type_size(at);
        gi.B = (const char *)B + (ptrdiff_t)(i * sb) * (ptrdiff_t)type_size(bt);
        gi.C = (char *)C + (ptrdiff_t)(i * sc) * (ptrdiff_t)type_size(ct);
        if (!gemm_mem_ok(gi, who))
            return CUBLAS_STATUS_INVALID_VALUE;
        all.push_back(gi);
    }
    return enqueue(h->stream, [all]() { for (const Gemm &gi : all) gemm_run(gi); }, who)
               ? CUBLAS_STATUS_EXECUTION_FAILED
               : CUBLAS_STATUS_SUCCESS;
}

/* `count` products whose operands' addresses are read from device arrays
 * when the work runs (a kernel before it may write them). */
extern "C" cublasStatus_t cublasGemmBatchedEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                                              int n, int k, const void *alpha, const void *const Aarray[],
                                              cudaDataType at, int lda, const void *const Barray[], cudaDataType bt,
                                              int ldb, const void *beta, void *const Carray[], cudaDataType ct,
                                              int ldc, int count, cublasComputeType_t comp, cublasGemmAlgo_t) {
    const char *who = "cublasGemmBatchedEx";
    Gemm g = gemm_of(ta, tb, m, n, k, alpha, NULL, at, lda, NULL, bt, ldb, beta, NULL, ct, ldc);
    if (count < 0 || !gemm_shape_ok(g, comp, who))
        return CUBLAS_STATUS_INVALID_VALUE;
    size_t pn = (size_t)count * sizeof(void *);
    if (count && (!cuemu::is_device(Aarray, pn) || !cuemu::is_device(Barray, pn) || !cuemu::is_device(Carray, pn))) {
        fprintf(stderr, "cuemu: %s: a pointer array is not (all) in device memory\n", who);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    op_t op = [g, Aarray, Barray, Carray, count, who]() {
        for (int i = 0; i < count; i++) {
            Gemm gi = g;
            gi.A = Aarray[i];
            gi.B = Barray[i];
            gi.C = Carray[i];
            if (!gemm_mem_ok(gi, who))
                cuemu::die("%s: product %d of %d reads or writes outside device memory", who, i, count);
            gemm_run(gi);
        }
    };
    return enqueue(h->stream, op, who) ? CUBLAS_STATUS_EXECUTION_FAILED : CUBLAS_STATUS_SUCCESS;
}

/* ---- cuBLASLt: the matmul subset the backend uses, on the same GEMM ----
 * Descriptors are the emulator's own objects behind the opaque pointers.
 * cublasLtMatmul checks what cuBLASLt requires of the layouts - op(A) m x k,
 * op(B) k x n, C and D m x n, each ld at least its rows - so a backend that
 * describes its matrices wrongly fails here as it would on the GPU. */
struct LtDesc {
    cublasComputeType_t comp;
    cudaDataType_t scale;
    cublasOperation_t ta, tb;
};
struct LtLayout {
    cudaDataType t;
    uint64_t rows, cols;
    int64_t ld;
};
struct LtPref {
    uint64_t max_ws;
};

extern "C" {
cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) {
    *h = (cublasLtHandle_t) new int(0);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) {
    delete (int *)h;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t comp, cudaDataType_t scale) {
    *d = (cublasLtMatmulDesc_t) new LtDesc{comp, scale, CUBLAS_OP_N, CUBLAS_OP_N};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
    delete (LtDesc *)d;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr,
                                              const void *buf, size_t n) {
    LtDesc *x = (LtDesc *)d;
    if ((attr != CUBLASLT_MATMUL_DESC_TRANSA && attr != CUBLASLT_MATMUL_DESC_TRANSB) || n != sizeof(int32_t)) {
        fprintf(stderr, "cuemu: cublasLtMatmulDescSetAttribute: attribute %d (%zu bytes) is not emulated\n", (int)attr,
                n);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    int32_t v;
    memcpy(&v, buf, sizeof v);
    (attr == CUBLASLT_MATMUL_DESC_TRANSA ? x->ta : x->tb) = (cublasOperation_t)v;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType t, uint64_t rows, uint64_t cols,
                                          int64_t ld) {
    if (ld < (int64_t)std::max<uint64_t>(1, rows))
        return CUBLAS_STATUS_INVALID_VALUE;
    *l = (cublasLtMatrixLayout_t) new LtLayout{t, rows, cols, ld};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
    delete (LtLayout *)l;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p) {
    *p = (cublasLtMatmulPreference_t) new LtPref{0};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
    delete (LtPref *)p;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t attr, const void *buf,
                                                    size_t n) {
    if (attr != CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES || n != sizeof(uint64_t))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    memcpy(&((LtPref *)p)->max_ws, buf, sizeof(uint64_t));
    return CUBLAS_STATUS_SUCCESS;
}
} /* extern "C" */

/* The product a cublasLtMatmul describes, or false (with a message) when
 * its layouts do not fit together. */
static bool lt_gemm(const LtDesc *d, const LtLayout *a, const LtLayout *b, const LtLayout *c, const LtLayout *dd,
                    Gemm *g, const char *who) {
    bool tra = d->ta != CUBLAS_OP_N, trb = d->tb != CUBLAS_OP_N;
    uint64_t m = dd->rows, n = dd->cols, k = tra ? a->rows : a->cols;
    uint64_t am = tra ? a->cols : a->rows, bk = trb ? b->cols : b->rows, bn = trb ? b->rows : b->cols;
    if (am != m || bk != k || bn != n || c->rows != m || c->cols != n || c->ld != dd->ld || c->t != dd->t ||
        d->scale != CUDA_R_32F || m > INT32_MAX || n > INT32_MAX || k > INT32_MAX) {
        fprintf(stderr,
                "cuemu: %s: layouts do not fit: op(A) %llux%llu, op(B) %llux%llu, C %llux%llu, D %llux%llu\n", who,
                (unsigned long long)am, (unsigned long long)k, (unsigned long long)bk, (unsigned long long)bn,
                (unsigned long long)c->rows, (unsigned long long)c->cols, (unsigned long long)m,
                (unsigned long long)n);
        return false;
    }
    *g = Gemm{tra, trb, (int)m, (int)n, (int)k, (int)a->ld, (int)b->ld, (int)dd->ld, 1.0f, 0.0f, NULL, NULL, NULL,
              a->t, b->t, dd->t};
    return gemm_shape_ok(*g, d->comp, who);
}

extern "C" cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t op,
                                                         cublasLtMatrixLayout_t A, cublasLtMatrixLayout_t B,
                                                         cublasLtMatrixLayout_t C, cublasLtMatrixLayout_t D,
                                                         cublasLtMatmulPreference_t, int want,
                                                         cublasLtMatmulHeuristicResult_t res[], int *n) {
    Gemm g;
    *n = 0;
    if (t_capture) { /* CUDA 13's cuBLASLt fails so ("could not obtain green context information") */
        fprintf(stderr, "cuemu: cublasLtMatmulAlgoGetHeuristic during a stream capture on this thread\n");
        return CUBLAS_STATUS_INTERNAL_ERROR;
    }
    if (want < 1 || !lt_gemm((const LtDesc *)op, (const LtLayout *)A, (const LtLayout *)B, (const LtLayout *)C,
                             (const LtLayout *)D, &g, "cublasLtMatmulAlgoGetHeuristic"))
        return CUBLAS_STATUS_INVALID_VALUE;
    memset(&res[0], 0, sizeof res[0]);
    res[0].state = CUBLAS_STATUS_SUCCESS;
    res[0].wavesCount = 1.0f;
    *n = 1;
    return CUBLAS_STATUS_SUCCESS;
}

extern "C" cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t op, const void *alpha, const void *A,
                                         cublasLtMatrixLayout_t Ad, const void *B, cublasLtMatrixLayout_t Bd,
                                         const void *beta, const void *C, cublasLtMatrixLayout_t Cd, void *D,
                                         cublasLtMatrixLayout_t Dd, const cublasLtMatmulAlgo_t *algo, void *ws,
                                         size_t ws_bytes, cudaStream_t s) {
    const char *who = "cublasLtMatmul";
    Gemm g;
    if (!lt_gemm((const LtDesc *)op, (const LtLayout *)Ad, (const LtLayout *)Bd, (const LtLayout *)Cd,
                 (const LtLayout *)Dd, &g, who))
        return CUBLAS_STATUS_INVALID_VALUE;
    g.alpha = *(const float *)alpha;
    g.beta = *(const float *)beta;
    if (g.beta != 0.0f && C != D) {
        fprintf(stderr, "cuemu: %s: C and D differ (not emulated)\n", who);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    g.A = A;
    g.B = B;
    g.C = D;
    if (!algo || (ws_bytes && !cuemu::is_device(ws, ws_bytes)) || !gemm_mem_ok(g, who))
        return CUBLAS_STATUS_INVALID_VALUE;
    return enqueue(s, [g]() { gemm_run(g); }, who) ? CUBLAS_STATUS_EXECUTION_FAILED : CUBLAS_STATUS_SUCCESS;
}
