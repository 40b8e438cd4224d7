/* test_cuemu.cu - the CUDA emulation of tests/cuemu/ checked on kernels with
 * known answers, so that a pass of test_cuda_emu means what it says:
 *   1. barriers: a block sum through shared memory and __syncthreads, and
 *      a warp sum through shuffles, over odd block sizes;
 *   2. a missing barrier shows: a kernel that reads its neighbour's shared
 *      slot without __syncthreads gets the wrong value (threads run in
 *      turn, so the neighbour has not written yet);
 *   3. WMMA: a 16x16x16 product with row- and column-major operands equals
 *      the plain product;
 *   4. graphs: work captured on a stream runs only at cudaGraphLaunch and
 *      reads host memory then; a forked stream not joined back fails the
 *      capture; cudaMalloc and cudaStreamSynchronize during a capture fail;
 *   5. copies in the wrong direction and launches over the limits fail;
 *   6. cuBLASLt: a bf16 x bf16 -> fp32 product with A transposed equals the
 *      plain product; layouts that do not fit together are refused, and so
 *      is the heuristic query during a stream capture (as CUDA 13 does);
 *   7. barriers that can never be passed (half a warp at __syncthreads, the
 *      other half at __syncwarp; a shuffle naming a lane that has exited)
 *      stop the program with a "cuemu:" message (run in a child process).
 * Built only where test_cuda_emu is (cuemu.cmake). */
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern "C" {
#include "testlib.h"
}

using namespace nvcuda;

__global__ void block_sum_kernel(const float *x, int n, float *out) {
    __shared__ float part[1024];
    part[threadIdx.x] = (int)threadIdx.x < n ? x[threadIdx.x] : 0.0f;
    __syncthreads();
    for (int s = 512; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s && threadIdx.x + s < blockDim.x)
            part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        out[blockIdx.x] = part[0];
}

__global__ void warp_sum_kernel(const float *x, float *out) {
    float v = x[threadIdx.x];
    for (int o = 16; o; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    out[threadIdx.x] = v;
}

/* reads the neighbour's slot; with_barrier = 0 is the bug */
__global__ void neighbour_kernel(float *out, int with_barrier) {
    extern __shared__ float slot[];
    slot[threadIdx.x] = (float)threadIdx.x;
    if (with_barrier)
        __syncthreads();
    out[threadIdx.x] = slot[(threadIdx.x + 1) % blockDim.x];
}

__global__ void wmma_kernel(const __half *a, const __half *b, float *c) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc;
    wmma::fill_fragment(fc, 1.0f);
    wmma::load_matrix_sync(fa, a, 16);
    wmma::load_matrix_sync(fb, b, 16);
    wmma::mma_sync(fc, fa, fb, fc);
    wmma::store_matrix_sync(c, fc, 16, wmma::mem_row_major);
}

__global__ void add_kernel(float *x, float v) { x[threadIdx.x] += v; }

/* half a warp at the block's barrier, the other half at the warp's */
__global__ void split_barrier_kernel(float *x) {
    if (threadIdx.x < 16)
        __syncthreads();
    else
        __syncwarp();
    x[threadIdx.x] = 1.0f;
}

__global__ void exited_lane_kernel(float *x) {
    if (threadIdx.x == 5)
        return;
    x[threadIdx.x] = __shfl_sync(0xffffffffu, x[threadIdx.x], 0);
}

