"""2-D convolution as patch extraction plus one matrix product, channels-last inside."""
import math

from xpnn.backend import CPU, batch_chunks, get_array_module, new_rng, product_width, sliding_windows
from xpnn.backend.cuda import RawKernel, fused_kernels
from xpnn.layers.base import Layer, Parameter, ShapeError, check_input


def channels_last(x):
    """View an (N, C, H, W) array as (N, H, W, C): free when its memory is already channels-last."""
    return x.transpose(0, 2, 3, 1)


def channels_first(x):
    """View an (N, H, W, C) array as (N, C, H, W) without moving memory."""
    return x.transpose(0, 3, 1, 2)


def embed(x, offset, size_hw, step=1):
    """Place `x` in a zero array, every `step` pixels from `offset`: padding and zero-insertion.

    Args:
        x: (N, H, W, C) array.
    Returns:
        (N, size_h, size_w, C) array; `x` itself when nothing would change.
    """
    n, h, w, c = x.shape
    if (offset, tuple(size_hw), step) == (0, (h, w), 1):
        return x
    out = get_array_module(x).zeros((n, *size_hw, c), dtype=x.dtype)
    out[:, offset:offset + (h - 1) * step + 1:step, offset:offset + (w - 1) * step + 1:step] = x
    return out


class Frame:
    """`x` as `embed` would place it, built only when asked for (`array()`, then kept).

    The CPU path builds the array and copies windows out of it; the fused GPU path reads `x`
    straight into the patch matrix, so the zero frame never exists there.
    """

    def __init__(self, x, offset=0, size_hw=None, step=1):
        n, h, w, c = x.shape
        size_hw = (h, w) if size_hw is None else tuple(size_hw)
        if offset + (h - 1) * step >= size_hw[0] or offset + (w - 1) * step >= size_hw[1]:
            raise ValueError(f"an input of {h} x {w} placed every {step} pixels from {offset} "
                             f"does not fit a frame of {size_hw[0]} x {size_hw[1]}")
        self.x, self.offset, self.size_hw, self.step = x, offset, size_hw, step
        self._array = None

    def array(self):
        if self._array is None:
            self._array = embed(self.x, self.offset, self.size_hw, self.step)
        return self._array


# x: contiguous (N, H, W, C) placed in a frame every `step` pixels from `offset`; col:
# (rows = N * Ho * Wo, cols = C * k * k), columns ordered (C, kh, kw) so that an (O, C, k, k)
# weight is the kernel matrix as it lies. Each work item is one column of `rows_per_item`
# consecutive rows: neighbouring threads write neighbouring columns, and the output position
# is stepped along instead of divided out for every entry (integer division is slow on a GPU).
IM2COL = RawKernel(r"""
extern "C" __global__ void xpnn_im2col(
        const T* x, T* col, long long work, int rows, int cols, int rows_per_item,
        int h, int w, int c, int ho, int wo, int k, int stride, int offset, int step) {
    XPNN_GRID_STRIDE_LOOP(item, work) {
        int j = (int)(item % cols);
        int first = (int)(item / cols) * rows_per_item;
        int last = first + rows_per_item < rows ? first + rows_per_item : rows;
        int b = j % k, a = (j / k) % k, channel = j / (k * k);
        int ox = first % wo, oy = (first / wo) % ho, n = first / (wo * ho);
        for (int r = first; r < last; ++r) {
            int fy = oy * stride + a - offset;   /* frame position relative to x's first pixel */
            int fx = ox * stride + b - offset;
            T value = 0;
            if (fy >= 0 && fx >= 0 && (step == 1 || (fy % step == 0 && fx % step == 0))) {
                fy /= step;
                fx /= step;
                if (fy < h && fx < w) value = x[(((long long)n * h + fy) * w + fx) * c + channel];
            }
            col[(long long)r * cols + j] = value;
            if (++ox == wo) {
                ox = 0;
                if (++oy == ho) {
                    oy = 0;
                    ++n;
                }
            }
        }
    }
}
""", "xpnn_im2col", ["int64"] + ["int32"] * 12)
IM2COL_ROWS_PER_ITEM = 32


