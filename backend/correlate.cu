// Correlation of a framed channels-last batch with a kernel, reading the input in place: the
// `fused` implementation of backend/conv.py's `correlate` (a convolution's forward, and its input
// gradient as the correlation of the zero-inserted output gradient). No patch matrix, no zero
// frame: padding and zero-insertion are bounds tests on the unpadded input.
//
// Each thread computes a register tile of PX neighbouring output pixels of one row times OT
// output channels, so every input value it loads feeds OT multiply-adds per window tap and
// every weight it loads feeds PX. The weights, packed by xpnn_correlate_pack as (C, k, k, O_pad), are
// the same for all threads of a warp (one broadcast load of OT values). The shape is fixed at
// compile time (the loader compiles one module per configuration, backend/conv_kernels.py):
#include "common.cuh"

#ifndef XPNN_K
#define XPNN_K 3        // kernel size k
#endif
#ifndef XPNN_STRIDE
#define XPNN_STRIDE 1   // pixels between windows
#endif
#ifndef XPNN_STEP
#define XPNN_STEP 1     // the frame's spacing of input pixels (2: zero-inserted, stride 2)
#endif
#ifndef XPNN_PX
#define XPNN_PX 7       // output pixels of one row per thread
#endif
#ifndef XPNN_OT
#define XPNN_OT 16      // output channels per thread
#endif
#ifndef XPNN_CV
#define XPNN_CV 1       // input channels per load: divides C, and the input is aligned to it
#endif
#ifndef XPNN_MIN_BLOCKS
#define XPNN_MIN_BLOCKS 2  // blocks of 128 threads per SM to fit in registers (__launch_bounds__)
#endif
#ifndef XPNN_RELU
#define XPNN_RELU 0     // 1: the output is max(0, correlation + bias)
#endif

namespace correlate_config {
constexpr int K = XPNN_K, S = XPNN_STRIDE, STEP = XPNN_STEP, PX = XPNN_PX, OT = XPNN_OT,
              CV = XPNN_CV;
constexpr int PX_IN = (PX - 1) * S + K;  // input columns that one thread's windows cover
constexpr int O_ALIGN = OT * (int)sizeof(T);  // packed rows start at multiples of OT values
}

// packed[(ci * k + a) * k + b][oo] = kernel[oo][ci][a][b] for oo < o, zero up to o_pad, where
// kernel[oo][ci][a][b] is base[at + oo * so + ci * sc + a * sa + b * sb]: any view of a
// contiguous array (the input gradient's kernel is flipped and transposed in place), strides in
// elements, negative ones included. size = c * k * k * o_pad.
extern "C" __global__ void xpnn_correlate_pack(const T* base, T* packed, long long size, int o,
                                               int o_pad, int c, int k, long long at,
                                               long long so, long long sc, long long sa,
                                               long long sb) {
    XPNN_GRID_STRIDE_LOOP(i, size) {
        const int oo = (int)(i % o_pad);
        long long tap = i / o_pad;
        const int b = (int)(tap % k);
        tap /= k;
        const int a = (int)(tap % k), ci = (int)(tap / k);
        packed[i] = oo < o ? base[at + oo * so + ci * sc + a * sa + b * sb] : (T)0;
    }
}

// out[n, oy, ox, oo] = bias[oo] + sum over (ci, a, b) of frame(n, oy * S + a, ox * S + b, ci)
// * kernel[oo, ci, a, b], where frame(n, fy, fx, ci) is x[n, (fy - offset) / STEP,
// (fx - offset) / STEP, ci] where that divides evenly and lies inside x, else 0.
// x: contiguous (n, h, w, c); packed: (c, k, k, o_pad) from xpnn_correlate_pack, 16-byte
// aligned; bias: (o,), read only if has_bias; out: contiguous (n, ho, wo, o). Work items:
// (o_pad / OT) * n * ho * ceil(wo / PX), the channel block slowest, so the threads of a warp
// share it (and their weight loads).
extern "C" __global__ void __launch_bounds__(128, XPNN_MIN_BLOCKS) xpnn_correlate(const T* __restrict__ x, const T* __restrict__ packed,
                                          const T* __restrict__ bias, T* __restrict__ out,
                                          long long work, int n, int h, int w, int c, int ho,
                                          int wo, int o, int o_pad, int offset, int has_bias) {
    using namespace correlate_config;
    const int tiles_x = (wo + PX - 1) / PX;
    XPNN_GRID_STRIDE_LOOP(item, work) {
        const int tx = (int)(item % tiles_x);
        long long rest = item / tiles_x;
        const int oy = (int)(rest % ho);
        rest /= ho;
        const int image = (int)(rest % n);
        const int o0 = (int)(rest / n) * OT;
        const int ox0 = tx * PX;

        int column[PX_IN];  // x's column under input position j of the tile, or -1 (a zero)
#pragma unroll
        for (int j = 0; j < PX_IN; ++j) {
            int fx = ox0 * S + j - offset;
            column[j] = fx >= 0 && fx % STEP == 0 && fx / STEP < w ? fx / STEP : -1;
        }
        T acc[PX][OT];
#pragma unroll
        for (int p = 0; p < PX; ++p)
#pragma unroll
            for (int q = 0; q < OT; ++q) acc[p][q] = 0;

#pragma unroll
        for (int a = 0; a < K; ++a) {
            const int fy = oy * S + a - offset;
            if (fy < 0 || fy % STEP != 0 || fy / STEP >= h) continue;
            const T* row = x + ((long long)image * h + fy / STEP) * w * c;
            const T* taps = packed + (long long)a * K * o_pad + o0;
            for (int c0 = 0; c0 < c; c0 += CV) {
                T in[PX_IN][CV];
#pragma unroll
                for (int j = 0; j < PX_IN; ++j) {
                    if (column[j] >= 0) {
                        xpnn_load<CV, CV * (int)sizeof(T)>(in[j], row + (long long)column[j] * c + c0);
                    } else {
#pragma unroll
                        for (int ci = 0; ci < CV; ++ci) in[j][ci] = 0;
                    }
                }
#pragma unroll
                for (int ci = 0; ci < CV; ++ci) {
#pragma unroll
                    for (int b = 0; b < K; ++b) {
                        T wt[OT];
                        xpnn_load<OT, O_ALIGN>(wt, taps + ((long long)(c0 + ci) * K * K + b) * o_pad);
#pragma unroll
                        for (int p = 0; p < PX; ++p)
#pragma unroll
                            for (int q = 0; q < OT; ++q) acc[p][q] += in[p * S + b][ci] * wt[q];
                    }
                }
            }
        }

        T* dst = out + (((long long)image * ho + oy) * wo + ox0) * o + o0;
#pragma unroll
        for (int p = 0; p < PX; ++p) {
            if (ox0 + p >= wo) break;
#pragma unroll
            for (int q = 0; q < OT; ++q) {
                if (o0 + q >= o) break;
                T value = acc[p][q] + (has_bias ? bias[o0 + q] : (T)0);
#if XPNN_RELU
                value = value < 0 ? (T)0 : value;  // a NaN stays NaN, as in maximum(x, 0)
#endif
                dst[(long long)p * o + q] = value;
            }
        }
    }
}