static void check_barriers(void) {
    float *x, *out, h[1024], got[32];
    CHECK(cudaMalloc((void **)&x, sizeof h) == cudaSuccess && cudaMalloc((void **)&out, sizeof got) == cudaSuccess);
    for (int i = 0; i < 1024; i++)
        h[i] = (float)(i % 7) - 2.5f;
    cudaMemcpy(x, h, sizeof h, cudaMemcpyHostToDevice);
    static const int sizes[] = {1, 31, 32, 100, 1024};
    for (int s = 0; s < 5; s++) {
        int n = sizes[s];
        block_sum_kernel<<<3, n>>>(x, n, out);
        CHECK(cudaGetLastError() == cudaSuccess);
        cudaMemcpy(got, out, 3 * sizeof(float), cudaMemcpyDeviceToHost);
        float want = 0;
        for (int i = 0; i < n; i++)
            want += h[i];
        CHECKF(got[0] == want && got[2] == want, "block sum over %d threads: %g, want %g", n, got[0], want);
    }
    warp_sum_kernel<<<1, 32>>>(x, out);
    cudaMemcpy(got, out, sizeof got, cudaMemcpyDeviceToHost);
    float want = 0;
    for (int i = 0; i < 32; i++)
        want += h[i];
    bool all = true;
    for (int i = 0; i < 32; i++)
        all &= got[i] == want;
    CHECKF(all, "warp sum: lane 0 has %g, want %g on every lane", got[0], want);

    neighbour_kernel<<<1, 32, 32 * sizeof(float)>>>(out, 1);
    cudaMemcpy(got, out, sizeof got, cudaMemcpyDeviceToHost);
    CHECKF(got[0] == 1.0f && got[31] == 0.0f, "with a barrier, thread 0 reads 1 (got %g)", got[0]);
    neighbour_kernel<<<1, 32, 32 * sizeof(float)>>>(out, 0);
    cudaMemcpy(got, out, sizeof got, cudaMemcpyDeviceToHost);
    CHECKF(got[0] != 1.0f, "without the barrier thread 0 must not see its neighbour's write (got %g)", got[0]);
    cudaFree(x);
    cudaFree(out);
}

static void check_wmma(void) {
    __half ha[256], hb[256];
    float ref[256], got[256];
    for (int i = 0; i < 256; i++) {
        ha[i] = __float2half((float)((i * 7) % 11) - 5.0f);
        hb[i] = __float2half((float)((i * 5) % 13) * 0.25f);
    }
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++) {
            float s = 1.0f;
            for (int k = 0; k < 16; k++) /* A row-major (r, k); B column-major: B(k, c) at c * 16 + k */
                s += __half2float(ha[r * 16 + k]) * __half2float(hb[c * 16 + k]);
            ref[r * 16 + c] = s;
        }
    __half *a, *b;
    float *c;
    cudaMalloc((void **)&a, sizeof ha);
    cudaMalloc((void **)&b, sizeof hb);
    cudaMalloc((void **)&c, sizeof got);
    cudaMemcpy(a, ha, sizeof ha, cudaMemcpyHostToDevice);
    cudaMemcpy(b, hb, sizeof hb, cudaMemcpyHostToDevice);
    wmma_kernel<<<1, 32>>>(a, b, c);
    cudaMemcpy(got, c, sizeof got, cudaMemcpyDeviceToHost);
    int bad = 0;
    for (int i = 0; i < 256; i++)
        bad += got[i] != ref[i];
    CHECKF(bad == 0, "wmma: %d of 256 elements differ from the plain product", bad);
    cudaFree(a);
    cudaFree(b);
    cudaFree(c);
}