def patch_matrix(windows):
    """Copy windows into a patch matrix, one row per output pixel.

    Args:
        windows: (N, Ho, Wo, k, k, C) strided view (`backend.sliding_windows`).
    Returns:
        (N * Ho * Wo, k * k * C) matrix, columns ordered (kh, kw, C). In memory it is laid out
        whichever way makes the copy run along long contiguous stretches of the input: row-major
        when a window row (k * C values) is at least as long as an output row, else column-major
        (few channels, such as a network's first layer on 1-channel images).
    """
    n, ho, wo, kh, kw, c = windows.shape
    xp = get_array_module(windows)
    if kw * c >= wo:
        col = xp.empty(windows.shape, dtype=windows.dtype)
        col[...] = windows
        return col.reshape(n * ho * wo, kh * kw * c)
    col_t = xp.empty((kh, kw, c, n, ho, wo), dtype=windows.dtype)
    col_t[...] = windows.transpose(3, 4, 5, 0, 1, 2)
    return col_t.reshape(kh * kw * c, n * ho * wo).T


def fused_patch_matrix(frame, kernel_size, stride):
    """The whole batch's patch matrix of a `Frame`, by one CUDA kernel reading `frame.x`;
    columns ordered (C, kh, kw)."""
    xp = get_array_module(frame.x)
    x = xp.ascontiguousarray(frame.x)
    n, h, w, c = x.shape
    k = kernel_size
    ho = (frame.size_hw[0] - k) // stride + 1
    wo = (frame.size_hw[1] - k) // stride + 1
    rows, cols = n * ho * wo, c * k * k
    col = xp.empty((rows, cols), dtype=x.dtype)
    work = -(-rows // IM2COL_ROWS_PER_ITEM) * cols
    IM2COL(work, (x, col, work, rows, cols, IM2COL_ROWS_PER_ITEM, h, w, c, ho, wo, k, stride,
                  frame.offset, frame.step), x.dtype)
    return col


def patch_chunks(frame, kernel_size, stride):
    """Yield ``(batch slice, patch matrix of that slice)`` over a `Frame`, a cache-sized chunk at
    a time (the whole batch at once on a GPU). Columns are ordered as `patch_order` says."""
    if fused_kernels(get_array_module(frame.x)):
        yield slice(0, frame.x.shape[0]), fused_patch_matrix(frame, kernel_size, stride)
        return
    x = frame.array()
    windows = sliding_windows(x, kernel_size, kernel_size, stride)
    n, ho, wo = windows.shape[:3]
    row_bytes = kernel_size * kernel_size * x.shape[3] * x.itemsize
    for chunk in batch_chunks(get_array_module(x), n, ho * wo * row_bytes):
        yield chunk, patch_matrix(windows[chunk])


def patch_order(xp):
    """How patch-matrix columns are ordered: ``"kkc"`` (kh, kw, C) on the CPU path, where each
    window row is one contiguous copy; ``"ckk"`` (C, kh, kw) with fused kernels."""
    return "ckk" if fused_kernels(xp) else "kkc"


def kernel_matrix(kernel, order):
    """The (k * k * C, O) matrix of an (O, C, k, k) kernel, rows in patch column `order`."""
    o = kernel.shape[0]
    if order == "ckk":
        return kernel.reshape(o, -1).T  # a view when the kernel is contiguous
    return kernel.transpose(2, 3, 1, 0).reshape(-1, o)


def kernel_of_matrix(matrix, shape, order):
    """Inverse of `kernel_matrix`: the (O, C, k, k) view of a (k * k * C, O) matrix."""
    o, c, k, _ = shape
    if order == "ckk":
        return matrix.T.reshape(o, c, k, k)
    return matrix.reshape(k, k, c, o).transpose(3, 2, 0, 1)


def correlate(frame, kernel, stride, out, bias=None):
    """out <- every (k x k) window of a `Frame` times `kernel` (+ bias).

    Args:
        frame: a `Frame` of an (N, H, W, C) input.
        kernel: (O, C, k, k) weights, any strides.
        out: (N, Ho, Wo, O) C-contiguous output array.
        bias: optional (O,) added to every output pixel.
    """
    xp = get_array_module(out)
    kernel_size = kernel.shape[2]
    w_mat = kernel_matrix(kernel, patch_order(xp))
    o = out.shape[3]
    width = product_width(xp, o)
    if width != o:
        w_mat = xp.concatenate([w_mat, xp.zeros((w_mat.shape[0], width - o), w_mat.dtype)], 1)
    for chunk, col in patch_chunks(frame, kernel_size, stride):
        out_rows = out[chunk].reshape(-1, o)
        if width == o:
            xp.matmul(col, w_mat, out=out_rows)
            if bias is not None:
                out_rows += bias  # while the chunk is still in cache
        elif bias is not None:
            xp.add((col @ w_mat)[:, :o], bias, out=out_rows)
        else:
            out_rows[...] = (col @ w_mat)[:, :o]
    return out


class ConvLayer(Layer):
    """2-D convolution (cross-correlation) with a bias per output channel.

    Zero padding of ``(kernel_size - 1) // 2`` on all four sides; windows that would run past the
    padded edge are dropped, so ``Ho = (H + 2 * pad - kernel_size) // stride + 1``.

    Shapes: input (N, in_channels, H, W) -> output (N, out_channels, Ho, Wo);
    weight (out_channels, in_channels, kernel_size, kernel_size); bias (out_channels,).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, rng=None,
                 dtype="float32"):
        for name, value in [("in_channels", in_channels), ("out_channels", out_channels),
                            ("kernel_size", kernel_size), ("stride", stride)]:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ConvLayer {name} must be a positive integer, got {value!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = (kernel_size - 1) // 2
        shapes = self.parameter_shapes(in_channels, out_channels, kernel_size)
        fan_in = in_channels * kernel_size * kernel_size
        weight = new_rng(rng).standard_normal(shapes["weight"])
        self.weight = Parameter(CPU.xp.asarray(weight * math.sqrt(2.0 / fan_in), dtype=dtype))
        self.bias = Parameter(CPU.xp.zeros(shapes["bias"], dtype=dtype))

    @classmethod
    def parameter_shapes(cls, in_channels, out_channels, kernel_size, *args, **kwargs):
        return {"weight": (out_channels, in_channels, kernel_size, kernel_size),
                "bias": (out_channels,)}

    def describe(self):
        k = self.kernel_size
        return (f"Kernel: ({k}, {k}) In Channels {self.in_channels} "
                f"Out Channels {self.out_channels} Stride {self.stride}")

    def output_shape(self, input_shape):
        check_input(self, input_shape, 4, self.in_channels)
        n, _, h, w = input_shape
        size_h = (h + 2 * self.padding - self.kernel_size) // self.stride + 1
        size_w = (w + 2 * self.padding - self.kernel_size) // self.stride + 1
        if size_h < 1 or size_w < 1:
            raise ShapeError(
                f"ConvLayer ({self.describe()}): kernel {self.kernel_size} with padding "
                f"{self.padding} does not fit an input of {h} x {w}"
            )
        return (n, self.out_channels, size_h, size_w)

    def forward(self, x):
        n, o, ho, wo = self.output_shape(x.shape)
        x = x.astype(self.weight.dtype, copy=False)
        xp = get_array_module(x)
        h, w = x.shape[2:]
        p = self.padding
        self._input = Frame(channels_last(x), p, (h + 2 * p, w + 2 * p))
        out = xp.empty((n, ho, wo, o), dtype=x.dtype)
        correlate(self._input, self.weight.data, self.stride, out, self.bias.data)
        return channels_first(out)

    def backward(self, grad_out):
        xp = get_array_module(grad_out)
        k, c, s = self.kernel_size, self.in_channels, self.stride
        g = channels_last(grad_out)
        n, ho, wo, o = g.shape
        g_mat = g.reshape(n * ho * wo, o)
        frame, self._input = self._input, None
        # The patch matrix is rebuilt chunk by chunk rather than kept from forward: cheaper
        # than reading a stored one back from main memory, and far smaller.
        grad_w = None
        for chunk, col in patch_chunks(frame, k, s):
            part = col.T @ g_mat[chunk.start * ho * wo:chunk.stop * ho * wo]
            grad_w = part if grad_w is None else xp.add(grad_w, part, out=grad_w)
        self.weight.grad += kernel_of_matrix(grad_w, self.weight.shape, patch_order(xp))
        self.bias.grad += xp.ones(n * ho * wo, dtype=g.dtype) @ g_mat  # faster than a column sum
        if not self.input_grad_needed:  # the first layer: nobody needs d input
            return None
        # d input = stride-1 correlation of the zero-inserted output gradient, placed so that
        # input pixel y sees output rows i with i * stride + a = y + padding, with the kernel
        # flipped in space and transposed in channels.
        h, w = frame.x.shape[1:3]
        flipped = self.weight.data.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]  # (C, O, k, k)
        g_frame = Frame(g, k - 1 - self.padding, (h + k - 1, w + k - 1), s)
        grad_x = correlate(g_frame, flipped, 1, xp.empty((n, h, w, c), dtype=g.dtype))
        return channels_first(grad_x)
