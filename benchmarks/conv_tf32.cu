// A probe, not a library kernel: convolutions on TF32 tensor cores (wmma m16n16k8, float
// accumulation), written as implicit GEMMs over a zero-padded, channels-last input laid out flat.
//
// The flat-padded trick: with the input padded to (N, HP, WP, CP) and read as a (N*HP*WP, CP)
// matrix, output pixel p of the padded grid sees input row p + ky * WP + kx for kernel tap
// (ky, kx). Each tap is then a plain strided matrix (leading dimension CP), so a 16-row tile of
// it loads straight into a tensor-core fragment; rows of the padded grid that are no output
// pixel (the border columns and rows) are computed and thrown away (the epilogue skips them).
// CP is a multiple of 8 (fragment depth and 32-byte alignment), OP of 16, the rows of the
// padded input run (K - 1) * (WP + 1) past the last pixel (zeros), and P is a multiple of 16.
#include <mma.h>
using namespace nvcuda;

typedef wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> RowA;
typedef wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::col_major> ColA;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> RowB;
typedef wmma::fragment<wmma::accumulator, 16, 16, 8, float> Acc;

template <class F> __device__ inline void to_tf32(F& f) {
    for (int i = 0; i < f.num_elements; ++i) f.x[i] = wmma::__float_to_tf32(f.x[i]);
}

// out (P, OP) on the padded grid = sum over taps of xp[p + tap offset] (P, CP) @ w[tap] (CP, OP).
// One warp per 16 x 16 output tile.
extern "C" __global__ void conv_forward_tf32(const float* xp, const float* w, float* out, int P,
                                             int CP, int OP, int K, int WP) {
    long long warp = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    int tiles_o = OP / 16;
    long long tile_p = warp / tiles_o;
    int tile_o = (int)(warp % tiles_o);
    if (tile_p * 16 >= P) return;
    Acc acc;
    wmma::fill_fragment(acc, 0.0f);
    RowA a;
    RowB b;
    for (int ky = 0; ky < K; ++ky) {
        for (int kx = 0; kx < K; ++kx) {
            const float* rows = xp + (tile_p * 16 + ky * WP + kx) * CP;
            const float* taps = w + (long long)(ky * K + kx) * CP * OP + tile_o * 16;
            for (int c = 0; c < CP; c += 8) {
                wmma::load_matrix_sync(a, rows + c, CP);
                wmma::load_matrix_sync(b, taps + (long long)c * OP, OP);
                to_tf32(a);
                to_tf32(b);
                wmma::mma_sync(acc, a, b, acc);
            }
        }
    }
    wmma::store_matrix_sync(out + tile_p * 16 * OP + tile_o * 16, acc, OP, wmma::mem_row_major);
}

// partial[chunk, tap] (CP, OP) = sum over the chunk's pixels p of xp[p + tap offset]^T g[p],
// g (P, OP) on the padded grid with zeros where no output pixel is. One warp per (chunk, tap,
// 16 x 16 tile of (CP, OP)); CP a multiple of 16 here.
extern "C" __global__ void conv_kernel_grad_tf32(const float* xp, const float* g, float* partial,
                                                 int P, int CP, int OP, int K, int WP,
                                                 int chunk_rows) {
    long long warp = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    int tiles_c = CP / 16, tiles_o = OP / 16, taps = K * K;
    int tile_o = (int)(warp % tiles_o);
    long long rest = warp / tiles_o;
    int tile_c = (int)(rest % tiles_c);
    rest /= tiles_c;
    int tap = (int)(rest % taps);
    long long chunk = rest / taps;
    long long first = chunk * chunk_rows;
    if (first >= P) return;
    long long last = first + chunk_rows < P ? first + chunk_rows : P;
    int offset = (tap / K) * WP + tap % K;
    Acc acc;
    wmma::fill_fragment(acc, 0.0f);
    ColA a;
    RowB b;
    for (long long p = first; p < last; p += 8) {
        wmma::load_matrix_sync(a, xp + (p + offset) * CP + tile_c * 16, CP);
        wmma::load_matrix_sync(b, g + p * OP + tile_o * 16, OP);
        to_tf32(a);
        to_tf32(b);
        wmma::mma_sync(acc, a, b, acc);
    }
    float* to = partial + ((chunk * taps + tap) * CP + tile_c * 16) * (long long)OP + tile_o * 16;
    wmma::store_matrix_sync(to, acc, OP, wmma::mem_row_major);
}

// total[i] = sum over chunks of partial[chunk, i], in chunk order (deterministic).
extern "C" __global__ void sum_chunks(const float* partial, float* total, int chunks,
                                      long long size) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < size;
         i += (long long)blockDim.x * gridDim.x) {
        float s = 0.0f;
        for (int chunk = 0; chunk < chunks; ++chunk) s += partial[chunk * size + i];
        total[i] = s;
    }
}

// xp[n, y + pad, x + pad, c] = x[n, y, x, c] for the (N, H, W, C) input; the border and the
// channels past C stay as they are (zeros, written once).
extern "C" __global__ void pad_input(const float* x, float* xp, long long size, int H, int W,
                                     int C, int HP, int WP, int CP, int pad) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < size;
         i += (long long)blockDim.x * gridDim.x) {
        int c = (int)(i % C);
        long long rest = i / C;
        int x_ = (int)(rest % W);
        rest /= W;
        int y = (int)(rest % H);
        long long n = rest / H;
        xp[((n * HP + y + pad) * WP + x_ + pad) * CP + c] = x[i];
    }
}

// out[n, y, x, o] = grid[n * HP * WP + y * WP + x, o] + bias[o] for the (N, H, W, O) output.
extern "C" __global__ void take_output(const float* grid, const float* bias, float* out,
                                       long long size, int H, int W, int O, int HP, int WP,
                                       int OP) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < size;
         i += (long long)blockDim.x * gridDim.x) {
        int o = (int)(i % O);
        long long rest = i / O;
        int x_ = (int)(rest % W);
        rest /= W;
        int y = (int)(rest % H);
        long long n = rest / H;
        out[i] = grid[((n * HP + y) * WP + x_) * OP + o] + bias[o];
    }
}
