"""Devices: where arrays live and which array module (`xp`) computes on them. CuPy is imported
only for a GPU; work for GPU N runs inside `device.activated()` (`backend.running_on`), or it
lands on CuPy's current device, GPU 0."""
import contextlib
import dataclasses
import os
import re
import sys
from pathlib import Path

import numpy

from xpnn.backend.graphs import forbid_host_sync


class DeviceUnavailableError(RuntimeError):
    """A device was asked for that this machine cannot provide."""


INSTALL_HINT = ("pip install 'xpnn[gpu]' (CUDA 12.x drivers) or 'xpnn[gpu-cuda13]' (CUDA 13.x), "
                "which bring CuPy with the CUDA libraries it needs")
_checked_toolkits = {}  # gpu id -> None, or why CuPy cannot run there


@dataclasses.dataclass(unsafe_hash=True, repr=False)
class Device:
    """One place for arrays: the host (NumPy) or one CUDA GPU (CuPy). `name`: ``"cpu"`` or
    ``"cuda:N"`` (devices are equal by name); `xp`: the array module, ``numpy`` or ``cupy``."""
    name: str
    xp: object = dataclasses.field(compare=False)
    gpu_id: int = dataclasses.field(default=None, compare=False)

    @property
    def is_gpu(self):
        return self.gpu_id is not None

    def activated(self):
        """A block within which this device is CuPy's current device; on the CPU, no change."""
        return self.xp.cuda.Device(self.gpu_id) if self.is_gpu else contextlib.nullcontext()

    def send(self, array):
        """Copy a host or device array to this device (no copy if it is already here)."""
        if not self.is_gpu:
            return self.to_numpy(array)
        with self.xp.cuda.Device(self.gpu_id):
            return self.xp.asarray(array)

    def to_numpy(self, array):
        """Return `array` as a NumPy array on the host."""
        return array.get() if hasattr(array, "get") else numpy.asanyarray(array)  # get: CuPy's

    def synchronize(self):
        """Wait until all work queued on this device has finished (a no-op on the CPU)."""
        forbid_host_sync("Device.synchronize")
        if self.is_gpu:
            self.xp.cuda.Device(self.gpu_id).synchronize()

    def __repr__(self):
        return f"Device({self.name!r})"


CPU = Device("cpu", numpy)


def parse_device_name(spec):
    """The GPU number a flag value names (``gpu``: 0), None for ``cpu``, else `ValueError`."""
    match = re.fullmatch(r"cpu|(gpu|cuda)(?::(\d+))?", str(spec).strip().lower())
    if match is None:
        raise ValueError(f"unknown device {spec!r}; expected 'cpu', 'gpu', 'cuda' or 'cuda:N'")
    return None if match.group(1) is None else int(match.group(2) or 0)


def get_device(spec="cpu"):
    """The `Device` for a flag value, ``cpu``, ``gpu``, ``cuda`` or ``cuda:N`` (a `Device`
    unchanged); `ValueError` for an unknown name, `DeviceUnavailableError` for an unusable GPU."""
    if isinstance(spec, Device):
        return spec
    gpu_id = parse_device_name(spec)
    if gpu_id is None:
        return CPU
    try:
        import cupy
    except ImportError as error:
        raise DeviceUnavailableError(f"GPU requested but CuPy is not installed ({error}); "
                                     f"{INSTALL_HINT}; or run on the CPU with --device cpu"
                                     ) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # CUDARuntimeError when the driver is missing or broken
        raise DeviceUnavailableError(f"GPU requested but no CUDA device is usable ({error}); run "
                                     f"on the CPU with --device cpu") from None
    if count == 0:
        raise DeviceUnavailableError("GPU requested but CuPy sees no CUDA device; run on the CPU "
                                     "with --device cpu")
    if gpu_id >= count:
        raise DeviceUnavailableError(f"GPU cuda:{gpu_id} requested but only {count} CUDA device(s) "
                                     f"are visible (cuda:0 to cuda:{count - 1}); pick one of those "
                                     f"or use --device cpu")
    if gpu_id not in _checked_toolkits:
        _checked_toolkits[gpu_id] = _remembered_toolkit_problem(cupy, gpu_id)
    if _checked_toolkits[gpu_id] is not None:
        raise DeviceUnavailableError(_checked_toolkits[gpu_id])
    return Device(f"cuda:{gpu_id}", cupy, gpu_id)


