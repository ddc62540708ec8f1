"""The fused kernels on a whole network against the cpu way, their arithmetic a GPU's: the
emulator contracts a * b + c into one fused multiply-add as nvcc does (tests/cuda_emulation.py).

On an NVIDIA H200, resnet_stem's float32 weight gradients were 3.5e-2 off the NumPy reference
with the fused kernels (BENCHMARKS.md) while every forward, float64 and five other networks
were exact. The cause, reproduced here: one ReLU input, 2.2e-7 from zero in float64 as the sum
of a residual branch and its skip (0.279149 each, of opposite signs), which float32 cannot place
on either side of zero for sure. The direct kernel's multiply-adds round it to +6e-8, the cpu
way's GEMM to -1.2e-7: the ReLU passes one pixel's gradient in one and not in the other, and
every weight gradient upstream of it moves by a few percent. With that one decision shared, the
fused gradients, input gradients by the direct kernel included, match the cpu way to 1e-6.
"""
import functools
import shutil
import subprocess
from pathlib import Path

import numpy
import pytest

import cuda_emulation
from xpnn import backend
from xpnn.backend import conv, conv_kernels, cuda
from xpnn.backend.conv import PaddedInput
from xpnn.data import load_dataset
from xpnn.layers.activation import ReLULayer
from xpnn.nets import build
from xpnn.tools.parity import tensor_errors
from xpnn.training.batches import to_float
from xpnn.training.config import load_config

REPO = Path(__file__).resolve().parent.parent
BATCH = 8  # test images, as `xpnn parity` and scripts/gpu_check.sh compare them


def require_gpu_arithmetic():
    """Skip unless the emulator runs here with a GPU's rounding (fused multiply-adds)."""
    reason = cuda_emulation.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    if not cuda_emulation.contracts_multiply_adds():
        pytest.skip("this host has no fused multiply-add: the emulation rounds a * b + c twice, "
                    "where a GPU rounds it once")


@pytest.fixture
def gpu_arithmetic():
    require_gpu_arithmetic()


def require_gpu():
    """The GPU `Device`; skips where there is none."""
    reason = backend.gpu_unavailable_reason()
    if reason is not None:
        pytest.skip(f"no usable GPU: {reason}")
    return backend.get_device("gpu")


def test_the_emulation_rounds_a_multiply_add_once_as_a_gpu_does(gpu_arithmetic):
    """xpnn_correlate's sum -(1 + 2^-11) + a * a, a = 1 + 2^-12: exactly 2^-24 when the product
    is not rounded before the add (fma.rn.f32, what nvcc makes of it), 0 when it is."""
    a = 1 + 2.0 ** -12
    x = numpy.array([[[[-(1 + 2.0 ** -11)], [a]], [[0.0], [0.0]]]], dtype="float32")
    kernel = numpy.array([[[[1.0, a], [0.0, 0.0]]]], dtype="float32")  # (1, 1, 2, 2)
    with cuda_emulation.emulating():
        got = conv.correlate(PaddedInput(x), kernel, 1)
    assert got.shape == (1, 1, 1, 1) and got[0, 0, 0, 0] == numpy.float32(2.0 ** -24)


