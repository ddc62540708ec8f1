"""Layer behaviour other than gradients: inputs left alone, any memory layout, float32 against
float64, forward against direct references, a stable loss, shape errors, printed form, state,
dtype moves, initialisation and constructor checks."""
import copy
import math
from pathlib import Path

import numpy
import pytest
import yaml

from xpnn import backend
from xpnn import layers
from xpnn import nets
from xpnn.backend import get_array_module
from xpnn.tools import parity
from xpnn.layers import ShapeError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


class Case:
    """A layer to exercise: how to build it, its input shapes, the input kind, labels or not."""

    def __init__(self, name, make, shapes, kind="safe", labels=False):
        self.name, self.make, self.shapes, self.kind, self.labels = name, make, shapes, kind, labels

    def inputs(self, rng, make_input):
        """Host float64 inputs and (for a loss) host labels."""
        xs = [make_input(rng, shape, self.kind) for shape in self.shapes]
        labels = rng.integers(0, self.shapes[0][1], self.shapes[0][0]) if self.labels else None
        return xs, labels


def _sequential():
    # (2, 2, 9, 8) -conv k3 s2-> (2, 3, 5, 4) -> relu -> pool k2 s1 -> (2, 3, 4, 3) -> 36 -> 4
    return layers.SequentialLayer([
        layers.ConvLayer(2, 3, 3, stride=2, rng=0), layers.ReLULayer(), layers.MaxPoolLayer(2, 1),
        layers.FlattenLayer(), layers.LinearLayer(36, 4, rng=1),
    ])


CASES = [
    Case("conv-k3-s2", lambda: layers.ConvLayer(3, 4, 3, stride=2, rng=0), [(2, 3, 7, 6)]),
    Case("conv-k5", lambda: layers.ConvLayer(2, 3, 5, rng=0), [(2, 2, 6, 5)]),
    Case("conv-k1", lambda: layers.ConvLayer(3, 2, 1, rng=0), [(2, 3, 4, 5)]),
    Case("conv-k2-s2", lambda: layers.ConvLayer(2, 3, 2, stride=2, rng=0), [(1, 2, 7, 6)]),
    Case("maxpool-k2", lambda: layers.MaxPoolLayer(2), [(2, 3, 7, 6)], "distinct"),
    Case("maxpool-k3-s1", lambda: layers.MaxPoolLayer(3, 1), [(2, 2, 5, 6)], "distinct"),
    Case("relu", layers.ReLULayer, [(2, 3, 4, 5)]),
    Case("leaky-relu", lambda: layers.LeakyReLULayer(0.1), [(2, 3, 4, 5)]),
    Case("flatten", layers.FlattenLayer, [(2, 3, 4, 5)]),
    Case("linear", lambda: layers.LinearLayer(5, 4, rng=0), [(3, 5)]),
    Case("add-3", layers.AddLayer, [(2, 3, 4, 5)] * 3),
    Case("sequential", _sequential, [(2, 2, 9, 8)], "distinct"),
    Case("resnet-block-relu", lambda: layers.ResNetBlock(3, rng=0), [(2, 3, 5, 6)]),
    Case("resnet-block-leaky", lambda: layers.ResNetBlock(3, activation=layers.LeakyReLULayer,
                                                          rng=0), [(2, 3, 5, 6)]),
    Case("loss", layers.SoftmaxCrossEntropyLossLayer, [(4, 5)], labels=True),
]
ALL_CASES = pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)


def run_layer(layer, xs, labels=None, grad_out=None):
    """Forward then backward; returns host copies (output, input gradients, {param: grad}).

    The upstream gradient is `grad_out`, or for a loss layer the default of 1."""
    layer.zero_grad()
    out = layer.forward(*xs, *([] if labels is None else [labels]))
    grads = layer.backward() if labels is not None else layer.backward(grad_out)
    grads = grads if isinstance(grads, tuple) else (grads,)
    host = backend.CPU.to_numpy
    return (host(out).copy(), [host(g).copy() for g in grads],
            {name: host(p.grad).copy() for name, p in layer.named_parameters()})


def upstream_gradient(out_shape, rng, xp=numpy, dtype="float64"):
    return xp.asarray(rng.standard_normal(out_shape), dtype=dtype)


def _output_shape(case, xs, labels):
    layer = case.make().to(dtype="float64")
    return layer.forward(*xs, *([] if labels is None else [labels])).shape


# -- inputs, layouts and dtypes -------------------------------------------------------------------

@ALL_CASES
def test_forward_and_backward_leave_their_inputs_alone(case, device, dtype, rng, make_input):
    host_xs, host_labels = case.inputs(rng, make_input)
    layer = case.make().to(device, dtype=dtype)
    xs = [device.send(x.astype(dtype)) for x in host_xs]
    labels = None if host_labels is None else device.send(host_labels)
    grad_out = None if case.labels else device.send(
        upstream_gradient(_output_shape(case, host_xs, host_labels), rng, dtype=dtype))
    before = [device.to_numpy(x).copy() for x in xs]
    grad_before = None if grad_out is None else device.to_numpy(grad_out).copy()
    run_layer(layer, xs, labels, grad_out)
    for x, original in zip(xs, before):
        numpy.testing.assert_array_equal(device.to_numpy(x), original)
    if grad_out is not None:
        numpy.testing.assert_array_equal(device.to_numpy(grad_out), grad_before)
    if labels is not None:
        numpy.testing.assert_array_equal(device.to_numpy(labels), host_labels)


