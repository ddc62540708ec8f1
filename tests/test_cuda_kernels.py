"""The machinery of the fused implementations: the switch, the kernel wrappers, the .cu files, the
CPU emulation (tests/cuda_emulation.py) and the NVRTC compile script. (The kernels' results are
checked through the layers, in every test that takes the `device` fixture: its
``cpu-fused-emulated`` and ``gpu-fused`` cases.)"""
import importlib.util
import re
from pathlib import Path

import numpy
import pytest

import cuda_emulation
from xpnn import backend
from xpnn.backend import cuda
from xpnn.backend.cuda import CudaKernel, ElementwiseKernel

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"


@pytest.fixture
def emulation():
    reason = cuda_emulation.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with cuda_emulation.emulating():
        yield


class CuPyLike:
    __name__ = "cupy"


def test_the_default_implementation_follows_the_array_module():
    assert backend.implementation(numpy) == "cpu"
    assert backend.implementation(CuPyLike) == "gpu"
    with backend.using("fused"):
        assert backend.implementation(CuPyLike) == "fused"
        with backend.using(None):
            assert backend.implementation(CuPyLike) == "gpu"
    with pytest.raises(ValueError, match="unknown implementation 'fast'"):
        with backend.using("fast"):
            pass


def test_the_mode_is_one_value_set_for_a_block():
    """`running_on(device, mode)` sets the whole mode; None leaves the one set around it (a
    test's `using`); `using` changes the implementation and keeps the rest."""
    with backend.using("gpu"):
        with backend.running_on(backend.CPU):
            assert backend.implementation(CuPyLike) == "gpu"   # a choice around it stands
        with backend.running_on(backend.CPU, backend.Mode("fused", graph=True)):
            assert backend.implementation(CuPyLike) == "fused" and backend.mode().graph
            with backend.using(None):
                assert backend.mode() == backend.Mode(None, graph=True)
        assert backend.mode() == backend.Mode("gpu")
    assert backend.mode() == backend.Mode()


def test_the_gpu_defaults_to_fused_kernels_and_a_graph_and_flags_opt_out():
    class Gpu:
        is_gpu, name = True, "cuda:0"
    cpu = backend.CPU
    assert backend.command_mode(Gpu) == backend.Mode("fused", graph=True)
    assert backend.command_mode(Gpu, ranks=2) == backend.Mode("fused")  # a graph is one rank's
    assert backend.command_mode(Gpu, eager=True, array_code=True) == backend.Mode()
    assert backend.command_mode(Gpu, precision="tf32").precision == "tf32"
    assert backend.command_mode(cpu) == backend.Mode()
    for mode, message in [(backend.Mode(graph=True), "captures the training step on a GPU, but "
                                                     "this run is on cpu"),
                          (backend.Mode(precision="bf16"), "precision bf16 is a GPU's "
                                                           "tensor-core arithmetic; on cpu use "
                                                           "fp32")]:
        with pytest.raises(backend.ModeError, match=message):
            mode.check(cpu)
    with pytest.raises(backend.ModeError, match="this run has 2 ranks; run with --eager"):
        backend.Mode(graph=True).check(Gpu, ranks=2)
    with pytest.raises(backend.ModeError, match="unknown precision 'fp16'; expected one of "
                                                "fp32, tf32, bf16"):
        backend.Mode(precision="fp16")


def test_the_fused_choice_leaves_numpy_arrays_to_the_cpu(rng):
    """A CPU reference computed inside a GPU run's `using("fused")` block (the parity tool, the
    gpu-fused tests) computes with NumPy's implementation instead of reaching a CUDA kernel."""
    from xpnn.backend.pool import max_pool
    x = rng.standard_normal((2, 4, 4, 3)).astype(numpy.float32)
    expected, _ = max_pool(x, 2, 2)
    with backend.using("fused"):
        assert backend.implementation(numpy) == "cpu"
        out, _ = max_pool(x, 2, 2)
    numpy.testing.assert_array_equal(out, expected)


def test_the_emulator_lets_the_fused_choice_reach_numpy_arrays(emulation):
    assert backend.implementation(numpy) == "fused"


def test_a_kernel_refuses_numpy_arrays_outside_the_emulator():
    x = numpy.zeros((1, 2, 2, 1), dtype=numpy.float32)
    out = numpy.empty((1, 1, 1, 1), dtype=numpy.float32)
    with pytest.raises(TypeError, match="takes CuPy arrays"):
        cuda.CudaKernel("max_pool.cu", "xpnn_max_pool_forward", ["int64"] + ["int32"] * 7)(
            1, (x, out, out, 1, 2, 2, 1, 1, 1, 2, 2), numpy.float32)


