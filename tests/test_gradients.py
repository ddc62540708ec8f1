"""Finite-difference gradient checks, in float64, for every layer and for a whole network.

Each check compares a layer's backward against central differences of the scalar objective
``sum(output * W)`` (W fixed and random), for the input(s) and every parameter, on awkward shapes:
batch 1 and 3, differing channel counts, kernels 1, 2, 3, 4, 5, strides 1, 2, 3, and sizes that the
windows do not divide evenly. ReLU inputs stay away from 0 and max-pool inputs have no ties, so no
finite-difference step crosses a kink.
"""
from pathlib import Path

import numpy
import pytest
import yaml

from xpnn import layers
from xpnn import nets
from xpnn.backend import CPU, conv

TOLERANCE = 1e-6  # largest relative error accepted, see `relative_error`
STEP = 1e-6       # central-difference step; float64 round-off and truncation both stay near 1e-9
TINY = 1e-30
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.fixture(params=["whole-batch", "image-chunks"])
def chunking(request, monkeypatch):
    """The CPU convolution in its default chunks (at these sizes, the whole batch) and one image
    per chunk, so the gradient checks reach the accumulation of the kernel gradient over
    chunks."""
    if request.param == "image-chunks":
        monkeypatch.setattr(conv, "unpacked_product_limit", lambda: 0)
        monkeypatch.setattr(conv, "CHUNK_BYTES", 1)
    return request.param


def relative_error(a, b):
    """max|a - b| / max(max|a|, max|b|): one number per tensor, robust when entries are near 0."""
    a, b = numpy.asarray(a, dtype=numpy.float64), numpy.asarray(b, dtype=numpy.float64)
    scale = max(numpy.abs(a).max(initial=0.0), numpy.abs(b).max(initial=0.0), TINY)
    return float(numpy.abs(a - b).max(initial=0.0) / scale)


def numerical_gradient(objective, array, indices, step=STEP):
    """Central differences of the scalar `objective()` with respect to `array` at `indices`.

    `array` (any device, any strides) is perturbed in place, one entry at a time, and restored.
    `indices` are flat (row-major) positions; returns a host float64 vector, one entry each.
    """
    grads = numpy.empty(len(indices))
    for out_index, flat_index in enumerate(indices):
        position = numpy.unravel_index(flat_index, array.shape)
        original = float(array[position])
        array[position] = original + step
        plus = objective()
        array[position] = original - step
        minus = objective()
        array[position] = original
        grads[out_index] = (plus - minus) / (2 * step)
    return grads


def _entries(size, limit, rng):
    """All flat indices of a tensor of `size` entries, or `limit` of them drawn at random."""
    if limit is None or size <= limit:
        return numpy.arange(size)
    return numpy.sort(rng.choice(size, limit, replace=False))


