"""Compile every fused CUDA kernel of xpnn with NVRTC, no GPU needed: catches CUDA C errors early.

Needs NVRTC's shared library (``pip install nvidia-cuda-nvrtc-cu12``, or a CUDA toolkit), found
on the library path or in that package. Each .cu file of backend/ is compiled for float and double
with the loader's own options; each `ElementwiseKernel` operation inside a loop like the one
CuPy generates.

    python scripts/compile_cuda_kernels.py [--arch compute_90]
"""
import argparse
import ctypes
import ctypes.util
import glob
import importlib
import pkgutil
import site
import sys

from xpnn.backend.cuda import C_TYPES, CudaKernel, ElementwiseKernel

PACKAGE = "xpnn.backend"  # every kernel is declared in one of its modules


def find_nvrtc():
    names = [ctypes.util.find_library("nvrtc")]
    for folder in site.getsitepackages() + [site.getusersitepackages()]:
        names += sorted(glob.glob(f"{folder}/nvidia/cuda_nvrtc/lib/libnvrtc.so*"))
        names += sorted(glob.glob(f"{folder}/nvidia/cu*/lib/libnvrtc.so*"))
    for name in filter(None, names):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def compile_source(nvrtc, source, name, arch, extra_options=()):
    """Return (ok, log) for `source` compiled by NVRTC for `arch`."""
    program = ctypes.c_void_p()
    status = nvrtc.nvrtcCreateProgram(ctypes.byref(program), source.encode(), f"{name}.cu".encode(),
                                      0, None, None)
    if status != 0:
        return False, f"nvrtcCreateProgram failed with status {status}"
    options = [f"--gpu-architecture={arch}".encode(), b"--std=c++17",
               *(option.encode() for option in extra_options)]
    status = nvrtc.nvrtcCompileProgram(program, len(options),
                                       (ctypes.c_char_p * len(options))(*options))
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(program, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetProgramLog(program, log)
    nvrtc.nvrtcDestroyProgram(ctypes.byref(program))
    return status == 0, log.value.decode(errors="replace").strip()


def elementwise_source(kernel, c_type):
    """The operation inside a grid-stride loop, inputs const, outputs references (as CuPy's)."""
    ins, outs = kernel.params()

    def c_of(kind):
        return "T" if kind == "T" else {"int32": "int", "int64": "long long", "bool": "bool"}[kind]
    params = [f"const {c_of(kind)}* {name}_" for kind, name in ins]
    params += [f"{c_of(kind)}* {name}_" for kind, name in outs]
    loads = [f"const {c_of(kind)} {name} = {name}_[i];" for kind, name in ins]
    loads += [f"{c_of(kind)}& {name} = {name}_[i];" for kind, name in outs]
    return (f"typedef {c_type} T;\n"
            f'extern "C" __global__ void {kernel.name}({", ".join(params)}, long long n) {{\n'
            f"    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;\n"
            f"         i += (long long)blockDim.x * gridDim.x) {{\n        "
            + "\n        ".join(loads) + f"\n        {kernel.operation};\n    }}\n}}\n")


def all_kernels():
    """(where, kernel) for every module-level kernel of the backend."""
    found = []
    package = importlib.import_module(PACKAGE)
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{PACKAGE}.{info.name}")
        for attribute, value in vars(module).items():
            if isinstance(value, (CudaKernel, ElementwiseKernel)):
                found.append((f"{module.__name__}.{attribute}", value))
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="compute_90", help="virtual architecture (H100: 90)")
    args = parser.parse_args(argv)
    nvrtc = find_nvrtc()
    if nvrtc is None:
        print("NVRTC not found: pip install nvidia-cuda-nvrtc-cu12 (or put libnvrtc.so on the "
              "library path)", file=sys.stderr)
        return 2
    failures, compiled = 0, set()
    kernels = all_kernels()
    for where, kernel in kernels:
        for dtype, c_type in C_TYPES.items():
            if isinstance(kernel, CudaKernel):
                if (kernel.file, dtype) in compiled:  # one translation unit per file and type
                    continue
                compiled.add((kernel.file, dtype))
                where, source, options = kernel.file, kernel.source(), kernel.compile_options(dtype)
            else:
                source, options = elementwise_source(kernel, c_type), ()
            ok, log = compile_source(nvrtc, source, kernel.name, args.arch, options)
            print(f"{'ok  ' if ok else 'FAIL'} {where} ({dtype})" + (f"\n{log}" if log else ""))
            failures += not ok
    print(f"{len(kernels)} kernels, {failures} compile failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
