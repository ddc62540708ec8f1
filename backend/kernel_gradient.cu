// The kernel gradient of a correlation, reading the input and the output gradient in place: the
// `fused` implementation of backend/conv.py's `kernel_gradient`. A reduction over every output
// pixel (N * Ho * Wo of them) into O * C * k * k values, in two deterministic steps: the rows
// of output pixels are split into chunks, each thread sums its chunk into partial sums, and
// xpnn_sum_parts adds the chunks' partials in a fixed order (no atomics: the same result on
// every run).
//
// A thread owns one input channel ci, one kernel row a and OG output channels, and holds the k x
// OG sums of its kernel row's taps. Walking along an output row it keeps the k input values
// under the window in registers (one new load per pixel at stride 1) and reads grad[pixel,
// o0:o0 + OG] with loads that are the same for every thread of its chunk. The shape is fixed at
// compile time (the loader compiles one module per configuration, backend/conv_kernels.py):
#include "common.cuh"

#ifndef XPNN_K
#define XPNN_K 3        // kernel size k
#endif
#ifndef XPNN_STRIDE
#define XPNN_STRIDE 1   // pixels between windows
#endif
#ifndef XPNN_STEP
#define XPNN_STEP 1     // the frame's spacing of input pixels
#endif
#ifndef XPNN_OG
#define XPNN_OG 16      // output channels per thread; divides O
#endif
#ifndef XPNN_GRAD_ALIGN
#define XPNN_GRAD_ALIGN 4  // bytes the gradient rows' blocks of OG values are aligned to
#endif

namespace kernel_gradient_config {
constexpr int K = XPNN_K, S = XPNN_STRIDE, STEP = XPNN_STEP, OG = XPNN_OG;
}

// The framed input at column fx of `row`, x's row at channel ci (0 between and beyond x's pixels).
__device__ __forceinline__ T xpnn_framed(const T* row, int fx, int w, int c) {
    using namespace kernel_gradient_config;
    if (fx < 0 || fx % STEP != 0 || fx / STEP >= w) return 0;
    return __ldg(row + (long long)(fx / STEP) * c);
}

// partial[chunk, oo, ci, a, b] = sum over output pixels (n, oy, ox) of rows n * ho + oy in
// [chunk * rows_per_chunk, (chunk + 1) * rows_per_chunk) of frame(n, oy * S + a, ox * S + b, ci)
// * grad[n, oy, ox, oo]; frame as in correlate.cu. x: contiguous (n, h, w, c); grad: contiguous
// (n, ho, wo, o); partial: (chunks, o, c, k, k). Work items: chunks * (o / OG) * c * k, ordered
// so that the threads of one chunk and channel block are neighbours.
extern "C" __global__ void xpnn_kernel_gradient(const T* __restrict__ x,
                                                const T* __restrict__ grad,
                                                T* __restrict__ partial, long long work, int n,
                                                int h, int w, int c, int ho, int wo, int o,
                                                int offset, int rows_per_chunk) {
    using namespace kernel_gradient_config;
    const int groups = o / OG;
    XPNN_GRID_STRIDE_LOOP(item, work) {
        const int a = (int)(item % K);
        long long rest = item / K;
        const int ci = (int)(rest % c);
        rest /= c;
        const int o0 = (int)(rest % groups) * OG;
        const long long chunk = rest / groups;
        const long long first = chunk * rows_per_chunk;
        const long long rows = (long long)n * ho;
        const long long last = first + rows_per_chunk < rows ? first + rows_per_chunk : rows;

        T acc[K][OG];
#pragma unroll
        for (int b = 0; b < K; ++b)
#pragma unroll
            for (int q = 0; q < OG; ++q) acc[b][q] = 0;

        for (long long r = first; r < last; ++r) {
            const int oy = (int)(r % ho);
            const long long image = r / ho;
            const int fy = oy * S + a - offset;
            if (fy < 0 || fy % STEP != 0 || fy / STEP >= h) continue;  // a zero row of the frame
            const T* row = x + ((image * h + fy / STEP) * w) * c + ci;
            const T* g = grad + r * wo * o + o0;
            T window[K];  // frame(.., ox * S + b, ci) for b < k
#pragma unroll
            for (int b = 0; b < K; ++b) window[b] = xpnn_framed(row, b - offset, w, c);
            for (int ox = 0; ox < wo; ++ox) {
                T gv[OG];
                xpnn_load<OG, XPNN_GRAD_ALIGN>(gv, g + (long long)ox * o);
#pragma unroll
                for (int b = 0; b < K; ++b)
#pragma unroll
                    for (int q = 0; q < OG; ++q) acc[b][q] += window[b] * gv[q];
#pragma unroll
                for (int b = 0; b < K; ++b)  // slide the window to ox + 1
                    window[b] = b + S < K ? window[b + S]
                                          : xpnn_framed(row, (ox + 1) * S + b - offset, w, c);
            }
        }

        T* dst = partial + ((chunk * o + o0) * c + ci) * K * K + a * K;
#pragma unroll
        for (int q = 0; q < OG; ++q)
#pragma unroll
            for (int b = 0; b < K; ++b) dst[(long long)q * c * K * K + b] = acc[b][q];
    }
}

// out[g, j] = sum of parts[i, j] for i from g * group to min((g + 1) * group, count) - 1, in
// that order. parts: (count, size); out: (ceil(count / group), size); work = that many items.
extern "C" __global__ void xpnn_sum_parts(const T* __restrict__ parts, T* __restrict__ out,
                                          long long work, long long size, int count, int group) {
    XPNN_GRID_STRIDE_LOOP(item, work) {
        const long long j = item % size;
        const int first = (int)(item / size) * group;
        const int last = first + group < count ? first + group : count;
        T sum = 0;
        int i = first;
        for (; i + 8 <= last; i += 8) {  // 8 loads in flight, then their sums in order
            T value[8];
#pragma unroll
            for (int u = 0; u < 8; ++u) value[u] = parts[(long long)(i + u) * size + j];
#pragma unroll
            for (int u = 0; u < 8; ++u) sum += value[u];
        }
        for (; i < last; ++i) sum += parts[(long long)i * size + j];
        out[item] = sum;
    }
}