@ALL_CASES
def test_output_and_gradients_keep_the_layer_dtype(case, device, dtype, rng, make_input):
    """No silent float64 promotion of a float32 layer (the NumPy 2 scalar pitfall)."""
    host_xs, host_labels = case.inputs(rng, make_input)
    layer = case.make().to(device, dtype=dtype)
    xs = [device.send(x.astype(dtype)) for x in host_xs]
    labels = None if host_labels is None else device.send(host_labels)
    out = layer.forward(*xs, *([] if labels is None else [labels]))
    assert out.dtype == dtype
    grads = layer.backward() if case.labels else layer.backward(device.xp.ones_like(out))
    for grad in grads if isinstance(grads, tuple) else (grads,):
        assert grad.dtype == dtype
    for name, param in layer.named_parameters():
        assert param.data.dtype == dtype and param.grad.dtype == dtype, name


def as_view(x, how):
    """The values of `x` as a view that is not C-contiguous (the same module as `x`)."""
    xp = get_array_module(x)
    if how == "transposed":  # memory in reversed axis order
        return xp.ascontiguousarray(x.T).T
    if how == "strided":  # every other element of a wider array
        wide = xp.zeros(x.shape[:-1] + (2 * x.shape[-1],), dtype=x.dtype)
        wide[..., ::2] = x
        return wide[..., ::2]
    if how == "reversed":  # a negative stride on the last axis
        return xp.ascontiguousarray(x[..., ::-1])[..., ::-1]
    raise ValueError(how)


@ALL_CASES
@pytest.mark.parametrize("how", ["transposed", "strided", "reversed"])
def test_non_contiguous_inputs_give_the_same_results(case, how, device, rng, make_input):
    host_xs, host_labels = case.inputs(rng, make_input)
    labels = None if host_labels is None else device.send(host_labels)
    xs = [device.send(x) for x in host_xs]
    grad_out = None if case.labels else device.send(
        upstream_gradient(_output_shape(case, host_xs, host_labels), rng))
    expected = run_layer(case.make().to(device, dtype="float64"), xs, labels, grad_out)

    views = [as_view(x, how) for x in xs]
    assert not any(view.flags.c_contiguous for view in views)
    grad_view = None if grad_out is None else as_view(grad_out, how)
    got = run_layer(case.make().to(device, dtype="float64"), views, labels, grad_view)
    close = dict(rtol=1e-12, atol=1e-12)
    numpy.testing.assert_allclose(got[0], expected[0], **close)
    for got_grad, expected_grad in zip(got[1], expected[1]):
        numpy.testing.assert_allclose(got_grad, expected_grad, **close)
    for name in expected[2]:
        numpy.testing.assert_allclose(got[2][name], expected[2][name], **close, err_msg=name)


@ALL_CASES
def test_float32_matches_float64(case, rng, make_input):
    host_xs, host_labels = case.inputs(rng, make_input)
    rows = parity.compare(case.make, tuple(host_xs), host_labels)
    worst = parity.worst(rows)
    assert worst.max_rel_err <= 1e-4, parity.format_report(rows)


def test_float32_matches_float64_for_a_whole_network(rng):
    config = yaml.safe_load((CONFIGS / "resnet.yaml").read_text())["model"]
    rows = parity.compare(lambda: nets.build(config, seed=0), rng.random((3, 1, 28, 28)),
                          rng.integers(0, 10, 3))
    assert parity.worst(rows).max_rel_err <= 1e-4, parity.format_report(rows)


# -- forward against direct references -------------------------------------------------------------

def reference_conv(x, weight, bias, stride):
    """Direct cross-correlation: padding (k - 1) // 2, incomplete windows dropped."""
    k = weight.shape[-1]
    pad = (k - 1) // 2
    padded = numpy.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho = (padded.shape[2] - k) // stride + 1
    wo = (padded.shape[3] - k) // stride + 1
    out = numpy.empty((x.shape[0], weight.shape[0], ho, wo))
    for i in range(ho):
        for j in range(wo):
            patch = padded[:, :, i * stride:i * stride + k, j * stride:j * stride + k]
            out[:, :, i, j] = numpy.einsum("nchw,ochw->no", patch, weight) + bias
    return out


def reference_maxpool(x, k, stride):
    ho, wo = (x.shape[2] - k) // stride + 1, (x.shape[3] - k) // stride + 1
    out = numpy.empty(x.shape[:2] + (ho, wo))
    for i in range(ho):
        for j in range(wo):
            out[:, :, i, j] = x[:, :, i * stride:i * stride + k, j * stride:j * stride + k].max(
                axis=(2, 3))
    return out


