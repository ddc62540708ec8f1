"""How many threads the CPU backend's BLAS uses."""
import os


def cpu_count():
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def set_blas_threads(count):
    """Make NumPy's BLAS use `count` threads from now on, in this whole process.

    Used when the library runs its own worker threads (see `nets.DataParallel`): each worker
    then owns one core, instead of two thread pools fighting over the same cores.
    """
    import threadpoolctl

    threadpoolctl.threadpool_limits(count, user_api="blas")
