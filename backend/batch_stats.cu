// A batch's loss and correct predictions added to running sums: the `fused` implementation of
// backend/batch_stats.py.
#include "common.cuh"

// logits: contiguous (N, K); labels: (N,); loss: 0-d mean loss of the batch; loss_sum (float64)
// and correct (int64): 0-d running sums. One thread per row; the first row also adds loss * N.
// The prediction is argmax's: the first maximum, or the first NaN where the row holds one.
// The sums do not depend on the order threads run in: the count is an integer, and one thread
// adds the loss.
extern "C" __global__ void xpnn_add_batch_stats(
        const T* logits, const long long* labels, const T* loss, double* loss_sum,
        long long* correct, long long n, int k) {
    XPNN_GRID_STRIDE_LOOP(row, n) {
        const T* x = logits + row * k;
        int best = 0;
        for (int j = 1; j < k && x[best] == x[best]; ++j) {   // stop at a NaN
            if (x[j] > x[best] || x[j] != x[j]) best = j;
        }
        if (best == labels[row]) atomicAdd((unsigned long long*)correct, 1ULL);
        if (row == 0) atomicAdd(loss_sum, (double)loss[0] * (double)n);
    }
}
