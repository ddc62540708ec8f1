"""Run the CUDA kernels of the ``fused`` implementations on the CPU, on NumPy arrays: a test tool.

Inside `emulating()`, the backend's primitives take their ``fused`` implementations on NumPy
arrays, and the `backend.cuda` kernels they call run here (this module is installed as the
kernels' host runner): the .cu source is compiled as C++ by the host compiler (``c++``, or
``$CXX``) with the loader's own options, `__global__` becomes nothing and blockIdx / threadIdx /
blockDim / gridDim become globals (`__launch_bounds__` and `__ldg` mean nothing here; a vector
load, `xpnn_load`, checks its alignment instead, and a misaligned one fails the launch). The
arithmetic is a GPU's: a * b + c is contracted into one fused multiply-add, rounded once, as
nvcc and NVRTC compile it by default (``--fmad=true``), where the host has FMA instructions
(`contracts_multiply_adds` says whether it does); a float32 sum then rounds as on the GPU, bit
for bit when the order of its terms is the kernel's own. A
`CudaKernel` (a grid-stride loop) is called once for every thread of a small grid of `GRID`
blocks of `BLOCK` threads, so launch shapes that split the work are exercised too. A kernel
whose threads cooperate (`COOPERATIVE`: __syncthreads, __syncwarp, a warp's mma) runs its
blocks at their real size instead, each block's threads as fibers that switch at every
barrier, so barriers, `__shared__` memory and warp-wide exchanges behave as on a GPU (and a
barrier some threads never reach is an error, where a GPU would hang). An
`ElementwiseKernel` runs its operation once per element of the broadcast arguments, as CuPy's
does (typed params and ``T`` only; no ``raw``).

So the tests check each kernel, and the layer code that calls it, against the array code on a
machine without a GPU. Timing means nothing here.
"""
import atexit
import contextlib
import ctypes
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy

from xpnn.backend import cuda, using

GRID, BLOCK = 2, 3
_C_TYPES = {"float32": "float", "float64": "double", "int32": "int", "int64": "long long",
            "bool": "bool", "uint8": "unsigned char"}
_DTYPES = {c_type: numpy.dtype(name) for name, c_type in _C_TYPES.items()}
_CTYPES_SCALARS = {"float32": ctypes.c_float, "float64": ctypes.c_double,
                   "int32": ctypes.c_int, "int64": ctypes.c_longlong}

