"""Gradients of ReLU and LeakyReLU, and LeakyReLU itself. Results keep their input's memory
layout (`backend.layout`); the array code masks by multiplying, ``fused`` is one element-wise
kernel per pass. `leaky_relu`'s `cache` is each implementation's own: run both halves of a pair
under the same implementation.
"""
from xpnn.backend.cuda import ElementwiseKernel
from xpnn.backend.device import get_array_module
from xpnn.backend.dispatch import implementation

RELU_BACKWARD = ElementwiseKernel("T g, T y", "T dx", "dx = y > 0 ? g : (T)0", "relu_backward")
LEAKY_RELU_FORWARD = ElementwiseKernel("T x, T slope", "T y", "y = x > 0 ? x : x * slope",
                                       "leaky_relu_forward")
LEAKY_RELU_BACKWARD = ElementwiseKernel("T g, T x, T slope", "T dx",
                                        "dx = x > 0 ? g : g * slope", "leaky_relu_backward")


def relu_backward(grad, out):
    """d loss / d x of ReLU from `grad` = d loss / d out and its output `out` (0 where out is 0)."""
    xp = get_array_module(grad)
    if implementation(xp) == "fused":
        return RELU_BACKWARD(grad, out, xp.empty_like(grad))
    return xp.multiply(grad, out > 0, out=xp.empty_like(out))


def leaky_relu(x, slope):
    """(x where x > 0 else slope * x, what `leaky_relu_backward` needs), for 0 <= slope < 1."""
    xp = get_array_module(x)
    if implementation(xp) == "fused":
        return LEAKY_RELU_FORWARD(x, slope, xp.empty_like(x)), x
    positive = xp.greater(x, 0, out=xp.empty_like(x, dtype=bool))
    return xp.maximum(x, x * slope, out=xp.empty_like(x)), positive  # slope < 1


def leaky_relu_backward(grad, cache, slope):
    """d loss / d x of LeakyReLU from `grad` = d loss / d y and `leaky_relu`'s `cache`."""
    xp = get_array_module(grad)
    if implementation(xp) == "fused":
        return LEAKY_RELU_BACKWARD(grad, cache, slope, xp.empty_like(grad))
    local_grad = cache.astype(grad.dtype)  # 1 where x > 0, else slope
    local_grad *= 1.0 - slope
    local_grad += slope
    return xp.multiply(grad, local_grad, out=local_grad)
