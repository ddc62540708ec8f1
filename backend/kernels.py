"""Array kernels that layers share, written once for NumPy and CuPy alike.

Layers have two ways to compute some things, chosen by `few_kernels(xp)`: on the CPU many small
operations on cache-sized pieces; on a GPU, where every array operation is a kernel launch that
costs about 10 us of host time however little it does, as few operations as possible over the
whole batch. Both ways compute the same numbers; `forcing_few_kernels()` lets the tests run the
GPU way on NumPy.
"""
import contextlib
import contextvars

from xpnn.backend.device import get_array_module

_FORCED_FEW_KERNELS = contextvars.ContextVar("xpnn_forced_few_kernels", default=None)


def few_kernels(xp):
    """True where layers should take their few-large-operations path: for CuPy arrays, or for
    any arrays inside `forcing_few_kernels(True)`."""
    forced = _FORCED_FEW_KERNELS.get()
    if forced is not None:
        return forced
    return xp.__name__ != "numpy"


@contextlib.contextmanager
def forcing_few_kernels(enabled=True):
    """Within this block (this thread, and threads started with its context), `few_kernels`
    returns `enabled` whatever the array module."""
    token = _FORCED_FEW_KERNELS.set(bool(enabled))
    try:
        yield
    finally:
        _FORCED_FEW_KERNELS.reset(token)


def sliding_windows(x, kh, kw, stride):
    """Return a strided view of every (kh, kw) window of `x`, without copying.

    Writing through the view is well defined only where the windows do not overlap
    (stride >= kh, kw).

    Args:
        x: (N, H, W, C) array, any strides.
    Returns:
        (N, Ho, Wo, kh, kw, C) view with Ho = (H - kh) // stride + 1, Wo likewise; windows that
        would run past the bottom or right edge are dropped.
    """
    n, h, w, c = x.shape
    ho, wo = (h - kh) // stride + 1, (w - kw) // stride + 1
    sn, sh, sw, sc = x.strides
    xp = get_array_module(x)
    return xp.lib.stride_tricks.as_strided(
        x, shape=(n, ho, wo, kh, kw, c),
        strides=(sn, stride * sh, stride * sw, sh, sw, sc),
    )


CPU_CHUNK_BYTES = 1 << 19  # per-chunk working set that stays in one core's L2 cache


def batch_chunks(xp, n, bytes_per_item):
    """Split ``range(n)`` into slices to process one after another.

    On the CPU each slice's working set (``bytes_per_item`` per batch item) stays near
    `CPU_CHUNK_BYTES`, so a patch matrix is built and consumed while still in cache. On a GPU
    (`few_kernels`) the whole batch is one slice.
    """
    if few_kernels(xp):
        return [slice(0, n)]
    size = max(1, min(n, CPU_CHUNK_BYTES // max(1, bytes_per_item)))
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def product_width(xp, width):
    """How many columns a matrix product should compute to fill `width` output columns.

    OpenBLAS's float32 kernels run at half speed when the output is not a multiple of 8 wide
    (measured: 6 columns 21 GFLOP/s, 8 columns 42), so on the CPU a narrow product is computed
    8-wide against zero-padded weights and the extra columns dropped. GPUs take `width` as is.
    """
    if xp.__name__ != "numpy" or width % 8 == 0 or width > 64:
        return width
    return -(-width // 8) * 8
