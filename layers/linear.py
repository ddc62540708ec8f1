"""Fully connected layer and the flattening that feeds it."""
import math

from xpnn.backend import CPU, get_array_module, new_rng
from xpnn.backend.matmul import matmul
from xpnn.layers.base import SHAPES_ONLY, Layer, Parameter, check_input, check_positive_ints


class LinearLayer(Layer):
    """y = x @ weight + bias.

    Shapes: input (N, in_features) -> output (N, out_features);
    weight (in_features, out_features); bias (out_features,).
    """

    def __init__(self, in_features, out_features, rng=None, dtype="float32"):
        check_positive_ints("LinearLayer", in_features=in_features, out_features=out_features)
        self.in_features = in_features
        self.out_features = out_features
        if rng is SHAPES_ONLY:
            return
        shapes = self.parameter_shapes(in_features, out_features)
        weight = new_rng(rng).standard_normal(shapes["weight"])
        self.weight = Parameter(CPU.xp.asarray(weight * math.sqrt(2.0 / in_features), dtype=dtype))
        self.bias = Parameter(CPU.xp.zeros(shapes["bias"], dtype=dtype))

    @classmethod
    def parameter_shapes(cls, in_features, out_features, *args, **kwargs):
        return {"weight": (in_features, out_features), "bias": (out_features,)}

    def describe(self):
        return f"({self.in_features}, {self.out_features})"

    def output_shape(self, input_shape):
        check_input(self, input_shape, 2, self.in_features)
        return (input_shape[0], self.out_features)

    def forward_flops(self, input_shape):
        """Each output value: in_features multiply-adds (the bias is the first add)."""
        return math.prod(self.output_shape(input_shape)) * 2 * self.in_features

    def forward(self, x):
        self.output_shape(x.shape)
        self._x = x.astype(self.weight.dtype, copy=False)
        return matmul(self._x, self.weight.data) + self.bias.data

    def backward(self, grad_out):
        self.weight.grad += matmul(self._x.T, grad_out)
        self.bias.grad += grad_out.sum(axis=0)
        self._x = None
        if not self.input_grad_needed:
            return None
        return matmul(grad_out, self.weight.data.T)


class FlattenLayer(Layer):
    """(N, C, H, W) -> (N, C * H * W) in C, H, W order (any input of rank >= 2)."""

    def output_shape(self, input_shape):
        return (input_shape[0], math.prod(input_shape[1:]))

    def forward_flops(self, input_shape):
        return 0  # a view

    def forward(self, x):
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad_out):
        return get_array_module(grad_out).reshape(grad_out, self._shape)