@pytest.mark.parametrize("cin,cout,k,stride,h,w", [
    (1, 2, 1, 1, 4, 5), (2, 3, 2, 1, 5, 4), (3, 2, 3, 2, 7, 6), (2, 2, 4, 3, 8, 7),
    (2, 4, 5, 3, 8, 11), (1, 6, 5, 1, 28, 28),
], ids=["c1to2-k1-s1-4x5", "c2to3-k2-s1-5x4", "c3to2-k3-s2-7x6", "c2to2-k4-s3-8x7",
        "c2to4-k5-s3-8x11", "c1to6-k5-s1-28x28"])
def test_conv_forward_matches_direct_correlation(cin, cout, k, stride, h, w, device, rng):
    layer = layers.ConvLayer(cin, cout, k, stride=stride, rng=rng).to(dtype="float64")
    layer.bias.data[...] = rng.standard_normal(cout)
    x = rng.standard_normal((2, cin, h, w))
    expected = reference_conv(x, layer.weight.data, layer.bias.data, stride)
    assert layer.output_shape(x.shape) == expected.shape
    got = device.to_numpy(layer.to(device).forward(device.send(x)))
    numpy.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("limit", [100 ** 3, 0], ids=["unpacked-small-products", "all-packed"])
def test_cpu_patch_chunks_follow_what_the_blas_multiplies_fastest(limit, rng, monkeypatch):
    """The CPU's patch matrices come a chunk of whole images at a time: where the BLAS
    multiplies products up to `limit` unpacked, as many as keep the product that small, else as
    fit `CHUNK_BYTES`, with narrow products 8 columns wide; every way gives the correlation."""
    from xpnn.backend import conv
    monkeypatch.setattr(conv, "unpacked_product_limit", lambda: limit)
    x = rng.standard_normal((5, 14, 14, 16)).astype(numpy.float32)
    padded = conv.PaddedInput(x, 1, (16, 16))

    def chunks(columns):
        return [(chunk.start, chunk.stop) for chunk, _ in
                conv._chunked_patches(padded, 3, 1, columns)]

    def by_bytes():
        size = conv.CHUNK_BYTES // (per_image * 4)
        return [(start, min(start + size, 5)) for start in range(0, 5, size)]
    per_image = 14 * 14 * 3 * 3 * 16  # patch values of one image
    if limit:
        assert per_image * 16 * 2 <= limit < per_image * 16 * 3
        assert chunks(16) == [(0, 2), (2, 4), (4, 5)]
        assert per_image * 64 > limit  # one image is over already: by bytes
    else:
        assert chunks(16) == by_bytes()
    assert chunks(64) == by_bytes()
    for out_channels in (16, 6):
        kernel = rng.standard_normal((out_channels, 16, 3, 3)).astype(numpy.float32)
        whole = conv.correlate_by_patches(padded, kernel, 1, None, conv.PATCHES["gpu"])
        numpy.testing.assert_allclose(conv.correlate(padded, kernel, 1), whole, rtol=1e-5,
                                      atol=1e-5)


def test_the_blas_multiplies_small_products_unpacked_on_openblas_avx512_cores_only(monkeypatch):
    import threadpoolctl
    from xpnn.backend import cpu

    def limit_on(info):
        monkeypatch.setattr(threadpoolctl, "threadpool_info", lambda: info)
        cpu.unpacked_product_limit.cache_clear()
        return cpu.unpacked_product_limit()
    try:
        assert limit_on([{"internal_api": "openblas", "architecture": "SkylakeX"}]) == 100 ** 3
        assert limit_on([{"internal_api": "openblas", "architecture": "SapphireRapids"}]) > 0
        assert limit_on([{"internal_api": "openblas", "architecture": "Haswell"}]) == 0
        assert limit_on([{"internal_api": "openblas", "architecture": "Zen"}]) == 0
        assert limit_on([{"internal_api": "mkl", "architecture": None}]) == 0
    finally:
        monkeypatch.undo()
        cpu.unpacked_product_limit.cache_clear()


@pytest.mark.parametrize("k,stride,h,w", [(2, 2, 7, 6), (3, 1, 5, 6), (3, 2, 8, 7), (2, 3, 7, 8),
                                          (1, 1, 3, 2)],
                         ids=["k2-s2-7x6", "k3-s1-5x6", "k3-s2-8x7", "k2-s3-7x8", "k1-s1-3x2"])
def test_maxpool_forward_matches_direct_max(k, stride, h, w, device, rng):
    layer = layers.MaxPoolLayer(k, stride)
    x = rng.standard_normal((2, 3, h, w))
    expected = reference_maxpool(x, k, stride)
    assert layer.output_shape(x.shape) == expected.shape
    numpy.testing.assert_array_equal(device.to_numpy(layer.forward(device.send(x))), expected)


@pytest.mark.parametrize("k,stride", [(2, 2), (2, 1), (2, 3)], ids=["tiling", "overlapping", "gaps"])
def test_maxpool_sends_a_tied_gradient_to_the_first_maximum_only(k, stride, device):
    layer = layers.MaxPoolLayer(k, stride)
    x = numpy.zeros((1, 2, 5, 6))
    x[0, 1, 1, :] = 1.0  # channel 1: ties along row 1 as well as in the all-zero windows
    _, _, ho, wo = layer.output_shape(x.shape)
    layer.forward(device.send(x))
    grad_out = numpy.arange(1.0, 2 * ho * wo + 1).reshape(1, 2, ho, wo)
    grad = device.to_numpy(layer.backward(device.send(grad_out)))
    expected = numpy.zeros_like(x)
    for c in range(2):
        for i in range(ho):
            for j in range(wo):
                window = x[0, c, i * stride:i * stride + k, j * stride:j * stride + k]
                a, b = numpy.unravel_index(numpy.argmax(window), window.shape)  # the first max
                expected[0, c, i * stride + a, j * stride + b] += grad_out[0, c, i, j]
    numpy.testing.assert_array_equal(grad, expected)