def check_layer_gradients(layer, inputs, device=CPU, labels=None, check_inputs=True,
                          entries=None, seed=0, tolerance=TOLERANCE):
    """Assert that `layer`'s backward matches central differences for its inputs and parameters.

    Args:
        layer: moved here to `device` and float64.
        inputs: host arrays, the positional inputs of `forward` (several for `AddLayer`).
        labels: host integer labels passed after the inputs (loss layers); the objective is then
            ``loss * w`` for a random scalar w, and backward is called with ``grad_out=w``.
        check_inputs: False for a layer that returns no input gradient.
        entries: check this many random entries per tensor (None: all of them).
    Returns ``{tensor name: relative error}``.
    """
    rng = numpy.random.default_rng(seed)
    layer.to(device, dtype="float64")
    xs = [device.send(numpy.asarray(x, dtype=numpy.float64)) for x in inputs]
    extra = () if labels is None else (device.send(numpy.asarray(labels)),)
    out_shape = layer.forward(*xs, *extra).shape
    weights = device.send(rng.standard_normal(out_shape))
    grad_out = float(weights) if labels is not None else weights

    def objective():
        return float((layer.forward(*xs, *extra) * weights).sum())

    layer.zero_grad()
    layer.forward(*xs, *extra)
    input_grads = layer.backward(grad_out)
    if not isinstance(input_grads, tuple):
        input_grads = (input_grads,)

    tensors = []  # (name, array to perturb, analytic gradient)
    if check_inputs:
        assert len(input_grads) == len(xs), f"backward returned {len(input_grads)} gradients"
        tensors += [(f"input{i}", x, g) for i, (x, g) in enumerate(zip(xs, input_grads))]
    tensors += [(name, param.data, param.grad) for name, param in layer.named_parameters()]

    errors = {}
    for name, array, analytic in tensors:
        assert analytic is not None, f"{name}: backward gave no gradient"
        assert tuple(analytic.shape) == tuple(array.shape), (
            f"{name}: gradient shape {tuple(analytic.shape)} != {tuple(array.shape)}")
        indices = _entries(array.size, entries, rng)
        numeric = numerical_gradient(objective, array, indices)
        analytic_host = device.to_numpy(analytic).reshape(-1)[indices]
        errors[name] = relative_error(analytic_host, numeric)
    bad = {name: error for name, error in errors.items() if not error < tolerance}
    assert not bad, f"relative gradient errors above {tolerance}: {bad} (all: {errors})"
    return errors


def randomize_biases(layer, rng):
    """Give every bias non-zero values (they start at zero), so the forward is not a special case."""
    for name, param in layer.named_parameters():
        if name.endswith("bias"):
            param.data[...] = rng.standard_normal(param.shape) * 0.1
    return layer


# -- convolution ---------------------------------------------------------------------------------

CONV_CASES = [  # batch, in channels, out channels, kernel, stride, height, width
    (1, 1, 2, 1, 1, 4, 5),
    (3, 2, 3, 2, 1, 5, 4),
    (2, 3, 2, 2, 2, 7, 5),
    (1, 3, 2, 3, 2, 7, 6),
    (3, 2, 1, 3, 3, 9, 7),
    (1, 2, 3, 4, 2, 6, 7),
    (1, 2, 2, 5, 1, 5, 6),
    (3, 2, 4, 5, 3, 8, 11),
    (1, 1, 1, 5, 2, 4, 3),
]


def _conv_id(case):
    batch, cin, cout, kernel, stride, height, width = case
    return f"b{batch}-c{cin}to{cout}-k{kernel}-s{stride}-{height}x{width}"


@pytest.mark.parametrize("case", CONV_CASES, ids=_conv_id)
def test_conv_gradients(case, device, chunking, rng, make_input):
    batch, cin, cout, kernel, stride, height, width = case
    layer = randomize_biases(layers.ConvLayer(cin, cout, kernel, stride=stride, rng=rng), rng)
    check_layer_gradients(layer, [make_input(rng, (batch, cin, height, width))], device)


def test_conv_first_layer_skips_input_gradient(rng, make_input):
    layer = layers.ConvLayer(2, 3, 3, rng=rng)
    layer.input_grad_needed = False
    check_layer_gradients(layer, [make_input(rng, (2, 2, 5, 4))], check_inputs=False)
    layer.forward(numpy.ones((1, 2, 5, 4)))
    assert layer.backward(numpy.ones((1, 3, 5, 4))) is None


# -- max pooling ---------------------------------------------------------------------------------

POOL_CASES = [  # batch, channels, kernel, stride, height, width
    (1, 1, 2, 2, 4, 4),
    (3, 2, 2, 2, 5, 7),
    (2, 3, 3, 2, 7, 6),
    (1, 2, 3, 3, 8, 10),
    (3, 1, 2, 1, 5, 4),
    (1, 2, 1, 1, 3, 4),
    (2, 2, 5, 3, 11, 9),
    (1, 1, 2, 3, 7, 8),
]


