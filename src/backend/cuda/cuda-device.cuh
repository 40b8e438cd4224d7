/* cuda-device.cuh - device-side helpers shared by the CUDA kernels: element
 * conversions between the compute types and fp32, warp and block sums. */
#ifndef LP_CUDA_DEVICE_CUH
#define LP_CUDA_DEVICE_CUH

#include <string.h>

#include "backend/cuda/cuda-impl.h"

typedef __nv_bfloat16 bf16;

__device__ __forceinline__ float lp_f(float v) { return v; }
__device__ __forceinline__ float lp_f(bf16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float lp_f(__half v) { return __half2float(v); }

template <typename T> __device__ __forceinline__ T lp_to(float v);
template <> __device__ __forceinline__ float lp_to<float>(float v) { return v; }
template <> __device__ __forceinline__ bf16 lp_to<bf16>(float v) { return __float2bfloat16(v); }
template <> __device__ __forceinline__ __half lp_to<__half>(float v) { return __float2half(v); }

__device__ __forceinline__ float lp_warp_sum(float v) {
#pragma unroll
    for (int o = 16; o; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32); every thread gets it. */
__device__ __forceinline__ float lp_block_sum(float v) {
    __shared__ float sh[32];
    v = lp_warp_sum(v);
    int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = blockDim.x >> 5;
    __syncthreads(); /* sh may still be read by a previous call */
    if (l == 0)
        sh[w] = v;
    __syncthreads();
    v = l < nw ? sh[l] : 0.0f;
    return lp_warp_sum(v);
}

/* 8 bf16 from one 16-byte load, as fp32. The loaded words reach the bf16
 * pairs by memcpy (register moves): reading them through a cast pointer
 * breaks C++'s aliasing rules, and g++ -O2 then reads garbage (the CPU
 * emulation of tests/cuemu/ caught it). */
__device__ __forceinline__ void lp_bf16x8(const bf16 *p, float *out) {
    uint4 raw = *(const uint4 *)p;
    __nv_bfloat162 h[4];
    memcpy(h, &raw, sizeof h);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 f = __bfloat1622float2(h[i]);
        out[2 * i] = f.x;
        out[2 * i + 1] = f.y;
    }
}

#endif