@pytest.mark.parametrize("k,stride", [(2, 2), (3, 1), (2, 3)], ids=["tiling", "overlapping", "gaps"])
def test_maxpool_sends_a_nan_windows_gradient_to_its_first_nan(k, stride, device, rng):
    """One rule on every implementation: a window holding NaN outputs NaN, and its gradient goes
    to the first NaN in row-major order (numpy.argmax's rule), not to the largest number."""
    layer = layers.MaxPoolLayer(k, stride)
    x = rng.standard_normal((2, 3, 7, 8))
    x[0, 0, 1, 1] = x[0, 0, 2, 0] = x[1, 2, 4, 5] = numpy.nan
    x[0, 0, 0, 0] = 100.0  # beside a NaN: the maximum of the numbers does not win
    _, _, ho, wo = layer.output_shape(x.shape)
    out = device.to_numpy(layer.forward(device.send(x)))
    grad_out = numpy.arange(1.0, out.size + 1).reshape(out.shape)
    grad = device.to_numpy(layer.backward(device.send(grad_out)))
    expected_out, expected_grad = numpy.empty_like(out), numpy.zeros_like(x)
    for n, c, i, j in numpy.ndindex(out.shape):
        window = x[n, c, i * stride:i * stride + k, j * stride:j * stride + k]
        a, b = numpy.unravel_index(numpy.argmax(window), window.shape)  # the first NaN, if any
        expected_out[n, c, i, j] = window[a, b]
        expected_grad[n, c, i * stride + a, j * stride + b] += grad_out[n, c, i, j]
    assert numpy.isnan(expected_out).any()
    numpy.testing.assert_array_equal(out, expected_out)  # NaN where expected, equal elsewhere
    numpy.testing.assert_array_equal(grad, expected_grad)


def test_linear_flatten_add_and_activations_forward(rng):
    x = rng.standard_normal((3, 2, 3, 4))
    flat = layers.FlattenLayer().forward(x)
    numpy.testing.assert_array_equal(flat, x.reshape(3, 24))
    linear = layers.LinearLayer(24, 5, rng=rng).to(dtype="float64")
    linear.bias.data[...] = rng.standard_normal(5)
    numpy.testing.assert_allclose(linear.forward(flat),
                                  flat @ linear.weight.data + linear.bias.data, rtol=1e-12)
    numpy.testing.assert_array_equal(layers.AddLayer().forward(x, 2 * x, -x), x + 2 * x - x)
    numpy.testing.assert_array_equal(layers.ReLULayer().forward(x), numpy.maximum(x, 0))
    numpy.testing.assert_array_equal(layers.LeakyReLULayer(0.2).forward(x),
                                     numpy.where(x > 0, x, 0.2 * x))
    assert layers.LeakyReLULayer().slope == 0.01


def test_relu_gradient_at_zero_is_zero():
    relu = layers.ReLULayer()
    relu.forward(numpy.array([[-1.0, 0.0, 2.0]]))
    numpy.testing.assert_array_equal(relu.backward(numpy.ones((1, 3))), [[0.0, 0.0, 1.0]])


def test_resnet_block_is_relu_of_branch_plus_skip(rng):
    block = layers.ResNetBlock(3, rng=rng).to(dtype="float64")
    x = rng.standard_normal((2, 3, 5, 4))
    conv1, _, conv2 = block.conv_layers.layers
    branch = reference_conv(numpy.maximum(reference_conv(x, conv1.weight.data, conv1.bias.data, 1),
                                          0), conv2.weight.data, conv2.bias.data, 1)
    numpy.testing.assert_allclose(block.forward(x), numpy.maximum(branch + x, 0), rtol=1e-12,
                                  atol=1e-12)


def test_backward_accumulates_parameter_gradients(rng, make_input):
    layer = layers.ConvLayer(2, 3, 3, rng=rng)
    x = make_input(rng, (2, 2, 5, 5)).astype("float32")
    g = numpy.ones((2, 3, 5, 5), dtype="float32")
    layer.forward(x)
    layer.backward(g)
    once = layer.weight.grad.copy()
    layer.forward(x)
    layer.backward(g)
    numpy.testing.assert_allclose(layer.weight.grad, 2 * once, rtol=1e-6)
    layer.zero_grad()
    assert not layer.weight.grad.any() and not layer.bias.grad.any()


def test_layer_is_callable():
    x = numpy.array([[-1.0, 3.0]])
    numpy.testing.assert_array_equal(layers.ReLULayer()(x), [[0.0, 3.0]])


# -- the loss ---------------------------------------------------------------------------------------