static void check_graphs(void) {
    cudaStream_t s, side;
    cudaEvent_t fork, join;
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking);
    cudaEventCreateWithFlags(&fork, cudaEventDisableTiming);
    cudaEventCreateWithFlags(&join, cudaEventDisableTiming);
    float *d, *pinned, got[32];
    cudaMalloc((void **)&d, sizeof got);
    cudaMallocHost((void **)&pinned, sizeof got);
    cudaMemset(d, 0, sizeof got);
    for (int i = 0; i < 32; i++)
        pinned[i] = 1.0f;

    /* captured: copy from pinned memory, a kernel on the origin and one on a joined fork */
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
    cudaMemcpyAsync(d, pinned, sizeof got, cudaMemcpyHostToDevice, s);
    add_kernel<<<1, 32, 0, s>>>(d, 10.0f);
    cudaEventRecord(fork, s);
    cudaStreamWaitEvent(side, fork, 0);
    add_kernel<<<1, 32, 0, side>>>(d, 100.0f);
    cudaEventRecord(join, side);
    cudaStreamWaitEvent(s, join, 0);
    cudaGraph_t g = NULL;
    CHECK(cudaStreamEndCapture(s, &g) == cudaSuccess && g);
    cudaMemcpy(got, d, sizeof got, cudaMemcpyDeviceToHost);
    CHECKF(got[0] == 0.0f, "captured work ran at capture (d[0] = %g)", got[0]);
    cudaGraphExec_t x = NULL;
    CHECK(cudaGraphInstantiate(&x, g, 0) == cudaSuccess);
    for (int i = 0; i < 32; i++)
        pinned[i] = 2.0f; /* the replay reads it now */
    CHECK(cudaGraphLaunch(x, s) == cudaSuccess && cudaStreamSynchronize(s) == cudaSuccess);
    cudaMemcpy(got, d, sizeof got, cudaMemcpyDeviceToHost);
    CHECKF(got[0] == 112.0f && got[31] == 112.0f, "graph replay: d[0] = %g, want 112", got[0]);
    cudaGraphExecDestroy(x);
    cudaGraphDestroy(g);
    /* the fork event's capture has ended: waiting on it joins nothing */
    CHECK(cudaStreamWaitEvent(side, fork, 0) == cudaSuccess);
    add_kernel<<<1, 32, 0, side>>>(d, 1.0f);
    cudaMemcpy(got, d, sizeof got, cudaMemcpyDeviceToHost);
    CHECKF(got[0] == 113.0f, "a stream that waited on an ended capture's event runs its work at once (d[0] = %g)",
           got[0]);

    /* timing events: the time between two records is the work between them */
    cudaEvent_t t0, t1;
    float ms = -1.0f;
    CHECK(cudaEventCreate(&t0) == cudaSuccess && cudaEventCreate(&t1) == cudaSuccess);
    CHECK(cudaEventElapsedTime(&ms, t0, t1) != cudaSuccess);
    cudaGetLastError();
    cudaEventRecord(t0, s);
    add_kernel<<<256, 32, 0, s>>>(d, 0.0f);
    cudaEventRecord(t1, s);
    CHECK(cudaEventSynchronize(t1) == cudaSuccess);
    CHECKF(cudaEventElapsedTime(&ms, t0, t1) == cudaSuccess && ms > 0.0f && ms < 60e3f, "elapsed %g ms", ms);
    cudaEventDestroy(t0);
    cudaEventDestroy(t1);

    /* a fork not joined back */
    cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
    cudaEventRecord(fork, s);
    cudaStreamWaitEvent(side, fork, 0);
    add_kernel<<<1, 32, 0, side>>>(d, 1.0f);
    g = NULL;
    CHECK(cudaStreamEndCapture(s, &g) == cudaErrorStreamCaptureUnjoined && !g);
    cudaGetLastError();

    /* unsafe calls on the capturing thread */
    cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
    void *p = NULL;
    CHECK(cudaMalloc(&p, 64) == cudaErrorStreamCaptureUnsupported && !p);
    CHECK(cudaStreamSynchronize(s) == cudaErrorStreamCaptureUnsupported);
    CHECK(cudaStreamEndCapture(s, &g) != cudaSuccess && !g);
    cudaGetLastError();

    /* copies the wrong way, launches over the limits */
    CHECK(cudaMemcpy(got, d, sizeof got, cudaMemcpyHostToDevice) == cudaErrorInvalidValue);
    cudaGetLastError();
    add_kernel<<<1, 2048>>>(d, 1.0f);
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
    add_kernel<<<1, 32, 1 << 20>>>(d, 1.0f);
    CHECK(cudaGetLastError() == cudaErrorInvalidValue);

    cudaFree(d);
    cudaFreeHost(pinned);
    cudaEventDestroy(fork);
    cudaEventDestroy(join);
    cudaStreamDestroy(s);
    cudaStreamDestroy(side);
}

