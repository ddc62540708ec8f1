"""Array kernels that layers share, written once for NumPy and CuPy alike."""
from backend.device import get_array_module


def sliding_windows(x, kh, kw, stride):
    """Return a read-only strided view of every (kh, kw) window of `x`, without copying.

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
    the whole batch is one slice: there, fewer and larger kernels win.
    """
    if xp.__name__ != "numpy":
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