def _pool_id(case):
    batch, channels, kernel, stride, height, width = case
    return f"b{batch}-c{channels}-k{kernel}-s{stride}-{height}x{width}"


@pytest.mark.parametrize("case", POOL_CASES, ids=_pool_id)
def test_maxpool_gradients(case, device, rng, make_input):
    batch, channels, kernel, stride, height, width = case
    x = make_input(rng, (batch, channels, height, width), kind="distinct")
    check_layer_gradients(layers.MaxPoolLayer(kernel, stride), [x], device)


# -- element-wise and reshaping layers -------------------------------------------------------------

ACTIVATION_CASES = [
    ("relu-4d", layers.ReLULayer, (3, 2, 5, 4)),
    ("relu-2d-b1", layers.ReLULayer, (1, 7)),
    ("leaky-default-4d", layers.LeakyReLULayer, (1, 3, 4, 5)),
    ("leaky-0.2-2d", lambda: layers.LeakyReLULayer(0.2), (3, 6)),
    ("leaky-0-4d", lambda: layers.LeakyReLULayer(0.0), (2, 1, 3, 3)),
]


@pytest.mark.parametrize("make_layer,shape", [case[1:] for case in ACTIVATION_CASES],
                         ids=[case[0] for case in ACTIVATION_CASES])
def test_activation_gradients(make_layer, shape, device, rng, make_input):
    check_layer_gradients(make_layer(), [make_input(rng, shape)], device)


@pytest.mark.parametrize("shape", [(3, 2, 3, 5), (1, 4, 5), (2, 6), (1, 1, 1, 1)],
                         ids=lambda shape: "x".join(map(str, shape)))
def test_flatten_gradients(shape, device, rng, make_input):
    check_layer_gradients(layers.FlattenLayer(), [make_input(rng, shape)], device)


@pytest.mark.parametrize("batch,fan_in,fan_out", [(1, 7, 3), (3, 5, 1), (3, 12, 4), (2, 1, 6)],
                         ids=["b1-7to3", "b3-5to1", "b3-12to4", "b2-1to6"])
def test_linear_gradients(batch, fan_in, fan_out, device, rng, make_input):
    layer = randomize_biases(layers.LinearLayer(fan_in, fan_out, rng=rng), rng)
    check_layer_gradients(layer, [make_input(rng, (batch, fan_in))], device)


@pytest.mark.parametrize("count,shape", [(1, (2, 3)), (2, (3, 2, 4, 5)), (3, (1, 3, 2, 2)),
                                         (4, (2, 5))],
                         ids=lambda v: f"{v}-inputs" if isinstance(v, int) else "x".join(map(str, v)))
def test_add_gradients(count, shape, device, rng, make_input):
    inputs = [make_input(rng, shape) for _ in range(count)]
    check_layer_gradients(layers.AddLayer(), inputs, device)


# -- composite layers ----------------------------------------------------------------------------

def _conv_relu_pool_linear(rng):
    # (3, 2, 9, 8) -conv k3 s2-> (3, 3, 5, 4) -pool k2 s1-> (3, 3, 4, 3) -> 36 -> 4
    return layers.SequentialLayer([
        randomize_biases(layers.ConvLayer(2, 3, 3, stride=2, rng=rng), rng),
        layers.ReLULayer(),
        layers.MaxPoolLayer(2, 1),
        layers.FlattenLayer(),
        randomize_biases(layers.LinearLayer(36, 4, rng=rng), rng),
    ]), (3, 2, 9, 8)


def _conv_leaky_conv(rng):
    return layers.SequentialLayer([
        layers.ConvLayer(1, 2, 5, rng=rng),
        layers.LeakyReLULayer(0.1),
        layers.ConvLayer(2, 3, 2, stride=3, rng=rng),
    ]), (1, 1, 7, 8)


def _empty_chain(rng):
    return layers.SequentialLayer([]), (2, 3)


@pytest.mark.parametrize("make", [_conv_relu_pool_linear, _conv_leaky_conv, _empty_chain],
                         ids=["conv-relu-pool-flatten-linear", "conv-leaky-conv", "empty"])
