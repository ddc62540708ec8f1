// Max pooling, one kernel each way: the `fused` implementation of backend/pool.py.
#include "common.cuh"

// x, out, winner: contiguous (N, H, W, C), (N, Ho, Wo, C), (N, Ho, Wo, C). One thread per
// output. The winner is the window position (row-major) of the first maximum, or of the first
// NaN where the window holds one (the maximum is then NaN, as xp.maximum makes it).
extern "C" __global__ void xpnn_max_pool_forward(
        const T* x, T* out, int* winner, long long size,
        int h, int w, int c, int ho, int wo, int k, int s) {
    XPNN_GRID_STRIDE_LOOP(i, size) {
        xpnn_nhwc o = xpnn_unravel_nhwc(i, ho, wo, c);
        const T* window = x + ((o.n * h + (long long)o.y * s) * w + (long long)o.x * s) * c + o.c;
        T best = window[0];
        int best_at = 0;
        for (int a = 0; a < k; ++a) {
            for (int b = 0; b < k; ++b) {
                T v = window[((long long)a * w + b) * c];
                if (v > best || (v != v && best == best)) {
                    best = v;
                    best_at = a * k + b;
                }
            }
        }
        out[i] = best;
        winner[i] = best_at;
    }
}

// g, winner: contiguous (N, Ho, Wo, C); dx: (N, H, W, C). One thread per input pixel, gathering
// from every window that holds it (no atomics, any stride).
extern "C" __global__ void xpnn_max_pool_backward(
        const T* g, const int* winner, T* dx, long long size,
        int h, int w, int c, int ho, int wo, int k, int s) {
    XPNN_GRID_STRIDE_LOOP(i, size) {
        xpnn_nhwc p = xpnn_unravel_nhwc(i, h, w, c);
        int y = p.y, x = p.x;
        int oh_first = y >= k ? (y - k) / s + 1 : 0;   // windows oh with oh*s <= y < oh*s + k
        int oh_last = y / s < ho - 1 ? y / s : ho - 1;
        int ow_first = x >= k ? (x - k) / s + 1 : 0;
        int ow_last = x / s < wo - 1 ? x / s : wo - 1;
        T total = 0;
        for (int oh = oh_first; oh <= oh_last; ++oh) {
            for (int ow = ow_first; ow <= ow_last; ++ow) {
                long long o = ((p.n * ho + oh) * wo + ow) * c + p.c;
                if (winner[o] == (y - oh * s) * k + (x - ow * s)) {
                    total += g[o];
                }
            }
        }
        dx[i] = total;
    }
}
