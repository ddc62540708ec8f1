"""The ``fused`` convolution primitives, `correlate` and `kernel_gradient` as `backend.conv`'s:
direct CUDA kernels that read the input where it lies (correlate.cu, kernel_gradient.cu), with
no patch matrix or zero frame. Each kernel is compiled for its shape class: kernel size, stride,
the frame's step, and one thread's work (`correlate_tile`, `gradient_split`, or the caller's).
"""
import math
from collections import namedtuple

from xpnn.backend.cuda import CudaKernel, is_array
from xpnn.backend.device import get_array_module

MAX_PX = 8                         # output pixels of a row per correlate thread, at most
MAX_OT = 16                        # output channels per correlate thread, at most
MAX_OG = 16                        # output channels per kernel-gradient thread, at most
TILE_BYTES = 256                   # a correlate thread's sums, at most
PREFETCH_BYTES = 384               # weights a correlate thread loads per load of its inputs
CORRELATE_THREADS = 1 << 15        # below this many threads a correlation splits its tiles
GRADIENT_THREADS = 1 << 16         # threads a kernel gradient aims for (chunks of rows)
MAX_CHUNKS = 4096                  # chunks of partial sums, at most (their adding is serial)
MIN_GROUP = 8                      # partial sums added per thread of xpnn_sum_parts, at least

PACK = CudaKernel("correlate.cu", "xpnn_correlate_pack",
                  ["int64"] + ["int32"] * 4 + ["int64"] * 5)
CORRELATE = CudaKernel("correlate.cu", "xpnn_correlate", ["int64"] + ["int32"] * 10, block=128)
KERNEL_GRADIENT = CudaKernel("kernel_gradient.cu", "xpnn_kernel_gradient",
                             ["int64"] + ["int32"] * 9, block=128)
CORRELATE_TF32 = CudaKernel("correlate_tf32.cu", "xpnn_correlate_tf32",
                            ["int64"] + ["int32"] * 11, block=128)  # 4 warps, as the file says
SUM_PARTS = CudaKernel("kernel_gradient.cu", "xpnn_sum_parts", ["int64", "int64", "int32", "int32"])

# One correlate thread's work: `px` output pixels of a row times `ot` output channels, reading
# `cv` input channels per load.
Tile = namedtuple("Tile", "px ot cv")
# `og` output channels per kernel-gradient thread, `rows_per_chunk` output rows per partial sum
Split = namedtuple("Split", "og rows_per_chunk")


