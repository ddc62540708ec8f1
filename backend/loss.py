"""Softmax cross-entropy: the mean loss of a batch and its gradient, stable for any logits.
The array code picks the true class with a one-hot mask (on a GPU, a few plain kernels instead
of fancy indexing's many). ``fused``: softmax_cross_entropy.cu, loss rows and gradient in one
pass (a label outside [0, K) makes its loss NaN), hard targets only.
"""
from xpnn.backend.cuda import CudaKernel
from xpnn.backend.device import get_array_module
from xpnn.backend.dispatch import implementation

SOFTMAX_CROSS_ENTROPY = CudaKernel("softmax_cross_entropy.cu", "xpnn_softmax_cross_entropy",
                                   ["int64", "int32"])


def softmax_cross_entropy(logits, labels, label_smoothing=0.0):
    """(mean over rows of -sum_k target_k log softmax(logits)_k as a 0-d array, softmax - target
    (N, K)) for floating `logits` (N, K) and integer `labels` (N,) in [0, K) (not checked here),
    where target = (1 - label_smoothing) one_hot(labels) + label_smoothing / K, for
    `label_smoothing` in [0, 1)."""
    xp = get_array_module(logits)
    if implementation(xp) == "fused" and not label_smoothing:
        logits = xp.ascontiguousarray(logits)
        n, k = logits.shape
        nll = xp.empty(n, dtype=logits.dtype)
        grad = xp.empty_like(logits)
        SOFTMAX_CROSS_ENTROPY(n, (logits, labels.astype(xp.int64, copy=False), nll, grad, n, k),
                              logits.dtype)
        return nll.mean(), grad
    target = labels[:, None] == xp.arange(logits.shape[1])
    if label_smoothing:
        target = target * logits.dtype.type(1 - label_smoothing)
        target += logits.dtype.type(label_smoothing / logits.shape[1])
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = xp.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    # the targets of a row sum to 1, so its loss is log(total) - sum(target * shifted); without
    # smoothing one term is nonzero, so that sum is exactly the true class's shifted logit
    target_shifted = (shifted * target).sum(axis=1)
    grad = exp / total
    grad -= target
    return (xp.log(total[:, 0]) - target_shifted).mean(), grad
