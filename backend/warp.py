"""Affine warps of a batch of images with bilinear sampling (the primitive under augmentation).

    out = warp_affine(images, inverse)    # images (N, C, H, W) float, inverse (N, 2, 3)

Output pixel (y, x) of image n reads the input at
    (x_src, y_src) = inverse[n] @ (x, y, 1)
in pixel coordinates (x across, y down, the first pixel's centre at 0); between pixels the four
neighbours are mixed bilinearly, and points outside the image read 0. A source point with
integer coordinates reads that pixel exactly, so shifts by whole pixels and mirror images
lose nothing.

One implementation serves every device: it is plain `xp` array code (a grid, four gathers and a
weighted sum), a handful of whole-batch operations, so it is already what a GPU wants and costs
the CPU little against a training step.
"""
from xpnn.backend.device import get_array_module


def warp_affine(images, inverse):
    """Warp each image of `images` (N, C, H, W) by its 2 x 3 map `inverse` (N, 2, 3, from
    output to input coordinates); returns a new (N, C, H, W) array of the images' dtype."""
    xp = get_array_module(images)
    n, c, h, w = images.shape
    inverse = inverse.astype(images.dtype, copy=False)
    ys, xs = xp.meshgrid(xp.arange(h, dtype=images.dtype), xp.arange(w, dtype=images.dtype),
                         indexing="ij")
    grid = xp.stack([xs.ravel(), ys.ravel(), xp.ones(h * w, dtype=images.dtype)])  # (3, H*W)
    source = inverse @ grid                                                        # (N, 2, H*W)
    x_src, y_src = source[:, 0], source[:, 1]
    x0, y0 = xp.floor(x_src), xp.floor(y_src)
    wx, wy = x_src - x0, y_src - y0
    x0, y0 = x0.astype(xp.int64), y0.astype(xp.int64)

    flat = images.reshape(n, c, h * w)
    out = xp.zeros((n, c, h * w), dtype=images.dtype)
    for dy, weight_y in ((0, 1 - wy), (1, wy)):
        for dx, weight_x in ((0, 1 - wx), (1, wx)):
            x, y = x0 + dx, y0 + dy
            inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
            index = xp.where(inside, y * w + x, 0)                         # (N, H*W)
            weight = xp.where(inside, weight_y * weight_x, 0).astype(images.dtype)
            out += xp.take_along_axis(flat, index[:, None, :], axis=2) * weight[:, None, :]
    return out.reshape(n, c, h, w)