def test_sequential_gradients(make, device, chunking, rng, make_input):
    layer, shape = make(rng)
    check_layer_gradients(layer, [make_input(rng, shape, kind="distinct")], device)


RESNET_CASES = [  # batch, channels, kernel, activation, height, width
    (1, 3, 3, layers.ReLULayer, 5, 6),
    (3, 2, 3, layers.LeakyReLULayer, 4, 7),
    (2, 2, 5, layers.ReLULayer, 6, 5),
    (1, 4, 1, layers.LeakyReLULayer, 3, 3),
]


def _resnet_id(case):
    batch, channels, kernel, activation, height, width = case
    return f"b{batch}-c{channels}-k{kernel}-{activation.__name__}-{height}x{width}"


@pytest.mark.parametrize("case", RESNET_CASES, ids=_resnet_id)
def test_resnet_block_gradients(case, device, chunking, rng, make_input):
    batch, channels, kernel, activation, height, width = case
    block = randomize_biases(
        layers.ResNetBlock(channels, kernel, activation=activation, rng=rng), rng)
    check_layer_gradients(block, [make_input(rng, (batch, channels, height, width))], device)


# -- loss ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("batch,classes,scale", [(1, 2, 1.0), (3, 10, 3.0), (5, 4, 1.0),
                                                 (4, 3, 20.0)],
                         ids=["b1-k2", "b3-k10-scale3", "b5-k4", "b4-k3-scale20"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.5], ids=["hard", "smooth0.1", "smooth0.5"])
def test_softmax_cross_entropy_gradients(batch, classes, scale, label_smoothing, device, rng):
    logits = rng.standard_normal((batch, classes)) * scale
    labels = rng.integers(0, classes, batch)
    check_layer_gradients(layers.SoftmaxCrossEntropyLossLayer(label_smoothing), [logits], device,
                          labels=labels)


# -- a whole network -------------------------------------------------------------------------------

def test_resnet_network_parameter_gradients(device, chunking, rng):
    """Every parameter of the configs/resnet.yaml network, 20 sampled entries each.

    The network's first layer returns no input gradient, so only parameters are checked."""
    config = yaml.safe_load((CONFIGS / "resnet.yaml").read_text())["model"]
    net = nets.build(config, seed=0, dtype="float64")
    randomize_biases(net, rng)
    images = rng.standard_normal((2, *net.input_shape))
    labels = rng.integers(0, 10, 2)

    class LossOfNetwork(layers.Layer):
        """The network's loss as a layer: forward(images, labels) -> loss; backward -> None."""

        def __init__(self, net):
            self.net = net

        def forward(self, x, labels):
            return self.net.forward_loss(x, labels)[0]

        def backward(self, grad_out):
            return self.net.backward(grad_out)

    errors = check_layer_gradients(LossOfNetwork(net), [images], device, labels=labels,
                                   check_inputs=False, entries=20)
    assert len(errors) == len(list(net.named_parameters())) == 18


# -- the checker itself ------------------------------------------------------------------------------

class _DoubledReLU(layers.ReLULayer):
    def backward(self, grad_out):
        return 2 * super().backward(grad_out)


class _LinearWithoutBiasGrad(layers.LinearLayer):
    def backward(self, grad_out):
        grad = super().backward(grad_out)
        self.bias.grad[...] = 0
        return grad


@pytest.mark.parametrize("make_layer,shape", [(_DoubledReLU, (2, 3)),
                                              (lambda: _LinearWithoutBiasGrad(3, 2, rng=0), (2, 3))],
                         ids=["wrong-input-gradient", "missing-bias-gradient"])
def test_checker_catches_wrong_gradients(make_layer, shape, rng, make_input):
    with pytest.raises(AssertionError, match="relative gradient errors"):
        check_layer_gradients(make_layer(), [make_input(rng, shape)])