def reference_loss_and_gradient(logits, labels):
    """float64 mean cross-entropy of log-softmax, and its gradient, computed directly."""
    logits = numpy.asarray(logits, dtype=numpy.float64)
    top = logits.max(axis=1, keepdims=True)
    log_softmax = logits - top - numpy.log(numpy.exp(logits - top).sum(axis=1, keepdims=True))
    rows = numpy.arange(len(labels))
    grad = numpy.exp(log_softmax)
    grad[rows, labels] -= 1
    return -log_softmax[rows, labels].mean(), grad / len(labels)


@pytest.mark.parametrize("logits,labels", [
    ([[1e4, -1e4, 0.0, 5.0], [-1e4, -1e4, -1e4, -1e4], [1e4, 1e4, -1e4, 3.0], [0.5, -2.0, 1e4, -1e4]],
     [1, 2, 0, 3]),
    ([[-1e4, 1e4], [1e4, -1e4]], [1, 1]),
    ([[3.0, -1.0, 0.5]], [2]),
], ids=["mixed-1e4", "binary-1e4", "moderate"])
def test_loss_is_finite_and_matches_a_float64_log_softmax(logits, labels, dtype, device):
    loss_layer = layers.SoftmaxCrossEntropyLossLayer()
    logits, labels = numpy.array(logits), numpy.array(labels)
    expected_loss, expected_grad = reference_loss_and_gradient(logits, labels)
    loss = loss_layer.forward(device.send(logits.astype(dtype)), device.send(labels))
    grad = device.to_numpy(loss_layer.backward())
    tolerance = 1e-6 if dtype == "float32" else 1e-12
    assert loss.shape == () and math.isfinite(float(loss))
    assert float(loss) == pytest.approx(expected_loss, rel=tolerance)
    assert numpy.isfinite(grad).all()
    numpy.testing.assert_allclose(grad, expected_grad, atol=tolerance)
    numpy.testing.assert_allclose(grad.sum(axis=1), 0, atol=tolerance)


def test_loss_gradient_scales_with_grad_out(rng):
    logits, labels = rng.standard_normal((3, 4)), numpy.array([0, 3, 1])
    loss_layer = layers.SoftmaxCrossEntropyLossLayer()
    loss_layer.forward(logits, labels)
    _, expected = reference_loss_and_gradient(logits, labels)
    numpy.testing.assert_allclose(loss_layer.backward(2.5), 2.5 * expected, rtol=1e-12)


def test_label_smoothing_is_cross_entropy_against_the_smoothed_target(device, rng):
    logits, labels = rng.standard_normal((5, 4)) * 3, numpy.array([0, 3, 1, 1, 2])
    target = numpy.full((5, 4), 0.2 / 4)
    target[numpy.arange(5), labels] += 0.8
    log_softmax = logits - logits.max(axis=1, keepdims=True)
    log_softmax -= numpy.log(numpy.exp(log_softmax).sum(axis=1, keepdims=True))
    loss_layer = layers.SoftmaxCrossEntropyLossLayer(label_smoothing=0.2)
    loss = loss_layer.forward(device.send(logits), device.send(labels))
    assert float(loss) == pytest.approx(-(target * log_softmax).sum(axis=1).mean(), rel=1e-12)
    numpy.testing.assert_allclose(device.to_numpy(loss_layer.backward()),
                                  (numpy.exp(log_softmax) - target) / 5, atol=1e-12)
    assert repr(loss_layer) == "SoftmaxCrossEntropyLossLayer: label smoothing 0.2"


@pytest.mark.parametrize("label_smoothing", [-0.1, 1.0])
def test_label_smoothing_outside_0_to_1_is_refused(label_smoothing):
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\)"):
        layers.SoftmaxCrossEntropyLossLayer(label_smoothing)


def test_loss_rejects_labels_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"labels of shape \(3,\), got \(3, 1\)"):
        layers.SoftmaxCrossEntropyLossLayer().forward(numpy.zeros((3, 4)), numpy.zeros((3, 1), int))


@pytest.mark.parametrize("labels", [[0, 4, 1], [0, -1, 1]], ids=["too-large", "negative"])
def test_loss_rejects_host_labels_outside_the_classes(labels):
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\] for 4 classes"):
        layers.SoftmaxCrossEntropyLossLayer().forward(numpy.zeros((3, 4)), numpy.array(labels))


@pytest.mark.parametrize("labels", [[1.7, 2.2, 0.0], [1.0, 2.0, 0.0], [True, False, True]],
                         ids=["fractions", "whole-floats", "booleans"])
def test_loss_rejects_labels_that_are_not_integers(labels):
    with pytest.raises(ValueError, match=r"labels must be integer class indices, got dtype"):
        layers.SoftmaxCrossEntropyLossLayer().forward(numpy.zeros((3, 4)), numpy.array(labels))


def test_loss_backward_without_forward_is_named():
    loss = layers.SoftmaxCrossEntropyLossLayer()
    with pytest.raises(RuntimeError, match=r"backward\(\) needs a forward\(logits, labels\) first"):
        loss.backward()
    loss.forward(numpy.zeros((2, 3)), numpy.array([0, 2]))
    loss.backward()
    with pytest.raises(RuntimeError, match="needs a forward"):  # one backward per forward
        loss.backward()


