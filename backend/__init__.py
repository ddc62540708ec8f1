"""Array backends: NumPy on the CPU, CuPy on CUDA GPUs, behind one `Device` type (`get_device`),
and the array primitives that layers are written with (their modules: DESIGN.md, "Packages")."""
if __name__ != "xpnn.backend":  # `import backend` finds this only from a checkout's root
    raise ImportError(f"{__name__} is part of the package xpnn: import xpnn.backend")
from xpnn.backend.cpu import cpu_count, keep_freed_memory, set_blas_threads
from xpnn.backend.device import (CPU, Device, DeviceUnavailableError, device_of, get_array_module,
                                 get_device, gpu_unavailable_reason)
from xpnn.backend.dispatch import (IMPLEMENTATIONS, PRECISIONS, Mode, ModeError, command_mode,
                                   default_mode, implementation, mode, mode_for, running_on, using)
from xpnn.backend.memory import available_bytes, format_bytes
from xpnn.backend.random import new_rng

__all__ = [
    "CPU", "Device", "DeviceUnavailableError", "IMPLEMENTATIONS", "Mode", "ModeError",
    "PRECISIONS", "available_bytes", "command_mode", "cpu_count", "default_mode", "device_of",
    "format_bytes", "get_array_module", "get_device", "gpu_unavailable_reason", "implementation",
    "keep_freed_memory", "mode", "mode_for", "new_rng", "running_on", "set_blas_threads", "using",
]