def test_every_cuda_source_is_a_file_of_its_own_that_compiles_as_it_stands():
    """No CUDA C in Python strings beyond element-wise expressions; each .cu includes the
    shared header and defines the kernels its wrappers name."""
    script = _compile_script()
    files = {kernel.file for _, kernel in script.all_kernels() if isinstance(kernel, CudaKernel)}
    assert files == {path.name for path in (REPO / "backend").glob("*.cu")}
    for _, kernel in script.all_kernels():
        if isinstance(kernel, CudaKernel):
            source = kernel.source()
            assert '#include "common.cuh"' in source
            assert re.search(rf'extern "C" __global__ void {cuda_emulation.LAUNCH_BOUNDS}'
                             rf'{kernel.name}\(', source)
    for folder in ("layers", "nets", "optim", "training", "inference"):
        for path in (REPO / folder).glob("*.py"):
            text = path.read_text()
            assert "__global__" not in text and "ElementwiseKernel" not in text, path


def test_the_loader_sets_the_floating_type_and_the_include_folder():
    kernel = CudaKernel("correlate.cu", "xpnn_correlate", ["int64"])
    assert kernel.compile_options("float32") == ("-DXPNN_FLOAT=float", f"-I{cuda.FOLDER}")
    assert kernel.compile_options(numpy.float64)[0] == "-DXPNN_FLOAT=double"


def test_a_specialised_kernel_compiles_with_its_defines_and_leaves_the_original_alone():
    base = CudaKernel("correlate.cu", "xpnn_correlate", ["int64"], block=128)
    special = base.specialised(XPNN_K=5, XPNN_PX=7).specialised(XPNN_K=3)
    assert special.compile_options("float32") == (
        "-DXPNN_FLOAT=float", f"-I{cuda.FOLDER}", "-DXPNN_K=3", "-DXPNN_PX=7")
    assert base.compile_options("float32") == ("-DXPNN_FLOAT=float", f"-I{cuda.FOLDER}")
    assert (special.block, special.scalar_types, special.name) == (128, ("int64",),
                                                                   "xpnn_correlate")


def test_emulated_elementwise_kernel_broadcasts_and_writes_given_outputs(emulation):
    axpy = ElementwiseKernel("T x, T a", "T y", "y += a * x", "test_axpy")
    x = numpy.arange(6.0).reshape(2, 3)
    y = numpy.ones((3, 2)).T  # not contiguous: written through its strides
    assert axpy(x, 2.0, y) is y
    numpy.testing.assert_array_equal(y, 1 + 2 * x)
    fresh = ElementwiseKernel("T x", "T y", "y = x * x", "test_square")(x[:, :1] + x[:1, :])
    numpy.testing.assert_array_equal(fresh, (x[:, :1] + x[:1, :]) ** 2)


def test_emulated_kernel_runs_every_thread_and_rejects_strided_arrays(emulation, tmp_path,
                                                                      monkeypatch):
    (tmp_path / "double.cu").write_text(
        '#include "common.cuh"\n'
        'extern "C" __global__ void xpnn_test_double(const T* x, T* y, long long size) {\n'
        "    XPNN_GRID_STRIDE_LOOP(i, size) { y[i] = 2 * x[i]; }\n}\n")
    (tmp_path / "common.cuh").write_text((REPO / "backend" / "common.cuh").read_text())
    monkeypatch.setattr(cuda, "FOLDER", tmp_path)
    double_it = CudaKernel("double.cu", "xpnn_test_double", ["int64"])
    x = numpy.arange(20, dtype=numpy.float32)  # more items than threads in the emulated grid
    y = numpy.zeros_like(x)
    double_it(x.size, (x, y, x.size), x.dtype)
    numpy.testing.assert_array_equal(y, 2 * x)
    with pytest.raises(ValueError, match="contiguous"):
        double_it(10, (x[::2], y[:10], 10), x.dtype)



def test_emulated_elementwise_kernel_refuses_what_cupy_refuses(emulation):
    """A green emulated test must mean a working GPU call: CuPy's ElementwiseKernel takes no
    out=, all outputs or none, and one dtype for every T array (it does not cast)."""
    axpy = ElementwiseKernel("T x, T a", "T y", "y += a * x", "test_axpy")
    x, y = numpy.ones(3, numpy.float32), numpy.ones(3, numpy.float32)
    with pytest.raises(TypeError, match="Wrong arguments"):
        axpy(x, 2.0, out=y)
    with pytest.raises(TypeError, match="Type is mismatched"):
        axpy(x, numpy.ones(3), y)                     # a float64 array for a float32 T
    with pytest.raises(TypeError, match="Wrong number of arguments"):
        axpy(x)
    axpy(x, numpy.float64(2.0), y)                    # numbers, NumPy's included, take T
    numpy.testing.assert_array_equal(y, [3, 3, 3])