PRELUDE = r"""
#include <cmath>
using std::exp; using std::log; using std::nan; using std::isnan;
struct xpnn_dim3 { unsigned int x, y, z; };
extern "C" { xpnn_dim3 blockIdx, threadIdx, blockDim, gridDim; }
extern "C" { int xpnn_fault = 0; }  /* set where a GPU would fault (a misaligned vector load) */
#define XPNN_EMULATED 1
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static  /* one copy, shared by the fibers of a block (one block at a time) */
template <class A> A __ldg(const A* address) { return *address; }
template <class A, class B> A atomicAdd(A* address, B value) {  /* one thread at a time here */
    A old = *address;
    *address += value;
    return old;
}
""" + r"""
/* Cooperative runs (`COOPERATIVE`): each block's threads are fibers (ucontext) run one at a
   time, each until it finishes or waits at a barrier, so __syncthreads and __syncwarp hold, and
   a warp can exchange values (the emulated mma below). A run that cannot go on (threads waiting
   at barriers none of the others will reach) is a fault. */
#include <ucontext.h>
#include <cstring>
#include <vector>
namespace xpnn_fibers {
struct Fiber { ucontext_t context; bool done; unsigned thread; std::vector<char> stack; };
static ucontext_t scheduler;
static Fiber* current = nullptr;
static bool active = false;
static void (*body)(void*) = nullptr;
static void* body_argument = nullptr;
static unsigned long long events = 0;  /* arrivals, releases and ends: progress */
static std::vector<unsigned> arrived, generation;  /* per warp, then the block's at the end */
static void entry() { body(body_argument); current->done = true; ++events; }
static void wait_at(unsigned group, unsigned members) {
    if (!active) { xpnn_fault = 2; return; }  /* a barrier in a thread-by-thread run */
    const unsigned seen = generation[group];
    ++events;
    if (++arrived[group] == members) { arrived[group] = 0; ++generation[group]; return; }
    while (generation[group] == seen) swapcontext(&current->context, &scheduler);
}
/* Run one block of `threads` threads of body(argument) as fibers. */
static void run_block(unsigned threads, void (*run)(void*), void* argument) {
    const unsigned warps = (threads + 31) / 32;
    body = run; body_argument = argument;
    arrived.assign(warps + 1, 0); generation.assign(warps + 1, 0);
    std::vector<Fiber> fibers(threads);
    for (unsigned t = 0; t < threads; ++t) {
        Fiber& fiber = fibers[t];
        fiber.done = false; fiber.thread = t; fiber.stack.resize(1 << 16);
        getcontext(&fiber.context);
        fiber.context.uc_stack.ss_sp = fiber.stack.data();
        fiber.context.uc_stack.ss_size = fiber.stack.size();
        fiber.context.uc_link = &scheduler;
        makecontext(&fiber.context, entry, 0);
    }
    active = true;
    for (unsigned alive = threads; alive > 0;) {
        const unsigned long long before = events;
        alive = 0;
        for (Fiber& fiber : fibers) {
            if (fiber.done) continue;
            threadIdx.x = fiber.thread;
            current = &fiber;
            swapcontext(&scheduler, &fiber.context);
            alive += !fiber.done;
        }
        if (alive > 0 && events == before) { xpnn_fault = 3; break; }  /* a deadlock */
    }
    active = false;
}
}  /* namespace xpnn_fibers */
inline void __syncwarp(unsigned = 0xffffffffu) {
    const unsigned warp = threadIdx.x / 32, first = warp * 32;
    xpnn_fibers::wait_at(warp, blockDim.x - first < 32 ? blockDim.x - first : 32);
}
inline void __syncthreads() {
    xpnn_fibers::wait_at((unsigned)xpnn_fibers::arrived.size() - 1, blockDim.x);
}
/* PTX's cvt.rna.tf32.f32: 10 mantissa bits, to nearest, ties away from zero. */
inline unsigned xpnn_emulated_tf32(float value) {
    unsigned bits;
    std::memcpy(&bits, &value, 4);
    if ((bits & 0x7f800000u) != 0x7f800000u) bits = (bits + 0x1000u) & 0xffffe000u;
    return bits;
}
/* PTX's mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32, c += a b, for the whole warp: each
   lane hands in its fragments, then computes its own 4 sums from everyone's (fragment layouts
   as the PTX ISA gives them; see correlate_tf32.cu). */
struct xpnn_mma_fragments { unsigned a[4], b[2]; };
static xpnn_mma_fragments xpnn_mma_exchange[32][32];
inline float xpnn_bits_float(unsigned bits) { float value; std::memcpy(&value, &bits, 4); return value; }
inline void xpnn_emulated_mma_tf32(float (&c)[4], const unsigned (&a)[4], unsigned b0,
                                   unsigned b1) {
    const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    xpnn_mma_fragments& mine = xpnn_mma_exchange[warp][lane];
    for (int i = 0; i < 4; ++i) mine.a[i] = a[i];
    mine.b[0] = b0; mine.b[1] = b1;
    __syncwarp();
    float sums[4];
    for (unsigned i = 0; i < 4; ++i) {
        const unsigned row = g + 8 * (i / 2), col = 2 * t + i % 2;
        float sum = c[i];
        for (unsigned k = 0; k < 8; ++k) {
            const float a_value = xpnn_bits_float(
                xpnn_mma_exchange[warp][(row % 8) * 4 + k % 4].a[(row / 8) + 2 * (k / 4)]);
            const float b_value = xpnn_bits_float(xpnn_mma_exchange[warp][col * 4 + k % 4].b[k / 4]);
            sum += a_value * b_value;
        }
        sums[i] = sum;
    }
    __syncwarp();  /* everyone has read the fragments before any lane hands in new ones */
    for (int i = 0; i < 4; ++i) c[i] = sums[i];
}
"""


LAUNCH_BOUNDS = r"(?:__launch_bounds__\([^)]*\)\s*)?"  # may stand between void and the name
# A kernel whose threads cooperate (barriers, warp-wide operations) runs as fibers, its blocks
# at their real size (`CudaKernel.block`); any other, thread by thread, in blocks of `BLOCK`.
COOPERATIVE = r"__syncthreads|__syncwarp|xpnn_emulated_mma"
FAULTS = {1: "made a misaligned vector load", 2: "reached a barrier outside a cooperative run",
          3: "left threads waiting at a barrier that the others never reach"}

