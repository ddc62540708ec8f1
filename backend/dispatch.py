"""The execution mode (DESIGN.md, "One execution mode"): one value, set for a block by
`running_on` and read with `mode()`; a context variable, so worker threads started with the
caller's context follow it."""
import contextlib
import contextvars
import dataclasses

from xpnn.backend import cuda
from xpnn.backend.device import DeviceUnavailableError
from xpnn.backend.graphs import set_for_block

IMPLEMENTATIONS = ("cpu", "gpu", "fused")
PRECISIONS = ("fp32", "tf32", "bf16")


class ModeError(DeviceUnavailableError, ValueError):
    """A mode that is not one, or that this device or job cannot run."""


@dataclasses.dataclass(frozen=True)
class Mode:
    """How the backend computes. `implementation`: None (by array module), ``fused``, or
    ``cpu``/``gpu`` on any arrays. `graph`: each training step one CUDA graph, every product by
    the capturable cuBLAS GEMM (`backend.matmul`). `precision`: what a GPU's products compute in."""
    implementation: str = None
    graph: bool = False
    precision: str = "fp32"

    def __post_init__(self):
        for name, value, known in (("implementation", self.implementation, IMPLEMENTATIONS),
                                   ("precision", self.precision, PRECISIONS)):
            if value not in known and (name, value) != ("implementation", None):
                raise ModeError(f"unknown {name} {value!r}; expected one of {', '.join(known)}")

    def check(self, device, ranks=1):
        """This mode, or `ModeError` where `device`, with `ranks` processes, cannot run it."""
        if self.graph and not device.is_gpu:
            raise ModeError(f"a CUDA graph captures the training step on a GPU, but this run is "
                            f"on {device.name}; use --device gpu")
        if self.graph and ranks > 1:
            raise ModeError(f"a CUDA graph captures one process's step, but this run has "
                            f"{ranks} ranks; run with --eager")
        if self.precision != "fp32" and not device.is_gpu:
            raise ModeError(f"precision {self.precision} is a GPU's tensor-core arithmetic; on "
                            f"{device.name} use fp32")
        return self


def default_mode(device, ranks=1):
    """On a GPU the fused kernels and, on one rank, CUDA graphs; on the CPU NumPy's."""
    return Mode("fused", graph=ranks == 1) if device.is_gpu else Mode()


def command_mode(device, ranks=1, eager=False, array_code=False, precision="fp32"):
    """The mode of a command's ``--eager``, ``--array-code`` and ``--precision``, checked."""
    default = default_mode(device, ranks)
    return Mode(None if array_code else default.implementation, default.graph and not eager,
                precision).check(device, ranks)


_MODE = contextvars.ContextVar("xpnn_mode", default=None)


def mode():
    """The mode in force (`Mode()` where none was set)."""
    return _MODE.get() or Mode()


def mode_for(device, ranks=1):
    """The mode set around the caller (a command's, a test's), else `device`'s default."""
    return _MODE.get() or default_mode(device, ranks)


@contextlib.contextmanager
def running_on(device, mode=None):
    """A block with `device` CuPy's current device and `mode` in force (None: as set around)."""
    with set_for_block(_MODE, mode or _MODE.get()), device.activated():
        yield


@contextlib.contextmanager
def using(name):
    """A block where primitives run their `name` implementation (None: by array module)."""
    with set_for_block(_MODE, dataclasses.replace(mode(), implementation=name)):
        yield


def implementation(xp):
    """``"cpu"``, ``"gpu"`` or ``"fused"``: which implementation computes on arrays of `xp`
    (``fused`` on NumPy only while the tests' emulator runs CUDA kernels on the CPU)."""
    chosen = mode().implementation
    on_numpy = xp.__name__ == "numpy"
    if chosen == "fused" and on_numpy and not cuda.runs_on_host():
        chosen = None  # CUDA kernels cannot compute on NumPy arrays
    return chosen or ("cpu" if on_numpy else "gpu")


def pick(table, xp):
    """The function of `table` ({implementation or ``array``: function}) for arrays of `xp`."""
    return table.get(implementation(xp)) or table["array"]
