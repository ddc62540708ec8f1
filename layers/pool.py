"""Max pooling over square windows, channels-last inside (`backend.pool` does the work)."""
from xpnn.backend.layout import channels_first, channels_last
from xpnn.backend.pool import max_pool, max_pool_backward
from xpnn.layers.base import Layer, ShapeError, check_input, check_positive_ints


class MaxPoolLayer(Layer):
    """Max over each (kernel_size x kernel_size) window, moved `stride` pixels at a time.

    No padding; windows that would run past the bottom or right edge are dropped, so
    ``Ho = (H - kernel_size) // stride + 1``. The gradient of a window goes to its first maximum
    in row-major order, or to its first NaN where it holds one (its maximum is then NaN).

    Shapes: input (N, C, H, W) -> output (N, C, Ho, Wo).
    """

    def __init__(self, kernel_size, stride=None):
        self.kernel_size, self.stride = kernel_size, kernel_size if stride is None else stride
        check_positive_ints("MaxPoolLayer", kernel_size=kernel_size, stride=self.stride)

    def describe(self):
        return f"kernel: {self.kernel_size} stride: {self.stride}"

    def output_shape(self, input_shape):
        check_input(self, input_shape, 4)
        n, c, h, w = input_shape
        if h < self.kernel_size or w < self.kernel_size:
            raise ShapeError(f"MaxPoolLayer ({self.describe()}): kernel {self.kernel_size} "
                             f"is larger than the input of {h} x {w}")
        return (n, c, (h - self.kernel_size) // self.stride + 1,
                (w - self.kernel_size) // self.stride + 1)

    def forward_flops(self, input_shape):
        """Each output value: kernel_size^2 - 1 comparisons."""
        return super().forward_flops(input_shape) * (self.kernel_size ** 2 - 1)

    def forward(self, x):
        self.output_shape(x.shape)
        x = channels_last(x)
        out, self._indices = max_pool(x, self.kernel_size, self.stride)
        self._input_shape = x.shape
        return channels_first(out)

    def backward(self, grad_out):
        indices, self._indices = self._indices, None
        return channels_first(max_pool_backward(channels_last(grad_out), indices,
                                                self._input_shape, self.kernel_size, self.stride))