BLOCK_SUM = r"""#include "common.cuh"
// out[block] = the sum of x over the block's threads, through shared memory and barriers
// (without them, or run thread by thread, threads would read sums not yet written)
extern "C" __global__ void xpnn_test_block_sum(const T* x, T* out, int broken) {
    __shared__ T partial[64];
    const int t = threadIdx.x;
    partial[t] = x[blockIdx.x * blockDim.x + t];
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half /= 2) {
        if (t < half) partial[t] += partial[t + half];
        if (!broken || t > 0) __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = partial[0];
}
"""


def test_emulated_barriers_hold_and_a_barrier_left_waiting_is_an_error(emulation, tmp_path,
                                                                       monkeypatch):
    (tmp_path / "block_sum.cu").write_text(BLOCK_SUM)
    (tmp_path / "common.cuh").write_text((REPO / "backend" / "common.cuh").read_text())
    monkeypatch.setattr(cuda, "FOLDER", tmp_path)
    block_sum = CudaKernel("block_sum.cu", "xpnn_test_block_sum", ["int32"], block=64)
    x = numpy.arange(cuda_emulation.GRID * 64, dtype=numpy.float64)
    out = numpy.zeros(cuda_emulation.GRID)
    block_sum(x.size, (x, out, 0), x.dtype)
    numpy.testing.assert_array_equal(out, x.reshape(cuda_emulation.GRID, 64).sum(1))
    with pytest.raises(RuntimeError, match="left threads waiting at a barrier"):
        block_sum(x.size, (x, out, 1), x.dtype)


def _double_kernel(tmp_path, monkeypatch):
    (tmp_path / "double.cu").write_text(
        '#include "common.cuh"\n'
        'extern "C" __global__ void xpnn_test_double(const T* x, T* y, long long size, T by) {\n'
        "    XPNN_GRID_STRIDE_LOOP(i, size) { y[i] = by * x[i]; }\n}\n")
    (tmp_path / "common.cuh").write_text((REPO / "backend" / "common.cuh").read_text())
    monkeypatch.setattr(cuda, "FOLDER", tmp_path)
    return CudaKernel("double.cu", "xpnn_test_double", ["int64", "T"])


def test_a_raw_kernel_takes_numpy_scalars_as_numbers_of_their_declared_type(
        emulation, tmp_path, monkeypatch):
    """A NumPy scalar has a `shape` but is a number: the wrapper types it as declared (CuPy
    would pass an int64 scalar as 8 bytes where the kernel reads 4), and the emulator checks
    every argument against the kernel's C signature."""
    kernel = _double_kernel(tmp_path, monkeypatch)
    x, y = numpy.arange(4, dtype=numpy.float32), numpy.zeros(4, numpy.float32)
    assert [type(arg) for arg in kernel.typed_args((x, y, numpy.int32(4), numpy.float64(2)),
                                                   "float32")[2:]] == [numpy.int64, numpy.float32]
    kernel(4, (x, y, numpy.int32(4), numpy.float64(3.0)), x.dtype)
    numpy.testing.assert_array_equal(y, 3 * x)
    with pytest.raises(TypeError, match="takes 2 numbers"):
        kernel(4, (x, y, 4), x.dtype)
    with pytest.raises(TypeError, match="y must be a float32 array, got a float64 array"):
        kernel(4, (x, numpy.zeros(4), 4, 2.0), x.dtype)
    from xpnn.backend import cuda as loader
    with pytest.raises(TypeError, match="size must be a int64 scalar"):
        cuda_emulation.run_raw(kernel, (x, y, numpy.int32(4), numpy.float32(2)), "float32")
    assert loader.is_array(x) and not loader.is_array(numpy.float32(1))

def test_emulation_reports_a_compile_error_with_the_compiler_output(emulation, tmp_path,
                                                                  monkeypatch):
    (tmp_path / "broken.cu").write_text(
        'extern "C" __global__ void xpnn_broken(float* x) { x[0] = nope; }\n')
    monkeypatch.setattr(cuda, "FOLDER", tmp_path)
    with pytest.raises(RuntimeError, match="nope"):
        CudaKernel("broken.cu", "xpnn_broken", [])(1, (numpy.zeros(1, numpy.float32),), "float32")


def _compile_script():
    spec = importlib.util.spec_from_file_location("compile_cuda_kernels",
                                                  SCRIPTS / "compile_cuda_kernels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compile_script_finds_every_kernel_and_says_how_to_get_nvrtc(monkeypatch, capsys):
    script = _compile_script()
    names = {kernel.name for _, kernel in script.all_kernels()}
    assert {"xpnn_max_pool_forward", "xpnn_max_pool_backward", "xpnn_correlate",
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
