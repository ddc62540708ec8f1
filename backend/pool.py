"""Max pooling of channels-last batches and its gradient.

    out, indices = max_pool(x, kernel_size, stride)
    d_x = max_pool_backward(grad_out, indices, x.shape, kernel_size, stride)

A window's argmax index is the position (row-major) of its first maximum, or of its first NaN
where it holds one: the gradient goes there, on every implementation (each stores `indices` in
its own dtype).

* ``cpu``: one pass per position in the window, each over contiguous channel rows; the indices
  as a running maximum of positions (uint8);
* ``gpu``: the windows copied once, then `max` and `argmax`;
* ``fused``: max_pool.cu, one kernel each way (a gather backward: any stride, no atomics).
"""
from xpnn.backend.cuda import CudaKernel
from xpnn.backend.device import get_array_module
from xpnn.backend.dispatch import pick
from xpnn.backend.windows import sliding_windows, window_offsets

FORWARD = CudaKernel("max_pool.cu", "xpnn_max_pool_forward", ["int64"] + ["int32"] * 7)
BACKWARD = CudaKernel("max_pool.cu", "xpnn_max_pool_backward", ["int64"] + ["int32"] * 7)


def max_pool(x, kernel_size, stride):
    """(max, argmax indices) of every window of `x` (N, H, W, C), both (N, Ho, Wo, C); windows
    past the bottom or right edge are dropped."""
    table = {"cpu": _max_by_offsets, "gpu": _max_over_windows, "fused": _max_fused}
    return pick(table, get_array_module(x))(x, kernel_size, stride)


def max_pool_backward(grad, indices, input_shape, kernel_size, stride):
    """d loss / d x, (N, H, W, C), from `grad` (N, Ho, Wo, C) and `max_pool`'s `indices`: each
    window's gradient goes to its argmax (summed where windows overlap), 0 elsewhere."""
    table = {"cpu": _route_by_offsets, "gpu": _route_to_windows, "fused": _route_fused}
    route = pick(table, get_array_module(grad))
    return route(grad, indices, tuple(input_shape), kernel_size, stride)


def _output_size(input_shape, kernel_size, stride):
    return tuple((size - kernel_size) // stride + 1 for size in input_shape[1:3])


# -- cpu -------------------------------------------------------------------------------------------

def _max_by_offsets(x, kernel_size, stride):
    xp = get_array_module(x)
    offsets = window_offsets(kernel_size, stride, *_output_size(x.shape, kernel_size, stride))
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


def _route_by_offsets(grad, indices, input_shape, kernel_size, stride):
    grad_x = get_array_module(grad).zeros(input_shape, dtype=grad.dtype)
    overlapping = stride < kernel_size
    for position, index in enumerate(window_offsets(kernel_size, stride, *indices.shape[1:3])):
        routed = grad * (indices == position)
        if overlapping:
            grad_x[index] += routed
        else:
            grad_x[index] = routed
    return grad_x


# -- gpu -------------------------------------------------------------------------------------------

def _max_over_windows(x, kernel_size, stride):
    k = kernel_size
    windows = sliding_windows(x, k, k, stride)  # (N, Ho, Wo, k, k, C)
    n, ho, wo, _, _, c = windows.shape
    flat = get_array_module(x).empty((n, ho, wo, c, k, k), dtype=x.dtype)
    flat[...] = windows.transpose(0, 1, 2, 5, 3, 4)
    flat = flat.reshape(n, ho, wo, c, k * k)
    return flat.max(axis=4), flat.argmax(axis=4)


def _route_to_windows(grad, indices, input_shape, kernel_size, stride):
    if stride < kernel_size:  # overlapping windows add up: the offsets' way
        return _route_by_offsets(grad, indices, input_shape, kernel_size, stride)
    xp = get_array_module(grad)
    k, s = kernel_size, stride
    ho, wo = indices.shape[1:3]
    tiled = s == k and ho * k == input_shape[1] and wo * k == input_shape[2]
    grad_x = (xp.empty if tiled else xp.zeros)(input_shape, dtype=grad.dtype)
    is_max = indices[:, :, :, None, None, :] == xp.arange(k * k).reshape(k, k, 1)
    xp.multiply(grad[:, :, :, None, None, :], is_max, out=sliding_windows(grad_x, k, k, s))
    return grad_x


# -- fused -----------------------------------------------------------------------------------------

def _geometry(input_shape, output_size, kernel_size, stride):
    """The kernels' shape arguments: h, w, c, ho, wo, k, s."""
    _, h, w, c = input_shape
    return (h, w, c, *output_size, kernel_size, stride)


def _max_fused(x, kernel_size, stride):
    xp = get_array_module(x)
    x = xp.ascontiguousarray(x)
    ho, wo = _output_size(x.shape, kernel_size, stride)
    out = xp.empty((x.shape[0], ho, wo, x.shape[3]), dtype=x.dtype)
    indices = xp.empty(out.shape, dtype=xp.int32)
    FORWARD(out.size, (x, out, indices, out.size,
                       *_geometry(x.shape, (ho, wo), kernel_size, stride)), x.dtype)
    return out, indices


def _route_fused(grad, indices, input_shape, kernel_size, stride):
    xp = get_array_module(grad)
    grad = xp.ascontiguousarray(grad)
    grad_x = xp.empty(input_shape, dtype=grad.dtype)
    BACKWARD(grad_x.size, (grad, indices, grad_x, grad_x.size,
                           *_geometry(input_shape, indices.shape[1:3], kernel_size, stride)),
             grad.dtype)
    return grad_x
