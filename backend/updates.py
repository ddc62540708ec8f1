"""Optimizer updates on flat parameter buffers, in place.

    sgd_update(data, grad, lr, weight_decay)                      # w -= lr * (g + decay * w)
    momentum_update(data, grad, velocity, lr, momentum, weight_decay)
                                    # v = momentum * v + (g + decay * w);  w -= lr * v
    adam_update(data, grad, exp_avg, exp_avg_sq, step_size, bias2_sqrt, beta1, beta2, eps,
                l2, shrink)         # Adam (shrink None) and AdamW (l2 0), as PyTorch computes:
                                    # g += l2 * w;  w *= shrink;  m = b1 m + (1 - b1) g;
                                    # v = b2 v + (1 - b2) g^2;
                                    # w -= step_size * m / (sqrt(v) / bias2_sqrt + eps)

The array code adds the weight decay into `grad` in place (zeroed before the next step
anyway); ``fused``, one element-wise kernel per update, leaves `grad` as it is.
"""
from xpnn.backend.cuda import ElementwiseKernel
from xpnn.backend.device import get_array_module
from xpnn.backend.dispatch import implementation

SGD_STEP = ElementwiseKernel("T grad, T lr, T decay", "T data",
                             "data -= lr * (grad + decay * data)", "sgd_step")
MOMENTUM_SGD_STEP = ElementwiseKernel(
    "T grad, T lr, T momentum, T decay", "T data, T velocity",
    "velocity = momentum * velocity + (grad + decay * data); data -= lr * velocity",
    "momentum_sgd_step")
ADAM_STEP = ElementwiseKernel(
    "T grad, T step_size, T bias2_sqrt, T beta1, T beta2, T eps, T l2, T shrink",
    "T data, T exp_avg, T exp_avg_sq",
    "T g = grad + l2 * data; data *= shrink; "
    "exp_avg = beta1 * exp_avg + (1 - beta1) * g; "
    "exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * g * g; "
    "data -= step_size * exp_avg / (sqrt(exp_avg_sq) / bias2_sqrt + eps)",
    "adam_step")


def _fused(data):
    return implementation(get_array_module(data)) == "fused"


def _decayed(data, grad, weight_decay):
    if weight_decay:
        grad += weight_decay * data
    return grad


def sgd_update(data, grad, lr, weight_decay):
    if _fused(data):
        SGD_STEP(grad, lr, weight_decay, data)
    else:
        data -= lr * _decayed(data, grad, weight_decay)


def momentum_update(data, grad, velocity, lr, momentum, weight_decay):
    if _fused(data):
        MOMENTUM_SGD_STEP(grad, lr, momentum, weight_decay, data, velocity)
        return
    velocity *= momentum
    velocity += _decayed(data, grad, weight_decay)
    data -= lr * velocity


def adam_update(data, grad, exp_avg, exp_avg_sq, step_size, bias2_sqrt, beta1, beta2, eps, l2,
                shrink):
    """`step_size` = lr / (1 - beta1^t) and `bias2_sqrt` = sqrt(1 - beta2^t) (numbers, or 0-d
    arrays of the data's dtype on its device); `shrink`: 1 - lr * weight_decay for AdamW."""
    if _fused(data):
        ADAM_STEP(grad, step_size, bias2_sqrt, beta1, beta2, eps, l2,
                  1.0 if shrink is None else shrink, data, exp_avg, exp_avg_sq)
        return
    grad = _decayed(data, grad, l2)
    if shrink is not None:
        data *= shrink
    exp_avg *= beta1
    exp_avg += (1 - beta1) * grad
    exp_avg_sq *= beta2
    squared = grad * grad
    squared *= 1 - beta2
    exp_avg_sq += squared
    denominator = get_array_module(data).sqrt(exp_avg_sq)
    denominator /= bias2_sqrt
    denominator += eps
    change = exp_avg / denominator
    change *= step_size
    data -= change