# -- shape errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("make_layer,shape,expected_text", [
    (lambda: layers.ConvLayer(1, 6, 5, rng=0), (2, 3, 28, 28), "(N, 1, H, W)"),
    (lambda: layers.ConvLayer(1, 6, 5, rng=0), (1, 28, 28), "(N, 1, H, W)"),
    (lambda: layers.ConvLayer(6, 16, 5, rng=0), (2, 6, 14, 14, 1), "(N, 6, H, W)"),
    (lambda: layers.LinearLayer(784, 120, rng=0), (2, 783), "(N, 784)"),
    (lambda: layers.LinearLayer(784, 120, rng=0), (2, 16, 7, 7), "(N, 784)"),
    (lambda: layers.MaxPoolLayer(2), (2, 28, 28), "(N, C, H, W)"),
    (lambda: layers.MaxPoolLayer(2), (4, 2), "(N, C, H, W)"),
], ids=["conv-channels", "conv-rank3", "conv-rank5", "linear-features", "linear-rank4",
        "maxpool-rank3", "maxpool-rank2"])
def test_wrong_input_shape_raises_shape_error_naming_layer_and_shapes(make_layer, shape,
                                                                      expected_text):
    layer = make_layer()
    for attempt in (lambda: layer.forward(numpy.zeros(shape, dtype="float32")),
                    lambda: layer.output_shape(shape)):
        with pytest.raises(ShapeError) as error:
            attempt()
        message = str(error.value)
        assert type(layer).__name__ in message
        assert expected_text in message, message
        assert str(shape) in message, message
    assert issubclass(ShapeError, ValueError)


@pytest.mark.parametrize("layer,shape", [
    (layers.MaxPoolLayer(3), (1, 2, 2, 5)),
    (layers.ConvLayer(1, 1, 4, rng=0), (1, 1, 1, 3)),  # padding 1: a 3 x 5 padded input
], ids=["pool-larger-than-input", "conv-larger-than-padded-input"])
def test_window_larger_than_the_input_raises_shape_error(layer, shape):
    with pytest.raises(ShapeError, match=type(layer).__name__):
        layer.output_shape(shape)


# -- printed form ----------------------------------------------------------------------------------

REPR_CASES = [
    (layers.ConvLayer(1, 6, 5), "ConvLayer: Kernel: (5, 5) In Channels 1 Out Channels 6 Stride 1"),
    (layers.ConvLayer(16, 16, 3, stride=2, rng=0),
     "ConvLayer: Kernel: (3, 3) In Channels 16 Out Channels 16 Stride 2"),
    (layers.MaxPoolLayer(2, 2), "MaxPoolLayer: kernel: 2 stride: 2"),
    (layers.MaxPoolLayer(3), "MaxPoolLayer: kernel: 3 stride: 3"),
    (layers.MaxPoolLayer(3, 1), "MaxPoolLayer: kernel: 3 stride: 1"),
    (layers.LinearLayer(784, 120, rng=0), "LinearLayer: (784, 120)"),
    (layers.ReLULayer(), "ReLULayer:"),
    (layers.LeakyReLULayer(), "LeakyReLULayer:"),
    (layers.FlattenLayer(), "FlattenLayer:"),
    (layers.AddLayer(), "AddLayer:"),
    (layers.SoftmaxCrossEntropyLossLayer(), "SoftmaxCrossEntropyLossLayer:"),
]


@pytest.mark.parametrize("layer,expected", REPR_CASES, ids=[case[1] for case in REPR_CASES])
def test_single_layer_repr(layer, expected):
    assert repr(layer) == expected


def test_resnet_block_repr_nests_children_four_spaces_deeper():
    assert repr(layers.ResNetBlock(16, rng=0)) == "\n".join([
        "ResNetBlock:",
        "    (conv_layers): SequentialLayer:",
        "        (0): ConvLayer: Kernel: (3, 3) In Channels 16 Out Channels 16 Stride 1",
        "        (1): ReLULayer:",
        "        (2): ConvLayer: Kernel: (3, 3) In Channels 16 Out Channels 16 Stride 1",
        "    (add_layer): AddLayer:",
        "    (relu2): ReLULayer:",
    ])


def test_sequential_repr_nests_a_block_two_levels_down():
    stack = layers.SequentialLayer([layers.ConvLayer(1, 6, 5, rng=0),
                                    layers.ResNetBlock(6, activation=layers.LeakyReLULayer, rng=0)])
    assert repr(stack) == "\n".join([
        "SequentialLayer:",
        "    (0): ConvLayer: Kernel: (5, 5) In Channels 1 Out Channels 6 Stride 1",
        "    (1): ResNetBlock:",
        "        (conv_layers): SequentialLayer:",
        "            (0): ConvLayer: Kernel: (3, 3) In Channels 6 Out Channels 6 Stride 1",
        "            (1): LeakyReLULayer:",
        "            (2): ConvLayer: Kernel: (3, 3) In Channels 6 Out Channels 6 Stride 1",
        "        (add_layer): AddLayer:",
        "        (relu2): LeakyReLULayer:",
    ])


