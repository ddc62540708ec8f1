"""Softmax followed by cross-entropy, fused for stability."""
from backend import get_array_module
from layers.base import Layer, check_input


class SoftmaxCrossEntropyLossLayer(Layer):
    """Mean over the batch of -log softmax(logits)[label]; stable for logits of any size.

    forward(logits (N, K), labels (N,) integers in [0, K)) -> 0-d array (the mean loss; reading
    it with float() waits for the device). backward() -> d loss / d logits, (N, K).
    """

    def forward(self, logits, labels):
        check_input(self, logits, 2)
        if tuple(labels.shape) != (logits.shape[0],):
            raise ValueError(f"SoftmaxCrossEntropyLossLayer expected labels of shape "
                             f"({logits.shape[0]},), got {tuple(labels.shape)}")
        xp = get_array_module(logits)
        rows = xp.arange(logits.shape[0])
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = xp.exp(shifted)
        total = exp.sum(axis=1, keepdims=True)
        log_probs_true = shifted[rows, labels] - xp.log(total[:, 0])
        self._probs = exp / total
        self._rows, self._labels = rows, labels
        return -log_probs_true.mean()

    def backward(self, grad_out=1.0):
        grad = self._probs
        grad[self._rows, self._labels] -= 1
        grad *= grad_out / grad.shape[0]
        self._probs = None
        return grad
