"""The matrix-product primitive (`backend.matmul`): NumPy's product on the CPU, and the cuBLAS
call a row-major product becomes on a GPU, checked without a GPU through a stand-in for
nvmath's cuBLAS bindings that multiplies host memory column-major, as cuBLAS reads it."""
import ctypes
import types

import numpy
import pytest

from xpnn.backend import matmul as gemm_module
from xpnn.backend import CPU, Mode, running_on
from xpnn.backend.matmul import CublasGemm, gemm_operands, matmul

GRAPH_MODE = Mode(graph=True)
MANTISSA_BITS = {"tf32": 10, "bf16": 7}


def round_inputs(x, precision):
    """float32 `x` with its mantissa rounded (to nearest, ties to even) to `precision`'s bits,
    as a float32 array, as cuBLAS's FAST_TF32 / FAST_16BF rounds a product's operands; `x`
    itself for fp32."""
    if precision == "fp32":
        return x
    drop = 23 - MANTISSA_BITS[precision]
    bits = numpy.ascontiguousarray(x, dtype=numpy.float32).view(numpy.uint32).astype(numpy.uint64)
    half, lowest = 1 << (drop - 1), (bits >> drop) & 1
    rounded = ((bits + half - 1 + lowest) >> drop) << drop
    finite = numpy.isfinite(x)
    return numpy.where(finite, rounded.astype(numpy.uint32).view(numpy.float32), x)


class HostCublas:
    """nvmath.bindings.cublas as far as `CublasGemm` uses it, on host pointers: sgemm/dgemm
    compute C = alpha op(A) op(B) + beta C on column-major memory, and refuse what cuBLAS
    refuses (a leading dimension shorter than a column)."""
    Operation = types.SimpleNamespace(N=0, T=1)
    ComputeType = types.SimpleNamespace(COMPUTE_32F_FAST_TF32=77, COMPUTE_32F_FAST_16BF=75)
    GemmAlgo = types.SimpleNamespace(DEFAULT=-1)
    PRECISION_OF = {77: "tf32", 75: "bf16"}

    def __init__(self):
        self.calls, self.streams, self.workspaces = [], [], []

    def create(self):
        return 7

    def set_workspace(self, handle, pointer, size):
        self.workspaces.append(size)

    def set_stream(self, handle, stream):
        self.streams.append(stream)

    def sgemm(self, *args):
        self._gemm(numpy.float32, *args)

    def dgemm(self, *args):
        self._gemm(numpy.float64, *args)

    def gemm_ex(self, handle, transa, transb, m, n, k, alpha, a, a_type, lda, b, b_type, ldb,
                beta, c, c_type, ldc, compute_type, algo):
        """float32 in and out (type 0), operands rounded as the compute type's tensor cores
        take them, float32 accumulation."""
        assert (a_type, b_type, c_type, algo) == (0, 0, 0, -1)
        self._gemm(numpy.float32, handle, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta,
                   c, ldc, precision=self.PRECISION_OF[compute_type])

    def _gemm(self, dtype, handle, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
              precision="fp32"):
        self.calls.append((transa, transb, m, n, k, lda, ldb, ldc))
        op_a = round_inputs(self._column_major(a, (k, m) if transa else (m, k), lda, dtype),
                            precision)
        op_b = round_inputs(self._column_major(b, (n, k) if transb else (k, n), ldb, dtype),
                            precision)
        out = self._column_major(c, (m, n), ldc, dtype)
        scale, keep = (self._column_major(p, (1, 1), 1, dtype)[0, 0] for p in (alpha, beta))
        product = scale * ((op_a.T if transa else op_a) @ (op_b.T if transb else op_b))
        out[...] = product if keep == 0 else product + keep * out  # beta 0: C is not read

    @staticmethod
    def _column_major(pointer, shape, ld, dtype):
        rows, cols = shape
        if ld < max(1, rows):
            raise ValueError(f"CUBLAS_STATUS_INVALID_VALUE: ld {ld} < rows {rows}")
        itemsize = numpy.dtype(dtype).itemsize
        count = ld * (cols - 1) + rows
        memory = (ctypes.c_char * (count * itemsize)).from_address(pointer)
        flat = numpy.frombuffer(memory, dtype=dtype)
        return numpy.lib.stride_tricks.as_strided(flat, shape, (itemsize, ld * itemsize))