# -- parameters, state and moves ---------------------------------------------------------------------

def test_named_parameters_and_counts():
    block = layers.ResNetBlock(4, kernel_size=3, rng=0)
    assert [name for name, _ in block.named_parameters()] == [
        "conv_layers.0.weight", "conv_layers.0.bias", "conv_layers.2.weight", "conv_layers.2.bias"]
    assert block.num_parameters() == 2 * (4 * 4 * 3 * 3 + 4)
    conv = layers.ConvLayer(3, 5, 2, rng=0)
    assert conv.weight.shape == (5, 3, 2, 2) and conv.bias.shape == (5,)
    linear = layers.LinearLayer(7, 2, rng=0)
    assert linear.weight.shape == (7, 2) and linear.bias.shape == (2,)
    assert layers.ReLULayer().parameters() == [] and layers.MaxPoolLayer(2).num_parameters() == 0


def test_state_dict_round_trip(rng):
    source, target = layers.ResNetBlock(3, rng=1), layers.ResNetBlock(3, rng=2)
    state = source.state_dict()
    assert list(state) == [name for name, _ in source.named_parameters()]
    assert all(isinstance(value, numpy.ndarray) for value in state.values())
    state["conv_layers.0.weight"][...] = 0  # a copy: the layer is untouched
    assert source.conv_layers.layers[0].weight.data.any()

    state = source.state_dict()
    views_before = [param.data for param in target.parameters()]
    target.load_state_dict(state)
    assert all(param.data is view for param, view in zip(target.parameters(), views_before))
    state["conv_layers.2.bias"][...] = 7  # loading copied the values
    x = rng.standard_normal((2, 3, 4, 5)).astype("float32")
    numpy.testing.assert_array_equal(target.forward(x), source.forward(x))


def test_load_state_dict_keeps_the_layer_dtype():
    layer = layers.LinearLayer(3, 2, rng=0)
    layer.load_state_dict({name: value.astype("float64") + 0.5
                           for name, value in layers.LinearLayer(3, 2, rng=3).state_dict().items()})
    assert layer.weight.dtype == "float32" and layer.bias.dtype == "float32"
    numpy.testing.assert_allclose(layer.bias.data, 0.5)


def test_load_state_dict_mismatches_name_the_entries():
    layer = layers.ConvLayer(2, 3, 3, rng=0)
    state = layer.state_dict()
    with pytest.raises(KeyError, match="missing.*'bias'"):
        layer.load_state_dict({"weight": state["weight"]})
    with pytest.raises(KeyError, match="unexpected.*'extra'"):
        layer.load_state_dict({**state, "extra": numpy.zeros(1)})
    with pytest.raises(ShapeError, match=r"'weight'.*\(3, 2, 5, 5\).*\(3, 2, 3, 3\)"):
        layer.load_state_dict({**state, "weight": numpy.zeros((3, 2, 5, 5))})
    numpy.testing.assert_array_equal(layer.weight.data, state["weight"])  # nothing half-loaded


def test_to_dtype_casts_every_parameter_with_its_gradient():
    block = layers.ResNetBlock(3, rng=0)
    before = block.state_dict()
    for param in block.parameters():
        param.grad[...] = 0.5
    assert block.to(dtype="float64") is block
    for name, param in block.named_parameters():
        assert param.data.dtype == numpy.float64 and param.grad.dtype == numpy.float64, name
        assert (param.grad == 0.5).all()  # moved, as PyTorch's .to moves .grad
        numpy.testing.assert_array_equal(param.data, before[name])
    block.to(dtype="float32")
    assert all(param.dtype == numpy.float32 for param in block.parameters())


def test_to_device_cpu_and_unavailable_gpu():
    layer = layers.LinearLayer(3, 2, rng=0)
    assert layer.to("cpu") is layer and isinstance(layer.weight.data, numpy.ndarray)
    if backend.gpu_unavailable_reason() is None:
        pytest.skip("a GPU is available here: the unavailable-GPU error cannot be shown")
    with pytest.raises(backend.DeviceUnavailableError, match="--device cpu"):
        layer.to("gpu")


def test_to_device_moves_parameters(device):
    layer = layers.ConvLayer(2, 3, 3, rng=0).to(device)
    for param in layer.parameters():
        assert backend.device_of(param.data) == device
        assert backend.device_of(param.grad) == device


# -- initialisation and constructors --------------------------------------------------------------

@pytest.mark.parametrize("make_layer,fan_in", [
    (lambda: layers.ConvLayer(64, 32, 3, rng=0), 64 * 9),
    (lambda: layers.ConvLayer(8, 100, 5, rng=1), 8 * 25),
    (lambda: layers.LinearLayer(500, 400, rng=2), 500),
], ids=["conv-64to32-k3", "conv-8to100-k5", "linear-500x400"])
def test_he_initialisation(make_layer, fan_in):
    layer = make_layer()
    weight = layer.weight.data.astype(numpy.float64)
    expected_std = math.sqrt(2.0 / fan_in)
    assert weight.std() == pytest.approx(expected_std, rel=0.03)
    assert abs(weight.mean()) < 4 * expected_std / math.sqrt(weight.size)
    assert not layer.bias.data.any()
    assert layer.weight.dtype == numpy.float32


