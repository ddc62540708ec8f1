"""Matrix products: the one primitive every conv and linear layer multiplies with. In a CUDA-graph
mode or at precision ``tf32``/``bf16``, CuPy arrays go to cuBLAS directly (``nvmath.bindings``'
cuBLAS, which can run during stream capture) on CuPy's current stream."""
from collections import namedtuple

import numpy

from xpnn.backend.device import DeviceUnavailableError, get_array_module
from xpnn.backend.dispatch import mode

CUDA_R_32F = 0  # cudaDataType_t of float32 arrays (library_types.h)
WORKSPACE_BYTES = 32 << 20  # cuBLAS's recommended workspace on Hopper; ample for older GPUs


class GemmUnavailableError(DeviceUnavailableError):
    """The GEMM the mode needs cannot run here (its library is not installed)."""


def matmul(a, b, out=None):
    """a @ b for `a` (m, k) or (k,) and 2-D `b` (k, n) of one floating dtype; written into
    `out` (m, n, or (n,) for a vector `a`; a view will do) when given, which is returned."""
    xp = get_array_module(a, b)
    precision = mode().precision
    if xp.__name__ == "numpy" or (not mode().graph and precision == "fp32"):
        return xp.matmul(a, b, out=out)
    if a.ndim == 1:
        row = matmul(a[None], b, None if out is None else out[None])
        return row[0] if out is None else out
    if out is None:
        out = xp.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
    if 0 in out.shape or a.shape[1] == 0:
        out[...] = 0
        return out
    a, b = (x if _layout(x) is not None else xp.ascontiguousarray(x) for x in (a, b))
    target = out if _row_major_ld(out) is not None else xp.empty(out.shape, dtype=out.dtype)
    _cublas_gemm(xp, a, b, target, precision)
    if target is not out:
        out[...] = target
    return out


# The arguments of cuBLAS's column-major ``C = op(A) @ op(B)`` that compute row-major
# ``out = a @ b``: C is out's memory read column-major, out^T = b^T @ a^T, so cuBLAS's A is `b`
# and its B is `a`. `transa`/`transb` are True where the operand must be transposed.
GemmCall = namedtuple("GemmCall", "transa transb m n k lda ldb ldc")


def gemm_operands(a, b, out):
    """The `GemmCall` for ``out = a @ b``, arrays that pass `_layout`."""
    (m, k), n = a.shape, b.shape[1]
    transb, ld_a = _layout(a)
    transa, ld_b = _layout(b)
    return GemmCall(transa, transb, n, m, k, ld_b, ld_a, _row_major_ld(out))


def _layout(x):
    """(transposed, leading dimension) of a 2-D array as cuBLAS reads its memory (row-major memory
    is x^T, column-major x itself); None if neither stride is one element."""
    ld = _row_major_ld(x)
    if ld is not None:
        return False, ld
    ld = _row_major_ld(x.T)  # column-major memory: its transpose's rows are contiguous
    return None if ld is None else (True, ld)


def _row_major_ld(x):
    """The row stride, in elements, of a 2-D array whose rows are contiguous; else None."""
    rows, cols = x.shape
    unit, step = x.itemsize, x.strides[0]
    if cols != 1 and x.strides[1] != unit:
        return None
    if rows == 1:
        return max(cols, 1)
    if step <= 0 or step % unit or step // unit < cols:
        return None
    return step // unit


class CublasGemm:
    """A cuBLAS handle and workspace (`library`: ``nvmath.bindings.cublas``), made uncaptured."""

    def __init__(self, library, xp):
        self.library = library
        self.handle = library.create()
        self.workspace = xp.empty(WORKSPACE_BYTES, dtype=xp.uint8)  # kept alive with the handle
        library.set_workspace(self.handle, _pointer(self.workspace), WORKSPACE_BYTES)
        self.scalars = {name: (numpy.ones(1, name), numpy.zeros(1, name))
                        for name in ("float32", "float64")}  # alpha = 1, beta = 0, on the host
        compute = library.ComputeType
        self.compute_types = {"tf32": compute.COMPUTE_32F_FAST_TF32,
                              "bf16": compute.COMPUTE_32F_FAST_16BF}

    def __call__(self, xp, a, b, out, precision="fp32"):
        if out.dtype.name not in self.scalars or not a.dtype == b.dtype == out.dtype:
            raise TypeError(f"the cublas GEMM multiplies float32 or float64 arrays of one dtype, "
                            f"got {a.dtype} @ {b.dtype} -> {out.dtype}")
        if precision != "fp32" and out.dtype != numpy.float32:
            raise TypeError(f"precision {precision} multiplies float32 arrays, got {out.dtype}")
        call = gemm_operands(a, b, out)
        operation = self.library.Operation
        alpha, beta = self.scalars[out.dtype.name]
        self.library.set_stream(self.handle, xp.cuda.get_current_stream().ptr)
        ops = (operation.T if call.transa else operation.N,
               operation.T if call.transb else operation.N, call.m, call.n, call.k)
        if precision == "fp32":
            gemm = self.library.sgemm if out.dtype == numpy.float32 else self.library.dgemm
            gemm(self.handle, *ops, alpha.ctypes.data, _pointer(b), call.lda, _pointer(a),
                 call.ldb, beta.ctypes.data, _pointer(out), call.ldc)
        else:
            self.library.gemm_ex(
                self.handle, *ops, alpha.ctypes.data, _pointer(b), CUDA_R_32F, call.lda,
                _pointer(a), CUDA_R_32F, call.ldb, beta.ctypes.data, _pointer(out), CUDA_R_32F,
                call.ldc, self.compute_types[precision], self.library.GemmAlgo.DEFAULT)


_cublas = {}  # GPU id -> CublasGemm


def _cublas_gemm(xp, a, b, out, precision):
    gpu = out.device.id
    if gpu not in _cublas:
        try:
            from nvmath.bindings import cublas
        except ImportError as error:
            raise GemmUnavailableError(
                f"cuBLAS called directly (the CUDA-graph step, and precisions tf32 and bf16) "
                f"needs nvmath-python ({' '.join(str(error).split())}); pip install "
                f"'xpnn[cuda-graph]', or run with --eager and --precision fp32") from None
        _cublas[gpu] = CublasGemm(cublas, xp)
    _cublas[gpu](xp, a, b, out, precision)


def _pointer(array):
    return array.data.ptr if hasattr(array.data, "ptr") else array.ctypes.data
