// Shared by every kernel of backend/*.cu.
//
// T is the floating type a kernel computes in: float unless the loader (backend/cuda.py)
// compiles with -DXPNN_FLOAT=double, so each file also compiles as it stands (nvcc -c FILE.cu).
#pragma once

#ifndef XPNN_FLOAT
#define XPNN_FLOAT float
#endif
typedef XPNN_FLOAT T;

// Every kernel loops over its work items this way, so any launch shape covers them all.
#define XPNN_GRID_STRIDE_LOOP(i, size)                                                   \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (size);     \
         i += (long long)blockDim.x * gridDim.x)

// The (n, y, x, channel) position of flat index i of a contiguous (N, H, W, C) array.
struct xpnn_nhwc { long long n; int y, x, c; };

__device__ inline xpnn_nhwc xpnn_unravel_nhwc(long long i, int h, int w, int c) {
    xpnn_nhwc at;
    at.c = (int)(i % c);
    long long rest = i / c;
    at.x = (int)(rest % w);
    rest /= w;
    at.y = (int)(rest % h);
    at.n = rest / h;
    return at;
}

// v = the N values of T at p, read with the widest loads (up to 16 bytes) that ALIGN, the
// alignment in bytes that the caller guarantees p to have, allows: one instruction for 4
// floats. Read-only data (the loads go through the read-only cache). Emulated on the CPU, the
// alignment is checked instead (a misaligned vector load faults on a GPU).
#ifndef XPNN_EMULATED
__device__ __forceinline__ void xpnn_load16(float* v, const float* p) {
    float4 q = __ldg(reinterpret_cast<const float4*>(p));
    v[0] = q.x; v[1] = q.y; v[2] = q.z; v[3] = q.w;
}
__device__ __forceinline__ void xpnn_load16(double* v, const double* p) {
    double2 q = __ldg(reinterpret_cast<const double2*>(p));
    v[0] = q.x; v[1] = q.y;
}
__device__ __forceinline__ void xpnn_load8(float* v, const float* p) {
    float2 q = __ldg(reinterpret_cast<const float2*>(p));
    v[0] = q.x; v[1] = q.y;
}
__device__ __forceinline__ void xpnn_load8(double* v, const double* p) { v[0] = __ldg(p); }
#endif

template <int N, int ALIGN>
__device__ __forceinline__ void xpnn_load(T (&v)[N], const T* p) {
    constexpr int BYTES = N * (int)sizeof(T);
    constexpr int WIDTH = ALIGN % 16 == 0 && BYTES % 16 == 0 ? 16
                        : ALIGN % 8 == 0 && BYTES % 8 == 0 ? 8 : (int)sizeof(T);
    constexpr int PER = WIDTH / (int)sizeof(T);  // values per load
#ifdef XPNN_EMULATED
    if (reinterpret_cast<unsigned long long>(p) % WIDTH != 0) xpnn_fault = 1;
    for (int i = 0; i < N; ++i) v[i] = p[i];
#else
#pragma unroll
    for (int i = 0; i < N; i += PER) {
        if (WIDTH == 16) xpnn_load16(v + i, p + i);  // (WIDTH is a constant: one branch is left)
        else if (WIDTH == 8) xpnn_load8(v + i, p + i);
        else v[i] = __ldg(p + i);
    }
#endif
    (void)PER;
}
