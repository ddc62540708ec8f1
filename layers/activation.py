"""Element-wise activations. They keep the memory layout of their input (`backend.layout`)."""
from xpnn.backend import get_array_module
from xpnn.backend.activations import leaky_relu, leaky_relu_backward, relu_backward
from xpnn.layers.base import Layer


class ReLULayer(Layer):
    """max(x, 0), any shape. The gradient at 0 is taken as 0."""

    def forward(self, x):
        xp = get_array_module(x)
        self._out = xp.maximum(x, 0, out=xp.empty_like(x))
        return self._out

    def backward(self, grad_out):
        out, self._out = self._out, None
        return relu_backward(grad_out, out)


class LeakyReLULayer(Layer):
    """x where x > 0, else slope * x, any shape."""

    def __init__(self, slope=0.01):
        if not 0 <= slope < 1:
            raise ValueError(f"LeakyReLULayer slope must be in [0, 1), got {slope!r}")
        self.slope = float(slope)

    def forward(self, x):
        y, self._cache = leaky_relu(x, self.slope)
        return y

    def backward(self, grad_out):
        cache, self._cache = self._cache, None
        return leaky_relu_backward(grad_out, cache, self.slope)
