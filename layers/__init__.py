"""The layers of xpnn. Every layer computes with the `xp` of the arrays it is given."""
from layers.activation import LeakyReLULayer, ReLULayer
from layers.base import Layer, Parameter, ShapeError
from layers.container import AddLayer, ResNetBlock, SequentialLayer
from layers.conv import ConvLayer
from layers.linear import FlattenLayer, LinearLayer
from layers.loss import SoftmaxCrossEntropyLossLayer
from layers.pool import MaxPoolLayer

__all__ = [
    "AddLayer", "ConvLayer", "FlattenLayer", "Layer", "LeakyReLULayer", "LinearLayer",
    "MaxPoolLayer", "Parameter", "ReLULayer", "ResNetBlock", "SequentialLayer", "ShapeError",
    "SoftmaxCrossEntropyLossLayer",
]