/* Runs fn in a child; true if it died of SIGABRT after printing `want`. */
static bool aborts_saying(void (*fn)(void), const char *want) {
    int pipefd[2];
    if (pipe(pipefd))
        return false;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pipefd[1], 2);
        close(pipefd[0]);
        fn();
        _exit(0);
    }
    close(pipefd[1]);
    char buf[4096];
    size_t n = 0;
    ssize_t r;
    while (n < sizeof buf - 1 && (r = read(pipefd[0], buf + n, sizeof buf - 1 - n)) > 0)
        n += (size_t)r;
    buf[n] = 0;
    close(pipefd[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    bool ok = WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT && strstr(buf, want);
    if (!ok)
        fprintf(stderr, "expected an abort saying '%s'; the child printed: %s\n", want, buf);
    return ok;
}

static float *g_dev;
static void run_split_barrier(void) {
    split_barrier_kernel<<<1, 32>>>(g_dev);
    cudaDeviceSynchronize();
}
static void run_exited_lane(void) {
    exited_lane_kernel<<<1, 32>>>(g_dev);
    cudaDeviceSynchronize();
}

/* D (m x n) = A^T B with A stored k x m, B k x n, column-major, as the
 * backend describes its products. */
static void check_cublaslt(void) {
    const int m = 5, n = 3, k = 7;
    __nv_bfloat16 ha[k * m], hb[k * n];
    float want[m * n], got[m * n];
    for (int i = 0; i < k * m; i++)
        ha[i] = __float2bfloat16((float)(i % 5) - 2.0f);
    for (int i = 0; i < k * n; i++)
        hb[i] = __float2bfloat16((float)(i % 3) + 0.5f);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            float s = 0;
            for (int q = 0; q < k; q++)
                s += __bfloat162float(ha[i * k + q]) * __bfloat162float(hb[j * k + q]);
            want[i + j * m] = s;
        }
    void *a, *b, *d;
    cudaMalloc(&a, sizeof ha);
    cudaMalloc(&b, sizeof hb);
    cudaMalloc(&d, sizeof got);
    cudaMemcpy(a, ha, sizeof ha, cudaMemcpyHostToDevice);
    cudaMemcpy(b, hb, sizeof hb, cudaMemcpyHostToDevice);
    cublasLtHandle_t lt;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, ld, bad;
    int32_t ta = CUBLAS_OP_T;
    CHECK(cublasLtCreate(&lt) == CUBLAS_STATUS_SUCCESS);
    CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS);
    CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta) == CUBLAS_STATUS_SUCCESS);
    cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, k, m, k);
    cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, k, n, k);
    cublasLtMatrixLayoutCreate(&ld, CUDA_R_32F, m, n, m);
    cublasLtMatrixLayoutCreate(&bad, CUDA_R_16BF, m, k, m); /* A not transposed in its layout */
    cublasLtMatmulHeuristicResult_t res;
    int nres = 0;
    CHECK(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, ld, ld, NULL, 1, &res, &nres) == CUBLAS_STATUS_SUCCESS &&
          nres == 1);
    const float one = 1.0f, zero = 0.0f;
    CHECK(cublasLtMatmul(lt, op, &one, a, la, b, lb, &zero, d, ld, d, ld, &res.algo, NULL, 0, NULL) ==
          CUBLAS_STATUS_SUCCESS);
    cudaMemcpy(got, d, sizeof got, cudaMemcpyDeviceToHost);
    int off = 0;
    for (int i = 0; i < m * n; i++)
        off += got[i] != want[i];
    CHECKF(off == 0, "cuBLASLt product: %d of %d elements differ", off, m * n);
    CHECK(cublasLtMatmulAlgoGetHeuristic(lt, op, bad, lb, ld, ld, NULL, 1, &res, &nres) != CUBLAS_STATUS_SUCCESS);
    CHECK(cublasLtMatmul(lt, op, &one, a, bad, b, lb, &zero, d, ld, d, ld, &res.algo, NULL, 0, NULL) !=
          CUBLAS_STATUS_SUCCESS);
    /* the heuristic fails during a capture (CUDA 13), the matmul is captured */
    cudaStream_t s;
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    CHECK(cudaStreamIsCapturing(s, &cs) == cudaSuccess && cs == cudaStreamCaptureStatusActive);
    CHECK(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, ld, ld, NULL, 1, &res, &nres) ==
          CUBLAS_STATUS_INTERNAL_ERROR);
    CHECK(cublasLtMatmul(lt, op, &one, a, la, b, lb, &zero, d, ld, d, ld, &res.algo, NULL, 0, s) ==
          CUBLAS_STATUS_SUCCESS);
    cudaGraph_t g = NULL;
    CHECK(cudaStreamEndCapture(s, &g) == cudaSuccess && g);
    cudaGraphDestroy(g);
    cudaStreamDestroy(s);
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(ld);
    cublasLtMatrixLayoutDestroy(bad);
    cublasLtMatmulDescDestroy(op);
    cublasLtDestroy(lt);
    cudaFree(a);
    cudaFree(b);
    cudaFree(d);
}

int main(void) {
    check_barriers();
    check_wmma();
    check_graphs();
    check_cublaslt();
    cudaMalloc((void **)&g_dev, 64 * sizeof(float));
    CHECK(aborts_saying(run_split_barrier, "cuemu: split_barrier_kernel: deadlock"));
    CHECK(aborts_saying(run_exited_lane, "exited"));
    cudaFree(g_dev);
    return lp_test_finish("test_cuemu");
}
