"""How much memory a device has left, so that sizes that cannot fit are refused up front."""
import contextlib
import os


def available_bytes(device):
    """Bytes that can still be allocated on `device`: on the CPU MemAvailable (physical memory
    without /proc); on a GPU the driver's free memory plus what CuPy's pool holds free."""
    if device.is_gpu:
        with device.xp.cuda.Device(device.gpu_id):
            free, _ = device.xp.cuda.runtime.memGetInfo()
            return free + device.xp.get_default_memory_pool().free_bytes()
    with contextlib.suppress(OSError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def format_bytes(count):
    """``1.5 GiB``-style size of `count` bytes."""
    size, unit = float(count), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if size < 1024 or unit == "EiB":
            break
        size /= 1024
    return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