def test_nvcc_compiles_the_correlation_into_fused_multiply_adds(tmp_path):
    """What the emulation models: the direct kernel's sums, as nvcc compiles them by default,
    are fma.rn.f32 instructions (resnet_stem's 6-channel block configuration)."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not installed")
    tile = conv_kernels.correlate_tile(BATCH, 14, 14, 6, 6, 3, 4)
    kernel = conv_kernels.correlate_kernel(3, 1, 1, tile)
    ptx = tmp_path / "correlate.ptx"
    completed = subprocess.run(
        [nvcc, "-arch=sm_90", "-ptx", str(cuda.FOLDER / kernel.file), "-o", str(ptx),
         *kernel.compile_options("float32")], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    body = ptx.read_text().split(".entry xpnn_correlate(")[1]
    assert "fma.rn.f32" in body and "mul.rn.f32" not in body and "mul.f32" not in body


def _relus(layer, prefix="layers."):
    """(dotted name, layer) of every `ReLULayer` under `layer`, in order."""
    for name, child in layer.named_children():
        if isinstance(child, ReLULayer):
            yield prefix + name, child
        yield from _relus(child, f"{prefix}{name}.")


class StemRun:
    """resnet_stem (seed 0) after forward_loss on the first `BATCH` test images inside
    `context()`, on `device` (None: the host): its ReLUs' inputs by name (`inputs`, host copies),
    its ReLU layers (`relus`); `gradients()` runs backward and returns host copies."""

    def __init__(self, context, dtype, monkeypatch, device=None):
        config = load_config(REPO / "configs" / "resnet_stem.yaml")
        dataset = load_dataset("mnist")
        images = to_float(dataset.test_images[:BATCH]).astype(dtype)
        labels = dataset.test_labels[:BATCH].copy()
        self.context, self.net = context, build(config["model"], config["train"]["seed"], dtype)
        if device is not None:
            self.net.to(device)
            images, labels = device.send(images), device.send(labels)
        self.relus = dict(_relus(self.net.layers))
        names = {id(layer): name for name, layer in self.relus.items()}
        self.inputs = {}
        real = ReLULayer.forward

        def forward(layer, x):
            self.inputs[names[id(layer)]] = backend.CPU.to_numpy(x).copy()
            return real(layer, x)
        with monkeypatch.context() as patch, context():
            patch.setattr(ReLULayer, "forward", forward)
            self.net.forward_loss(images, labels)

    def gradients(self):
        with self.context():
            self.net.backward()
        return {name: backend.CPU.to_numpy(param.grad).copy()
                for name, param in self.net.named_parameters()}


def _worst(reference, other):
    return max(tensor_errors(reference[name], other[name])[1] for name in reference)


def _direct_input_gradient(padded, kernel, stride, bias):
    """``fused`` correlation as it was before the input gradient took the patch matrices: every
    correlation, flipped kernel views included, by the direct kernel."""
    return conv_kernels.correlate(padded, kernel, stride, bias)


def fused_run(where, monkeypatch):
    """resnet_stem's `StemRun` by the fused kernels: ``emulated`` on the CPU, or on the ``gpu``
    (eager)."""
    if where == "emulated":
        require_gpu_arithmetic()
        return StemRun(cuda_emulation.emulating, "float32", monkeypatch)
    gpu = require_gpu()
    return StemRun(functools.partial(backend.running_on, gpu, backend.Mode("fused")), "float32",
                   monkeypatch, device=gpu)


@pytest.mark.parametrize("input_gradient", ["patch-matrices", "direct-kernel"])
@pytest.mark.parametrize("where", ["emulated", pytest.param("gpu", marks=pytest.mark.gpu)])
def test_resnet_stem_parts_from_the_cpu_way_at_one_relu_within_rounding_of_zero(
        where, input_gradient, monkeypatch):
    """On the GPU (the ``gpu`` case), this is what would send the input gradient back to the
    direct kernel: the same one decision, and with it shared, gradients within 1e-5."""
    if input_gradient == "direct-kernel":
        monkeypatch.setattr(conv, "_correlate_direct", _direct_input_gradient)
    cpu = functools.partial(backend.using, "cpu")
    fused = fused_run(where, monkeypatch)
    reference = StemRun(cpu, "float32", monkeypatch)
    exact = StemRun(cpu, "float64", monkeypatch)

    flips = {name: numpy.argwhere((fused.inputs[name] > 0) != (reference.inputs[name] > 0))
             for name in reference.inputs}
    assert [(name, len(at)) for name, at in flips.items() if len(at)] == [("layers.5.relu2", 1)]
    at = tuple(flips["layers.5.relu2"][0])
    truth = exact.inputs["layers.5.relu2"]
    assert abs(truth[at]) < 1e-6  # inside float32 rounding of its two terms (0.28 each)
    assert numpy.sign(fused.inputs["layers.5.relu2"][at]) != numpy.sign(truth[at])
    for name in reference.inputs:  # every forward agrees with float64 to float32 rounding
        assert tensor_errors(exact.inputs[name], fused.inputs[name])[1] < 1e-6, name

    fused_grads = fused.gradients()
    assert _worst(reference.gradients(), fused_grads) > 1e-2  # the H200's 3.5e-2
    shared = StemRun(cpu, "float32", monkeypatch)
    shared.relus["layers.5.relu2"]._out[at] = max(fused.inputs["layers.5.relu2"][at], 0)
    assert _worst(shared.gradients(), fused_grads) < 1e-5


@pytest.mark.gpu
def test_a_gpu_computes_the_fused_forward_as_the_emulation_does(monkeypatch):
    """What ties the emulation to the device: on a GPU, in eager fused mode, every ReLU input of
    resnet_stem's convolution stack (up to the FlattenLayer, layers.10; the linear layers'
    cuBLAS GEMMs sum in an order of their own) equals the emulation's bit for bit, so the one
    ReLU decision above is the GPU's too."""
    on_gpu = fused_run("gpu", monkeypatch)
    emulated = fused_run("emulated", monkeypatch)
    stack = [name for name in emulated.inputs if int(name.split(".")[1]) < 10]
    assert "layers.5.relu2" in stack
    for name in stack:
        numpy.testing.assert_array_equal(on_gpu.inputs[name], emulated.inputs[name], err_msg=name)
