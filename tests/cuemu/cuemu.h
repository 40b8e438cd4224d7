/* cuemu.h - CUDA device emulation on the CPU, for tests: lets the CUDA
 * backend's own sources (src/backend/cuda/*.cu) run on a machine without a
 * GPU, so that CI executes every kernel, launch, copy, graph capture and
 * cuBLAS call of the backend and compares its results with the CPU backend.
 *
 * How: tests/cuemu/cuemu.cmake rewrites each .cu (kernel launches
 * `k<<<g, b, smem, s>>>(args)` become cuemu::Launch calls, `extern __shared__`
 * arrays read cuemu_dynamic_smem()) and compiles it as C++ with this header
 * force-included. Each block runs its threads as fibers on one CPU thread:
 * __syncthreads, __syncwarp, shuffles and WMMA operations are barriers that
 * switch between them, so a thread only passes a barrier once every thread it
 * names has reached it (a barrier that can never be passed is reported as a
 * deadlock). The runtime API (tests/cuemu/cuemu.cpp) executes stream work
 * when it is issued, records it while a stream is captured into a graph, and
 * checks what the real runtime refuses (unsafe calls during capture, streams
 * forked into a capture and never joined, copies in the wrong direction,
 * launches over the device's limits).
 *
 * What it cannot show: timing, races between blocks or warps (blocks run one
 * after another, threads of a block in a fixed order), the memory model, the
 * tensor cores' rounding, or anything that only a real GPU does. It checks
 * the code's logic and its indexing (in sanitizer builds every device buffer
 * is a heap block that ASan watches); the GPU run is still the acceptance. */
#ifndef LP_CUEMU_H
#define LP_CUEMU_H

#ifndef __cplusplus
#error "cuemu.h is for the C++ compilation of .cu files"
#endif

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <string.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <type_traits>
#include <utility>

/* ---- keywords: device code is plain host code here ---- */
/* Code shared with the host compiler (src/backend/select.h) takes its device
 * branch in the kernels, as under nvcc's device pass; the CUDA headers above
 * were read without it. */
#define __CUDA_ARCH__ 900
#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __forceinline__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
/* Blocks run one at a time, so a static is the block's shared memory. */
#define __shared__ static

namespace cuemu {

/* One emulated thread: a fiber with its own stack. */
struct Fiber;

/* The block being run and the fiber running now (one kernel at a time runs,
 * under a process-wide lock). */
extern uint3 g_block_idx;
extern dim3 g_block_dim, g_grid_dim;
extern Fiber *g_cur;
const uint3 &thread_idx();
void *dynamic_smem();

/* Barriers: the block's (__syncthreads) and the calling thread's warp's,
 * over the lanes in mask. */
void sync_block();
void sync_warp(unsigned mask);
unsigned lane_id();
/* Exchange 8 bytes with the warp: every lane in mask publishes v; returns
 * the value lane src published. */
uint64_t exchange(unsigned mask, uint64_t v, unsigned src);
/* The lowest lane of mask? (the one that writes for a warp-wide store) */
bool first_lane(unsigned mask);
/* Scratch memory of the calling thread's warp (WMMA results), at least
 * `bytes` (at most 4 KB). */
void *warp_scratch(size_t bytes);

/* Launch: geometry and the stream; the body runs once per thread. */
struct Cfg {
    dim3 grid, block;
    size_t smem;
    cudaStream_t stream;
    const char *name; /* the kernel, as written at the launch (for messages) */
    Cfg(dim3 g, dim3 b, size_t s = 0, cudaStream_t st = 0) : grid(g), block(b), smem(s), stream(st), name("kernel") {}
};
/* Runs (or, in a stream being captured, records) a grid. */
void submit_grid(const Cfg &c, std::function<void()> per_thread);

template <typename F> struct Launcher {
    Cfg c;
    F f;
    template <typename... A> void operator()(A... a) {
        F body = f;
        submit_grid(c, [body, a...]() { body(a...); });
    }
};
struct Launch {
    Cfg c;
    template <typename... A> explicit Launch(const char *name, A... a) : c(a...) { c.name = name; }
    template <typename F> Launcher<F> operator*(F f) const { return Launcher<F>{c, f}; }
};

template <typename T> inline T shfl(unsigned mask, T v, unsigned src) {
    static_assert(sizeof(T) <= 8, "cuemu: shuffle of more than 8 bytes");
    uint64_t raw = 0;
    memcpy(&raw, &v, sizeof v);
    raw = exchange(mask, raw, src);
    T out;
    memcpy(&out, &raw, sizeof out);
    return out;
}

} // namespace cuemu

/* ---- built-in variables and functions ---- */
#define threadIdx (cuemu::thread_idx())
#define blockIdx (cuemu::g_block_idx)
#define blockDim (cuemu::g_block_dim)
#define gridDim (cuemu::g_grid_dim)