def host_xp():
    stream = types.SimpleNamespace(ptr=99)
    return types.SimpleNamespace(cuda=types.SimpleNamespace(get_current_stream=lambda: stream))


def layouts(rng, shape, dtype):
    """The same matrix in every layout the layers hand to a product: row-major, column-major
    (a transposed array), rows of a wider array, and columns of a taller one."""
    rows, cols = shape
    x = rng.standard_normal(shape).astype(dtype)
    wide = numpy.zeros((rows, cols + 3), dtype)
    wide[:, 1:cols + 1] = x
    tall = numpy.zeros((cols, rows + 2), dtype)
    tall[:, 2:] = x.T
    return {"row-major": x, "column-major": numpy.asfortranarray(x),
            "rows of a wider array": wide[:, 1:cols + 1], "columns of a taller": tall[:, 2:].T}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("m, k, n", [(5, 3, 4), (1, 6, 2), (4, 1, 3), (3, 2, 1)])
def test_every_layout_becomes_one_cublas_call_that_computes_a_at_b(dtype, m, k, n):
    rng = numpy.random.default_rng(0)
    library = HostCublas()
    gemm = CublasGemm(library, numpy)
    assert library.workspaces == [gemm_module.WORKSPACE_BYTES]
    for a_name, a in layouts(rng, (m, k), dtype).items():
        for b_name, b in layouts(rng, (k, n), dtype).items():
            out = numpy.full((m + 2, n), numpy.nan, dtype)[1:m + 1]  # rows of a taller array
            gemm(host_xp(), a, b, out)
            numpy.testing.assert_allclose(out, a @ b, rtol=1e-5, err_msg=f"{a_name} @ {b_name}")
    assert len(library.calls) == 16 and set(library.streams) == {99}


def test_the_call_reads_row_major_memory_as_its_transpose():
    a, b = numpy.zeros((5, 3), numpy.float32), numpy.zeros((3, 4), numpy.float32)
    out = numpy.zeros((5, 4), numpy.float32)
    call = gemm_operands(a, b, out)  # out^T (4 x 5) = b^T (4 x 3) @ a^T (3 x 5)
    assert (call.transa, call.transb, call.m, call.n, call.k) == (False, False, 4, 5, 3)
    assert (call.lda, call.ldb, call.ldc) == (4, 3, 4)
    assert gemm_operands(a.T.copy().T, b, out).transb   # column-major a: cuBLAS transposes it


def test_a_product_that_needs_a_copy_still_comes_out_right(monkeypatch):
    """Negative strides (a flipped kernel) and vectors go through `matmul` itself."""
    library = HostCublas()
    gemm = CublasGemm(library, numpy)
    monkeypatch.setattr(gemm_module, "_cublas_gemm",
                        lambda xp, a, b, out, precision: gemm(host_xp(), a, b, out, precision))
    monkeypatch.setattr(gemm_module, "get_array_module", lambda *arrays: FakeCuPy)
    rng = numpy.random.default_rng(1)
    a, b = rng.standard_normal((4, 6))[::-1, ::-1], rng.standard_normal((6, 3))
    with running_on(CPU, GRAPH_MODE):  # a graph mode: products of CuPy arrays take cuBLAS
        numpy.testing.assert_allclose(matmul(a, b), a @ b)
        numpy.testing.assert_allclose(matmul(a[0], b), a[0] @ b)
        out = numpy.zeros((3, 4)).T  # column-major: computed aside, then copied in
        assert matmul(a, b, out=out) is out
        numpy.testing.assert_allclose(out, a @ b)
    assert len(library.calls) == 3


class FakeCuPy:
    """NumPy under CuPy's name, so `matmul` takes its GPU path with host arrays."""
    __name__ = "cupy"
    empty, ascontiguousarray, matmul = numpy.empty, numpy.ascontiguousarray, numpy.matmul


def test_numpy_arrays_take_numpys_product_in_every_mode(monkeypatch):
    monkeypatch.setattr(gemm_module, "_cublas_gemm", None)  # never reached
    a, b = numpy.ones((2, 3)), numpy.ones((3, 2))
    for mode in (Mode(), GRAPH_MODE):
        with running_on(CPU, mode):
            numpy.testing.assert_array_equal(matmul(a, b), a @ b)


