"""Fused CUDA kernels for the GPU path, declared beside the array code they replace.

A layer that has one declares it at module level and calls it only where `fused_kernels(xp)`:

    RELU_BACKWARD = ElementwiseKernel("T g, T y", "T dx", "dx = y > 0 ? g : (T)0", "relu_bw")
    ...
    if fused_kernels(xp):
        return RELU_BACKWARD(grad_out, self._out, xp.empty_like(grad_out))
    return grad_out * (self._out > 0)

Nothing here imports CuPy: a kernel is built from the module of the arrays it is first called
with, so importing a layer costs nothing on a machine without a GPU. `RawKernel` sources are
CUDA C with `T` for the floating type.

Without a GPU the kernels are still checked: `backend.cuda_emulation` compiles them as C++ and
runs them on NumPy arrays (every device-aware test has a ``cpu-fused-emulated`` case), and
`scripts/compile_cuda_kernels.py` compiles them with NVRTC. Fused kernels are off unless
``XPNN_FUSED_KERNELS=1`` (``run.py ... --fused-kernels``) or `forcing_fused_kernels()`, until
`scripts/gpu_check.sh` has measured them on a GPU; the array code is the reference either way.
"""
import contextlib
import contextvars
import os

import numpy

from xpnn.backend import cuda_emulation
from xpnn.backend.device import get_array_module

ENV_FLAG = "XPNN_FUSED_KERNELS"
_FORCED_FUSED = contextvars.ContextVar("xpnn_forced_fused_kernels", default=None)


def fused_kernels_setting():
    """``XPNN_FUSED_KERNELS`` as a bool (unset: False); `ValueError` unless it is 0 or 1."""
    value = os.environ.get(ENV_FLAG, "").strip()
    if value not in ("", "0", "1"):
        raise ValueError(f"{ENV_FLAG} must be 0 (array code) or 1 (fused CUDA kernels), "
                         f"got {value!r}")
    return value == "1"


def fused_kernels(xp):
    """True where layers should call their fused CUDA kernels: CuPy arrays, with the kernels
    switched on (``XPNN_FUSED_KERNELS=1`` or inside `forcing_fused_kernels(True)`); NumPy arrays
    inside `backend.cuda_emulation.emulating()`."""
    if xp.__name__ == "numpy":
        return cuda_emulation.active()
    forced = _FORCED_FUSED.get()
    if forced is not None:
        return forced
    return fused_kernels_setting()


@contextlib.contextmanager
def forcing_fused_kernels(enabled=True):
    """Within this block, `fused_kernels` returns `enabled` for CuPy arrays."""
    token = _FORCED_FUSED.set(bool(enabled))
    try:
        yield
    finally:
        _FORCED_FUSED.reset(token)


def _array_module_of(args):
    return get_array_module(*[arg for arg in args if hasattr(arg, "shape")])


class ElementwiseKernel:
    """A `cupy.ElementwiseKernel`, built on its first call (arguments as CuPy's)."""

    def __init__(self, in_params, out_params, operation, name):
        self.in_params, self.out_params = in_params, out_params
        self.operation, self.name = operation, f"xpnn_{name}"
        self._kernel = None

    def __call__(self, *args, **kwargs):
        if _array_module_of(args).__name__ == "numpy":
            return cuda_emulation.run_elementwise(self, args, kwargs)
        if self._kernel is None:
            cupy = _array_module_of(args)
            self._kernel = cupy.ElementwiseKernel(self.in_params, self.out_params,
                                                  self.operation, self.name)
        return self._kernel(*args, **kwargs)


BLOCK = 256       # threads per block
MAX_BLOCKS = 4096  # kernels loop over the rest (grid-stride loops)

# Put before every RawKernel's source: the grid-stride loop every kernel is written as, and the
# (n, y, x, channel) position of a flat index into a contiguous (N, H, W, C) array.
RAW_PREAMBLE = r"""
#define XPNN_GRID_STRIDE_LOOP(i, size)                                                   \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (size);     \
         i += (long long)blockDim.x * gridDim.x)

struct xpnn_nhwc { long long n; int y, x, c; };

__device__ inline xpnn_nhwc xpnn_unravel_nhwc(long long i, int h, int w, int c) {
    xpnn_nhwc at;
    at.c = (int)(i % c);
    long long rest = i / c;
    at.x = (int)(rest % w);
    rest /= w;
    at.y = (int)(rest % h);
    at.n = rest / h;
    return at;
}
"""


class RawKernel:
    """One ``extern "C" __global__`` function in CUDA C, compiled for each floating type `T`.

    The function must loop over its work items with ``XPNN_GRID_STRIDE_LOOP(i, size)``, so that
    any launch shape covers them; `RAW_PREAMBLE` (that macro and `xpnn_unravel_nhwc`) comes
    before the source. Call it as ``kernel(size, arrays_and_scalars)``; `scalar_types`
    names the C type of every argument that is not an array (``"int32"``, ``"int64"``,
    ``"T"``), in order.
    """

    def __init__(self, source, name, scalar_types):
        self.source, self.name = source, name
        self.scalar_types = tuple(scalar_types)
        self._kernels = {}  # dtype name -> cupy.RawKernel

    def source_for(self, dtype):
        """The whole translation unit for floating type `dtype` (``"float32"``/``"float64"``)."""
        c_type = {"float32": "float", "float64": "double"}[numpy.dtype(dtype).name]
        return f"typedef {c_type} T;\n{RAW_PREAMBLE}\n{self.source}"

    def __call__(self, size, args, dtype):
        cupy = _array_module_of(args)
        if cupy.__name__ == "numpy":
            return cuda_emulation.run_raw(self, args, dtype)
        dtype = numpy.dtype(dtype)
        kernel = self._kernels.get(dtype.name)
        if kernel is None:
            kernel = cupy.RawKernel(self.source_for(dtype), self.name)
            self._kernels[dtype.name] = kernel
        scalars = iter(self.scalar_types)
        typed = []
        for arg in args:
            if hasattr(arg, "shape"):
                typed.append(arg)
                continue
            kind = next(scalars)
            typed.append((dtype.type if kind == "T" else numpy.dtype(kind).type)(arg))
        blocks = max(1, min(MAX_BLOCKS, -(-size // BLOCK)))
        kernel((blocks,), (BLOCK,), tuple(typed))
