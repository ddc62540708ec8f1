"""Softmax cross-entropy: the mean loss of a batch and its gradient, stable for any logits.

    loss, grad = softmax_cross_entropy(logits, labels)    # grad = d loss_row / d logits

The array code (``cpu`` and ``gpu``) picks the true class with a one-hot mask rather than by
fancy indexing: on a GPU four plain kernels instead of a dozen index computations.
``fused``: softmax_cross_entropy.cu, loss rows and gradient in one pass (unmeasured on a GPU);
a label outside [0, K) makes its loss NaN there.
"""
from xpnn.backend.cuda import CudaKernel
from xpnn.backend.device import get_array_module
from xpnn.backend.dispatch import pick

SOFTMAX_CROSS_ENTROPY = CudaKernel("softmax_cross_entropy.cu", "xpnn_softmax_cross_entropy",
                                   ["int64", "int32"])


def softmax_cross_entropy(logits, labels):
    """(mean over rows of -log softmax(logits)[label] as a 0-d array, softmax - one_hot (N, K)).

    Args:
        logits: (N, K) floating array; labels: (N,) integers in [0, K) (not checked here).
    """
    return pick(_TABLE, get_array_module(logits))(logits, labels)


def _array(logits, labels):
    xp = get_array_module(logits)
    one_hot = labels[:, None] == xp.arange(logits.shape[1])
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = xp.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    # one nonzero term per row, so this sum is exactly the true class's shifted logit
    true_shifted = (shifted * one_hot).sum(axis=1)
    grad = exp / total
    grad -= one_hot
    return (xp.log(total[:, 0]) - true_shifted).mean(), grad


def _fused(logits, labels):
    xp = get_array_module(logits)
    logits = xp.ascontiguousarray(logits)
    n, k = logits.shape
    nll = xp.empty(n, dtype=logits.dtype)
    grad = xp.empty_like(logits)
    SOFTMAX_CROSS_ENTROPY(n, (logits, labels.astype(xp.int64, copy=False), nll, grad, n, k),
                          logits.dtype)
    return nll.mean(), grad


_TABLE = {"cpu": _array, "gpu": _array, "fused": _fused}
