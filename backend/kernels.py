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