_state = {"libraries": {}, "folder": None}
_lock = threading.Lock()  # the thread indices are globals of the library: one launch at a time
_flags_lock = threading.Lock()  # `_host_flags`, found once (it compiles a probe)


class EmulationUnavailable(RuntimeError):
    """This machine cannot compile CUDA sources as C++ to run them on the CPU."""


def compiler():
    """Path of the host C++ compiler ($CXX if found, else c++ or g++), or None."""
    return shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++")


# a * b + c as one fused multiply-add where the target has one, as nvcc's default --fmad=true
# compiles it (GCC contracts only with -ffp-contract=fast, and at -O1 only with
# -fexpensive-optimizations, whose pass does it). Without it a kernel's float32 sums round
# differently from a GPU's: resnet_stem's one ReLU input within rounding of zero fell the
# other way, so the emulation missed the H200's 3.5e-2 parity gap (tests/test_fused_parity.py).
CONTRACTION = ("-ffp-contract=fast", "-fexpensive-optimizations")


def _host_flags():
    """The compiler options that make the host contract multiply-adds: `CONTRACTION`, with
    -mfma on an x86-64 CPU that has FMA instructions and none on one without (aarch64 and the
    other hosts have them in their base instruction set). Found once per process."""
    with _flags_lock:
        if "host_flags" not in _state:
            _state["host_flags"] = _contraction_flags()
    return _state["host_flags"]


def _contraction_flags():
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return CONTRACTION
    source = 'extern "C" int xpnn_has_fma() { return __builtin_cpu_supports("fma"); }\n'
    try:
        has_fma = _compile(source, "has_fma", ()).xpnn_has_fma()
    except (RuntimeError, OSError):  # a compiler without the builtin: nothing contracted
        has_fma = False
    return CONTRACTION + ("-mfma",) if has_fma else ()


def contracts_multiply_adds():
    """True where the emulated kernels round a * b + c once, as a GPU does (the host has FMA
    instructions); False where they round it twice."""
    if "contracts" not in _state:
        probe = _library('extern "C" float xpnn_multiply_add(float a, float b, float c) '
                         '{ return a * b + c; }\n').xpnn_multiply_add
        probe.restype = ctypes.c_float
        probe.argtypes = [ctypes.c_float] * 3
        a = 1 + 2.0 ** -12  # a * a = 1 + 2^-11 + 2^-24: rounded, the 2^-24 is lost
        _state["contracts"] = probe(a, a, -(1 + 2.0 ** -11)) == 2.0 ** -24
    return _state["contracts"]


def unavailable_reason():
    """Why kernels cannot be emulated here (no compiler, or it cannot build the prelude), or
    None if they can. Tried once per process."""
    if "unavailable" not in _state:
        if compiler() is None:
            _state["unavailable"] = ("no C++ compiler found to emulate CUDA kernels on the CPU "
                                     "(install g++ or set CXX)")
        else:
            try:
                _library(PRELUDE + 'extern "C" int xpnn_probe() { return 1; }\n').xpnn_probe()
                _state["unavailable"] = None
            except (RuntimeError, OSError) as error:
                _state["unavailable"] = f"{compiler()} cannot build the CUDA emulation: {error}"
    return _state["unavailable"]



@contextlib.contextmanager
def emulating():
    """Within this block, the primitives run their ``fused`` implementations, and the CUDA
    kernels those call run here, on the CPU."""
    reason = unavailable_reason()
    if reason is not None:
        raise EmulationUnavailable(reason)
    previous = cuda.set_host_runner(sys.modules[__name__])
    try:
        with using("fused"):
            yield
    finally:
        cuda.set_host_runner(previous)


def _library(source, options=()):
    """Compile `source` (C++) into a shared library once per process, with `options` and the
    host's multiply-add contraction (`_host_flags`); return it loaded."""
    options = (*options, *_host_flags())
    key = hashlib.sha256("\n".join([source, *options]).encode()).hexdigest()[:16]
    with _lock:
        library = _state["libraries"].get(key)
        if library is None:
            library = _state["libraries"][key] = _compile(source, key, options)
    return library


