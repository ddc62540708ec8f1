"""Parity across settings: float32 against float64 on NumPy for every config, and NumPy against
CuPy where a GPU is present. Also the parity helper's own behaviour."""
from pathlib import Path

import numpy
import pytest
import yaml

from xpnn import backend
from xpnn import layers
from xpnn import nets
import cuda_emulation
from xpnn.tools import parity

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))
FLOAT32_TOLERANCE = 1e-4  # max abs error / max abs float64 reference, per tensor


def _model_config(path):
    return yaml.safe_load(path.read_text())["model"]


def _batch(config, batch=3, seed=0):
    rng = numpy.random.default_rng(seed)
    return rng.random((batch, *config["input_shape"])), rng.integers(0, 10, batch)


def _assert_close(rows, tolerance, title):
    bad = [row for row in rows if not row.max_rel_err <= tolerance]
    assert not bad, parity.format_report(rows, title=f"{title}: above {tolerance}: "
                                                      f"{[row.name for row in bad]}")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.stem)
def test_float32_matches_float64_for_every_config(path):
    config = _model_config(path)
    images, labels = _batch(config)
    rows = parity.compare(lambda: nets.build(config, seed=0), images, labels,
                          a=("cpu", "float64"), b=("cpu", "float32"))
    net = nets.build(config)
    names = [row.name for row in rows]
    assert len([row for row in rows if row.kind == "output"]) == len(net.layers) + 1  # + logits
    assert "loss" in names
    assert [row.name for row in rows if row.kind == "param_grad"] == [
        name for name, _ in net.named_parameters()]
    _assert_close(rows, FLOAT32_TOLERANCE, path.stem)


def _logits_loss_and_grads(config, images, labels):
    net = nets.build(config, seed=0).to("cpu", dtype="float64")
    loss, logits = net.forward_loss(images, labels)
    net.backward()
    return {"logits": logits, "loss": loss,
            **{name: param.grad for name, param in net.named_parameters()}}


def _emulated_fused_kernels():
    reason = cuda_emulation.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    return cuda_emulation.emulating()


GPU_PATHS = {"gpu-code": lambda: backend.using("gpu"), "fused-emulated": _emulated_fused_kernels}


@pytest.mark.parametrize("gpu_path", GPU_PATHS)
@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.stem)
def test_gpu_code_paths_match_the_cpu_path_for_every_config(path, gpu_path):
    """The GPU's array code, and its fused CUDA kernels, run on NumPy, against the CPU's path
    (float64, batch 5: several chunks on the CPU path)."""
    config = _model_config(path)
    images, labels = _batch(config, batch=5)
    cpu_path = _logits_loss_and_grads(config, images, labels)
    with GPU_PATHS[gpu_path]():
        gpu_path = _logits_loss_and_grads(config, images, labels)
    errors = {name: parity.tensor_errors(cpu_path[name], gpu_path[name])[1] for name in cpu_path}
    assert max(errors.values()) < 1e-12, errors


ON_GPU = pytest.mark.parametrize("device", ["gpu", "gpu-fused"], indirect=True)  # GPU cases only


@pytest.mark.gpu
@ON_GPU
@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.stem)
def test_gpu_matches_cpu_for_every_config(path, device):
    """NumPy float64 against CuPy in float32 and in float64."""
    config = _model_config(path)
    images, labels = _batch(config, batch=4)
    for dtype, tolerance in [("float32", FLOAT32_TOLERANCE), ("float64", 1e-10)]:
        rows = parity.compare(lambda: nets.build(config, seed=0), images, labels,
                              a=("cpu", "float64"), b=(device, dtype))
        _assert_close(rows, tolerance, f"{path.stem} cpu/float64 vs {device.name}/{dtype}")


@pytest.mark.gpu
@ON_GPU
@pytest.mark.parametrize("make_layer,inputs", [
    (lambda: layers.ConvLayer(3, 4, 3, stride=2, rng=0), [(2, 3, 7, 6)]),
    (lambda: layers.MaxPoolLayer(3, 2), [(2, 3, 7, 6)]),
    (lambda: layers.ResNetBlock(3, activation=layers.LeakyReLULayer, rng=0), [(2, 3, 5, 6)]),
    (lambda: layers.LinearLayer(5, 4, rng=0), [(3, 5)]),
    (layers.AddLayer, [(2, 3), (2, 3), (2, 3)]),
], ids=["conv", "maxpool", "resnet-block-leaky", "linear", "add"])
def test_gpu_matches_cpu_for_single_layers(make_layer, inputs, device):
    rng = numpy.random.default_rng(0)
    xs = tuple(rng.standard_normal(shape) for shape in inputs)
    rows = parity.compare(make_layer, xs, a=("cpu", "float64"), b=(device, "float64"))
    _assert_close(rows, 1e-10, device.name)


# -- the helper itself --------------------------------------------------------------------------------

