"""Element-wise activations. They keep the memory layout of their input."""
from backend import get_array_module
from layers.base import Layer


class ReLULayer(Layer):
    """max(x, 0), any shape. The gradient at 0 is taken as 0."""

    def forward(self, x):
        self._out = get_array_module(x).maximum(x, 0)
        return self._out

    def backward(self, grad_out):
        xp = get_array_module(grad_out)
        grad_x = xp.where(self._out > 0, grad_out, 0)
        self._out = None
        return grad_x


class LeakyReLULayer(Layer):
    """x where x > 0, else slope * x, any shape."""

    def __init__(self, slope=0.01):
        if not 0 <= slope < 1:
            raise ValueError(f"LeakyReLULayer slope must be in [0, 1), got {slope!r}")
        self.slope = float(slope)

    def forward(self, x):
        xp = get_array_module(x)
        self._positive = x > 0
        return xp.where(self._positive, x, x * self.slope)

    def backward(self, grad_out):
        xp = get_array_module(grad_out)
        grad_x = xp.where(self._positive, grad_out, grad_out * self.slope)
        self._positive = None
        return grad_x
