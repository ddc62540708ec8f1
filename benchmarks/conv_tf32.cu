// A probe, not a library kernel: convolutions on TF32 tensor cores (float accumulation),
// written as implicit GEMMs over a zero-padded, channels-last input laid out flat.
//
// The flat-padded trick: with the input padded to (N, HP, WP, CP) and read as a (N*HP*WP, CP)
// matrix, output pixel p of the padded grid sees input row p + ky * WP + kx for kernel tap
// (ky, kx). Each tap is then a plain strided matrix (leading dimension CP), so a 16-row tile of
// it is read straight into tensor-core fragments; rows of the padded grid that are no output
// pixel (the border columns and rows) are computed and thrown away (the epilogue skips them).
// CP and OP are multiples of 16, the rows of the
// padded input run (K - 1) * (WP + 1) past the last pixel (zeros), and P is a multiple of 16.
// The tensor-core instruction is PTX's mma.sync m16n8k8 (TF32 in, float accumulate), written
// inline: NVRTC in CuPy's CUDA wheels lacks the headers that <mma.h> includes. Fragment layout
// (PTX ISA, "Matrix Fragments for mma.m16n8k8"), with g = lane / 4 and t = lane % 4:
// A (16 x 8): a0 (g, t), a1 (g + 8, t), a2 (g, t + 4), a3 (g + 8, t + 4);
// B (8 x 8): b0 (t, g), b1 (t + 4, g); C (16 x 8): c0 (g, 2t), c1 (g, 2t + 1), c2 (g + 8, 2t),
// c3 (g + 8, 2t + 1).

__device__ inline unsigned tf32(float value) {
    unsigned bits;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(bits) : "f"(value));
    return bits;
}

__device__ inline void mma_tf32(float* c, const unsigned* a, const unsigned* b) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// 3xTF32 (SPLIT): each operand is split into a TF32 "big" part and the TF32 rounding of what is
// left ("small"), and a b = big big + big small + small big: about float32 accuracy from three
// tensor-core products (the small-small term is below float32's precision).
template <bool SPLIT> struct Operand {
    unsigned big, small;
    __device__ explicit Operand(float value) {
        big = tf32(value);
        small = SPLIT ? tf32(value - __uint_as_float(big)) : 0u;
    }
};

template <bool SPLIT>
__device__ inline void mma(float* c, const Operand<SPLIT>* a, const Operand<SPLIT>* b) {
    unsigned ab[4] = {a[0].big, a[1].big, a[2].big, a[3].big}, bb[2] = {b[0].big, b[1].big};
    if (SPLIT) {
        unsigned as[4] = {a[0].small, a[1].small, a[2].small, a[3].small};
        unsigned bs[2] = {b[0].small, b[1].small};
        mma_tf32(c, as, bb);
        mma_tf32(c, ab, bs);
    }
    mma_tf32(c, ab, bb);
}