def test_an_eager_mode_multiplies_cupy_arrays_with_cupys_product(monkeypatch):
    monkeypatch.setattr(gemm_module, "_cublas_gemm", None)  # never reached
    monkeypatch.setattr(gemm_module, "get_array_module", lambda *arrays: FakeCuPy)
    a, b = numpy.ones((2, 3)), numpy.ones((3, 2))
    numpy.testing.assert_array_equal(matmul(a, b), a @ b)


def test_dtypes_must_agree():
    gemm = CublasGemm(HostCublas(), numpy)
    with pytest.raises(TypeError, match="float32 @ float64"):
        gemm(host_xp(), numpy.ones((2, 2), numpy.float32), numpy.ones((2, 2)),
             numpy.ones((2, 2), numpy.float32))


def test_a_missing_gemm_library_is_a_one_line_device_error(monkeypatch):
    from xpnn.backend import DeviceUnavailableError
    monkeypatch.setitem(__import__("sys").modules, "nvmath", None)
    monkeypatch.setattr(gemm_module, "_cublas", {})
    out = types.SimpleNamespace(device=types.SimpleNamespace(id=0))
    with pytest.raises(DeviceUnavailableError) as raised:
        gemm_module._cublas_gemm(None, None, None, out, "fp32")
    assert "needs nvmath-python" in str(raised.value) and "\n" not in str(raised.value)
    assert "pip install 'xpnn[cuda-graph]', or run with --eager" in str(raised.value)


# -- precision ---------------------------------------------------------------------------------

def test_rounding_to_tensor_core_inputs_keeps_the_named_mantissa_bits():
    x = numpy.array([1.0, 1 + 2**-11, 1 + 3 * 2**-11, numpy.pi, -2.5e-3, numpy.inf, numpy.nan],
                    numpy.float32)
    tf32 = round_inputs(x, "tf32")
    assert tf32[1] == 1.0 and tf32[2] == 1 + 2**-9  # ties to even
    assert tf32[3] == numpy.float32(3.140625) and numpy.isinf(tf32[5]) and numpy.isnan(tf32[6])
    bf16 = round_inputs(x, "bf16")
    assert numpy.all(bf16[:5].view(numpy.uint32) & 0xFFFF == 0)
    assert round_inputs(x, "fp32") is x
    for precision, bits in (("tf32", 10), ("bf16", 7)):
        values = numpy.random.default_rng(0).standard_normal(1000).astype(numpy.float32)
        error = numpy.abs(round_inputs(values, precision) - values) / numpy.abs(values)
        assert error.max() <= 2.0 ** -(bits + 1)


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_tensor_core_precisions_round_the_inputs_and_accumulate_in_float32(precision):
    rng = numpy.random.default_rng(2)
    library = HostCublas()
    gemm = CublasGemm(library, numpy)
    a = rng.standard_normal((6, 40)).astype(numpy.float32)
    b = rng.standard_normal((40, 5)).astype(numpy.float32)
    out = numpy.empty((6, 5), numpy.float32)
    gemm(host_xp(), a, b, out, precision)
    expected = round_inputs(a, precision).astype(numpy.float64) @ round_inputs(b, precision)
    numpy.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert numpy.abs(out - a.astype(numpy.float64) @ b).max() > 1e-5  # not float32 products
    with pytest.raises(TypeError, match="precision .* multiplies float32 arrays"):
        gemm(host_xp(), a.astype(numpy.float64), b.astype(numpy.float64),
             out.astype(numpy.float64), precision)


def test_an_eager_tensor_core_precision_multiplies_cupy_arrays_with_cublas(monkeypatch):
    library = HostCublas()
    gemm = CublasGemm(library, numpy)
    monkeypatch.setattr(gemm_module, "_cublas_gemm",
                        lambda xp, a, b, out, precision: gemm(host_xp(), a, b, out, precision))
    monkeypatch.setattr(gemm_module, "get_array_module", lambda *arrays: FakeCuPy)
    rng = numpy.random.default_rng(3)
    a = rng.standard_normal((3, 7)).astype(numpy.float32)
    b = rng.standard_normal((7, 2)).astype(numpy.float32)
    with running_on(CPU, Mode(precision="tf32")):
        out = matmul(a, b)
    numpy.testing.assert_allclose(out, round_inputs(a, "tf32") @ round_inputs(b, "tf32"),
                                  rtol=1e-5)
    assert len(library.calls) == 1
