"""Array backends: NumPy on the CPU, CuPy on CUDA GPUs, behind one `Device` type.

    device = get_device("cpu")      # or "gpu", "cuda", "cuda:1"
    xp = device.xp                  # numpy or cupy
    x = device.send(host_array)     # host -> device
    xp = get_array_module(x)        # inside a layer: the module that owns x
"""
from xpnn.backend.device import (
    CPU,
    Device,
    DeviceUnavailableError,
    device_of,
    get_array_module,
    get_device,
    gpu_unavailable_reason,
)
from xpnn.backend.kernels import (
    batch_chunks,
    few_kernels,
    forcing_few_kernels,
    product_width,
    sliding_windows,
)
from xpnn.backend.memory import available_bytes, format_bytes
from xpnn.backend.random import new_rng
from xpnn.backend.cpu import cpu_count, keep_freed_memory, set_blas_threads

__all__ = [
    "CPU", "Device", "DeviceUnavailableError", "device_of", "get_array_module", "get_device",
    "gpu_unavailable_reason", "new_rng", "sliding_windows", "batch_chunks", "few_kernels",
    "forcing_few_kernels", "cpu_count",
    "set_blas_threads", "keep_freed_memory", "product_width", "available_bytes", "format_bytes",
]