inline void __syncthreads() { cuemu::sync_block(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { cuemu::sync_warp(mask); }
inline void __threadfence() {}
template <typename T> inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    unsigned lane = cuemu::lane_id();
    return cuemu::shfl(mask, v, (lane & ~(unsigned)(width - 1)) + ((unsigned)src & (unsigned)(width - 1)));
}
template <typename T> inline T __shfl_xor_sync(unsigned mask, T v, int lm, int width = 32) {
    unsigned lane = cuemu::lane_id();
    unsigned src = lane ^ (unsigned)lm;
    if ((src & ~(unsigned)(width - 1)) != (lane & ~(unsigned)(width - 1)))
        src = lane;
    return cuemu::shfl(mask, v, src);
}
/* One kernel runs at a time on one CPU thread: atomics are plain. */
inline unsigned atomicAdd(unsigned *p, unsigned v) {
    unsigned o = *p;
    *p = o + v;
    return o;
}
inline int atomicAdd(int *p, int v) {
    int o = *p;
    *p = o + v;
    return o;
}
inline float atomicAdd(float *p, float v) {
    float o = *p;
    *p = o + v;
    return o;
}
template <typename T> inline T __ldcg(const T *p) { return *p; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline unsigned __float_as_uint(float f) {
    unsigned u;
    memcpy(&u, &f, 4);
    return u;
}
inline float __uint_as_float(unsigned u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
using std::fmaxf;
using std::fminf;
/* CUDA's integer min/max, mixed types included */
template <typename A, typename B> inline typename std::common_type<A, B>::type min(A a, B b) {
    typedef typename std::common_type<A, B>::type C;
    return (C)b < (C)a ? (C)b : (C)a;
}
template <typename A, typename B> inline typename std::common_type<A, B>::type max(A a, B b) {
    typedef typename std::common_type<A, B>::type C;
    return (C)a < (C)b ? (C)b : (C)a;
}
/* nvcc's overload for kernel pointers */
template <typename T> inline cudaError_t cudaFuncSetAttribute(T *entry, enum cudaFuncAttribute a, int v) {
    return cudaFuncSetAttribute((const void *)entry, a, v);
}

/* ---- WMMA (nvcuda::wmma, 16x16x16, half/bf16 in, float accumulate) ----
 * Every lane holds the whole tile (the real distribution over lanes is
 * unspecified, so code that is correct cannot depend on it). Loads and
 * stores are warp-collective: all 32 lanes meet before and after. */
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void> struct fragment {
    static constexpr int rows = std::is_same<Use, matrix_b>::value ? K : M;
    static constexpr int cols = std::is_same<Use, matrix_a>::value ? K : N;
    static constexpr int num_elements = rows * cols;
    float m[rows][cols]; /* logical element (r, c), whatever the memory layout */
};

template <typename T> inline float to_f(T v) { return (float)v; }
inline float to_f(__half v) { return __half2float(v); }
inline float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> inline T from_f(float v);
template <> inline float from_f<float>(float v) { return v; }
template <> inline __half from_f<__half>(float v) { return __float2half_rn(v); }

template <typename Use, int M, int N, int K, typename T, typename Layout, typename P>
inline void load_matrix_sync(fragment<Use, M, N, K, T, Layout> &f, const P *p, unsigned ldm) {
    __syncwarp();
    bool rowm = std::is_same<Layout, row_major>::value;
    for (int r = 0; r < f.rows; r++)
        for (int c = 0; c < f.cols; c++)
            f.m[r][c] = to_f(rowm ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r]);
    __syncwarp();
}
template <int M, int N, int K, typename T, typename P>
inline void load_matrix_sync(fragment<accumulator, M, N, K, T, void> &f, const P *p, unsigned ldm, layout_t l) {
    __syncwarp();
    for (int r = 0; r < M; r++)
        for (int c = 0; c < N; c++)
            f.m[r][c] = to_f(l == mem_row_major ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r]);
    __syncwarp();
}
template <int M, int N, int K, typename T, typename P>
inline void store_matrix_sync(P *p, const fragment<accumulator, M, N, K, T, void> &f, unsigned ldm, layout_t l) {
    __syncwarp();
    if (cuemu::first_lane(0xffffffffu))
        for (int r = 0; r < M; r++)
            for (int c = 0; c < N; c++)
                (l == mem_row_major ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r]) = from_f<P>(f.m[r][c]);
    __syncwarp();
}
template <typename Use, int M, int N, int K, typename T, typename Layout>
inline void fill_fragment(fragment<Use, M, N, K, T, Layout> &f, float v) {
    for (int r = 0; r < f.rows; r++)
        for (int c = 0; c < f.cols; c++)
            f.m[r][c] = v;
}
/* Warp-collective like the loads: the first lane computes, the others take
 * its result (every lane's fragments are equal, as above). */
template <int M, int N, int K, typename TA, typename LA, typename TB, typename LB, typename TC>
inline void mma_sync(fragment<accumulator, M, N, K, TC, void> &d, const fragment<matrix_a, M, N, K, TA, LA> &a,
                     const fragment<matrix_b, M, N, K, TB, LB> &b, const fragment<accumulator, M, N, K, TC, void> &c) {
    float *shared = (float *)cuemu::warp_scratch(sizeof d.m);
    __syncwarp();
    if (cuemu::first_lane(0xffffffffu)) {
        float out[M][N];
        memcpy(out, c.m, sizeof out);
        for (int i = 0; i < M; i++)
            for (int k = 0; k < K; k++)
                for (int j = 0; j < N; j++)
                    out[i][j] += a.m[i][k] * b.m[k][j];
        memcpy(shared, out, sizeof out);
    }
    __syncwarp();
    memcpy(d.m, shared, sizeof d.m);
    __syncwarp();
}
} // namespace wmma
} // namespace nvcuda

extern "C++" inline void *cuemu_dynamic_smem() { return cuemu::dynamic_smem(); }

#endif
