"""Softmax followed by cross-entropy, fused for stability."""
from backend import CPU, get_array_module
from layers.base import Layer, check_input


class SoftmaxCrossEntropyLossLayer(Layer):
    """Mean over the batch of -log softmax(logits)[label]; stable for logits of any size.

    forward(logits (N, K), labels (N,) integers in [0, K)) -> 0-d array (the mean loss; reading
    it with float() waits for the device). backward() -> d loss / d logits, (N, K).

    The true class is picked with a one-hot mask rather than by fancy indexing: on a GPU that is
    four plain kernels in all instead of a dozen index computations. Labels outside [0, K) raise
    `ValueError` for host arrays; device labels are not checked (that would wait for the device).
    """

    def forward(self, logits, labels):
        check_input(self, logits, 2)
        if tuple(labels.shape) != (logits.shape[0],):
            raise ValueError(f"SoftmaxCrossEntropyLossLayer expected labels of shape "
                             f"({logits.shape[0]},), got {tuple(labels.shape)}")
        xp = get_array_module(logits)
        num_classes = logits.shape[1]
        if xp is CPU.xp and labels.size and not 0 <= labels.min() <= labels.max() < num_classes:
            raise ValueError(f"SoftmaxCrossEntropyLossLayer labels must lie in [0, {num_classes - 1}]"
                             f" for {num_classes} classes, got values from {labels.min()} to "
                             f"{labels.max()}")
        one_hot = labels[:, None] == xp.arange(num_classes)
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = xp.exp(shifted)
        total = exp.sum(axis=1, keepdims=True)
        # one nonzero term per row, so this sum is exactly the true class's shifted logit
        true_shifted = (shifted * one_hot).sum(axis=1)
        self._probs, self._one_hot = exp / total, one_hot
        return (xp.log(total[:, 0]) - true_shifted).mean()

    def backward(self, grad_out=1.0):
        grad = self._probs
        grad -= self._one_hot
        grad *= grad_out / grad.shape[0]
        self._probs = self._one_hot = None
        return grad