// out (P, OP) on the padded grid = sum over taps of xp[p + tap offset] (P, CP) @ w[tap] (CP, OP).
// One warp per 16 x 16 output tile (two m16n8k8 products per 8 channels).
template <bool SPLIT>
__device__ void conv_forward(const float* xp, const float* w, float* out, int P, int CP, int OP,
                             int K, int WP) {
    long long warp = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    int tiles_o = OP / 16;
    long long tile_p = warp / tiles_o;
    int o0 = (int)(warp % tiles_o) * 16;
    if (tile_p * 16 >= P) return;
    float acc[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
    for (int ky = 0; ky < K; ++ky) {
        for (int kx = 0; kx < K; ++kx) {
            const float* rows = xp + (tile_p * 16 + ky * WP + kx) * CP;
            const float* taps = w + (long long)(ky * K + kx) * CP * OP + o0;
            for (int c = 0; c < CP; c += 8) {
                Operand<SPLIT> a[4] = {
                    Operand<SPLIT>(rows[g * CP + c + t]), Operand<SPLIT>(rows[(g + 8) * CP + c + t]),
                    Operand<SPLIT>(rows[g * CP + c + t + 4]),
                    Operand<SPLIT>(rows[(g + 8) * CP + c + t + 4])};
                for (int j = 0; j < 2; ++j) {
                    Operand<SPLIT> b[2] = {
                        Operand<SPLIT>(taps[(long long)(c + t) * OP + 8 * j + g]),
                        Operand<SPLIT>(taps[(long long)(c + t + 4) * OP + 8 * j + g])};
                    mma(acc[j], a, b);
                }
            }
        }
    }
    float* to = out + (tile_p * 16 + g) * OP + o0 + 2 * t;
    for (int j = 0; j < 2; ++j) {
        to[8 * j] = acc[j][0];
        to[8 * j + 1] = acc[j][1];
        to[8 * OP + 8 * j] = acc[j][2];
        to[8 * OP + 8 * j + 1] = acc[j][3];
    }
}

// partial[chunk, tap] (CP, OP) = sum over the chunk's pixels p of xp[p + tap offset]^T g[p],
// g (P, OP) on the padded grid with zeros where no output pixel is. One warp per (chunk, tap,
// 16 x 16 tile of (CP, OP)); CP a multiple of 16 here, `chunk_rows` of 8.
template <bool SPLIT>
__device__ void conv_kernel_grad(const float* xp, const float* grad, float* partial, int P,
                                 int CP, int OP, int K, int WP, int chunk_rows) {
    long long warp = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    int tiles_c = CP / 16, tiles_o = OP / 16, taps = K * K;
    int o0 = (int)(warp % tiles_o) * 16;
    long long rest = warp / tiles_o;
    int c0 = (int)(rest % tiles_c) * 16;
    rest /= tiles_c;
    int tap = (int)(rest % taps);
    long long chunk = rest / taps;
    long long first = chunk * chunk_rows;
    if (first >= P) return;
    long long last = first + chunk_rows < P ? first + chunk_rows : P;
    int offset = (tap / K) * WP + tap % K;
    float acc[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
    for (long long p = first; p < last; p += 8) {
        const float* x = xp + (p + offset) * CP + c0;
        const float* gr = grad + p * OP + o0;
        Operand<SPLIT> a[4] = {Operand<SPLIT>(x[t * CP + g]), Operand<SPLIT>(x[t * CP + g + 8]),
                               Operand<SPLIT>(x[(t + 4) * CP + g]),
                               Operand<SPLIT>(x[(t + 4) * CP + g + 8])};
        for (int j = 0; j < 2; ++j) {
            Operand<SPLIT> b[2] = {Operand<SPLIT>(gr[t * OP + 8 * j + g]),
                                   Operand<SPLIT>(gr[(t + 4) * OP + 8 * j + g])};
            mma(acc[j], a, b);
        }
    }
    float* to = partial + ((chunk * taps + tap) * CP + c0 + g) * (long long)OP + o0 + 2 * t;
    for (int j = 0; j < 2; ++j) {
        to[8 * j] = acc[j][0];
        to[8 * j + 1] = acc[j][1];
        to[8 * OP + 8 * j] = acc[j][2];
        to[8 * OP + 8 * j + 1] = acc[j][3];
    }
}

extern "C" __global__ void conv_forward_tf32(const float* xp, const float* w, float* out, int P,
                                             int CP, int OP, int K, int WP) {
    conv_forward<false>(xp, w, out, P, CP, OP, K, WP);
}
extern "C" __global__ void conv_forward_3xtf32(const float* xp, const float* w, float* out, int P,
                                               int CP, int OP, int K, int WP) {
    conv_forward<true>(xp, w, out, P, CP, OP, K, WP);
}
extern "C" __global__ void conv_kernel_grad_tf32(const float* xp, const float* grad,
                                                 float* partial, int P, int CP, int OP, int K,
                                                 int WP, int chunk_rows) {
    conv_kernel_grad<false>(xp, grad, partial, P, CP, OP, K, WP, chunk_rows);
}
extern "C" __global__ void conv_kernel_grad_3xtf32(const float* xp, const float* grad,
                                                   float* partial, int P, int CP, int OP, int K,
                                                   int WP, int chunk_rows) {
    conv_kernel_grad<true>(xp, grad, partial, P, CP, OP, K, WP, chunk_rows);
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
