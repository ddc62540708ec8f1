"""`Parameter` and `Layer`, the contract every layer keeps: `forward(x)` returns the output and
keeps what `backward` needs; `backward(grad_out)` adds to the parameters' ``.grad`` and returns
the gradient with respect to the input. Images are N x C x H x W at every layer boundary (views
of channels-last memory after conv and pooling: `backend.layout`).
"""
import math

from xpnn.backend import CPU, get_array_module, get_device

SHAPES_ONLY = "shapes only"  # the `rng` of a layer made to check shapes only (`nets.check`)


class ShapeError(ValueError):
    """An array of the wrong shape was given to a layer."""


class Parameter:
    """A trainable array and its gradient, on one device with one shape. Both are updated in
    place, so views of a packed buffer (`optim.PackedParameters`) stay valid."""

    def __init__(self, data):
        self.data = data
        self.grad = get_array_module(data).zeros_like(data)

    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    size = property(lambda self: self.data.size)

    def zero_grad(self):
        self.grad[...] = 0

    def __repr__(self):
        return f"Parameter(shape={tuple(self.shape)}, dtype={self.dtype})"


class Layer:
    """Base class: parameters, children, device and dtype moves, state dicts and the printed form.
    Subclasses hold their parameters as `Parameter` attributes and their sub-layers as `Layer`
    attributes (found in attribute order)."""

    input_grad_needed = True  # a network sets this False on its first layer to skip that work

    @classmethod
    def parameter_shapes(cls, *args, **kwargs):
        """{name: shape} of the parameters ``cls(*args, **kwargs)`` would hold (not made)."""
        return {}

    def forward(self, *inputs):
        raise NotImplementedError

    def output_shape(self, input_shape):
        """Output shape for an input of `input_shape` (by default the same); `ShapeError` if the
        layer cannot take it."""
        return tuple(input_shape)

    def forward_flops(self, input_shape):
        """Floating-point operations of a forward pass, counted from shapes (a multiply-add is 2;
        by default one per output value)."""
        return math.prod(self.output_shape(input_shape))

    def backward(self, grad_out):
        raise NotImplementedError

    def __call__(self, *inputs):
        return self.forward(*inputs)

    def named_children(self):
        """Yield ``(name, layer)`` for each direct sub-layer, in the order they were set."""
        for name, value in vars(self).items():
            if isinstance(value, Layer):
                yield name, value

    def named_parameters(self, prefix=""):
        """Yield ``(dotted_name, Parameter)`` for this layer and all sub-layers, depth first."""
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
        for name, child in self.named_children():
            yield from child.named_parameters(prefix + name + ".")

    def parameters(self):
        """Return the list of all `Parameter`s, in `named_parameters` order."""
        return [param for _, param in self.named_parameters()]

    def num_parameters(self):
        return sum(param.size for param in self.parameters())

    def zero_grad(self):
        for param in self.parameters():
            param.zero_grad()

    def to(self, device=None, dtype=None):
        """Move every parameter and its gradient to `device` (a `Device` or a flag value) and/or
        cast both to `dtype` (one already there is left as it is); returns self."""
        device = get_device(device) if device is not None else None
        for param in self.parameters():
            if device is not None:
                param.data, param.grad = device.send(param.data), device.send(param.grad)
            if dtype is not None:
                param.data, param.grad = (array.astype(dtype, copy=False)
                                          for array in (param.data, param.grad))
        return self

    def state_dict(self):
        """Return ``{dotted_name: NumPy array}``: a host copy of every parameter."""
        return {name: CPU.to_numpy(param.data).copy() for name, param in self.named_parameters()}

    def load_state_dict(self, state):
        """Copy arrays from `state` into the parameters, in place, on their device and dtype;
        `KeyError` naming missing or unexpected entries, `ShapeError` the first of another shape."""
        params = dict(self.named_parameters())
        missing = [name for name in params if name not in state]
        unexpected = [name for name in state if name not in params]
        if missing or unexpected:
            raise KeyError(
                f"state dict does not match {type(self).__name__}: "
                f"missing {missing or 'nothing'}, unexpected {unexpected or 'nothing'}"
            )
        for name, param in params.items():
            value = state[name]
            if tuple(value.shape) != tuple(param.shape):
                raise ShapeError(
                    f"state dict entry {name!r} has shape {tuple(value.shape)}, "
                    f"but the parameter has shape {tuple(param.shape)}"
                )
        for name, param in params.items():
            xp = get_array_module(param.data)
            param.data[...] = xp.asarray(state[name], dtype=param.dtype)

    def describe(self):
        """Text printed after ``ClassName:`` on this layer's line (empty by default)."""
        return ""

    def title(self):
        """The name printed for this layer: its class name."""
        return type(self).__name__

    def __repr__(self):
        details = self.describe()
        lines = [f"{self.title()}:" + (f" {details}" if details else "")]
        for name, child in self.named_children():
            child_lines = repr(child).splitlines()
            lines.append(f"    ({name}): {child_lines[0]}")
            lines.extend("    " + line for line in child_lines[1:])
        return "\n".join(lines)


def check_positive_ints(layer_name, **values):
    """Raise `ValueError` unless each of `values` is a positive integer (a bool is not)."""
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{layer_name} {name} must be a positive integer, got {value!r}")


def check_input(layer, x, rank, channels=None, axis=1):
    """Raise `ShapeError` unless `x` (an array or a shape) has `rank` dimensions and `channels`
    entries on `axis`. The message names the layer, the expected shape and the shape given."""
    shape = tuple(x.shape if hasattr(x, "shape") else x)
    if len(shape) == rank and (channels is None or shape[axis] == channels):
        return
    expected = ["N", "C", "H", "W"] if rank == 4 else ["N", "F"] if rank == 2 else ["?"] * rank
    if channels is not None:
        expected[axis] = str(channels)
    details = layer.describe()
    raise ShapeError(
        f"{layer.title()}{' (' + details + ')' if details else ''} expected input of shape "
        f"({', '.join(expected)}), got {shape}"
    )
