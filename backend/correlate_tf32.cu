// The forward correlation of correlate.cu on tensor cores: TF32 products (10-bit mantissas),
// float sums, by the warp-wide mma.sync m16n8k8 instruction (inline PTX: NVRTC has no mma.h
// unless the CUDA toolkit's headers are on its path). An opt-in variant that
// benchmarks/conv_kernels.py times beside the FP32 kernel, never a default. float only (T is not
// used); compute capability 8.0 or later. On the CPU the emulator runs each warp's 32 threads
// as cooperating fibers, with stand-ins for the conversion and the mma.
//
// As an implicit GEMM: rows are output pixels, columns output channels, and the reduction runs
// over the (ci, a, b) taps in xpnn_correlate_pack's order. Each warp owns 16 consecutive output
// pixels times 16 output channels (two m16n8 tiles); for every 8 taps each lane gathers the 4
// values of the A fragment it holds straight from the framed input (no patch matrix, no shared
// memory) and reads its 4 values of the B fragments from the packed weights.
//
// Fragments (PTX ISA, mma.m16n8k8 .tf32), with g = lane / 4 and t = lane % 4:
//   A (16 x 8, row):  a0 (g, t), a1 (g + 8, t), a2 (g, t + 4), a3 (g + 8, t + 4)
//   B (8 x 8, col):   b0 (t, g), b1 (t + 4, g)
//   C (16 x 8):       c0 (g, 2t), c1 (g, 2t + 1), c2 (g + 8, 2t), c3 (g + 8, 2t + 1)
#include "common.cuh"

#ifndef XPNN_K
#define XPNN_K 3
#endif
#ifndef XPNN_STRIDE
#define XPNN_STRIDE 1
#endif
#ifndef XPNN_STEP
#define XPNN_STEP 1
#endif

#ifdef XPNN_EMULATED  // tests/cuda_emulation.py's stand-ins, run by a warp of fibers
#define xpnn_tf32 xpnn_emulated_tf32
#define xpnn_mma_tf32 xpnn_emulated_mma_tf32
#else
__device__ __forceinline__ unsigned xpnn_tf32(float value) {
    unsigned bits;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(bits) : "f"(value));
    return bits;
}

// c += a b for one m16n8k8 tile.
__device__ __forceinline__ void xpnn_mma_tf32(float (&c)[4], const unsigned (&a)[4], unsigned b0,
                                              unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
#endif

// out: as xpnn_correlate's. packed: (taps_pad, o_pad) from xpnn_correlate_pack, its rows from
// c * k * k up to taps_pad (a multiple of 8) zero, o_pad a multiple of 16. Launched in whole
// warps: work = 32 * ceil(n * ho * wo / 16) * (o_pad / 16), a warp per tile, the channel block
// slowest.
extern "C" __global__ void xpnn_correlate_tf32(
        const float* __restrict__ x, const float* __restrict__ packed,
        const float* __restrict__ bias, float* __restrict__ out, long long work, int n, int h,
        int w, int c, int ho, int wo, int o, int o_pad, int taps_pad, int offset, int has_bias) {
    constexpr int K = XPNN_K, KK = XPNN_K * XPNN_K, S = XPNN_STRIDE, STEP = XPNN_STEP;
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const long long pixels = (long long)n * ho * wo;
    const long long tiles_p = (pixels + 15) / 16;
    const long long tiles = work / 32;
    for (long long tile = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32; tile < tiles;
         tile += (long long)gridDim.x * blockDim.x / 32) {  // the same for the whole warp
        const long long p0 = (tile % tiles_p) * 16;
        const int o0 = (int)(tile / tiles_p) * 16;
        long long image_base[2];  // rows g and g + 8: x's offset of the image, or -1 past the end
        int fy0[2], fx0[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const long long p = p0 + g + 8 * r;
            const bool inside = p < pixels;
            image_base[r] = inside ? p / wo / ho * h * w * c : -1;
            fy0[r] = (inside ? (int)(p / wo % ho) : 0) * S - offset;
            fx0[r] = (inside ? (int)(p % wo) : 0) * S - offset;
        }
        float acc[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
        for (int t0 = 0; t0 < taps_pad; t0 += 8) {
            unsigned a[4];
#pragma unroll
            for (int half = 0; half < 2; ++half) {  // taps t and t + 4
                const int tap = t0 + t + 4 * half;
                const int ci = tap / KK, ka = tap % KK / K, kb = tap % K;
#pragma unroll
                for (int r = 0; r < 2; ++r) {
                    const int fy = fy0[r] + ka, fx = fx0[r] + kb;
                    float value = 0.0f;
                    if (ci < c && image_base[r] >= 0 && fy >= 0 && fx >= 0 && fy % STEP == 0 &&
                        fx % STEP == 0 && fy / STEP < h && fx / STEP < w)
                        value = __ldg(x + image_base[r]
                                      + ((long long)(fy / STEP) * w + fx / STEP) * c + ci);
                    a[2 * half + r] = xpnn_tf32(value);
                }
            }
            const float* rows = packed + (long long)(t0 + t) * o_pad + o0 + g;
#pragma unroll
            for (int j = 0; j < 2; ++j)
                xpnn_mma_tf32(acc[j], a, xpnn_tf32(__ldg(rows + 8 * j)),
                              xpnn_tf32(__ldg(rows + 4LL * o_pad + 8 * j)));
        }
#pragma unroll
        for (int j = 0; j < 2; ++j)
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const long long p = p0 + g + 8 * (i / 2);
                const int q = o0 + 8 * j + 2 * t + i % 2;
                if (p < pixels && q < o) out[p * o + q] = acc[j][i] + (has_bias ? bias[q] : 0.0f);
            }
    }
}
