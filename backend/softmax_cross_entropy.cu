// Softmax cross-entropy in one pass: the `fused` implementation of backend/loss.py.
#include "common.cuh"

// logits, grad: contiguous (N, K); labels, nll: (N,). One thread per row: the row's loss, or NaN
// for a label outside [0, K), and d loss_row / d logits = softmax - one_hot.
extern "C" __global__ void xpnn_softmax_cross_entropy(
        const T* logits, const long long* labels, T* nll, T* grad, long long n, int k) {
    XPNN_GRID_STRIDE_LOOP(row, n) {
        const T* x = logits + row * k;
        T* g = grad + row * k;
        T top = x[0];
        for (int j = 1; j < k; ++j) {
            if (x[j] > top || x[j] != x[j]) top = x[j];
        }
        T total = 0;
        for (int j = 0; j < k; ++j) {
            g[j] = exp(x[j] - top);
            total += g[j];
        }
        long long label = labels[row];
        for (int j = 0; j < k; ++j) {
            g[j] = g[j] / total - (j == label ? (T)1 : (T)0);
        }
        nll[row] = 0 <= label && label < k ? log(total) - (x[label] - top) : (T)nan("");
    }
}