def test_compare_single_layer_rows_and_identical_settings_agree_exactly():
    rng = numpy.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 5))
    rows = parity.compare(lambda: layers.ConvLayer(3, 2, 3, rng=0), x,
                          a=("cpu", "float64"), b=("cpu", "float64"))
    assert [(row.name, row.kind, row.shape) for row in rows] == [
        ("output", "output", (2, 2, 6, 5)),
        ("input_grad", "input_grad", (2, 3, 6, 5)),
        ("weight", "param_grad", (2, 3, 3, 3)),
        ("bias", "param_grad", (2,)),
    ]
    assert all(row.max_abs_err == 0 and row.max_rel_err == 0 for row in rows)


def test_compare_loss_layer_and_several_inputs():
    rng = numpy.random.default_rng(0)
    logits, labels = rng.standard_normal((4, 5)), numpy.array([0, 4, 2, 2])
    rows = parity.compare(layers.SoftmaxCrossEntropyLossLayer, logits, labels)
    assert [(row.name, row.kind) for row in rows] == [("loss", "loss"), ("input_grad", "input_grad")]
    assert parity.worst(rows).max_rel_err < 1e-6

    rows = parity.compare(layers.AddLayer, (logits, logits * 2))
    assert [row.name for row in rows] == ["output", "input_grad[0]", "input_grad[1]"]


def test_compare_sequential_layer_has_a_row_per_stage():
    rows = parity.compare(
        lambda: layers.SequentialLayer([layers.LinearLayer(4, 3, rng=0), layers.ReLULayer()]),
        numpy.random.default_rng(0).standard_normal((2, 4)))
    assert [row.name for row in rows][:3] == ["0 LinearLayer", "1 ReLULayer", "output"]


def test_compare_finds_where_two_settings_part():
    """A layer that misbehaves only in float32 shows up in its own stage, not before it."""

    class BrokenInFloat32(layers.ReLULayer):
        def forward(self, x):
            out = super().forward(x)
            return out * 1.01 if out.dtype == numpy.float32 else out

    def build():
        return layers.SequentialLayer([layers.LinearLayer(4, 3, rng=0), BrokenInFloat32(),
                                       layers.LinearLayer(3, 2, rng=1)])

    x = numpy.random.default_rng(0).standard_normal((5, 4))
    rows = {row.name: row for row in parity.compare(build, x)}
    assert rows["0 LinearLayer"].max_rel_err < 1e-6
    assert rows["1 BrokenInFloat32"].max_rel_err == pytest.approx(0.01, rel=1e-3)
    assert parity.worst(list(rows.values())).max_rel_err > 5e-3


def test_compare_uses_identical_weights_even_if_build_is_unseeded():
    rows = parity.compare(lambda: layers.LinearLayer(6, 3, rng=0), numpy.ones((2, 6)),
                          a=("cpu", "float64"), b=("cpu", "float64"))
    assert parity.worst(rows).max_abs_err == 0


def test_compare_rejects_a_shared_model_and_a_network_without_labels():
    layer = layers.ReLULayer()
    with pytest.raises(ValueError, match="new model each call"):
        parity.compare(lambda: layer, numpy.ones((2, 2)))
    config = _model_config(CONFIGS[0])
    with pytest.raises(ValueError, match="labels"):
        parity.compare(lambda: nets.build(config), _batch(config)[0])


def test_tensor_errors_are_relative_to_the_reference_and_flag_nan():
    assert parity.tensor_errors([1.0, -4.0], [1.5, -4.0]) == (0.5, 0.125)
    assert parity.tensor_errors([0.0, 0.0], [0.0, 0.0]) == (0.0, 0.0)
    assert parity.tensor_errors(numpy.float64(2.0), numpy.float64(2.0)) == (0.0, 0.0)
    assert parity.tensor_errors([numpy.inf, 1.0], [numpy.inf, 1.0]) == (0.0, 0.0)
    assert parity.tensor_errors([1.0, 2.0], [numpy.nan, 2.0])[1] == numpy.inf
    with pytest.raises(ValueError, match="shapes"):
        parity.tensor_errors(numpy.ones(3), numpy.ones(4))


def test_format_report_lists_every_row_and_the_worst():
    rows = [parity.ParityRow("layers.0 ConvLayer", "output", 1e-7, 2e-7, (2, 6, 28, 28)),
            parity.ParityRow("loss", "loss", 3e-6, 4e-6, ())]
    report = parity.format_report(rows, title="lenet: cpu/float64 vs cpu/float32")
    lines = report.splitlines()
    assert lines[0] == "lenet: cpu/float64 vs cpu/float32"
    assert "max rel err" in lines[1]
    assert "layers.0 ConvLayer" in lines[3] and "2x6x28x28" in lines[3] and "2.000e-07" in lines[3]
    assert "scalar" in lines[4] and "4.000e-06" in lines[4]
    assert lines[-1] == "worst: loss (loss), max rel err 4.000e-06"
    assert parity.worst([]) is None
