"""2-D convolution, channels-last inside (`backend.layout`), by `backend.conv`'s correlations."""
import math

from xpnn.backend import CPU, get_array_module, new_rng
from xpnn.backend.conv import PaddedInput, correlate, kernel_gradient
from xpnn.backend.layout import channels_first, channels_last
from xpnn.backend.matmul import matmul
from xpnn.layers.base import (SHAPES_ONLY, Layer, Parameter, ShapeError, check_input,
                              check_positive_ints)


class ConvLayer(Layer):
    """2-D convolution (cross-correlation) with a bias per output channel.

    Zero padding of ``(kernel_size - 1) // 2`` on all four sides; windows that would run past the
    padded edge are dropped, so ``Ho = (H + 2 * pad - kernel_size) // stride + 1``.

    Shapes: input (N, in_channels, H, W) -> output (N, out_channels, Ho, Wo);
    weight (out_channels, in_channels, kernel_size, kernel_size); bias (out_channels,).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, rng=None,
                 dtype="float32"):
        check_positive_ints("ConvLayer", in_channels=in_channels, out_channels=out_channels,
                            kernel_size=kernel_size, stride=stride)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = (kernel_size - 1) // 2
        if rng is SHAPES_ONLY:
            return
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

    def forward_flops(self, input_shape):
        """Each output value: in_channels * k * k multiply-adds (the bias is the first add)."""
        k = self.kernel_size
        return math.prod(self.output_shape(input_shape)) * 2 * self.in_channels * k * k

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
        self.output_shape(x.shape)
        x = x.astype(self.weight.dtype, copy=False)
        h, w = x.shape[2:]
        p = self.padding
        self._input = PaddedInput(channels_last(x), p, (h + 2 * p, w + 2 * p))
        return channels_first(correlate(self._input, self.weight.data, self.stride,
                                         self.bias.data))

    def backward(self, grad_out):
        k, s, p = self.kernel_size, self.stride, self.padding
        g = channels_last(grad_out)
        padded, self._input = self._input, None
        self.weight.grad += kernel_gradient(padded, g, k, s)
        rows = g.reshape(-1, g.shape[3])
        ones = get_array_module(g).ones(rows.shape[0], dtype=g.dtype)
        self.bias.grad += matmul(ones, rows)  # faster than .sum(0)
        if not self.input_grad_needed:  # the first layer: nobody needs d input
            return None
        # d input = stride-1 correlation of the zero-inserted output gradient, placed so that
        # input pixel y sees output rows i with i * stride + a = y + padding, with the kernel
        # flipped in space and transposed in channels.
        h, w = padded.x.shape[1:3]
        flipped = self.weight.data.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]  # (C, O, k, k)
        return channels_first(correlate(PaddedInput(g, k - 1 - p, (h + k - 1, w + k - 1), s),
                                        flipped, 1))