def probe_cache_path():
    """The file that lists the GPU setups whose probe passed (`_remembered_toolkit_problem`)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "xpnn" / "working-gpus.txt"


def _setup_key(cupy, gpu_id):
    """The line naming what the probe's answer depends on: Python environment, CuPy, CUDA, GPU."""
    try:
        runtime = cupy.cuda.runtime
        versions = f"{runtime.runtimeGetVersion()} {runtime.driverGetVersion()}"
        name = runtime.getDeviceProperties(gpu_id)["name"]
        name = name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # a stand-in or a broken driver: nothing to key on, so probe every time
        return None
    return f"{sys.prefix} cupy {getattr(cupy, '__version__', '?')} cuda {versions} {name}"


def _remembered_toolkit_problem(cupy, gpu_id):
    """`_toolkit_problem`, where only a pass is remembered (in `probe_cache_path()`)."""
    key, path = _setup_key(cupy, gpu_id), probe_cache_path()
    with contextlib.suppress(OSError):
        if key is not None and key in path.read_text().splitlines():
            return None
    problem = _toolkit_problem(cupy, gpu_id)
    if problem is None and key is not None:
        with contextlib.suppress(OSError):  # a read-only home: probe again next time
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as file:
                file.write(key + "\n")
    return problem


def _toolkit_problem(cupy, gpu_id):
    """None if CuPy can compile and multiply on GPU `gpu_id`, else a line saying why not."""
    try:
        with cupy.cuda.Device(gpu_id):
            values = cupy.arange(4, dtype=cupy.float32)
            (values * 2 + 1).sum()                            # a compiled element-wise kernel
            values.reshape(2, 2) @ values.reshape(2, 2)       # cuBLAS
            cupy.cuda.Device(gpu_id).synchronize()
    except Exception as error:  # CuPy raises many kinds: CompileException, RuntimeError, OSError
        missing = _missing_cuda_libraries()
        what = f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"
        if missing:
            what = f"missing: {', '.join(missing)}; {what}"
        return (f"CuPy {getattr(cupy, '__version__', '')} sees a GPU but cannot run kernels on it "
                f"({what}); {INSTALL_HINT}, or install a CUDA toolkit; or use --device cpu")
    return None


def _missing_cuda_libraries():
    """The CUDA libraries and headers CuPy needs that cuda.pathfinder (if any) cannot find."""
    try:
        from cuda import pathfinder
    except ImportError:
        return []
    missing = []
    for library, what in (("nvrtc", "NVRTC (libnvrtc)"), ("cublas", "cuBLAS (libcublas)")):
        try:
            pathfinder.load_nvidia_dynamic_lib(library)
        except Exception:
            missing.append(what)
    headers = None
    with contextlib.suppress(Exception):
        headers = pathfinder.find_nvidia_header_directory("cudart")
    if headers is None:
        missing.append("the CUDA runtime headers (cuda_runtime.h)")
    return missing


def get_array_module(*arrays):
    """``cupy`` if any of `arrays` is a CuPy array, else ``numpy``; never imports CuPy."""
    cupy = sys.modules.get("cupy")
    if cupy is not None and any(isinstance(array, cupy.ndarray) for array in arrays):
        return cupy
    return numpy


def device_of(array):
    """Return the `Device` that holds `array`."""
    if isinstance(array, numpy.ndarray):
        return CPU
    gpu_id = array.device.id
    return Device(f"cuda:{gpu_id}", get_array_module(array), gpu_id)


def gpu_unavailable_reason():
    """Return why no GPU can be used here, or ``None`` if one can (for test skips)."""
    try:
        get_device("gpu")
    except DeviceUnavailableError as error:
        return str(error)
    return None