def correlate(frame, kernel, stride, bias=None, relu=False, tile=None):
    """`backend.conv.correlate` by xpnn_correlate; `relu`: max(0, .) of the result too (a NaN
    stays NaN); `tile`: a `Tile` instead of `correlate_tile`'s."""
    x, dtype = _contiguous_input(frame)
    xp = get_array_module(x)
    n, h, w, c = x.shape
    o, k = _check_kernel(kernel, c)
    ho, wo = frame.output_size(k, stride)
    out = xp.empty((n, ho, wo, o), dtype=dtype)
    if out.size == 0:
        return out
    tile = tile or correlate_tile(n, ho, wo, c, o, k, dtype.itemsize, _address(x))
    o_pad = -(-o // tile.ot) * tile.ot
    packed = xp.empty(c * k * k * o_pad, dtype=dtype)
    base, at, strides = _base_view(kernel, dtype)
    PACK(packed.size, (base, packed, packed.size, o, o_pad, c, k, at, *strides), dtype)
    has_bias = bias is not None
    bias = xp.ascontiguousarray(bias, dtype=dtype) if has_bias else packed
    if has_bias and bias.shape != (o,):
        raise ValueError(f"correlate: bias must have shape ({o},) for {o} output channels, got "
                         f"{bias.shape}")
    work = o_pad // tile.ot * n * ho * -(-wo // tile.px)
    launch = correlate_kernel(k, stride, frame.step, tile, relu)
    launch(work, (x, packed, bias, out, work, n, h, w, c, ho, wo, o, o_pad, frame.offset,
                  int(has_bias)), dtype)
    return out


def kernel_gradient(frame, grad, kernel_size, stride, split=None):
    """`backend.conv.kernel_gradient` by xpnn_kernel_gradient and xpnn_sum_parts (the same
    result on every run: no atomics); `split`: a `Split` instead of `gradient_split`'s."""
    x, dtype = _contiguous_input(frame)
    xp = get_array_module(x)
    n, h, w, c = x.shape
    k = kernel_size
    ho, wo = frame.output_size(k, stride)
    if grad.ndim != 4 or grad.shape[:3] != (n, ho, wo):
        raise ValueError(f"kernel_gradient: grad must be ({n}, {ho}, {wo}, O) for this frame, "
                         f"kernel {k} and stride {stride}, got {tuple(grad.shape)}")
    grad = xp.ascontiguousarray(grad, dtype=dtype)
    o = grad.shape[3]
    size = o * c * k * k
    if n * ho * wo == 0 or size == 0:
        return xp.zeros((o, c, k, k), dtype=dtype)
    split = split or gradient_split(n * ho, c, o, k)
    if o % split.og:
        raise ValueError(f"kernel_gradient: {split.og} channels per thread must divide O = {o}")
    chunks = -(-(n * ho) // split.rows_per_chunk)
    partial = xp.empty((chunks, size), dtype=dtype)
    work = chunks * (o // split.og) * c * k
    grad_align = _alignment(_address(grad), o * dtype.itemsize, split.og * dtype.itemsize)
    launch = gradient_kernel(k, stride, frame.step, split.og, grad_align)
    launch(work, (x, grad, partial, work, n, h, w, c, ho, wo, o, frame.offset,
                  split.rows_per_chunk), dtype)
    return sum_parts(partial).reshape(o, c, k, k)


def correlate_kernel(k, stride, step, tile, relu=False):
    """xpnn_correlate compiled for these arguments (a frame's `step`, a `Tile`)."""
    return CORRELATE.specialised(XPNN_K=k, XPNN_STRIDE=stride, XPNN_STEP=step, XPNN_PX=tile.px,
                                 XPNN_OT=tile.ot, XPNN_CV=tile.cv, XPNN_RELU=int(bool(relu)))


def gradient_kernel(k, stride, step, og, grad_align):
    """xpnn_kernel_gradient compiled for these arguments (`og` channels per thread, gradient rows
    aligned to `grad_align` bytes)."""
    return KERNEL_GRADIENT.specialised(XPNN_K=k, XPNN_STRIDE=stride, XPNN_STEP=step, XPNN_OG=og,
                                       XPNN_GRAD_ALIGN=grad_align)


def sum_parts(parts):
    """The (size,) sum over the first axis of (count, size) `parts`, added in a fixed order
    (by xpnn_sum_parts, in groups of at least `MIN_GROUP`, then the groups' sums)."""
    xp = get_array_module(parts)
    count, size = parts.shape
    while count > 1:
        group = min(count, max(MIN_GROUP, math.isqrt(count - 1) + 1))
        groups = -(-count // group)
        sums = xp.empty((groups, size), dtype=parts.dtype)
        SUM_PARTS(sums.size, (parts, sums, sums.size, size, count, group), parts.dtype)
        parts, count = sums, groups
    return parts.reshape(size)


def correlate_tile(n, ho, wo, c, o, k, itemsize, address=0):
    """The `Tile` for an (n, ho, wo, o) output of a c-channel input and a k x k kernel, values of
    `itemsize` bytes, the input starting at byte `address`: equal tiles of at most `MAX_PX`
    pixels of a row and `MAX_OT` channels, cut down to `TILE_BYTES` of sums (in registers) and
    further while that leaves fewer than `CORRELATE_THREADS` threads; the widest channel loads
    (up to 16 bytes) that c, the address and `PREFETCH_BYTES` allow."""
    px = -(-wo // -(-wo // MAX_PX))
    ot = min(o, MAX_OT)
    while px * ot * itemsize > TILE_BYTES and ot % 8 == 0:
        ot //= 2
    while px * ot * itemsize > TILE_BYTES and px > 1:
        px = -(-px // 2)

    def threads():
        return -(-o // ot) * n * ho * -(-wo // px)

    while threads() < CORRELATE_THREADS and ot % 8 == 0:
        ot //= 2
    while threads() < CORRELATE_THREADS and px > 2:
        px = -(-px // 2)
    cv = next(cv for cv in (4, 2, 1)
              if c % cv == 0 and cv * itemsize <= 16 and _alignment(address, cv * itemsize) >= cv
              * itemsize and (cv == 1 or cv * k * ot * itemsize <= PREFETCH_BYTES))
    return Tile(px, ot, cv)


def gradient_split(rows, c, o, k):
    """The `Split` for a kernel gradient over `rows` output rows (N * Ho) of O channels from a
    C-channel input: the most channels per thread (up to `MAX_OG`) that divide O, and chunks
    for about `GRADIENT_THREADS` threads (at most `MAX_CHUNKS` chunks)."""
    og = next(og for og in range(min(o, MAX_OG), 0, -1) if o % og == 0)
    per_chunk = o // og * c * k
    chunks = max(1, min(rows, MAX_CHUNKS, -(-GRADIENT_THREADS // per_chunk)))
    return Split(og, -(-rows // chunks))


def _contiguous_input(frame):
    x = frame.x
    xp = get_array_module(x)
    if x.dtype.kind != "f":
        raise TypeError(f"a convolution takes a floating input, got {x.dtype}")
    return xp.ascontiguousarray(x), x.dtype


def _check_kernel(kernel, c):
    if kernel.ndim != 4 or kernel.shape[2] != kernel.shape[3] or kernel.shape[1] != c:
        raise ValueError(f"correlate: the kernel must be (O, {c}, k, k) for a {c}-channel input, "
                         f"got {tuple(kernel.shape)}")
    return kernel.shape[0], kernel.shape[2]


def _base_view(array, dtype):
    """(base, first, element strides): `array` as a view of the contiguous `dtype` array
    `base` from its index `first`, for a kernel to read in place (a copy if it is no view)."""
    xp = get_array_module(array)
    base = array
    while base.base is not None and is_array(base.base):
        base = base.base
    if (array.dtype != dtype or not base.flags.c_contiguous or base.dtype != dtype
            or any(stride % dtype.itemsize for stride in array.strides)):
        base = array = xp.ascontiguousarray(array, dtype=dtype)
    first = (_address(array) - _address(base)) // dtype.itemsize
    return base, first, [stride // dtype.itemsize for stride in array.strides]


def _address(array):
    """The byte address of `array`'s first element (NumPy or CuPy)."""
    if hasattr(array, "__cuda_array_interface__"):
        return array.data.ptr  # CuPy's: the first element's, negative strides or not
    return array.__array_interface__["data"][0]


def _alignment(*byte_counts):
    """The largest of 16, 8, 4, 2, 1 that divides every one of `byte_counts`."""
    return next(a for a in (16, 8, 4, 2, 1) if all(count % a == 0 for count in byte_counts))


def correlate_tf32(frame, kernel, stride, bias=None):
    """`correlate` on tensor cores (correlate_tf32.cu): TF32 products, float32 sums, so about
    1e-3 relative error; float32 arrays only (precision tf32's forward)."""
    x, dtype = _contiguous_input(frame)
    xp = get_array_module(x)
    if dtype.name != "float32":
        raise TypeError(f"correlate_tf32 multiplies float32 arrays (TF32 tensor cores), got "
                        f"{dtype}")
    n, h, w, c = x.shape
    o, k = _check_kernel(kernel, c)
    ho, wo = frame.output_size(k, stride)
    out = xp.empty((n, ho, wo, o), dtype=dtype)
    if out.size == 0:
        return out
    o_pad, taps = -(-o // 16) * 16, c * k * k
    taps_pad = -(-taps // 8) * 8
    packed = xp.zeros(taps_pad * o_pad, dtype=dtype)  # the rows past `taps` stay zero
    base, at, strides = _base_view(kernel, dtype)
    PACK(taps * o_pad, (base, packed, taps * o_pad, o, o_pad, c, k, at, *strides), dtype)
    has_bias = bias is not None
    bias = xp.ascontiguousarray(bias, dtype=dtype) if has_bias else packed
    work = 32 * -(-(n * ho * wo) // 16) * (o_pad // 16)
    launch = CORRELATE_TF32.specialised(XPNN_K=k, XPNN_STRIDE=stride, XPNN_STEP=frame.step)
    launch(work, (x, packed, bias, out, work, n, h, w, c, ho, wo, o, o_pad, taps_pad,
                  frame.offset, int(has_bias)), dtype)
    return out
