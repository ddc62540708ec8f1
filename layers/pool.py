"""Max pooling over square windows, channels-last inside."""
from backend import get_array_module
from layers.base import Layer, ShapeError, check_input
from layers.conv import channels_first, channels_last


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

    def _window_slices(self, ho, wo):
        """Yield, for each offset (a, b) inside the window, the slices it reads from the input."""
        k, s = self.kernel_size, self.stride
        for a in range(k):
            for b in range(k):
                yield (slice(None), slice(a, a + (ho - 1) * s + 1, s),
                       slice(b, b + (wo - 1) * s + 1, s))

    def forward(self, x):
        _, _, ho, wo = self.output_shape(x.shape)
        xp = get_array_module(x)
        x_last = channels_last(x)
        windows = self._window_slices(ho, wo)
        out = x_last[next(windows)].copy()
        # winner[...] = position in the window of the first maximum, row-major
        winner = xp.zeros(out.shape, dtype=xp.uint8)
        for position, index in enumerate(windows, start=1):
            candidate = x_last[index]
            # positions only grow, so "the latest strictly better" is a running maximum
            xp.maximum(winner, (candidate > out).astype(xp.uint8) * position, out=winner)
            xp.maximum(out, candidate, out=out)
        self._winner, self._input_shape = winner, x_last.shape
        return channels_first(out)

    def backward(self, grad_out):
        xp = get_array_module(grad_out)
        g = channels_last(grad_out)
        winner, self._winner = self._winner, None
        grad_x = xp.zeros(self._input_shape, dtype=g.dtype)
        overlapping = self.stride < self.kernel_size
        for position, index in enumerate(self._window_slices(*winner.shape[1:3])):
            routed = g * (winner == position)
            if overlapping:
                grad_x[index] += routed
            else:
                grad_x[index] = routed
        return channels_first(grad_x)
