"""Windows of an image batch as a strided view: what convolution and pooling read."""
from xpnn.backend.device import get_array_module


def sliding_windows(x, k, stride):
    """A strided view of every (k, k) window of `x` (N, H, W, C), any strides: (N, Ho, Wo, k, k,
    C) with Ho = (H - k) // stride + 1, Wo likewise (windows past the bottom or right edge
    dropped). Writing through it is well defined only where windows do not overlap."""
    n, h, w, c = x.shape
    sn, sh, sw, sc = x.strides
    return get_array_module(x).lib.stride_tricks.as_strided(
        x, shape=(n, (h - k) // stride + 1, (w - k) // stride + 1, k, k, c),
        strides=(sn, stride * sh, stride * sw, sh, sw, sc))


def window_offsets(k, stride, ho, wo):
    """For each position (a, b) in a window, row-major, the slices of an (N, H, W, C) array
    that hold that position of every window: (all images, rows a, a + s, ..., columns b, ...)."""
    s = stride
    return [(slice(None), slice(a, a + (ho - 1) * s + 1, s), slice(b, b + (wo - 1) * s + 1, s))
            for a in range(k) for b in range(k)]
