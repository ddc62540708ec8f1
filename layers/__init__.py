"""The layers of xpnn. Every layer computes with the `xp` of the arrays it is given."""
if __name__ != "xpnn.layers":  # `import layers` finds this only from a checkout's root
    raise ImportError(f"{__name__} is part of the package xpnn: import xpnn.layers")
from xpnn.layers.activation import LeakyReLULayer, ReLULayer
from xpnn.layers.base import Layer, Parameter, ShapeError
from xpnn.layers.container import AddLayer, ResNetBlock, SequentialLayer
from xpnn.layers.conv import ConvLayer
from xpnn.layers.linear import FlattenLayer, LinearLayer
from xpnn.layers.loss import SoftmaxCrossEntropyLossLayer
from xpnn.layers.pool import MaxPoolLayer

__all__ = [
    "AddLayer", "ConvLayer", "FlattenLayer", "Layer", "LeakyReLULayer", "LinearLayer",
    "MaxPoolLayer", "Parameter", "ReLULayer", "ResNetBlock", "SequentialLayer", "ShapeError",
    "SoftmaxCrossEntropyLossLayer",
]
