"""Layers made of layers: a chain, a sum, and the residual block built from both."""
from xpnn.backend import get_array_module
from xpnn.layers.activation import ReLULayer
from xpnn.layers.base import Layer
from xpnn.layers.conv import ConvLayer


class SequentialLayer(Layer):
    """Applies its layers in order; backward runs their backwards in reverse order."""

    def __init__(self, layers):
        self.layers = list(layers)
        for index, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"SequentialLayer item {index} is {layer!r}, not a Layer")

    def named_children(self):
        for index, layer in enumerate(self.layers):
            yield str(index), layer

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, index):
        return self.layers[index]

    def output_shape(self, input_shape):
        for layer in self.layers:
            input_shape = layer.output_shape(input_shape)
        return input_shape

    def forward_flops(self, input_shape):
        total = 0
        for layer in self.layers:
            total += layer.forward_flops(input_shape)
            input_shape = layer.output_shape(input_shape)
        return total

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, grad_out):
        for layer in reversed(self.layers):
            grad_out = layer.backward(grad_out)
        return grad_out


class AddLayer(Layer):
    """Sum of any number of same-shape inputs; backward returns one gradient per input."""

    def forward(self, *inputs):
        if not inputs:
            raise ValueError("AddLayer needs at least one input")
        shapes = {tuple(x.shape) for x in inputs}
        if len(shapes) != 1:
            raise ValueError(f"AddLayer inputs must share one shape, got {[x.shape for x in inputs]}")
        self._count = len(inputs)
        xp = get_array_module(inputs[0])
        total = xp.empty_like(inputs[0])  # keeps the input's layout (`backend.layout`)
        if len(inputs) > 1:
            xp.add(inputs[0], inputs[1], out=total)
        else:
            total[...] = inputs[0]
        for x in inputs[2:]:
            total += x
        return total

    def backward(self, grad_out):
        return (grad_out,) * self._count


class ResNetBlock(Layer):
    """relu2(conv_layers(x) + x), with conv_layers = conv, ReLU, conv (same channels, stride 1).

    Shapes: (N, channels, H, W) -> (N, channels, H, W).
    """

    def __init__(self, channels, kernel_size=3, activation=ReLULayer, rng=None,
                 dtype="float32"):
        if not isinstance(kernel_size, int) or kernel_size % 2 == 0:
            raise ValueError(f"ResNetBlock kernel_size must be odd so the block keeps its input "
                             f"size (3, 5, ...), got {kernel_size!r}")
        self.conv_layers = SequentialLayer([
            ConvLayer(channels, channels, kernel_size, rng=rng, dtype=dtype),
            activation(),
            ConvLayer(channels, channels, kernel_size, rng=rng, dtype=dtype),
        ])
        self.add_layer = AddLayer()
        self.relu2 = activation()

    @classmethod
    def parameter_shapes(cls, channels, kernel_size=3, *args, **kwargs):
        conv = ConvLayer.parameter_shapes(channels, channels, kernel_size)
        return {f"conv_layers.{index}.{name}": shape
                for index in (0, 2) for name, shape in conv.items()}

    def output_shape(self, input_shape):
        return self.conv_layers.output_shape(input_shape)

    def forward_flops(self, input_shape):  # every child takes (and keeps) the input's shape
        return sum(child.forward_flops(input_shape) for _, child in self.named_children())

    def forward(self, x):
        return self.relu2.forward(self.add_layer.forward(self.conv_layers.forward(x), x))

    def backward(self, grad_out):
        grad_sum = self.relu2.backward(grad_out)
        grad_branch, grad_skip = self.add_layer.backward(grad_sum)
        grad_x = self.conv_layers.backward(grad_branch)
        grad_x += grad_skip
        return grad_x
