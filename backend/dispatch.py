"""The execution mode: which implementation of the backend's primitives computes, whether a
training step is replayed as a CUDA graph, and the precision of a GPU's matrix products. One
value, set for a block of code and read with `mode()`.

    with running_on(device, Mode("fused", graph=True)):   # what `xpnn train` on a GPU does
        ...
    mode().graph, mode().precision

Each primitive (`correlate`, `max_pool`, `softmax_cross_entropy`, ...) has up to three
implementations, side by side in its module, in a table `pick` reads:

* ``cpu``: NumPy's, tuned for one core's caches (work in cache-sized chunks, products 8 wide);
* ``gpu``: array code over the whole batch in as few operations as possible, because on a GPU
  every array operation is a kernel launch (generic `xp` code: it runs on NumPy too, which is
  how the tests check it without a GPU);
* ``fused``: hand-written CUDA kernels (`backend.cuda`, sources in backend/*.cu), one per
  primitive.
A table entry ``array`` stands for both ``cpu`` and ``gpu`` where they are one function.

By default NumPy arrays take ``cpu`` and CuPy arrays ``gpu``; a GPU command runs the fused
kernels and replays each training step as a CUDA graph unless told otherwise (`command_mode`).
A ``fused`` choice applies only to arrays it can compute on: CuPy arrays, and NumPy arrays only
while the tests' emulator runs CUDA kernels on the CPU (`cuda.runs_on_host`); other NumPy arrays
in the block (a CPU reference computed beside a GPU run) keep ``cpu``. The mode is a context
variable, so worker threads started with the caller's context (`nets.DataParallel`) follow it.
"""
import contextlib
import contextvars
import dataclasses

from xpnn.backend.device import DeviceUnavailableError

IMPLEMENTATIONS = ("cpu", "gpu", "fused")
PRECISIONS = ("fp32", "tf32", "bf16")


class ModeError(DeviceUnavailableError, ValueError):
    """A mode that is not one, or that this device or job cannot run."""


@dataclasses.dataclass(frozen=True)
class Mode:
    """How the backend computes.

    implementation: None (by array module: ``cpu`` on NumPy, ``gpu`` on CuPy), ``fused``, or
        ``cpu``/``gpu`` on any arrays (the tests run the ``gpu`` array code on NumPy).
    graph: each training step one CUDA graph (`training.captured_step`); its matrix products,
        like every product in the block, then take the capturable cuBLAS GEMM
        (`backend.matmul`).
    precision: ``fp32``, ``tf32`` or ``bf16``: what a GPU's matrix products compute in.
    """
    implementation: str = None
    graph: bool = False
    precision: str = "fp32"

    def __post_init__(self):
        if self.implementation not in (None, *IMPLEMENTATIONS):
            raise ModeError(f"unknown implementation {self.implementation!r}; expected one of "
                            f"{', '.join(IMPLEMENTATIONS)}")
        if self.precision not in PRECISIONS:
            raise ModeError(f"unknown precision {self.precision!r}; expected one of "
                            f"{', '.join(PRECISIONS)}")

    def check(self, device, ranks=1):
        """Raise `ModeError` unless `device`, in a job of `ranks` processes, can run this mode."""
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
    """A device's mode unless told otherwise: on a GPU the fused kernels, and on one rank each
    training step a CUDA graph; on the CPU NumPy's implementations."""
    return Mode("fused", graph=ranks == 1) if device.is_gpu else Mode()


def command_mode(device, ranks=1, eager=False, array_code=False, precision="fp32"):
    """The mode a command's flags ask for (``--eager``, ``--array-code``, ``--precision``),
    checked against `device` and the job's `ranks`."""
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
    """The block a command computes in: `device` CuPy's current device (`Device.activated`)
    and `mode` in force (None: as set around the block)."""
    token = _MODE.set(mode) if mode is not None else None
    try:
        with device.activated():
            yield
    finally:
        if token is not None:
            _MODE.reset(token)


def using(name):
    """Within this block, every primitive runs its `name` implementation (None: the default,
    by array module); the rest of the mode stays."""
    return _using(dataclasses.replace(mode(), implementation=name))


@contextlib.contextmanager
def _using(chosen):
    token = _MODE.set(chosen)
    try:
        yield
    finally:
        _MODE.reset(token)


def implementation(xp):
    """``"cpu"``, ``"gpu"`` or ``"fused"``: which implementation computes on arrays of `xp`."""
    from xpnn.backend import cuda
    chosen = mode().implementation
    on_numpy = xp.__name__ == "numpy"
    if chosen == "fused" and on_numpy and not cuda.runs_on_host():
        chosen = None  # CUDA kernels cannot compute on NumPy arrays
    if chosen is not None:
        return chosen
    return "cpu" if on_numpy else "gpu"


def pick(table, xp):
    """The function of `table` ({implementation: function}; ``array``: both ``cpu`` and
    ``gpu``) for arrays of `xp`."""
    name = implementation(xp)
    return table[name] if name in table else table["array"]
