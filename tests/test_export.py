"""xpnn export --format onnx: every config's network, run in onnxruntime, matches our forward."""
import json
import sys
from pathlib import Path

import numpy
import pytest
from click.testing import CliRunner

from xpnn import layers, nets
from xpnn.cli import cli
from xpnn.inference.onnx_export import ExportError, to_onnx
from xpnn.training import load_config

onnx = pytest.importorskip("onnx", reason="the onnx package is not installed "
                                          "(pip install 'xpnn[onnx]')")

REPO = Path(__file__).resolve().parent.parent
CONFIGS = sorted(path.stem for path in (REPO / "configs").glob("*.yaml"))
OPERATORS = {"Conv", "MaxPool", "Relu", "LeakyRelu", "Flatten", "Gemm", "Add", "Softmax"}


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args], prog_name="xpnn")


def onnxruntime_session(model):
    onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed "
                                                            "(pip install 'xpnn[onnx]')")
    return onnxruntime.InferenceSession(model.SerializeToString(),
                                        providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_runs_in_onnxruntime_as_in_xpnn(name):
    config = load_config(REPO / "configs" / f"{name}.yaml")
    net = nets.build(config["model"], seed=0)
    model = to_onnx(net)
    assert {node.op_type for node in model.graph.node} <= OPERATORS
    images = numpy.random.default_rng(0).random((5, *net.input_shape), dtype=numpy.float32)
    logits, probabilities = onnxruntime_session(model).run(None, {"images": images})
    ours = net.forward(images)
    scale = max(1.0, float(numpy.abs(ours).max()))
    assert numpy.abs(logits - ours).max() <= 1e-5 * scale
    shifted = numpy.exp(ours - ours.max(axis=1, keepdims=True))
    assert numpy.abs(probabilities - shifted / shifted.sum(axis=1, keepdims=True)).max() <= 1e-5


def test_a_batch_of_any_size_and_strided_layers_export():
    net = nets.Network("Strided", [
        layers.ConvLayer(1, 4, 3, stride=2, rng=0), layers.LeakyReLULayer(0.2),
        layers.MaxPoolLayer(3, stride=2), layers.FlattenLayer(), layers.LinearLayer(144, 3, rng=0),
    ], input_shape=(1, 28, 28))
    session = onnxruntime_session(to_onnx(net))
    for count in (1, 7):
        images = numpy.random.default_rng(count).random((count, 1, 28, 28), dtype=numpy.float32)
        logits, _ = session.run(None, {"images": images})
        assert numpy.allclose(logits, net.forward(images), rtol=1e-5, atol=1e-6)


def test_a_layer_without_an_onnx_form_is_named():
    class Doubling(layers.Layer):
        def forward(self, x):
            return 2 * x

    net = nets.Network("Odd", [layers.FlattenLayer(), Doubling(), layers.LinearLayer(784, 10, rng=0)],
                       input_shape=(1, 28, 28))
    with pytest.raises(ExportError, match=r"layers\.1 \(Doubling\) has no ONNX form here"):
        to_onnx(net)


def test_without_onnx_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    net = nets.build(load_config(REPO / "configs" / "lenet.yaml")["model"])
    with pytest.raises(ExportError, match=r"pip install 'xpnn\[onnx\]'"):
        to_onnx(net)


def test_export_command_writes_a_checked_model_with_its_classes(tmp_path):
    run = tmp_path / "run"
    result = invoke("train", "-c", "resnet_leaky", "--epochs", "1", "--limit-train", "200",
                    "--limit-test", "100", "--no-progress", "--output", run)
    assert result.exit_code == 0, result.output
    result = invoke("export", run, "--format", "onnx")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"wrote {run / 'model.onnx'}: MNISTResNetwork")
    model = onnx.load(run / "model.onnx")
    onnx.checker.check_model(model, full_check=True)
    properties = {prop.key: prop.value for prop in model.metadata_props}
    assert json.loads(properties["class_names"]) == [str(digit) for digit in range(10)]
    assert properties["dataset"] == "mnist" and properties["checkpoint"] == str(run / "best.npz")
    assert [output.name for output in model.graph.output] == ["logits", "probabilities"]

    other = tmp_path / "last.onnx"
    assert invoke("export", run / "last.npz", "-o", other).exit_code == 0 and other.is_file()
    result = invoke("export", run, "--format", "tflite")
    assert result.exit_code == 2 and "'tflite' is not 'onnx'" in result.stderr
