"""Optimizer updates on flat parameter buffers, in place.

    sgd_update(data, grad, lr, weight_decay)                      # w -= lr * (g + decay * w)
    momentum_update(data, grad, velocity, lr, momentum, weight_decay)
                                    # v = momentum * v + (g + decay * w);  w -= lr * v

The array code (``cpu`` and ``gpu``) adds the weight decay into `grad` in place (the buffer is
zeroed before the next step anyway). ``fused``: one CuPy element-wise kernel per update, which
leaves `grad` as it is.
"""
from xpnn.backend.cuda import ElementwiseKernel
from xpnn.backend.device import get_array_module
from xpnn.backend.dispatch import pick

SGD_STEP = ElementwiseKernel("T grad, T lr, T decay", "T data",
                             "data -= lr * (grad + decay * data)", "sgd_step")
MOMENTUM_SGD_STEP = ElementwiseKernel(
    "T grad, T lr, T momentum, T decay", "T data, T velocity",
    "velocity = momentum * velocity + (grad + decay * data); data -= lr * velocity",
    "momentum_sgd_step")


def sgd_update(data, grad, lr, weight_decay):
    pick(_SGD, get_array_module(data))(data, grad, lr, weight_decay)


def momentum_update(data, grad, velocity, lr, momentum, weight_decay):
    pick(_MOMENTUM, get_array_module(data))(data, grad, velocity, lr, momentum, weight_decay)


def _decayed(data, grad, weight_decay):
    if weight_decay:
        grad += weight_decay * data
    return grad


def _sgd_array(data, grad, lr, weight_decay):
    data -= lr * _decayed(data, grad, weight_decay)


def _sgd_fused(data, grad, lr, weight_decay):
    SGD_STEP(grad, lr, weight_decay, data)


def _momentum_array(data, grad, velocity, lr, momentum, weight_decay):
    velocity *= momentum
    velocity += _decayed(data, grad, weight_decay)
    data -= lr * velocity


def _momentum_fused(data, grad, velocity, lr, momentum, weight_decay):
    MOMENTUM_SGD_STEP(grad, lr, momentum, weight_decay, data, velocity)


_SGD = {"array": _sgd_array, "fused": _sgd_fused}
_MOMENTUM = {"array": _momentum_array, "fused": _momentum_fused}
