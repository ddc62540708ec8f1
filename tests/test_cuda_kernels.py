"""The fused-kernel machinery itself: the switch, the kernel wrappers, the CPU emulation and the
NVRTC compile script. (The kernels' results are checked through the layers, in every test that
takes the `device` fixture: see its ``cpu-fused-emulated`` and ``gpu-fused`` cases.)"""
import importlib.util
from pathlib import Path

import numpy
import pytest

from xpnn.backend import cuda_emulation
from xpnn.backend.cuda import (ENV_FLAG, ElementwiseKernel, RawKernel, forcing_fused_kernels,
                          fused_kernels, fused_kernels_setting)

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


@pytest.fixture
def emulation():
    reason = cuda_emulation.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with cuda_emulation.emulating():
        yield


def test_numpy_takes_fused_kernels_only_inside_emulation(monkeypatch):
    monkeypatch.setenv(ENV_FLAG, "1")
    with forcing_fused_kernels(True):
        assert not fused_kernels(numpy)
    if cuda_emulation.unavailable_reason() is None:
        with cuda_emulation.emulating():
            assert fused_kernels(numpy)
    assert not cuda_emulation.active()


@pytest.mark.parametrize("value,expected", [("", False), ("0", False), ("1", True), (" 1 ", True)])
def test_the_environment_switch(value, expected, monkeypatch):
    monkeypatch.setenv(ENV_FLAG, value)
    assert fused_kernels_setting() is expected


@pytest.mark.parametrize("value", ["yes", "true", "2", "on"])
def test_a_bad_environment_switch_names_the_variable_and_the_values(value, monkeypatch):
    monkeypatch.setenv(ENV_FLAG, value)
    with pytest.raises(ValueError, match=rf"{ENV_FLAG} must be 0 \(array code\) or 1 .*'{value}'"):
        fused_kernels_setting()


def test_raw_kernel_source_declares_the_floating_type():
    kernel = RawKernel('extern "C" __global__ void f(T* x) {}', "f", [])
    assert kernel.source_for("float32").startswith("typedef float T;")
    assert kernel.source_for(numpy.float64).startswith("typedef double T;")


def test_emulated_elementwise_kernel_broadcasts_and_writes_given_outputs(emulation):
    axpy = ElementwiseKernel("T x, T a", "T y", "y += a * x", "test_axpy")
    x = numpy.arange(6.0).reshape(2, 3)
    y = numpy.ones((3, 2)).T  # not contiguous: written through its strides
    assert axpy(x, 2.0, y) is y
    numpy.testing.assert_array_equal(y, 1 + 2 * x)
    fresh = ElementwiseKernel("T x", "T y", "y = x * x", "test_square")(x[:, :1] + x[:1, :])
    numpy.testing.assert_array_equal(fresh, (x[:, :1] + x[:1, :]) ** 2)


def test_emulated_raw_kernel_runs_every_thread_and_rejects_strided_arrays(emulation):
    double_it = RawKernel(r"""
extern "C" __global__ void xpnn_test_double(const T* x, T* y, long long size) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < size;
         i += (long long)blockDim.x * gridDim.x) {
        y[i] = 2 * x[i];
    }
}
""", "xpnn_test_double", ["int64"])
    x = numpy.arange(20, dtype=numpy.float32)  # more items than threads in the emulated grid
    y = numpy.zeros_like(x)
    double_it(x.size, (x, y, x.size), x.dtype)
    numpy.testing.assert_array_equal(y, 2 * x)
    with pytest.raises(ValueError, match="contiguous"):
        double_it(10, (x[::2], y[:10], 10), x.dtype)


def test_emulation_reports_a_compile_error_with_the_compiler_output(emulation):
    broken = RawKernel('extern "C" __global__ void xpnn_broken(T* x) { x[0] = nope; }',
                       "xpnn_broken", [])
    with pytest.raises(RuntimeError, match="nope"):
        broken(1, (numpy.zeros(1),), "float64")


def _compile_script():
    spec = importlib.util.spec_from_file_location("compile_cuda_kernels",
                                                  SCRIPTS / "compile_cuda_kernels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compile_script_finds_every_kernel_and_says_how_to_get_nvrtc(monkeypatch, capsys):
    script = _compile_script()
    names = {kernel.name for _, kernel in script.all_kernels()}
    assert {"xpnn_maxpool_forward", "xpnn_maxpool_backward", "xpnn_im2col",
            "xpnn_softmax_cross_entropy", "xpnn_add_batch_stats", "xpnn_relu_backward",
            "xpnn_momentum_sgd_step"} <= names
    monkeypatch.setattr(script, "find_nvrtc", lambda: None)
    assert script.main([]) == 2
    assert "pip install nvidia-cuda-nvrtc-cu12" in capsys.readouterr().err


def test_every_kernel_compiles_with_nvrtc():
    script = _compile_script()
    if script.find_nvrtc() is None:
        pytest.skip("NVRTC not installed (pip install nvidia-cuda-nvrtc-cu12)")
    assert script.main([]) == 0
