"""The CUDA kernels of the ``fused`` implementations: functions of the .cu files in this folder
(`CudaKernel`), and CuPy element-wise kernels (`ElementwiseKernel`, a C expression, no .cu file).
A .cu file includes ``common.cuh`` and computes in ``T`` (``-DXPNN_FLOAT``: float or double).
NumPy arrays reach a kernel only through a host runner (`set_host_runner`: the tests' emulator)."""
from pathlib import Path

import numpy

from xpnn.backend.device import get_array_module

FOLDER = Path(__file__).resolve().parent
BLOCK = 256        # threads per block
MAX_BLOCKS = 4096  # kernels loop over the rest (grid-stride loops)
C_TYPES = {"float32": "float", "float64": "double"}

_host_runner = None
_modules = {}  # (file, dtype name, defines) -> cupy.RawModule


def set_host_runner(runner):
    """Make `runner` (`run_raw(kernel, args, dtype)`, `run_elementwise(kernel, args, kwargs)`)
    run kernels called with NumPy arrays (None: refuse them); returns the runner it replaces."""
    global _host_runner
    previous, _host_runner = _host_runner, runner
    return previous


def runs_on_host():
    """True while a host runner runs kernels called with NumPy arrays (the tests' emulator)."""
    return _host_runner is not None


def _on_host(name):
    if _host_runner is None:
        raise TypeError(f"the CUDA kernel {name} takes CuPy arrays, got NumPy arrays (only the "
                        f"tests run CUDA kernels on the CPU, through their emulator)")
    return _host_runner


def is_array(value):
    """True for a NumPy or CuPy array; False for numbers, NumPy scalars included."""
    return isinstance(value, numpy.ndarray) or hasattr(value, "__cuda_array_interface__")


class CudaKernel:
    """One ``extern "C" __global__`` function `name` of the .cu file `file` in this folder,
    called as ``kernel(size, args, dtype)``: `size` work items, `args` in order (contiguous
    arrays and numbers), `dtype` the floating type T. `scalar_types`: the C type of each number
    among the arguments (``"int32"``, ``"int64"``, ``"T"``); `defines`: {NAME: value}, compiled
    in."""

    def __init__(self, file, name, scalar_types, block=BLOCK, defines=None):
        self.file, self.name = file, name
        self.scalar_types = tuple(scalar_types)
        self.block = block
        self.defines = tuple(sorted((defines or {}).items()))

    def specialised(self, **defines):
        """This kernel compiled with ``-DNAME=VALUE`` for each of `defines` besides its own."""
        return CudaKernel(self.file, self.name, self.scalar_types, self.block,
                          {**dict(self.defines), **defines})

    def source(self):
        return (FOLDER / self.file).read_text()

    def compile_options(self, dtype):
        """NVRTC's (and a C++ compiler's) options for floating type `dtype` and the defines."""
        return (f"-DXPNN_FLOAT={C_TYPES[numpy.dtype(dtype).name]}", f"-I{FOLDER}",
                *(f"-D{name}={value}" for name, value in self.defines))

    def typed_args(self, args, dtype):
        """`args` with each number made a NumPy scalar of its declared C type."""
        dtype = numpy.dtype(dtype)
        numbers = sum(not is_array(arg) for arg in args)
        if numbers != len(self.scalar_types):
            raise TypeError(f"{self.name} takes {len(self.scalar_types)} numbers "
                            f"({', '.join(self.scalar_types)}), got {numbers}")
        types = iter([dtype.type if kind == "T" else numpy.dtype(kind).type
                      for kind in self.scalar_types])
        return tuple(arg if is_array(arg) else next(types)(arg) for arg in args)

    def __call__(self, size, args, dtype):
        xp = get_array_module(*args)
        typed = self.typed_args(args, dtype)
        if xp.__name__ == "numpy":
            return _on_host(self.name).run_raw(self, typed, dtype)
        key = (self.file, numpy.dtype(dtype).name, self.defines)
        if key not in _modules:
            _modules[key] = xp.RawModule(code=self.source(), options=self.compile_options(dtype))
        function = _modules[key].get_function(self.name)
        blocks = max(1, min(MAX_BLOCKS, -(-size // self.block)))
        function((blocks,), (self.block,), typed)


class ElementwiseKernel:
    """A `cupy.ElementwiseKernel` (arguments as CuPy's), built on its first call."""

    def __init__(self, in_params, out_params, operation, name):
        self.in_params, self.out_params = in_params, out_params
        self.operation, self.name = operation, f"xpnn_{name}"
        self._kernel = None

    def params(self):
        """([(type, name)] of the inputs, the same of the outputs); ``TYPE name`` params only."""
        def parse(text):
            pairs = [part.split() for part in text.split(",")]
            if any(len(pair) != 2 for pair in pairs):
                raise NotImplementedError(f"{self.name}: only 'TYPE name' params, got {text!r}")
            return [tuple(pair) for pair in pairs]
        return parse(self.in_params), parse(self.out_params)

    def __call__(self, *args, **kwargs):
        xp = get_array_module(*args)
        if xp.__name__ == "numpy":
            return _on_host(self.name).run_elementwise(self, args, kwargs)
        if self._kernel is None:
            self._kernel = xp.ElementwiseKernel(self.in_params, self.out_params,
                                                self.operation, self.name)
        return self._kernel(*args, **kwargs)
