"""Softmax followed by cross-entropy, fused for stability."""
from xpnn.backend import CPU, get_array_module
from xpnn.backend.cuda import RawKernel, fused_kernels
from xpnn.layers.base import Layer, check_input

# logits, grad: contiguous (N, K); labels, nll: (N,). One thread per row: the row's loss, or NaN
# for a label outside [0, K), and d loss_row / d logits = softmax - one_hot.
SOFTMAX_CROSS_ENTROPY = RawKernel(r"""
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
""", "xpnn_softmax_cross_entropy", ["int64", "int32"])


class SoftmaxCrossEntropyLossLayer(Layer):
    """Mean over the batch of -log softmax(logits)[label]; stable for logits of any size.

    forward(logits (N, K), labels (N,) integers in [0, K)) -> 0-d array (the mean loss; reading
    it with float() waits for the device). backward() -> d loss / d logits, (N, K).

    The true class is picked with a one-hot mask rather than by fancy indexing: on a GPU that is
    four plain kernels in all instead of a dozen index computations (one, fused). Labels outside
    [0, K) raise `ValueError` for host arrays; device labels are not checked (that would wait for
    the device), though the fused kernel makes their loss NaN.
    """

    def forward(self, logits, labels):
        check_input(self, logits, 2)
        if tuple(labels.shape) != (logits.shape[0],):
            raise ValueError(f"SoftmaxCrossEntropyLossLayer expected labels of shape "
                             f"({logits.shape[0]},), got {tuple(labels.shape)}")
        xp = get_array_module(logits)
        n, num_classes = logits.shape
        if xp is CPU.xp and labels.size and not 0 <= labels.min() <= labels.max() < num_classes:
            raise ValueError(f"SoftmaxCrossEntropyLossLayer labels must lie in [0, {num_classes - 1}]"
                             f" for {num_classes} classes, got values from {labels.min()} to "
                             f"{labels.max()}")
        if fused_kernels(xp):
            logits = xp.ascontiguousarray(logits)
            nll = xp.empty(n, dtype=logits.dtype)
            self._grad = xp.empty_like(logits)
            SOFTMAX_CROSS_ENTROPY(n, (logits, labels.astype(xp.int64, copy=False), nll,
                                      self._grad, n, num_classes), logits.dtype)
            return nll.mean()
        one_hot = labels[:, None] == xp.arange(num_classes)
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = xp.exp(shifted)
        total = exp.sum(axis=1, keepdims=True)
        # one nonzero term per row, so this sum is exactly the true class's shifted logit
        true_shifted = (shifted * one_hot).sum(axis=1)
        self._grad = exp / total
        self._grad -= one_hot  # d loss_row / d logits
        return (xp.log(total[:, 0]) - true_shifted).mean()

    def backward(self, grad_out=1.0):
        grad, self._grad = self._grad, None
        grad *= grad_out / grad.shape[0]
        return grad
