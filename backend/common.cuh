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
