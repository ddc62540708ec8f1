// The patch matrix of a convolution's input in one pass, padding and the input gradient's
// zero-insertion included: the baseline of benchmarks/conv_kernels.py (the way `fused` computed
// convolutions before the direct kernels). common.cuh is found in backend/ (the loader's -I).
#include "common.cuh"

// x: contiguous (N, H, W, C) placed in a frame every `step` pixels from `offset`; col:
// (rows = N * Ho * Wo, cols = C * k * k), columns ordered (C, kh, kw) so that an (O, C, k, k)
// weight is the kernel matrix as it lies. Each work item is one column of `rows_per_item`
// consecutive rows: neighbouring threads write neighbouring columns, and the output position
// is stepped along instead of divided out for every entry (integer division is slow on a GPU).
extern "C" __global__ void xpnn_im2col(
        const T* x, T* col, long long work, int rows, int cols, int rows_per_item,
        int h, int w, int c, int ho, int wo, int k, int stride, int offset, int step) {
    XPNN_GRID_STRIDE_LOOP(item, work) {
        int j = (int)(item % cols);
        int first = (int)(item / cols) * rows_per_item;
        int last = first + rows_per_item < rows ? first + rows_per_item : rows;
        int b = j % k, a = (j / k) % k, channel = j / (k * k);
        int ox = first % wo, oy = (first / wo) % ho, n = first / (wo * ho);
        for (int r = first; r < last; ++r) {
            int fy = oy * stride + a - offset;   // frame position relative to x's first pixel
            int fx = ox * stride + b - offset;
            T value = 0;
            if (fy >= 0 && fx >= 0 && (step == 1 || (fy % step == 0 && fx % step == 0))) {
                fy /= step;
                fx /= step;
                if (fy < h && fx < w) value = x[(((long long)n * h + fy) * w + fx) * c + channel];
            }
            col[(long long)r * cols + j] = value;
            if (++ox == wo) {
                ox = 0;
                if (++oy == ho) {
                    oy = 0;
                    ++n;
                }
            }
        }
    }
}