def test_same_seed_gives_same_weights():
    for make in (lambda seed: layers.ConvLayer(3, 4, 3, rng=seed),
                 lambda seed: layers.LinearLayer(6, 5, rng=seed),
                 lambda seed: layers.ResNetBlock(3, rng=seed)):
        first, again, other = make(7).state_dict(), make(7).state_dict(), make(8).state_dict()
        for name in first:
            numpy.testing.assert_array_equal(first[name], again[name])
        assert any((first[name] != other[name]).any() for name in first)


def test_one_generator_gives_different_weights_to_each_layer():
    rng = numpy.random.default_rng(0)
    a, b = layers.LinearLayer(4, 4, rng=rng), layers.LinearLayer(4, 4, rng=rng)
    assert (a.weight.data != b.weight.data).any()


def test_dtype_argument_of_constructors():
    assert layers.ConvLayer(1, 2, 3, dtype="float64", rng=0).weight.dtype == numpy.float64
    assert layers.LinearLayer(1, 2, dtype="float64", rng=0).bias.dtype == numpy.float64
    assert all(p.dtype == numpy.float64 for p in layers.ResNetBlock(2, dtype="float64", rng=0).parameters())


@pytest.mark.parametrize("make", [
    lambda: layers.ConvLayer(0, 6, 5),
    lambda: layers.ConvLayer(1, -6, 5),
    lambda: layers.ConvLayer(1, 6, 0),
    lambda: layers.ConvLayer(1, 6, 5, stride=0),
    lambda: layers.ConvLayer(1.5, 6, 5),
    lambda: layers.ConvLayer(1, 6, "5"),
    lambda: layers.ConvLayer(True, 6, 5),
    lambda: layers.LinearLayer(0, 10),
    lambda: layers.LinearLayer(784, 2.0),
    lambda: layers.MaxPoolLayer(0),
    lambda: layers.MaxPoolLayer(2, stride=0),
    lambda: layers.MaxPoolLayer(2.5),
    lambda: layers.LeakyReLULayer(-0.1),
    lambda: layers.LeakyReLULayer(1.0),
    lambda: layers.LeakyReLULayer(float("nan")),
    lambda: layers.ResNetBlock(0),
    lambda: layers.ResNetBlock(4, kernel_size=0),
], ids=["conv-in0", "conv-out-neg", "conv-k0", "conv-stride0", "conv-in-float", "conv-k-str",
        "conv-in-bool", "linear-in0", "linear-out-float", "pool-k0", "pool-stride0",
        "pool-k-float", "leaky-neg", "leaky-1", "leaky-nan", "resnet-c0", "resnet-k0"])
def test_bad_constructor_arguments_raise_value_error(make):
    with pytest.raises(ValueError):
        make()


def test_resnet_block_rejects_an_even_kernel():
    with pytest.raises(ValueError, match="kernel"):
        layers.ResNetBlock(4, kernel_size=2)


def test_add_layer_input_errors():
    with pytest.raises(ValueError, match="at least one"):
        layers.AddLayer().forward()
    with pytest.raises(ValueError, match="one shape"):
        layers.AddLayer().forward(numpy.zeros((2, 3)), numpy.zeros((2, 4)))


def test_sequential_rejects_a_non_layer():
    with pytest.raises(TypeError, match="item 1"):
        layers.SequentialLayer([layers.ReLULayer(), "ReLULayer"])


def test_copied_layers_are_independent():
    layer = layers.LinearLayer(3, 2, rng=0)
    clone = copy.deepcopy(layer).to(dtype="float64")
    clone.weight.data[...] = 0
    assert layer.weight.data.any() and layer.weight.dtype == numpy.float32


# -- memory layout ---------------------------------------------------------------------------------

def _is_channels_last(x):
    """An (N, C, H, W) array whose memory is (N, H, W, C)."""
    return x.transpose(0, 2, 3, 1).flags.c_contiguous


def test_images_stay_channels_last_through_every_layer(device, rng):
    """CuPy's element-wise functions return C-contiguous arrays unless given `out=`: each
    element-wise layer writes into an `empty_like` of its input, so a conv's channels-last
    output stays channels-last through ReLU, LeakyReLU and the residual sum, on every device
    case, forward and backward."""
    from xpnn.layers import ConvLayer, LeakyReLULayer, MaxPoolLayer, ReLULayer, ResNetBlock

    stack = [ConvLayer(2, 3, 3, rng=numpy.random.default_rng(0)), ReLULayer(),
             ResNetBlock(3, rng=numpy.random.default_rng(1)), LeakyReLULayer(0.1),
             MaxPoolLayer(2)]
    for layer in stack:
        layer.to(device)
    x = device.send(numpy.random.default_rng(2).standard_normal((2, 2, 6, 6)))
    arrays = []
    for layer in stack:
        x = layer.forward(x.astype("float32"))
        arrays.append(x)
    g = device.send(numpy.ones(x.shape, "float32"))
    for layer in reversed(stack[1:]):
        g = layer.backward(g)
        arrays.append(g)
    for x in arrays:
        assert _is_channels_last(x), (x.shape, x.strides)
