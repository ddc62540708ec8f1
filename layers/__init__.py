"""The layers of xpnn. Every layer computes with the `xp` of the arrays it is given."""
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
