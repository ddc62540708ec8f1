"""Max pooling over square windows, channels-last inside."""
from xpnn.backend import few_kernels, get_array_module, sliding_windows
from xpnn.backend.cuda import RawKernel, fused_kernels
from xpnn.layers.base import Layer, ShapeError, check_input
from xpnn.layers.conv import channels_first, channels_last

# x, out, winner: contiguous (N, H, W, C), (N, Ho, Wo, C), (N, Ho, Wo, C). One thread per output;
# `v != v` lets a NaN through as the maximum, as xp.maximum does.
MAXPOOL_FORWARD = RawKernel(r"""
extern "C" __global__ void xpnn_maxpool_forward(
        const T* x, T* out, int* winner, long long size,
        int h, int w, int c, int ho, int wo, int k, int s) {
    XPNN_GRID_STRIDE_LOOP(i, size) {
        xpnn_nhwc o = xpnn_unravel_nhwc(i, ho, wo, c);
        const T* window = x + ((o.n * h + (long long)o.y * s) * w + (long long)o.x * s) * c + o.c;
        T best = window[0];
        int best_at = 0;
        for (int a = 0; a < k; ++a) {
            for (int b = 0; b < k; ++b) {
                T v = window[((long long)a * w + b) * c];
                if (v > best || v != v) {
                    best = v;
                    best_at = a * k + b;
                }
            }
        }
        out[i] = best;
        winner[i] = best_at;
    }
}
""", "xpnn_maxpool_forward", ["int64"] + ["int32"] * 7)

# g, winner: contiguous (N, Ho, Wo, C); dx: (N, H, W, C). One thread per input pixel, gathering
# from every window that holds it (no atomics, any stride).
MAXPOOL_BACKWARD = RawKernel(r"""
extern "C" __global__ void xpnn_maxpool_backward(
        const T* g, const int* winner, T* dx, long long size,
        int h, int w, int c, int ho, int wo, int k, int s) {
    XPNN_GRID_STRIDE_LOOP(i, size) {
        xpnn_nhwc p = xpnn_unravel_nhwc(i, h, w, c);
        int y = p.y, x = p.x;
        int oh_first = y >= k ? (y - k) / s + 1 : 0;   /* windows oh with oh*s <= y < oh*s + k */
        int oh_last = y / s < ho - 1 ? y / s : ho - 1;
        int ow_first = x >= k ? (x - k) / s + 1 : 0;
        int ow_last = x / s < wo - 1 ? x / s : wo - 1;
        T total = 0;
        for (int oh = oh_first; oh <= oh_last; ++oh) {
            for (int ow = ow_first; ow <= ow_last; ++ow) {
                long long o = ((p.n * ho + oh) * wo + ow) * c + p.c;
                if (winner[o] == (y - oh * s) * k + (x - ow * s)) {
                    total += g[o];
                }
            }
        }
        dx[i] = total;
    }
}
""", "xpnn_maxpool_backward", ["int64"] + ["int32"] * 7)


