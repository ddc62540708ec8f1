"""Softmax followed by cross-entropy, fused for stability (`backend.loss` computes it)."""
from xpnn.backend import CPU, get_array_module
from xpnn.backend.loss import softmax_cross_entropy
from xpnn.layers.base import Layer, check_input


class SoftmaxCrossEntropyLossLayer(Layer):
    """Mean over the batch of -log softmax(logits)[label] (with `label_smoothing` e, against
    the target (1 - e) one_hot + e / K); stable for logits of any size.

    forward(logits (N, K), labels (N,) integers in [0, K)) -> 0-d mean loss; backward() ->
    d loss / d logits, (N, K). Labels that are not integers raise `ValueError`, as do labels
    outside [0, K) in host arrays (checking device labels would wait for the device).
    `backward` without a `forward` since the last `backward` raises `RuntimeError`.
    """

    def __init__(self, label_smoothing=0.0):
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"SoftmaxCrossEntropyLossLayer label_smoothing must be in [0, 1), "
                             f"got {label_smoothing!r}")
        self.label_smoothing = label_smoothing
        self._grad = None

    def forward(self, logits, labels):
        check_input(self, logits, 2)
        if tuple(labels.shape) != (logits.shape[0],):
            raise ValueError(f"SoftmaxCrossEntropyLossLayer expected labels of shape "
                             f"({logits.shape[0]},), got {tuple(labels.shape)}")
        if labels.dtype.kind not in "iu":
            raise ValueError(f"SoftmaxCrossEntropyLossLayer labels must be integer class indices, "
                             f"got dtype {labels.dtype}; pass labels.astype('int64') if they are "
                             f"whole numbers")
        xp = get_array_module(logits)
        num_classes = logits.shape[1]
        if xp is CPU.xp and labels.size and not 0 <= labels.min() <= labels.max() < num_classes:
            raise ValueError(f"SoftmaxCrossEntropyLossLayer labels must lie in [0, {num_classes - 1}]"
                             f" for {num_classes} classes, got values from {labels.min()} to "
                             f"{labels.max()}")
        loss, self._grad = softmax_cross_entropy(logits, labels, self.label_smoothing)
        return loss

    def describe(self):
        return f"label smoothing {self.label_smoothing:g}" if self.label_smoothing else ""

    def backward(self, grad_out=1.0):
        if self._grad is None:
            raise RuntimeError(f"{self.title()}.backward() needs a forward(logits, labels) first "
                               f"(each backward consumes the gradient of one forward)")
        grad, self._grad = self._grad, None
        grad *= grad_out / grad.shape[0]
        return grad
