"""Tuning of the CPU backend's process (BLAS threads, the allocator); what its BLAS does fastest."""
import ctypes
import ctypes.util
import functools
import os

# glibc mallopt parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 << 20  # glibc's upper limit for M_MMAP_THRESHOLD on 64-bit
# OpenBLAS's cores with unpacked small-product kernels (kernel/x86_64/KERNEL.SKYLAKEX)
UNPACKED_SMALL_PRODUCT_CORES = {"SkylakeX", "Cooperlake", "SapphireRapids"}


def cpu_count():
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def set_blas_threads(count):
    """Make NumPy's BLAS use `count` threads from now on, in this whole process."""
    import threadpoolctl

    threadpoolctl.threadpool_limits(count, user_api="blas")


def keep_freed_memory():
    """Ask glibc's allocator to keep freed arrays of up to 32 MiB in a never-trimmed heap (the
    process keeps its peak memory); returns whether glibc agreed (False off glibc)."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
                & mallopt(_M_TRIM_THRESHOLD, 1 << 30))


@functools.cache
def unpacked_product_limit():
    """M * K * N up to which NumPy's BLAS multiplies float32 (M x K) @ (K x N) without packing
    its operands: 100**3 for OpenBLAS on its AVX-512 cores, else 0."""
    import threadpoolctl

    cores = {info.get("architecture") for info in threadpoolctl.threadpool_info()
             if info.get("internal_api") == "openblas"}
    return 100 ** 3 if cores & UNPACKED_SMALL_PRODUCT_CORES else 0
