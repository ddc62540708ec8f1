"""A network as an ONNX model, built with the `onnx` package and checked by `onnx.checker`.

The model takes ``images``, (N, C, H, W) in the network's float type, pixel levels / 255 (light
on dark, as the network was trained), and gives ``logits`` (N, classes) and their softmax,
``probabilities``. Each layer becomes the ONNX operators that compute it:

    ConvLayer       Conv (pads (k - 1) // 2 on every side, strides)
    MaxPoolLayer    MaxPool (no padding; incomplete windows dropped, as ONNX's floor mode)
    ReLULayer       Relu             LeakyReLULayer  LeakyRelu (alpha = slope)
    FlattenLayer    Flatten (axis 1: C, H, W order, as ours)
    LinearLayer     Gemm (our weight is (in, out): no transpose)
    ResNetBlock     its conv, activation, conv, then Add with the block's input and activation
    SequentialLayer its layers in order

Opset 17 (IR version 8), which onnxruntime 1.13 and newer run.
"""
import json
import os
from collections import Counter

from xpnn import __version__
from xpnn.backend import CPU
from xpnn.layers import (ConvLayer, FlattenLayer, LeakyReLULayer, LinearLayer, MaxPoolLayer,
                         ReLULayer, ResNetBlock, SequentialLayer)
from xpnn.training.files import atomic_write

OPSET = 17
IR_VERSION = 8


class ExportError(ValueError):
    """The network holds a layer that has no ONNX form here, or `onnx` is not installed."""


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ExportError("exporting to ONNX needs the onnx package, which is not installed: "
                          "pip install onnx (or pip install 'xpnn[onnx]')") from None
    return onnx


class _Graph:
    """The nodes and weights of an ONNX graph as it is built, with unique value names."""

    def __init__(self, onnx):
        self.onnx = onnx
        self.nodes, self.weights = [], []
        self._used = Counter()

    def name(self, stem):
        self._used[stem] += 1
        count = self._used[stem]
        return stem if count == 1 else f"{stem}_{count}"

    def weight(self, stem, array):
        """Add `array` (any device) as a graph initializer; return its name."""
        name = self.name(stem)
        self.weights.append(self.onnx.numpy_helper.from_array(CPU.to_numpy(array).copy(), name))
        return name

    def node(self, op, inputs, stem, **attributes):
        """Add one `op` node reading `inputs`; return the name of its output."""
        output = self.name(stem)
        self.nodes.append(self.onnx.helper.make_node(op, list(inputs), [output],
                                                     name=f"{output}/{op}", **attributes))
        return output


def _weight_and_bias(layer, graph, where):
    return [graph.weight(f"{where}.{name}", getattr(layer, name).data)
            for name in ("weight", "bias")]


def _conv(layer, graph, x, where):
    return graph.node("Conv", [x, *_weight_and_bias(layer, graph, where)], where,
                      kernel_shape=[layer.kernel_size] * 2, strides=[layer.stride] * 2,
                      pads=[layer.padding] * 4)


def _max_pool(layer, graph, x, where):
    return graph.node("MaxPool", [x], where, kernel_shape=[layer.kernel_size] * 2,
                      strides=[layer.stride] * 2)


def _relu(layer, graph, x, where):
    return graph.node("Relu", [x], where)


def _leaky_relu(layer, graph, x, where):
    return graph.node("LeakyRelu", [x], where, alpha=layer.slope)


def _flatten(layer, graph, x, where):
    return graph.node("Flatten", [x], where, axis=1)


def _linear(layer, graph, x, where):
    return graph.node("Gemm", [x, *_weight_and_bias(layer, graph, where)], where)


def _sequential(layer, graph, x, where):
    for name, child in layer.named_children():
        x = _emit(child, graph, x, f"{where}.{name}" if where else name)
    return x


def _resnet_block(layer, graph, x, where):
    branch = _emit(layer.conv_layers, graph, x, f"{where}.conv_layers")
    total = graph.node("Add", [branch, x], f"{where}.add_layer")
    return _emit(layer.relu2, graph, total, f"{where}.relu2")


EMITTERS = {
    ConvLayer: _conv, MaxPoolLayer: _max_pool, ReLULayer: _relu, LeakyReLULayer: _leaky_relu,
    FlattenLayer: _flatten, LinearLayer: _linear, SequentialLayer: _sequential,
    ResNetBlock: _resnet_block,
}


def _emit(layer, graph, x, where):
    emitter = EMITTERS.get(type(layer))
    if emitter is None:
        raise ExportError(f"{where} ({type(layer).__name__}) has no ONNX form here; exportable "
                          f"layers: {', '.join(cls.__name__ for cls in EMITTERS)}")
    return emitter(layer, graph, x, where)


def to_onnx(net, metadata=None):
    """The `onnx.ModelProto` of a `nets.Network`, checked by `onnx.checker`.

    `metadata` (str -> str) is added to the model's metadata_props, after xpnn's own
    (producer version, network name, input convention).
    """
    onnx = _onnx()
    graph = _Graph(onnx)
    _emit(net.layers, graph, "images", "layers")
    graph.nodes[-1].output[0] = "logits"  # the last layer's output is the model's
    graph.nodes.append(onnx.helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1,
                                             name="probabilities"))
    dtype = net.parameters()[0].dtype
    element = onnx.helper.np_dtype_to_tensor_dtype(dtype)
    classes = net.output_shape((1, *net.input_shape))[1]
    proto = onnx.helper.make_graph(
        graph.nodes, net.name,
        inputs=[onnx.helper.make_tensor_value_info("images", element, ["N", *net.input_shape])],
        outputs=[onnx.helper.make_tensor_value_info(name, element, ["N", classes])
                 for name in ("logits", "probabilities")],
        initializer=graph.weights)
    model = onnx.helper.make_model(proto, producer_name="xpnn", producer_version=__version__,
                                   opset_imports=[onnx.helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    model.doc_string = f"{net.name}, exported by xpnn {__version__}"
    properties = {"network": net.name, "input": "images (N, C, H, W): pixel levels / 255, light "
                                                 "on dark", **(metadata or {})}
    onnx.helper.set_model_props(model, properties)
    onnx.checker.check_model(model, full_check=True)
    return model


def printable_path(path):
    """`path` as text ONNX can hold (UTF-8): a name that is not UTF-8 (bytes the OS allows
    in a path, which Python carries as surrogates) has those bytes written as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def export_onnx(trained, path):
    """Write the network of `trained` (a `training.runs.TrainedNetwork`) to `path` as ONNX,
    atomically; its metadata names the classes, dataset and checkpoint. Returns the model."""
    from xpnn.inference.predict import class_names
    model = to_onnx(trained.net, {
        "class_names": json.dumps(class_names(trained.config)),
        "dataset": trained.config["data"]["dataset"],
        "checkpoint": printable_path(trained.checkpoint.path),
        "epoch": str(trained.checkpoint.epoch),
    })
    atomic_write(path, lambda handle: handle.write(model.SerializeToString()))
    return model
