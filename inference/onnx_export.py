"""A network as an ONNX model (opset 17, IR version 8: onnxruntime 1.13 and newer), checked by
`onnx.checker`. It takes ``images``, (N, C, H, W) in the network's float type, pixel levels / 255
(light on dark, as the network was trained), and gives ``logits`` (N, classes) and their softmax,
``probabilities``. Each layer becomes the ONNX operator `OPERATORS` names (`_Graph.emit`).
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
# Layer type -> (ONNX operator, its attributes from the layer).
OPERATORS = {
    ConvLayer: ("Conv", lambda layer: {"kernel_shape": [layer.kernel_size] * 2,  # pads (k - 1) // 2
                                       "strides": [layer.stride] * 2, "pads": [layer.padding] * 4}),
    MaxPoolLayer: ("MaxPool", lambda layer: {"kernel_shape": [layer.kernel_size] * 2,  # floor mode
                                             "strides": [layer.stride] * 2}),
    ReLULayer: ("Relu", lambda layer: {}),
    LeakyReLULayer: ("LeakyRelu", lambda layer: {"alpha": layer.slope}),
    FlattenLayer: ("Flatten", lambda layer: {"axis": 1}),  # C, H, W order, as ours
    LinearLayer: ("Gemm", lambda layer: {}),  # our weight is (in, out): no transpose
}
EXPORTABLE = [*OPERATORS, SequentialLayer, ResNetBlock]


class ExportError(ValueError):
    """The network holds a layer that has no ONNX form here, or `onnx` is not installed."""


class _Graph:
    """The nodes and weights of an ONNX graph as it is built, with unique value names."""

    def __init__(self, onnx):
        self.onnx = onnx
        self.nodes, self.weights = [], []
        self._used = Counter()

    def name(self, stem):
        self._used[stem] += 1
        return stem if self._used[stem] == 1 else f"{stem}_{self._used[stem]}"

    def node(self, op, inputs, stem, **attributes):
        """Add one `op` node reading `inputs`; return the name of its output."""
        output = self.name(stem)
        self.nodes.append(self.onnx.helper.make_node(op, list(inputs), [output],
                                                     name=f"{output}/{op}", **attributes))
        return output

    def emit(self, layer, x, where):
        """Add the nodes of `layer` reading `x`, named after `where`; return its output's name."""
        kind = type(layer)
        if kind is SequentialLayer:
            for name, child in layer.named_children():
                x = self.emit(child, x, f"{where}.{name}" if where else name)
            return x
        if kind is ResNetBlock:
            branch = self.emit(layer.conv_layers, x, f"{where}.conv_layers")
            return self.emit(layer.relu2, self.node("Add", [branch, x], f"{where}.add_layer"),
                             f"{where}.relu2")
        if kind not in OPERATORS:
            raise ExportError(f"{where} ({kind.__name__}) has no ONNX form here; exportable "
                              f"layers: {', '.join(cls.__name__ for cls in EXPORTABLE)}")
        op, attributes = OPERATORS[kind]
        inputs = [x]
        if kind in (ConvLayer, LinearLayer):
            for name in ("weight", "bias"):  # graph initializers
                inputs.append(self.name(f"{where}.{name}"))
                array = CPU.to_numpy(getattr(layer, name).data).copy()
                self.weights.append(self.onnx.numpy_helper.from_array(array, inputs[-1]))
        return self.node(op, inputs, where, **attributes(layer))


def to_onnx(net, metadata=None):
    """The `onnx.ModelProto` of a `nets.Network`, checked by `onnx.checker`; `ExportError` if a
    layer has no ONNX form or `onnx` is not installed. `metadata` (str -> str) is added to the
    model's metadata_props, after xpnn's own (producer version, network name, input convention)."""
    try:
        import onnx
    except ImportError:
        raise ExportError("exporting to ONNX needs the onnx package, which is not installed: "
                          "pip install onnx (or pip install 'xpnn[onnx]')") from None
    graph = _Graph(onnx)
    graph.emit(net.layers, "images", "layers")
    graph.nodes[-1].output[0] = "logits"  # the last layer's output is the model's
    graph.nodes.append(onnx.helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1,
                                             name="probabilities"))
    element = onnx.helper.np_dtype_to_tensor_dtype(net.parameters()[0].dtype)
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


def export_onnx(trained, path):
    """Write the network of `trained` (a `training.runs.TrainedNetwork`) to `path` as ONNX,
    atomically; its metadata names the classes, dataset and checkpoint. Returns the model."""
    from xpnn.inference.predict import class_names
    model = to_onnx(trained.net, {
        "class_names": json.dumps(class_names(trained.config)),
        "dataset": trained.config["data"]["dataset"],
        # a path that is not UTF-8 (surrogates in Python) has those bytes written as \xNN
        "checkpoint": os.fsencode(trained.checkpoint.path).decode("utf-8", "backslashreplace"),
        "epoch": str(trained.checkpoint.epoch),
    })
    atomic_write(path, lambda handle: handle.write(model.SerializeToString()))
    return model
