"""Max pooling of channels-last batches and its gradient. A window's argmax index is the
position (row-major) of its first maximum, or of its first NaN where it holds one: the gradient
goes there, on every implementation (each stores `indices` in its own dtype). ``cpu``: one pass
per position in the window; ``gpu``: the windows copied once; ``fused``: max_pool.cu, one kernel
each way (a gather backward: no atomics).
"""
from xpnn.backend.cuda import CudaKernel
from xpnn.backend.device import get_array_module
from xpnn.backend.dispatch import implementation
from xpnn.backend.windows import sliding_windows, window_offsets

FORWARD = CudaKernel("max_pool.cu", "xpnn_max_pool_forward", ["int64"] + ["int32"] * 7)
BACKWARD = CudaKernel("max_pool.cu", "xpnn_max_pool_backward", ["int64"] + ["int32"] * 7)


def max_pool(x, kernel_size, stride):
    """(max, argmax indices) of every window of `x` (N, H, W, C), both (N, Ho, Wo, C); windows
    past the bottom or right edge are dropped."""
    xp = get_array_module(x)
    k = kernel_size
    ho, wo = ((size - k) // stride + 1 for size in x.shape[1:3])
    name = implementation(xp)
    if name == "fused":
        x = xp.ascontiguousarray(x)
        out = xp.empty((x.shape[0], ho, wo, x.shape[3]), dtype=x.dtype)
        indices = xp.empty(out.shape, dtype=xp.int32)
        FORWARD(out.size, (x, out, indices, out.size, *x.shape[1:], ho, wo, k, stride), x.dtype)
        return out, indices
    if name == "gpu":
        n, c = x.shape[0], x.shape[3]
        flat = xp.empty((n, ho, wo, c, k, k), dtype=x.dtype)
        flat[...] = sliding_windows(x, k, stride).transpose(0, 1, 2, 5, 3, 4)
        flat = flat.reshape(n, ho, wo, c, k * k)
        return flat.max(axis=4), flat.argmax(axis=4)
    offsets = window_offsets(k, stride, ho, wo)
    out = x[offsets[0]].copy()
    indices = xp.zeros(out.shape, dtype=xp.uint8)
    for position, index in enumerate(offsets[1:], start=1):
        candidate = x[index]
        # positions only grow, so "the latest strictly better" is a running maximum
        xp.maximum(indices, (candidate > out).astype(xp.uint8) * position, out=indices)
        xp.maximum(out, candidate, out=out)
    nan = xp.isnan(out)
    if nan.any():  # no comparison above is true for a NaN: point those windows at their first
        for position in reversed(range(len(offsets))):
            indices[nan & xp.isnan(x[offsets[position]])] = position
    return out, indices


def max_pool_backward(grad, indices, input_shape, kernel_size, stride):
    """d loss / d x, (N, H, W, C), from `grad` (N, Ho, Wo, C) and `max_pool`'s `indices`: each
    window's gradient goes to its argmax (summed where windows overlap), 0 elsewhere."""
    xp = get_array_module(grad)
    input_shape, k, s = tuple(input_shape), kernel_size, stride
    ho, wo = indices.shape[1:3]
    name = implementation(xp)
    if name == "fused":
        grad = xp.ascontiguousarray(grad)
        grad_x = xp.empty(input_shape, dtype=grad.dtype)
        BACKWARD(grad_x.size, (grad, indices, grad_x, grad_x.size, *input_shape[1:], ho, wo, k, s),
                 grad.dtype)
        return grad_x
    if name == "cpu" or s < k:  # the CPU's way, and any device's where windows overlap
        grad_x = xp.zeros(input_shape, dtype=grad.dtype)
        for position, index in enumerate(window_offsets(k, s, ho, wo)):
            routed = grad * (indices == position)
            if s < k:
                grad_x[index] += routed
            else:
                grad_x[index] = routed
        return grad_x
    tiled = s == k and ho * k == input_shape[1] and wo * k == input_shape[2]
    grad_x = (xp.empty if tiled else xp.zeros)(input_shape, dtype=grad.dtype)
    is_max = indices[:, :, :, None, None, :] == xp.arange(k * k).reshape(k, k, 1)
    xp.multiply(grad[:, :, :, None, None, :], is_max, out=sliding_windows(grad_x, k, s))
    return grad_x
