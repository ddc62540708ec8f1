"""Correlation of a batch (a `PaddedInput`) with a kernel, and its kernel gradient.

* ``cpu`` and ``gpu``: patch matrices, one row per output pixel and one column per value of a
  window, times the kernel as a matrix (`backend.matmul`); ``cpu`` a chunk of whole images at a
  time (`_chunked_patches`), ``gpu`` the whole batch by one copy.
* ``fused``: direct CUDA kernels (`backend.conv_kernels`); the input gradient (a correlation
  with the flipped kernel view) takes the ``gpu`` patch matrices (DESIGN.md).
"""
from xpnn.backend import conv_kernels
from xpnn.backend.cpu import unpacked_product_limit
from xpnn.backend.device import get_array_module
from xpnn.backend.dispatch import implementation, mode
from xpnn.backend.matmul import matmul
from xpnn.backend.windows import sliding_windows

CHUNK_BYTES = 1 << 19  # ``cpu``: a chunk's patches stay in one core's L2 cache


class PaddedInput:
    """`x` (N, H, W, C) placed every `step` pixels from `offset` in a zero border of `size_hw`;
    the framed array is built only when asked for (`array()`, then kept)."""

    def __init__(self, x, offset=0, size_hw=None, step=1):
        n, h, w, c = x.shape
        size_hw = (h, w) if size_hw is None else tuple(size_hw)
        if offset + (h - 1) * step >= size_hw[0] or offset + (w - 1) * step >= size_hw[1]:
            raise ValueError(f"an input of {h} x {w} placed every {step} pixels from {offset} "
                             f"does not fit a padded size of {size_hw[0]} x {size_hw[1]}")
        self.x, self.offset, self.size_hw, self.step = x, offset, size_hw, step
        self._array = None

    def output_size(self, kernel_size, stride):
        """(Ho, Wo) of a correlation with a `kernel_size` kernel moved `stride` pixels."""
        return tuple((size - kernel_size) // stride + 1 for size in self.size_hw)

    def array(self):
        """The framed (N, size_h, size_w, C) array; `x` itself when nothing would change."""
        if self._array is None:
            x, offset, step = self.x, self.offset, self.step
            n, h, w, c = x.shape
            if (offset, self.size_hw, step) == (0, (h, w), 1):
                self._array = x
            else:
                self._array = get_array_module(x).zeros((n, *self.size_hw, c), dtype=x.dtype)
                self._array[:, offset:offset + (h - 1) * step + 1:step,
                            offset:offset + (w - 1) * step + 1:step] = x
        return self._array


def correlate(padded, kernel, stride, bias=None):
    """Every (k x k) window of `padded` (a `PaddedInput` of an (N, H, W, C) input), `stride`
    pixels apart, times `kernel` (O, C, k, k; any strides), plus `bias` (O,) if given: an
    (N, Ho, Wo, O) C-contiguous array."""
    name = implementation(get_array_module(padded.x))
    if name == "fused":
        return _correlate_direct(padded, kernel, stride, bias)
    return correlate_by_patches(padded, kernel, stride, bias, PATCHES[name])


def _correlate_direct(padded, kernel, stride, bias):
    """``fused``: the direct kernel (TF32 tensor cores at precision tf32) for a forward; the
    input gradient's kernel, a flipped view of the weights, takes the patch matrices."""
    if not kernel.flags.c_contiguous:
        return correlate_by_patches(padded, kernel, stride, bias, PATCHES["gpu"])
    if mode().precision == "tf32":
        return conv_kernels.correlate_tf32(padded, kernel, stride, bias)
    return conv_kernels.correlate(padded, kernel, stride, bias)


def kernel_gradient(padded, grad, kernel_size, stride):
    """d loss / d kernel, (O, C, k, k), of `correlate(padded, kernel, stride)` from `grad`
    (N, Ho, Wo, O) = d loss / d output: the sum over output pixels of each window times `grad`."""
    name = implementation(get_array_module(grad))
    if name == "fused":
        return conv_kernels.kernel_gradient(padded, grad, kernel_size, stride)
    return kernel_gradient_by_patches(padded, grad, kernel_size, stride, PATCHES[name])


def correlate_by_patches(padded, kernel, stride, bias, make_patches):
    """`correlate` through patch matrices: `make_patches(padded, k, stride, columns)` (a value
    of `PATCHES`) yields (batch slice, patch matrix) for products `columns` wide."""
    xp = get_array_module(padded.x)
    k, o = kernel.shape[2], kernel.shape[0]
    out = xp.empty((padded.x.shape[0], *padded.output_size(k, stride), o), dtype=padded.x.dtype)
    w_mat = kernel.transpose(2, 3, 1, 0).reshape(-1, o)  # (k * k * C, O), rows as the patches'
    width = o
    if make_patches is _chunked_patches and o % 8 and o <= 64 and not unpacked_product_limit():
        width = -(-o // 8) * 8  # packed, OpenBLAS runs narrower float32 outputs at half speed
        w_mat = xp.concatenate([w_mat, xp.zeros((w_mat.shape[0], width - o), w_mat.dtype)], 1)
    for chunk, col in make_patches(padded, k, stride, width):
        out_rows = out[chunk].reshape(-1, o)
        if width == o:
            matmul(col, w_mat, out=out_rows)
        else:
            out_rows[...] = matmul(col, w_mat)[:, :o]
    if bias is not None:
        out += bias  # once, not per chunk: each small add held the GIL from the other workers
    return out


def kernel_gradient_by_patches(padded, grad, kernel_size, stride, make_patches):
    """`kernel_gradient` through patch matrices, made as for `correlate_by_patches`."""
    xp = get_array_module(grad)
    n, ho, wo, o = grad.shape
    g_mat = grad.reshape(n * ho * wo, o)
    # rebuilt chunk by chunk, not kept from forward: cheaper than reading it back from memory
    total = None
    for chunk, col in make_patches(padded, kernel_size, stride, o):
        part = matmul(col.T, g_mat[chunk.start * ho * wo:chunk.stop * ho * wo])
        total = part if total is None else xp.add(total, part, out=total)
    k, c = kernel_size, padded.x.shape[3]
    return total.reshape(k, k, c, o).transpose(3, 2, 0, 1)


# -- patch matrices, one way per implementation ----------------------------------------------------

def patch_matrix(windows):
    """Copy `windows`, an (N, Ho, Wo, k, k, C) view (`sliding_windows`), into an
    (N * Ho * Wo, k * k * C) patch matrix, columns ordered (kh, kw, C); row-major where a window
    row (k * C values) is at least as long as an output row, else column-major (few channels),
    so the copy runs along long contiguous stretches of the input."""
    n, ho, wo, kh, kw, c = windows.shape
    xp = get_array_module(windows)
    if kw * c >= wo:
        col = xp.empty(windows.shape, dtype=windows.dtype)
        col[...] = windows
        return col.reshape(n * ho * wo, kh * kw * c)
    col_t = xp.empty((kh, kw, c, n, ho, wo), dtype=windows.dtype)
    col_t[...] = windows.transpose(3, 4, 5, 0, 1, 2)
    return col_t.reshape(kh * kw * c, n * ho * wo).T


def _chunked_patches(padded, kernel_size, stride, columns):
    """``cpu``: (batch slice, patch matrix) a chunk of whole images at a time: as many as keep
    the product with a `columns`-wide matrix unpacked (`cpu.unpacked_product_limit`), else as
    fit `CHUNK_BYTES`."""
    windows = sliding_windows(padded.array(), kernel_size, stride)
    n, ho, wo, _, _, c = windows.shape
    item_values = ho * wo * kernel_size * kernel_size * c
    limit = unpacked_product_limit()
    if item_values * columns <= limit:
        size = limit // (item_values * columns)
    else:
        size = CHUNK_BYTES // (item_values * windows.itemsize)
    size = max(1, min(n, size))
    for start in range(0, n, size):
        chunk = slice(start, min(start + size, n))
        yield chunk, patch_matrix(windows[chunk])


def _whole_batch_patches(padded, kernel_size, stride, columns):
    """``gpu``: the whole batch's patch matrix by one copy."""
    windows = sliding_windows(padded.array(), kernel_size, stride)
    yield slice(0, windows.shape[0]), patch_matrix(windows)


# Each array implementation's patch matrices, columns ordered (kernel row, kernel column, channel)
PATCHES = {"cpu": _chunked_patches, "gpu": _whole_batch_patches}