def _compile(source, key, options):
    if _state["folder"] is None:
        _state["folder"] = Path(tempfile.mkdtemp(prefix="xpnn_cuda_emulation_"))
        atexit.register(shutil.rmtree, _state["folder"], ignore_errors=True)
    path = _state["folder"] / f"{key}.so"
    completed = subprocess.run(
        [compiler(), "-std=c++17", "-O1", "-shared", "-fPIC", *options, "-x", "c++", "-", "-o",
         str(path)],
        input=source, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"compiling a CUDA kernel as C++ failed:\n{completed.stderr}")
    return ctypes.CDLL(str(path))


class _Dim3(ctypes.Structure):
    _fields_ = [("x", ctypes.c_uint), ("y", ctypes.c_uint), ("z", ctypes.c_uint)]


def kernel_parameters(kernel, dtype):
    """[(name, NumPy dtype, is a pointer)] of `kernel`'s parameters, read from its .cu source
    with T as `dtype`."""
    match = re.search(rf'extern "C" __global__ void {LAUNCH_BOUNDS}{kernel.name}\((.*?)\)\s*{{',
                      kernel.source(), re.S)
    if match is None:
        raise ValueError(f"{kernel.file} defines no kernel {kernel.name}")
    parameters = []
    for declaration in match.group(1).split(","):
        words = declaration.replace("*", " * ").split()
        name, pointer = words[-1], "*" in words
        c_type = " ".join(word for word in words[:-1]
                          if word not in ("const", "*", "__restrict__"))
        parameters.append((name, numpy.dtype(dtype) if c_type == "T" else _DTYPES[c_type],
                           pointer))
    return parameters


def run_raw(kernel, args, dtype):
    """Run `kernel` (a `backend.cuda.CudaKernel`) over NumPy arrays and the NumPy scalars its
    wrapper typed (`CudaKernel.typed_args`). Stricter than a GPU: each argument must have the
    C type its parameter declares (an array of that dtype for a pointer, a NumPy scalar of it
    for a value), where CUDA would reinterpret the bits."""
    parameters = kernel_parameters(kernel, dtype)
    if len(args) != len(parameters):
        raise TypeError(f"{kernel.name} takes {len(parameters)} arguments, got {len(args)}")
    c_args = []
    for (name, want, pointer), arg in zip(parameters, args):
        if pointer:
            if not isinstance(arg, numpy.ndarray) or arg.dtype != want:
                raise TypeError(f"{kernel.name}: {name} must be a {want} array, got {_kind(arg)}")
            if not arg.flags.c_contiguous:
                raise ValueError(f"{kernel.name}: a CUDA kernel takes contiguous arrays ({name})")
            c_args.append(ctypes.c_void_p(arg.ctypes.data))
        else:
            if not isinstance(arg, numpy.generic) or arg.dtype != want:
                raise TypeError(f"{kernel.name}: {name} must be a {want} scalar, got "
                                f"{_kind(arg)}")
            c_args.append(_CTYPES_SCALARS[want.name](arg))
    cooperative = re.search(COOPERATIVE, kernel.source()) is not None
    source = f'{PRELUDE}#include "{kernel.file}"\n'
    if cooperative:
        source += _cooperative_launcher(kernel.name, parameters)
    library = _library(source, kernel.compile_options(dtype))
    block_size = kernel.block if cooperative else BLOCK
    for name, value in [("gridDim", GRID), ("blockDim", block_size)]:
        dim = _Dim3.in_dll(library, name)
        dim.x, dim.y, dim.z = value, 1, 1
    block_index, thread_index = (_Dim3.in_dll(library, name) for name in ("blockIdx", "threadIdx"))
    fault = ctypes.c_int.in_dll(library, "xpnn_fault")
    with _lock:
        fault.value = 0
        if cooperative:
            pointers = (ctypes.c_void_p * len(c_args))(*map(ctypes.addressof, c_args))
            library.xpnn_cooperative_launch(pointers, ctypes.c_uint(GRID),
                                            ctypes.c_uint(block_size))
        else:
            function = getattr(library, kernel.name)
            for block in range(GRID):
                for thread in range(BLOCK):
                    block_index.x, thread_index.x = block, thread
                    function(*c_args)
        if fault.value:
            raise RuntimeError(f"{kernel.name} {FAULTS[fault.value]} (a GPU would fault or hang)")