class MaxPoolLayer(Layer):
    """Max over each (kernel_size x kernel_size) window, moved `stride` pixels at a time.

    No padding; windows that would run past the bottom or right edge are dropped, so
    ``Ho = (H - kernel_size) // stride + 1``. Where a window holds several equal maxima, the
    gradient goes to the first in row-major order.

    Shapes: input (N, C, H, W) -> output (N, C, Ho, Wo).
    """

    def __init__(self, kernel_size, stride=None):
        stride = kernel_size if stride is None else stride
        for name, value in [("kernel_size", kernel_size), ("stride", stride)]:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"MaxPoolLayer {name} must be a positive integer, got {value!r}")
        self.kernel_size = kernel_size
        self.stride = stride

    def describe(self):
        return f"kernel: {self.kernel_size} stride: {self.stride}"

    def output_shape(self, input_shape):
        check_input(self, input_shape, 4)
        n, c, h, w = input_shape
        size_h = (h - self.kernel_size) // self.stride + 1
        size_w = (w - self.kernel_size) // self.stride + 1
        if h < self.kernel_size or w < self.kernel_size:
            raise ShapeError(f"MaxPoolLayer ({self.describe()}): kernel {self.kernel_size} "
                             f"is larger than the input of {h} x {w}")
        return (n, c, size_h, size_w)

    def forward(self, x):
        _, _, ho, wo = self.output_shape(x.shape)
        xp = get_array_module(x)
        x_last = channels_last(x)
        self._fused = fused_kernels(xp)
        if self._fused:
            out, winner = self._max_fused(x_last, ho, wo)
        elif few_kernels(xp):
            out, winner = self._max_over_windows(x_last)
        else:
            out, winner = self._max_over_offsets(x_last, ho, wo)
        # winner[...] = position in the window of the first maximum, row-major
        self._winner, self._input_shape = winner, x_last.shape
        return channels_first(out)

    def backward(self, grad_out):
        xp = get_array_module(grad_out)
        g = channels_last(grad_out)
        winner, self._winner = self._winner, None
        if self._fused:
            grad_x = self._route_fused(g, winner)
        elif few_kernels(xp) and self.stride >= self.kernel_size:
            grad_x = self._route_to_windows(g, winner)
        else:
            grad_x = self._route_by_offsets(g, winner)
        return channels_first(grad_x)

    # -- fused CUDA kernels: one each way --------------------------------------------------------

    def _geometry(self, input_shape, ho, wo):
        """The kernels' shape arguments: h, w, c, ho, wo, k, s."""
        _, h, w, c = input_shape
        return h, w, c, ho, wo, self.kernel_size, self.stride

    def _max_fused(self, x_last, ho, wo):
        xp = get_array_module(x_last)
        x_last = xp.ascontiguousarray(x_last)
        n, h, w, c = x_last.shape
        out = xp.empty((n, ho, wo, c), dtype=x_last.dtype)
        winner = xp.empty((n, ho, wo, c), dtype=xp.int32)
        MAXPOOL_FORWARD(out.size, (x_last, out, winner, out.size,
                                   *self._geometry(x_last.shape, ho, wo)), x_last.dtype)
        return out, winner

    def _route_fused(self, g, winner):
        xp = get_array_module(g)
        g = xp.ascontiguousarray(g)
        grad_x = xp.empty(self._input_shape, dtype=g.dtype)
        MAXPOOL_BACKWARD(grad_x.size, (g, winner, grad_x, grad_x.size,
                                       *self._geometry(self._input_shape, *winner.shape[1:3])),
                         g.dtype)
        return grad_x

    # -- the GPU way: three operations each way, over the whole batch --------------------------

    def _max_over_windows(self, x_last):
        """(max, winner), both (N, Ho, Wo, C), from a copy of the windows as (..., C, k * k)."""
        k = self.kernel_size
        windows = sliding_windows(x_last, k, k, self.stride)  # (N, Ho, Wo, k, k, C)
        n, ho, wo, _, _, c = windows.shape
        flat = get_array_module(x_last).empty((n, ho, wo, c, k, k), dtype=x_last.dtype)
        flat[...] = windows.transpose(0, 1, 2, 5, 3, 4)
        flat = flat.reshape(n, ho, wo, c, k * k)
        return flat.max(axis=4), flat.argmax(axis=4)

    def _route_to_windows(self, g, winner):
        """d input for windows that do not overlap: each window gets g at its winner, 0 elsewhere.

        Args:
            g: (N, Ho, Wo, C) gradient; winner: (N, Ho, Wo, C) positions.
        Returns:
            (N, H, W, C) array; pixels outside every window are 0.
        """
        xp = get_array_module(g)
        k, s = self.kernel_size, self.stride
        n, h, w, c = self._input_shape
        ho, wo = winner.shape[1:3]
        tiled = s == k and ho * k == h and wo * k == w  # every input pixel is in one window
        grad_x = (xp.empty if tiled else xp.zeros)(self._input_shape, dtype=g.dtype)
        is_winner = winner[:, :, :, None, None, :] == xp.arange(k * k).reshape(k, k, 1)
        xp.multiply(g[:, :, :, None, None, :], is_winner, out=sliding_windows(grad_x, k, k, s))
        return grad_x

    # -- the CPU way: one pass per offset in the window, each over contiguous channel rows ------

    def _window_slices(self, ho, wo):
        """Yield, for each offset (a, b) inside the window, the slices it reads from the input."""
        k, s = self.kernel_size, self.stride
        for a in range(k):
            for b in range(k):
                yield (slice(None), slice(a, a + (ho - 1) * s + 1, s),
                       slice(b, b + (wo - 1) * s + 1, s))

    def _max_over_offsets(self, x_last, ho, wo):
        """(max, winner), both (N, Ho, Wo, C), as running maxima over the k * k offsets."""
        xp = get_array_module(x_last)
        windows = self._window_slices(ho, wo)
        out = x_last[next(windows)].copy()
        winner = xp.zeros(out.shape, dtype=xp.uint8)
        for position, index in enumerate(windows, start=1):
            candidate = x_last[index]
            # positions only grow, so "the latest strictly better" is a running maximum
            xp.maximum(winner, (candidate > out).astype(xp.uint8) * position, out=winner)
            xp.maximum(out, candidate, out=out)
        return out, winner

    def _route_by_offsets(self, g, winner):
        """d input, (N, H, W, C): g sent to each offset where it won (summed where windows overlap)."""
        grad_x = get_array_module(g).zeros(self._input_shape, dtype=g.dtype)
        overlapping = self.stride < self.kernel_size
        for position, index in enumerate(self._window_slices(*winner.shape[1:3])):
            routed = g * (winner == position)
            if overlapping:
                grad_x[index] += routed
            else:
                grad_x[index] = routed
        return grad_x
