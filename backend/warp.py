"""Affine warps of a batch of images with bilinear sampling (the primitive under augmentation):
one `xp` implementation for every device, its product through `backend.matmul` (so a CUDA graph
can hold it)."""
from xpnn.backend.device import get_array_module
from xpnn.backend.matmul import matmul

PAD = 2  # zeros around each image that out-of-frame corners read


def warp_affine(images, inverse):
    """Warp each image of `images` (N, C, H, W) by its 2 x 3 map `inverse` (N, 2, 3, from
    output to input coordinates); returns a new (N, C, H, W) array of the images' dtype.

    Output pixel (y, x) of image n reads the input at (x_src, y_src) = inverse[n] @ (x, y, 1)
    (x across, y down, the first pixel's centre at 0), the four neighbours mixed bilinearly, 0
    outside the image."""
    xp = get_array_module(images)
    n, c, h, w = images.shape
    inverse = inverse.astype(images.dtype, copy=False)
    ys, xs = xp.meshgrid(xp.arange(h, dtype=images.dtype), xp.arange(w, dtype=images.dtype),
                         indexing="ij")
    grid = xp.stack([xs.ravel(), ys.ravel(), xp.ones(h * w, dtype=images.dtype)])  # (3, H*W)
    source = matmul(inverse.reshape(n * 2, 3), grid).reshape(n, 2, h * w)
    x_src, y_src = source[:, 0], source[:, 1]
    x0, y0 = xp.floor(x_src), xp.floor(y_src)
    wx, wy = x_src - x0, y_src - y0
    # A border of PAD zeros, and corners clipped into it: a top-left corner at -2 or less (or w
    # or more) has both its columns outside the image, so reading the border's zeros is exact.
    padded = xp.pad(images, ((0, 0), (0, 0), (PAD, PAD), (PAD, PAD)))
    row = w + 2 * PAD
    x0 = xp.clip(x0, -PAD, w).astype(xp.int64) + PAD
    y0 = xp.clip(y0, -PAD, h).astype(xp.int64) + PAD
    image_start = xp.arange(n * c, dtype=xp.int64).reshape(n, c, 1) * (row * (h + 2 * PAD))
    top_left = image_start + (y0 * row + x0)[:, None, :]                     # (N, C, H*W)
    flat = padded.ravel()
    wx, wy = wx[:, None, :], wy[:, None, :]
    top = flat[top_left] * (1 - wx) + flat[top_left + 1] * wx
    bottom = flat[top_left + row] * (1 - wx) + flat[top_left + row + 1] * wx
    return (top * (1 - wy) + bottom * wy).reshape(n, c, h, w)