def _cooperative_launcher(name, parameters):
    """C++ that runs kernel `name` for every block of a grid, its threads as fibers:
    ``xpnn_cooperative_launch(args, grid, block)``, args pointing at each argument's value."""
    values = ", ".join(
        f"*({_C_TYPES[dtype.name]}{'*' if pointer else ''}*)args[{index}]"
        for index, (_, dtype, pointer) in enumerate(parameters))
    return (f"static void xpnn_cooperative_body(void* argument) {{\n"
            f"    void** args = (void**)argument;\n    {name}({values});\n}}\n"
            f'extern "C" void xpnn_cooperative_launch(void** args, unsigned grid, '
            f"unsigned block) {{\n"
            f"    for (unsigned b = 0; b < grid && !xpnn_fault; ++b) {{\n"
            f"        blockIdx.x = b;\n"
            f"        xpnn_fibers::run_block(block, xpnn_cooperative_body, args);\n    }}\n}}\n")


def _kind(value):
    if isinstance(value, (numpy.ndarray, numpy.generic)):
        return f"a {value.dtype} {'array' if isinstance(value, numpy.ndarray) else 'scalar'}"
    return type(value).__name__


def run_elementwise(kernel, args, kwargs):
    """Run `kernel` (a `backend.cuda.ElementwiseKernel`) as CuPy would, over NumPy arguments.

    Inputs first, then all outputs or none (CuPy's rules: no ``out=``, T fixed by the arrays
    and the same for all of them; numbers take it); returns the output array(s)."""
    ins, outs = kernel.params()
    if kwargs:  # CuPy's take only size, stream and block_size, which nothing here uses
        raise TypeError(f"Wrong arguments {kwargs}")
    if len(args) not in (len(ins), len(ins) + len(outs)):
        raise TypeError(f"Wrong number of arguments for {kernel.name}")
    inputs, given_outs = list(args[:len(ins)]), list(args[len(ins):])
    arrays = [arg for arg in inputs + given_outs if isinstance(arg, numpy.ndarray)]
    t_dtype = None
    for (kind, name), arg in zip(ins + outs, inputs + given_outs):
        if kind == "T" and isinstance(arg, numpy.ndarray):  # numbers take T; arrays fix it
            if t_dtype is not None and arg.dtype != t_dtype:
                raise TypeError(f"Type is mismatched. {name} {arg.dtype.type} {t_dtype.type} T")
            t_dtype = arg.dtype
    if t_dtype is None:
        raise ValueError(f"{kernel.name}: no array argument fixes T")
    shape = numpy.broadcast_shapes(*(array.shape for array in arrays))

    def dtype_of(kind):
        return t_dtype if kind == "T" else numpy.dtype(kind)

    buffers = [numpy.ascontiguousarray(numpy.broadcast_to(numpy.asarray(arg, dtype_of(kind)),
                                                          shape))
               for (kind, _), arg in zip(ins, inputs)]
    out_buffers = []
    for index, (kind, _) in enumerate(outs):
        if index < len(given_outs):
            out_buffers.append(numpy.array(numpy.broadcast_to(given_outs[index], shape),
                                           dtype=dtype_of(kind), order="C"))
        else:
            out_buffers.append(numpy.empty(shape, dtype=dtype_of(kind)))
    lines = []
    for index, (kind, name) in enumerate(ins):
        c_type = _C_TYPES[dtype_of(kind).name]
        lines.append(f"const {c_type} {name} = (({c_type}*)args[{index}])[i];")
    for index, (kind, name) in enumerate(outs, start=len(ins)):
        c_type = _C_TYPES[dtype_of(kind).name]
        lines.append(f"{c_type}& {name} = (({c_type}*)args[{index}])[i];")
    source = (PRELUDE + f"typedef {_C_TYPES[t_dtype.name]} T;\n"
              f'extern "C" void run(void** args, long long size) {{\n'
              f"    for (long long i = 0; i < size; ++i) {{\n        "
              + "\n        ".join(lines) + f"\n        {kernel.operation};\n    }}\n}}\n")
    run = _library(source).run
    pointers = (ctypes.c_void_p * (len(buffers) + len(out_buffers)))(
        *(buffer.ctypes.data for buffer in buffers + out_buffers))
    run(pointers, ctypes.c_longlong(int(numpy.prod(shape))))
    results = []
    for index, buffer in enumerate(out_buffers):
        if index < len(given_outs):
            given_outs[index][...] = buffer
            results.append(given_outs[index])
        else:
            results.append(buffer)
    return results[0] if len(results) == 1 else tuple(results)
